"""Tests for window provenance (python_udfs.scan.provenance): which document each window came from."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.scan.provenance import (
    SCANNED_KEY,
    DocumentIndex,
    locate_in_segments,
    part_windows,
    scanned_metadata,
    scanned_windows,
    windows_per_document,
)

LENGTHS = [0, 3, 17, 1, 40, 9]
DOC_IDS = [5, 8, 9, 12, 20, 21]


def packed_stream(pack):
    rng = np.random.default_rng(1)
    docs = [rng.integers(1, 50000, n) for n in LENGTHS]
    owner = np.concatenate([[d] * (n + 1) for d, n in zip(DOC_IDS, LENGTHS)])  # each token's document
    return pack(docs, 16), owner


def test_document_index_locates_every_position_of_the_packed_stream(pack):
    index = DocumentIndex(DOC_IDS[::-1], LENGTHS[::-1], packed_len=16, cluster_of={8: 2, 20: 3})
    sequences, owner = packed_stream(pack)
    seq = np.concatenate([[s] * len(a) for s, a in enumerate(sequences)])
    pos = np.concatenate([np.arange(len(a)) for a in sequences])
    found, clusters = index.locate(seq, pos)
    assert [int(d) for d in found] == owner.tolist()
    assert clusters[list(owner).index(20)] == 3 and clusters[0] is None


def test_segments_give_what_locate_gives_for_every_prefix(pack):
    """A part carries its sequences' segments instead of the index: the answers must not change."""
    index = DocumentIndex(DOC_IDS, LENGTHS, packed_len=16, cluster_of={8: 2, 20: 3, 21: 4})
    sequences, _ = packed_stream(pack)
    for seq_id, tokens in enumerate(sequences):
        for length in range(1, len(tokens) + 1):
            starts, docs, clusters = index.segments(seq_id, length)
            assert starts[0] == 0 and starts == sorted(starts) and len(set(docs)) == len(docs)
            positions = np.arange(length)
            want = index.locate(np.full(length, seq_id), positions)
            got = locate_in_segments(starts, docs, clusters, positions)
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    assert index.segments(0, 0) == ([], [], [])
    nothing = locate_in_segments([], [], [], np.arange(3))
    assert nothing[0].tolist() == [None] * 3 and nothing[1].tolist() == [None] * 3


def test_windows_per_document_counts_documents_without_windows():
    windows, clusters = windows_per_document([7, 7, 9, None], [1, 1, None, None], documents={"7": 1, "11": 5})
    assert windows == {"7": 2, "9": 1, "null": 1, "11": 0}
    assert clusters == {"7": 1, "9": None, "null": None, "11": 5}


def test_scanned_windows_reads_every_models_parts(tmp_path):
    for model, folder, windows, clusters in (("m-a", "a", {"1": 3, "2": 0}, {"1": 7, "2": None}),
                                             ("m-b", "b", {"1": 5}, {"1": 7})):
        (tmp_path / folder).mkdir()
        meta = {k.encode(): v.encode() for k, v in scanned_metadata(model, windows, clusters).items()}
        table = pa.table({"x": [1]}).replace_schema_metadata(meta)
        pq.write_table(table, tmp_path / folder / "part-000000.parquet")
        assert part_windows(tmp_path / folder / "part-000000.parquet") == sum(windows.values())
    pq.write_table(pa.table({"x": [1]}), tmp_path / "a" / "part-000001.parquet")  # no metadata: skipped
    rows = scanned_windows(tmp_path).to_pylist()
    assert rows == [{"model": "m-a", "doc_id": 1, "cluster_id": 7, "windows": 3},
                    {"model": "m-a", "doc_id": 2, "cluster_id": None, "windows": 0},
                    {"model": "m-b", "doc_id": 1, "cluster_id": 7, "windows": 5}]
    assert json.loads(pq.read_schema(tmp_path / "b" / "part-000000.parquet").metadata[SCANNED_KEY])["model"] == "m-b"

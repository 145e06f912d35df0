"""Tests for the scan as runner steps (python_udfs.scan.runner): kept rows, thresholds, provenance,
and resuming: a rerun reuses every part, a changed document rescans only its part."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs.runner.executors import PartFailed  # noqa: E402
from python_udfs.scan import runner as scan_runner  # noqa: E402
from python_udfs.scan.metrics import scan_windows  # noqa: E402
from python_udfs.scan.provenance import DocumentIndex, scanned_windows  # noqa: E402
from python_udfs.scan.runner import (  # noqa: E402
    NothingToScan,
    ScanSettings,
    scan_document_stream,
    scan_documents,
    scan_token_sequences,
)

EVERYTHING = ScanSettings(min_p_long=-1.0, min_js=-1.0, max_tokens=24, part_docs=2)
CLUSTERS = [7, 7, 8, None, 9]


def doc_ids_of(texts):
    return list(range(100, 100 + len(texts)))


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("part-*.parquet"))}


def read_rows(folder):
    return pq.read_table(sorted(folder.glob("part-*.parquet"))).to_pylist()


def test_scan_documents_rows_and_thresholds(tiny, texts, tmp_path):
    doc_ids = doc_ids_of(texts)
    out = tmp_path / "all"
    stats = scan_documents(tiny, doc_ids, texts, CLUSTERS, out, EVERYTHING, progress=False)
    lengths = [min(24, len(a)) for a in tiny.encode_batch(texts)]
    assert stats["windows"] == stats["kept"] == sum(max(0, n - 4) for n in lengths)
    assert (stats["parts"], stats["reused_parts"], stats["documents"]) == (3, 0, len(texts))
    table = read_rows(out)
    assert len(table) == stats["kept"]
    first = table[0]
    assert first["doc_id"] == first["seq_id"] == 100 and first["cluster_id"] == 7 and first["position"] == 0
    ids = tiny.encode_batch(texts[:1])[0]
    assert first["long_ids"] == ids[:5].tolist()
    assert first["text"] == "[" + tiny.decode(ids[:1]) + "]" + tiny.decode(ids[1:5])
    assert first["next_id"] == int(ids[5]) and first["context"] == tiny.decode(ids[:10])
    assert first["token_long"] == tiny.decode([first["long_max_id"]])
    assert first["model"] == "tiny-neox" and first["tokenizer"]
    later = next(r for r in table if r["doc_id"] == 100 and r["position"] == 8)
    assert later["context"] == tiny.decode(ids[3:18])
    counts = scanned_windows(tmp_path).to_pylist()
    assert {r["doc_id"]: r["windows"] for r in counts} == {d: max(0, n - 4) for d, n in zip(doc_ids, lengths)}

    # the numbers are those of one unbatched scan_windows call over the same sequences
    sequences = [a[:24] for a in tiny.encode_batch(texts)]
    direct = scan_windows(tiny.lm, sequences, seq_len=4, batch_size=10_000)
    assert [r["p_long"] for r in table] == pytest.approx(direct["p_long"].tolist(), abs=1e-6)
    assert [r["js"] for r in table] == pytest.approx(direct["js"].tolist(), rel=1e-5, abs=1e-6)

    # thresholds: the default 0.5 / 0.5 keep exactly the rows passing both
    kept_out = tmp_path / "kept"
    scan_documents(tiny, doc_ids, texts, CLUSTERS, kept_out, ScanSettings(max_tokens=24, part_docs=2),
                   progress=False)
    kept = read_rows(kept_out)
    expect = [(r["doc_id"], r["position"]) for r in table if r["p_long"] > 0.5 and r["js"] > 0.5]
    assert [(r["doc_id"], r["position"]) for r in kept] == expect


def test_killed_scan_resumes_and_a_rerun_reuses_every_part(tiny, texts, tmp_path, monkeypatch):
    doc_ids = doc_ids_of(texts)
    reference = tmp_path / "reference"
    scan_documents(tiny, doc_ids, texts, CLUSTERS, reference, EVERYTHING, progress=False)

    # a kill in the third part: the first two stay; the rerun scans only what is missing
    resumed = tmp_path / "resumed"
    real = scan_runner.kept_rows
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_runner, "kept_rows", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        scan_documents(tiny, doc_ids, texts, CLUSTERS, resumed, EVERYTHING, progress=False)
    assert sorted(mtimes(resumed)) == ["part-000000.parquet", "part-000001.parquet"]
    monkeypatch.setattr(scan_runner, "kept_rows", real)
    again = scan_documents(tiny, doc_ids, texts, CLUSTERS, resumed, EVERYTHING, progress=False)
    assert (again["reused_parts"], again["computed_parts"], again["parts"]) == (2, 1, 3)
    assert read_rows(resumed) == read_rows(reference)

    # a rerun: every part reused, not one file rewritten, no window scanned
    before = mtimes(resumed)
    rerun = scan_documents(tiny, doc_ids, texts, CLUSTERS, resumed, EVERYTHING, progress=False)
    assert (rerun["reused_parts"], rerun["computed_parts"], rerun["windows"], rerun["kept"]) == (3, 0, 0, 0)
    assert mtimes(resumed) == before
    # the batch size changes the speed, not the numbers: still all reused
    batched = ScanSettings(min_p_long=-1.0, min_js=-1.0, max_tokens=24, part_docs=2, batch_size=3)
    assert scan_documents(tiny, doc_ids, texts, CLUSTERS, resumed, batched, progress=False)["reused_parts"] == 3
    # a different threshold is a different scan: nothing reused
    assert scan_documents(tiny, doc_ids, texts, CLUSTERS, resumed, ScanSettings(max_tokens=24, part_docs=2),
                          progress=False)["reused_parts"] == 0


def test_changing_one_document_rescans_only_its_part(tiny, texts, tmp_path):
    doc_ids = doc_ids_of(texts)
    out = tmp_path / "scan"
    scan_documents(tiny, doc_ids, texts, CLUSTERS, out, EVERYTHING, progress=False)
    before = mtimes(out)
    edited = list(texts)
    edited[2] = edited[2].replace("fellow Americans", "dear listeners")  # document 102: part 1
    stats = scan_documents(tiny, doc_ids, edited, CLUSTERS, out, EVERYTHING, progress=False)
    after = mtimes(out)
    assert [name for name in after if after[name] != before[name]] == ["part-000001.parquet"]
    assert (stats["computed_parts"], stats["reused_parts"]) == (1, 2)
    lengths = [min(24, len(a)) for a in tiny.encode_batch(edited[2:4])]
    assert stats["windows"] == sum(max(0, n - 4) for n in lengths)  # only part 1's windows scanned now
    assert read_rows(out) == read_rows_of_fresh_scan(tiny, doc_ids, edited, tmp_path / "fresh")

    # a document's new cluster (a re-clustering) is a change of its part too
    moved = list(CLUSTERS)
    moved[4] = 3
    stats = scan_documents(tiny, doc_ids, edited, moved, out, EVERYTHING, progress=False)
    assert (stats["computed_parts"], stats["reused_parts"]) == (1, 2)
    assert {r["cluster_id"] for r in read_rows(out) if r["doc_id"] == 104} == {3}


def read_rows_of_fresh_scan(tiny, doc_ids, texts, out):
    scan_documents(tiny, doc_ids, texts, CLUSTERS, out, EVERYTHING, progress=False)
    return read_rows(out)


def test_a_failing_part_is_named_and_an_empty_slice_leaves_the_lake_alone(tiny, texts, tmp_path, monkeypatch):
    doc_ids = doc_ids_of(texts)
    out = tmp_path / "scan"
    scan_documents(tiny, doc_ids, texts, CLUSTERS, out, EVERYTHING, progress=False)
    before = mtimes(out)
    with pytest.raises(NothingToScan):
        scan_document_stream(tiny, iter([]), out, EVERYTHING, progress=False)
    assert mtimes(out) == before

    def broken(*args, **kwargs):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(scan_runner, "scan_windows", broken)
    edited = [t + " More." for t in texts]
    with pytest.raises(PartFailed, match=r"step 'scan tiny-neox': part 0 -> .*part-000000\.parquet failed: "
                                         r"RuntimeError: the model fell over"):
        scan_documents(tiny, doc_ids, edited, CLUSTERS, out, EVERYTHING, progress=False)
    assert mtimes(out) == before  # the failed part's old file is still whole


def test_scan_token_sequences_follows_documents_across_the_packing(tiny, smollm2, texts, pack, tmp_path):
    texts = texts[:3]
    docs = tiny.encode_batch(texts)
    sequences = pack(docs, 32)
    index = DocumentIndex([10, 11, 12], [len(d) for d in docs], packed_len=32, cluster_of={10: 1, 11: 2, 12: 3})
    everything = ScanSettings(min_p_long=-1.0, min_js=-1.0, max_tokens=0, part_docs=2)
    stats = scan_token_sequences(tiny, list(range(len(sequences))), sequences, index, tmp_path / "seq", everything,
                                 progress=False)
    assert stats["windows"] == stats["kept"] == sum(len(s) - 4 for s in sequences)
    assert stats["sequences"] == len(sequences)
    rows = read_rows(tmp_path / "seq")
    stream = np.concatenate([np.append(d, 0) for d in docs])
    starts = {10: 0, 11: len(docs[0]) + 1, 12: len(docs[0]) + len(docs[1]) + 2}
    for r in rows:
        offset = r["seq_id"] * 32 + r["position"]
        assert r["long_ids"] == stream[offset: offset + 5].tolist()
        last = offset + 4  # the long prompt's last token belongs to doc_id
        assert starts[r["doc_id"]] <= last <= starts[r["doc_id"]] + len(docs[r["doc_id"] - 10])
        assert r["cluster_id"] == r["doc_id"] - 9
    # the same windows, metric for metric, as one direct scan_windows call over the sequences
    direct = scan_windows(tiny.lm, sequences, seq_len=4, batch_size=10_000)
    assert [r["p_long"] for r in rows] == pytest.approx(direct["p_long"].tolist(), abs=1e-6)
    counts = scanned_windows(tmp_path).to_pylist()
    assert sum(c["windows"] for c in counts) == stats["windows"]

    # a rerun reuses every part; a new packed length (other provenance) is a different scan
    again = scan_token_sequences(tiny, list(range(len(sequences))), sequences, index, tmp_path / "seq", everything,
                                 progress=False)
    assert (again["reused_parts"], again["windows"]) == (again["parts"], 0)
    with pytest.raises(ValueError, match="another tokenizer"):
        scan_token_sequences(smollm2, [0], sequences[:1], index, tmp_path / "no", everything, progress=False)


def test_scan_steps_and_parts_pickle(tiny, texts, tmp_path):
    """A scan part can be computed in another process: its step and rows are plain data."""
    import pickle

    from python_udfs.scan.runner import document_parts, scan_step

    step = scan_step(tiny, "documents", tmp_path, EVERYTHING)
    part = next(document_parts(zip(doc_ids_of(texts), CLUSTERS, texts), EVERYTHING.part_docs))
    step_copy, part_copy = pickle.loads(pickle.dumps(step)), pickle.loads(pickle.dumps(part))
    assert part_copy.fingerprint(step_copy) == part.fingerprint(step)
    assert step.settings["dtype"] == "float32" and "batch_size" not in step.settings
    table, meta = step_copy.make_worker()(part_copy.input_rows())
    direct, _ = step.make_worker()(part.input_rows())
    assert table.equals(direct) and table.num_rows > 0 and meta

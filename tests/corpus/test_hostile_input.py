"""Hostile input to the corpus readers: no input crashes a reader or stops an ingest midway, and
every record ends in `documents` or `rejected_documents` (input records = accepted + rejected).

The named cases of issue 14 each have a test here; `hypothesis` throws arbitrary bytes, JSON
values and damaged compressed or parquet files at the readers and at a whole ingest; a
time-boxed fuzz run (`python -m tests.corpus.fuzz_readers --seconds 600`, slow test 30 s)
mutates real files."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from corpus_lake import staged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from python_udfs.corpus.ingest import ingest
from python_udfs.corpus.readers import REASONS, CorpusConfig, read_file

GOOD = [json.dumps({"text": f"document number {i} about rivers", "meta": {"pile_set_name": "Wiki"}})
        for i in range(40)]


def lines_bytes(lines: list[str | bytes]) -> bytes:
    return b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)


def records(path: Path, **config) -> list:
    cfg = CorpusConfig(inputs=[str(path)], **config)
    from python_udfs.corpus.readers import validate

    return [(r, validate(r, cfg)) for r in read_file(str(path), cfg)]


def reasons(path: Path, **config) -> list[str | None]:
    return [v[0] for _r, v in records(path, **config)]


def ingest_counts(tmp_path: Path, inputs: list[Path], **config) -> tuple[int, int, int, dict]:
    """(records, accepted, rejected, reasons) of a whole ingest, read back through the staging models."""
    lake = tmp_path / "lake"
    stats = ingest(CorpusConfig(inputs=[str(p) for p in inputs], **config), lake, progress=False)
    documents = staged(lake, "documents")
    rejected = staged(lake, "rejected")
    assert stats.n_records == stats.n_accepted + stats.n_rejected
    assert (len(documents), len(rejected)) == (stats.n_accepted, stats.n_rejected)
    found: dict[str, int] = {}
    for row in rejected:
        found[row["reason"]] = found.get(row["reason"], 0) + 1
        assert len(row["raw"] or "") <= 1000
    return stats.n_records, stats.n_accepted, stats.n_rejected, found


def test_a_50_mb_document_is_rejected_as_too_long_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.jsonl"
    huge = json.dumps({"text": "a" * 50_000_000})
    path.write_bytes(lines_bytes([GOOD[0], huge, GOOD[1]]))
    # the default (10 M characters) rejects it; the line is skipped after 6 x max_doc_chars + 1 MiB bytes
    assert reasons(path) == [None, "too_long", None]
    assert reasons(path, max_doc_chars=1_000) == [None, "too_long", None]
    (_r, (reason, detail, _)), = [x for x in records(path, max_doc_chars=1_000) if x[1][0]]
    assert "50,000,0" in detail and "max_doc_chars" in detail
    # a text within the line limit but over max_doc_chars: rejected by its length, named in detail
    path.write_bytes(lines_bytes([json.dumps({"text": "b" * 5_000})]))
    ((_r, (reason, detail, _)),) = records(path, max_doc_chars=4_999)
    assert reason == "too_long" and "5,000 characters" in detail
    assert reasons(path, max_doc_chars=5_000) == [None]
    n, accepted, rejected, found = ingest_counts(tmp_path, [tmp_path / "huge.jsonl"], max_doc_chars=10)
    assert (n, found) == (1, {"too_long": 1})


def test_max_doc_chars_must_be_positive():
    with pytest.raises(ValueError, match="max_doc_chars must be a positive whole number"):
        CorpusConfig(inputs=["x"], max_doc_chars=0)


def test_nul_bytes_lone_surrogates_bom_crlf(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + GOOD[0].encode() + b"\r\n"                        # a UTF-8 BOM, CRLF
        + b'{"text": "nul \\u0000 inside"}\r\n'                              # NUL as a JSON escape
        + b'{"text": "raw nul \x00 byte"}\n'                                 # a raw NUL: not JSON
        + b'{"text": "lone \\ud800 surrogate"}\n'                            # a lone surrogate escape
        + b'{"text": "fine", "meta": {"pile_set_name": "bad \\udfff src"}}\n'  # ... in the source
        + b'{"text": "fine too", "meta": {"pile_set_name": "Wiki", "x": "\\ud83d"}}\n'  # ... in meta
        + b'{"text": "pair \\ud83d\\ude00 ok"}\n'                            # a real pair: fine
    )
    assert reasons(path) == [None, "not_utf8", "bad_json", "not_utf8", "not_utf8", None, None]
    n, accepted, rejected, found = ingest_counts(tmp_path, [path])
    assert (n, accepted, rejected) == (7, 3, 4)
    documents = staged(tmp_path / "lake", "documents")
    assert documents[0]["text"] == "document number 0 about rivers"  # the BOM is not part of the text
    assert "\U0001F600" in documents[2]["text"]


def test_deeply_nested_json_is_bad_json(tmp_path):
    path = tmp_path / "nested.jsonl"
    deep = "[" * 200_000 + "]" * 200_000
    path.write_bytes(lines_bytes([GOOD[0], deep, '{"text": ' + deep + "}", GOOD[1]]))
    assert reasons(path) == [None, "bad_json", "bad_json", None]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_a_compressed_stream_cut_midway_keeps_what_came_before(tmp_path, suffix, cut):
    data = lines_bytes([json.dumps({"text": f"doc {i} " + "word " * 300}) for i in range(400)])
    compressed = gzip.compress(data) if suffix.endswith(".gz") else zstandard.ZstdCompressor().compress(data)
    if suffix.endswith(".zst"):  # several frames, as a streaming writer makes them
        out = io.BytesIO()
        with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as writer:
            for i in range(0, len(data), 50_000):
                writer.write(data[i:i + 50_000])
                writer.flush(zstandard.FLUSH_FRAME)
        compressed = out.getvalue()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(compressed[: int(len(compressed) * cut)])
    got = reasons(path)
    assert got[-1] == "truncated_stream" and set(got[:-1]) <= {None, "bad_json"}
    kept = got.count(None)
    assert 0 <= kept < 400 and got.count("bad_json") <= 1  # at most the one line the cut split
    # the whole file is intact: no truncated record
    path.write_bytes(compressed)
    assert reasons(path) == [None] * 400
    n, accepted, rejected, found = ingest_counts(tmp_path, [path])
    assert (n, accepted) == (400, 400)


def test_a_gzip_with_flipped_bytes_ends_in_one_rejected_record(tmp_path):
    data = gzip.compress(lines_bytes(GOOD))
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    path = tmp_path / "flipped.jsonl.gz"
    path.write_bytes(bytes(broken))
    got = reasons(path)
    assert got[-1] == "truncated_stream" and got.count("truncated_stream") == 1


def test_parquet_without_the_text_column_and_a_cut_parquet(tmp_path):
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"body": ["a", "b", "c"]}), no_text)
    assert reasons(no_text) == ["missing_text"] * 3
    cut = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(1000)]}), tmp_path / "whole.parquet")
    whole = (tmp_path / "whole.parquet").read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    assert reasons(cut) == ["corrupt_file"]
    zero = tmp_path / "zero.parquet"
    zero.write_bytes(b"")
    assert reasons(zero) == ["corrupt_file"]
    n, accepted, rejected, found = ingest_counts(tmp_path, [no_text, cut, zero])
    assert (n, accepted, found) == (5, 0, {"missing_text": 3, "corrupt_file": 2})


def test_a_folder_of_several_formats_is_read_whole(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(lines_bytes(GOOD[:5]))
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(lines_bytes(GOOD[5:12])))
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines_bytes(GOOD[12:20])))
    pq.write_table(pa.table({"text": ["p1", "p2", ""]}), folder / "d.parquet")
    n, accepted, rejected, found = ingest_counts(tmp_path, [folder])
    assert (n, accepted, found) == (23, 22, {"empty_text": 1})


# --- property-based: arbitrary input never crashes a reader, every record is accounted for ---

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
records_strategy = st.one_of(
    st.fixed_dictionaries({"text": st.text(max_size=200)}, optional={"meta": json_values}),
    st.fixed_dictionaries({"text": json_values, "meta": st.fixed_dictionaries({"pile_set_name": json_values})}),
    json_values,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(records_strategy.map(lambda v: json.dumps(v).encode()),
                                st.binary(max_size=300).filter(lambda b: b"\n" not in b and b"\r" not in b)),
                      max_size=30))
def test_any_lines_give_one_record_each_and_never_raise(tmp_path, lines):
    path = tmp_path / "any.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    got = reasons(path, max_doc_chars=100)
    assert len(got) == len(lines)
    assert set(got) <= {None, *REASONS}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([".jsonl.gz", ".jsonl.zst", ".parquet"]), data=st.data())
def test_damaged_files_never_raise(tmp_path, kind, data):
    """A real file, then cut and bytes flipped at chosen places: the reader still ends cleanly."""
    rows = [f"doc {i} " + "text " * 20 for i in range(60)]
    if kind == ".parquet":
        buffer = io.BytesIO()
        pq.write_table(pa.table({"text": rows}), buffer, row_group_size=10)
        blob = buffer.getvalue()
    else:
        raw = lines_bytes([json.dumps({"text": r}) for r in rows])
        blob = gzip.compress(raw) if kind == ".jsonl.gz" else zstandard.ZstdCompressor().compress(raw)
    blob = bytearray(blob[: data.draw(st.integers(0, len(blob)), label="cut")])
    for position in data.draw(st.lists(st.integers(0, max(len(blob) - 1, 0)), max_size=4), label="flips"):
        if blob:
            blob[position] ^= data.draw(st.integers(1, 255), label="xor")
    path = tmp_path / f"damaged{kind}"
    path.write_bytes(bytes(blob))
    got = reasons(path)
    assert set(got) <= {None, *REASONS}
    assert got.count(None) <= 60


@pytest.mark.slow
def test_a_time_boxed_fuzz_run(tmp_path):
    from fuzz_readers import fuzz

    summary = fuzz(seconds=30, seed=0, workdir=tmp_path)
    assert summary["inputs"] > 50 and summary["crashes"] == [], summary

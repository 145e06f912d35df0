"""Tests for the corpus reader (python_udfs.corpus): validation, accounting, doc_id, formats."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from corpus_lake import staged

from python_udfs.corpus import ingest as ingest_mod
from python_udfs.corpus.ingest import MANIFEST_NAME, ingest
from python_udfs.corpus.readers import (
    RAW_LIMIT,
    RECORD_SCHEMA,
    CorpusConfig,
    expand_inputs,
    read_file,
)
from python_udfs.runner.executors import PartFailed
from python_udfs.runner.parts import existing_fingerprint

SENTENCES = [
    "The river flooded the valley after three days of heavy rain.",
    "Parliament passed the budget late on Thursday evening.",
    "She planted tomatoes and basil in the small garden behind the house.",
    "The orchestra rehearsed the symphony for the opening night.",
    "Engineers inspected the bridge before it reopened to traffic.",
    "A new species of frog was discovered in the rainforest.",
    "The library extended its opening hours during the exam season.",
    "Stock markets fell sharply as investors worried about inflation.",
]


def pile(text: object, source: str | None = None, **meta: object) -> str:
    """One Pile-format JSON line."""
    record: dict = {"text": text}
    if source is not None or meta:
        record["meta"] = {**({"pile_set_name": source} if source is not None else {}), **meta}
    return json.dumps(record, ensure_ascii=False)


def write_lines(path: Path, lines: list[bytes | str]) -> Path:
    """Write JSON lines (str or raw bytes) to plain, .gz or .zst by suffix."""
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n"
                    for line in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


MANIFEST_KEYS = ("source_file", "n_records", "n_accepted", "n_rejected", "first_record_index")


def tables(lake: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """documents, rejected and manifest rows, as the staging models give them."""
    docs = sorted(staged(lake, "documents"), key=lambda d: d["doc_id"])
    rejected = sorted(staged(lake, "rejected"), key=lambda r: r["record_index"])
    manifest = sorted(staged(lake, "manifest"), key=lambda m: m["file_index"])
    return docs, rejected, manifest


def run(inputs: list[Path | str], lake: Path, **kwargs) -> tuple:
    config = CorpusConfig(inputs=[str(i) for i in inputs], **kwargs)
    stats = ingest(config, lake, progress=False)
    docs, rejected, manifest = tables(lake)
    return stats, docs, rejected, [{k: m[k] for k in MANIFEST_KEYS} for m in manifest]


# --- rejection reasons ---------------------------------------------------------------

LONG_BAD = "{" + "x" * 3000  # bad JSON longer than RAW_LIMIT

BAD_CASES = [
    # (line, reason)
    ("{not json at all", "bad_json"),
    ("", "bad_json"),  # a blank line is a record too
    (LONG_BAD, "bad_json"),
    (json.dumps({"meta": {"pile_set_name": "Wikipedia (en)"}}), "missing_text"),
    (json.dumps({"text": None}), "missing_text"),
    (json.dumps({"text": "   \n\t  "}), "empty_text"),
    (json.dumps({"text": ""}), "empty_text"),
    (b'{"text": "caf\xe9 au lait"}', "not_utf8"),  # latin-1 byte, not UTF-8
    (json.dumps({"text": 42}), "wrong_type"),
    (json.dumps(["a", "list", "record"]), "wrong_type"),
    (json.dumps({"text": "fine words", "meta": {"pile_set_name": 7}}), "wrong_type"),
    (json.dumps({"text": "a NUL \u0000 inside"}), "not_utf8"),
    ('{"text": "an unpaired \\ud800 surrogate"}', "not_utf8"),
]


@pytest.fixture()
def mixed(tmp_path: Path):
    """One file: good records interleaved with every kind of bad one."""
    lines: list = []
    expected_bad: dict[int, tuple] = {}
    for i, (line, reason) in enumerate(BAD_CASES):
        lines.append(pile(SENTENCES[i % len(SENTENCES)], "Pile-CC"))
        expected_bad[len(lines)] = (line, reason)
        lines.append(line)
    lines.append(pile(SENTENCES[0], "Pile-CC"))
    path = write_lines(tmp_path / "in" / "mixed.jsonl", lines)
    return path, lines, expected_bad


def test_every_rejection_reason(tmp_path: Path, mixed) -> None:
    path, lines, expected_bad = mixed
    stats, docs, rejected, manifest = run([path], tmp_path / "lake")

    assert stats.n_records == len(lines)
    assert stats.n_rejected == len(BAD_CASES) == len(rejected)
    assert stats.n_accepted == len(lines) - len(BAD_CASES) == len(docs)
    assert {r["record_number"]: r["reason"] for r in rejected} == {
        n: reason for n, (_, reason) in expected_bad.items()
    }
    assert set(stats.reasons) == {"bad_json", "missing_text", "empty_text", "not_utf8",
                                  "wrong_type"}
    for row in rejected:
        line, _ = expected_bad[row["record_number"]]
        assert row["source_file"] == str(path)
        assert row["record_index"] == row["record_number"]  # a single file
        assert row["detail"]
        assert len(row["raw"]) <= RAW_LIMIT
        if isinstance(line, str):
            assert row["raw"] == line[:RAW_LIMIT]
        else:
            assert row["raw"] == line.decode("utf-8", "replace")
            assert "\ufffd" in row["raw"]
    long_row = next(r for r in rejected if r["raw"].startswith("{xxx"))
    assert len(long_row["raw"]) == RAW_LIMIT
    blank = next(r for r in rejected if r["raw"] == "")
    assert blank["reason"] == "bad_json"
    # accepted rows never carry a bad record's text
    assert all(d["text"] in SENTENCES for d in docs)


def test_accounting_per_file_and_overall(tmp_path: Path, mixed) -> None:
    path, lines, _ = mixed
    other = write_lines(tmp_path / "in" / "other.jsonl",
                        [pile(s, "Books3") for s in SENTENCES[:3]] + ["", "[1, 2]"])
    stats, docs, rejected, manifest = run([tmp_path / "in"], tmp_path / "lake")
    by_file = {m["source_file"]: m for m in manifest}
    assert set(by_file) == {str(path), str(other)}
    assert by_file[str(path)]["n_records"] == len(lines)
    assert by_file[str(other)] == {"source_file": str(other), "n_records": 5, "n_accepted": 3,
                                   "n_rejected": 2, "first_record_index": len(lines)}
    for m in manifest:
        assert m["n_records"] == m["n_accepted"] + m["n_rejected"]
        assert m["n_accepted"] == sum(d["source_file"] == m["source_file"] for d in docs)
        assert m["n_rejected"] == sum(r["source_file"] == m["source_file"] for r in rejected)
    total = sum(m["n_records"] for m in manifest)
    assert total == stats.n_records == len(docs) + len(rejected)
    assert stats.n_accepted == len(docs) and stats.n_rejected == len(rejected)


# --- doc_id ------------------------------------------------------------------------

def test_doc_id_is_global_position_in_sorted_file_order(tmp_path: Path) -> None:
    d = tmp_path / "in"
    # created first, sorts last
    b = write_lines(d / "b.jsonl", [pile(SENTENCES[4]), "oops", pile(SENTENCES[5])])
    time.sleep(0.01)
    # created second, sorts first
    a = write_lines(d / "a.jsonl", [pile(SENTENCES[0]), "   ", pile(SENTENCES[1]),
                                    pile(SENTENCES[2])])
    _, docs, rejected, manifest = run([b, a], tmp_path / "lake")  # order given is irrelevant

    assert [(x["doc_id"], x["source_file"], x["record_number"], x["text"]) for x in docs] == [
        (0, str(a), 0, SENTENCES[0]),
        (2, str(a), 2, SENTENCES[1]),
        (3, str(a), 3, SENTENCES[2]),
        (4, str(b), 0, SENTENCES[4]),
        (6, str(b), 2, SENTENCES[5]),
    ]
    assert [(r["record_index"], r["source_file"], r["record_number"], r["reason"])
            for r in rejected] == [(1, str(a), 1, "bad_json"), (5, str(b), 1, "bad_json")]
    # doc_ids and record_indexes partition 0..n-1
    positions = sorted([x["doc_id"] for x in docs] + [r["record_index"] for r in rejected])
    assert positions == list(range(7))
    assert {m["source_file"]: m["first_record_index"] for m in manifest} == {str(a): 0, str(b): 4}


# --- formats ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["c.jsonl", "c.json", "c.jsonl.gz", "c.jsonl.zst"])
def test_jsonl_compressions(tmp_path: Path, name: str) -> None:
    lines = [pile(s, "Wikipedia (en)", title=f"t{i}") for i, s in enumerate(SENTENCES[:4])]
    lines.insert(2, b'{"text": "\xff\xfe"}')
    path = write_lines(tmp_path / name, lines)
    stats, docs, rejected, _ = run([path], tmp_path / "lake")
    assert stats.n_records == 5
    assert [d["text"] for d in docs] == SENTENCES[:4]
    assert [d["doc_id"] for d in docs] == [0, 1, 3, 4]
    assert all(d["source"] == "Wikipedia (en)" for d in docs)
    assert json.loads(docs[0]["meta"]) == {"pile_set_name": "Wikipedia (en)", "title": "t0"}
    assert [(r["record_number"], r["reason"]) for r in rejected] == [(2, "not_utf8")]


def test_crlf_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(pile(s).encode() + b"\r\n" for s in SENTENCES[:3]))
    stats, docs, rejected, _ = run([path], tmp_path / "lake")
    assert [d["text"] for d in docs] == SENTENCES[:3] and not rejected


def test_parquet_input(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({
        "text": [SENTENCES[0], None, "  ", SENTENCES[1]],
        "source": ["ArXiv", "ArXiv", "ArXiv", None],
    }), path)
    stats, docs, rejected, manifest = run([path], tmp_path / "lake", source_field="source",
                                          default_source="Misc")
    assert (stats.n_records, stats.n_accepted, stats.n_rejected) == (4, 2, 2)
    assert [(d["doc_id"], d["text"], d["source"], d["record_number"]) for d in docs] == [
        (0, SENTENCES[0], "ArXiv", 0), (3, SENTENCES[1], "Misc", 3)]
    assert [(r["record_index"], r["reason"]) for r in rejected] == [(1, "missing_text"),
                                                                   (2, "empty_text")]
    # raw of a parquet row is its JSON form
    assert json.loads(rejected[0]["raw"]) == {"text": None, "source": "ArXiv"}
    assert manifest == [{"source_file": str(path), "n_records": 4, "n_accepted": 2,
                         "n_rejected": 2, "first_record_index": 0}]


def test_parquet_non_string_text_column(tmp_path: Path) -> None:
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": pa.array([1, 2, 3], pa.int64())}), path)
    stats, docs, rejected, _ = run([path], tmp_path / "lake")
    assert stats.n_accepted == 0 and not docs
    assert [r["reason"] for r in rejected] == ["wrong_type"] * 3
    assert all("int" in r["detail"] for r in rejected)
    assert [json.loads(r["raw"]) for r in rejected] == [{"text": 1}, {"text": 2}, {"text": 3}]


def test_parquet_pile_meta_struct(tmp_path: Path) -> None:
    path = tmp_path / "pile.parquet"
    pq.write_table(pa.table({
        "text": SENTENCES[:2],
        "meta": [{"pile_set_name": "PubMed Central"}, {"pile_set_name": "Enron Emails"}],
    }), path)
    _, docs, _, _ = run([path], tmp_path / "lake")
    assert [d["source"] for d in docs] == ["PubMed Central", "Enron Emails"]
    assert json.loads(docs[1]["meta"]) == {"pile_set_name": "Enron Emails"}


def test_directory_mixes_formats_recursively(tmp_path: Path) -> None:
    d = tmp_path / "in"
    write_lines(d / "a.jsonl.gz", [pile(SENTENCES[0], "Pile-CC")])
    write_lines(d / "sub" / "b.jsonl.zst", [pile(SENTENCES[1], "Pile-CC")])
    pq.write_table(pa.table({"text": [SENTENCES[2]]}), d / "c.parquet")
    (d / "notes.txt").write_text("ignored: not a corpus file")
    stats, docs, _, manifest = run([d], tmp_path / "lake")
    # sorted paths: in/a.jsonl.gz < in/c.parquet < in/sub/b.jsonl.zst
    assert [d_["text"] for d_ in docs] == [SENTENCES[0], SENTENCES[2], SENTENCES[1]]
    assert [Path(m["source_file"]).name for m in manifest] == ["a.jsonl.gz", "c.parquet",
                                                               "b.jsonl.zst"]
    assert stats.n_records == 3


def test_glob_input(tmp_path: Path) -> None:
    write_lines(tmp_path / "x1.jsonl", [pile(SENTENCES[0])])
    write_lines(tmp_path / "x2.jsonl", [pile(SENTENCES[1])])
    write_lines(tmp_path / "y.jsonl", [pile(SENTENCES[2])])
    _, docs, _, _ = run([str(tmp_path / "x*.jsonl")], tmp_path / "lake")
    assert [d["text"] for d in docs] == SENTENCES[:2]


# --- source ------------------------------------------------------------------------

def test_source_from_meta_else_default(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", [
        pile(SENTENCES[0], "FreeLaw"),
        pile(SENTENCES[1]),  # no meta
        json.dumps({"text": SENTENCES[2], "meta": {"other": 1}}),  # meta without the label
        json.dumps({"text": SENTENCES[3], "meta": "not a dict"}),
    ])
    _, docs, _, _ = run([path], tmp_path / "lake", default_source="Unlabelled")
    assert [d["source"] for d in docs] == ["FreeLaw", "Unlabelled", "Unlabelled", "Unlabelled"]
    assert docs[1]["meta"] is None
    _, docs, _, _ = run([path], tmp_path / "lake2")
    assert [d["source"] for d in docs] == ["FreeLaw", "unknown", "unknown", "unknown"]


def test_custom_text_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"body": SENTENCES[0]}),
                                              json.dumps({"text": SENTENCES[1]})])
    _, docs, rejected, _ = run([path], tmp_path / "lake", text_field="body")
    assert [d["text"] for d in docs] == [SENTENCES[0]]
    assert [r["reason"] for r in rejected] == ["missing_text"]


def test_row_groups_bound_memory_and_reassemble(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "many.jsonl", [pile(SENTENCES[i % 8]) for i in range(11)])
    _, docs, rejected, _ = run([path], tmp_path / "lake", shard_size=4)
    corpus = tmp_path / "lake" / "corpus"
    assert sorted(p.name for p in corpus.iterdir()) == [MANIFEST_NAME, "part-000000.parquet"]  # one part per file
    part = pq.ParquetFile(corpus / "part-000000.parquet")
    assert [part.metadata.row_group(i).num_rows for i in range(part.metadata.num_row_groups)] == [4, 4, 3]
    assert part.schema_arrow.remove_metadata() == RECORD_SCHEMA
    assert [d["doc_id"] for d in docs] == list(range(11))
    assert rejected == []  # no rejections still gives a readable (empty) rejected table


# --- parts: one per input file, resumable ----------------------------------------------

def _snapshot(corpus: Path) -> dict[str, int]:
    return {str(p.relative_to(corpus)): p.stat().st_mtime_ns
            for p in corpus.rglob("*") if p.is_file()}


def three_files(folder: Path) -> list[Path]:
    return [
        write_lines(folder / "a.jsonl", [pile(SENTENCES[0], "A"), "{bad", pile(SENTENCES[1], "A")]),
        write_lines(folder / "b.jsonl.gz", [pile(SENTENCES[2], "B"), json.dumps({"text": ""})]),
        write_lines(folder / "c.jsonl.zst", [pile(SENTENCES[3], "C"), pile(SENTENCES[4], "C")]),
    ]


class Reads:
    """Wraps the reader: records which files are read, and can fail in one (a kill mid-ingest)."""

    def __init__(self, fail_on: str | None = None, interrupt: bool = False):
        self.files: list[str] = []
        self.fail_on, self.interrupt = fail_on, interrupt
        self.real = read_file  # the real reader, however often it is wrapped

    def __call__(self, path, config):
        self.files.append(Path(path).name)
        for number, record in enumerate(self.real(path, config)):
            if self.fail_on and path.endswith(self.fail_on) and number == 1:
                raise KeyboardInterrupt("killed") if self.interrupt else OSError("disk gone")
            yield record


def test_second_ingest_reads_and_rewrites_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    three_files(tmp_path / "in")
    lake = tmp_path / "lake"
    first = ingest(CorpusConfig(inputs=[str(tmp_path / "in")]), lake, progress=False)
    corpus = lake / "corpus"
    assert sorted(p.name for p in corpus.iterdir()) == [MANIFEST_NAME] + [f"part-{i:06d}.parquet" for i in range(3)]
    stamp = existing_fingerprint(corpus / MANIFEST_NAME)
    before = _snapshot(corpus)
    reads = Reads()
    monkeypatch.setattr(ingest_mod, "read_file", reads)
    time.sleep(0.02)
    second = ingest(CorpusConfig(inputs=[str(tmp_path / "in")]), lake, progress=False)
    assert reads.files == []  # the input is not read again
    assert existing_fingerprint(corpus / MANIFEST_NAME) == stamp
    assert _snapshot(corpus) == before
    assert (second.n_records, second.n_accepted, second.n_rejected, second.reasons) == (
        first.n_records, first.n_accepted, first.n_rejected, first.reasons) == (
        7, 5, 2, {"bad_json": 1, "empty_text": 1})
    assert "corpus already ingested (3 files reused): 5 accepted, 2 rejected" in capsys.readouterr().err
    assert not list(corpus.glob("*.tmp"))


def test_reingest_after_input_change_replaces_output(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [pile(s) for s in SENTENCES[:4]])
    lake = tmp_path / "lake"
    run([path], lake)
    stamp = existing_fingerprint(lake / "corpus" / MANIFEST_NAME)
    time.sleep(0.02)
    write_lines(path, [pile(s) for s in SENTENCES[4:6]] + ["{broken"])
    stats, docs, rejected, manifest = run([path], lake)
    assert existing_fingerprint(lake / "corpus" / MANIFEST_NAME) != stamp
    assert [d["text"] for d in docs] == SENTENCES[4:6]
    assert [r["reason"] for r in rejected] == ["bad_json"]
    assert manifest[0]["n_records"] == 3 == stats.n_records
    assert not list((lake / "corpus").glob("*.tmp"))


def test_changed_file_is_read_again_alone_and_later_doc_ids_follow(tmp_path: Path, monkeypatch) -> None:
    a, b, c = three_files(tmp_path / "in")
    lake = tmp_path / "lake"
    run([tmp_path / "in"], lake)
    before = _snapshot(lake / "corpus")
    time.sleep(0.02)
    write_lines(b, [pile(SENTENCES[5], "B"), "[]", pile(SENTENCES[6], "B"), pile(SENTENCES[7], "B")])
    reads = Reads()
    monkeypatch.setattr(ingest_mod, "read_file", reads)
    stats, docs, rejected, manifest = run([tmp_path / "in"], lake)
    assert reads.files == ["b.jsonl.gz"]
    after = _snapshot(lake / "corpus")
    assert {k for k in after if after[k] != before.get(k)} == {"part-000001.parquet", MANIFEST_NAME}
    # c was not read again, yet its doc_ids moved up by b's two extra records
    assert [(d["doc_id"], d["text"]) for d in docs if d["source"] == "C"] == [(7, SENTENCES[3]), (8, SENTENCES[4])]
    monkeypatch.undo()
    fresh = run([tmp_path / "in"], tmp_path / "fresh")
    assert (docs, rejected, manifest) == fresh[1:] and stats.n_records == fresh[0].n_records == 9


@pytest.mark.parametrize("interrupt", [False, True], ids=["error", "interrupt"])
def test_killed_ingest_keeps_finished_files(tmp_path: Path, monkeypatch, interrupt: bool) -> None:
    three_files(tmp_path / "in")
    lake = tmp_path / "lake"
    monkeypatch.setattr(ingest_mod, "read_file", Reads(fail_on="c.jsonl.zst", interrupt=interrupt))
    if interrupt:
        with pytest.raises(KeyboardInterrupt):
            run([tmp_path / "in"], lake)
    else:
        with pytest.raises(PartFailed, match=r"step 'ingest': part 2 -> .*part-000002.parquet failed: "
                                             r"OSError: disk gone"):
            run([tmp_path / "in"], lake)
    # the finished files' parts stay; the killed one left nothing, not even a temporary
    assert sorted(p.name for p in (lake / "corpus").iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    reads = Reads()
    monkeypatch.setattr(ingest_mod, "read_file", reads)
    stats, docs, rejected, manifest = run([tmp_path / "in"], lake)
    assert reads.files == ["c.jsonl.zst"]  # the finished files are not read again
    monkeypatch.undo()
    assert (stats.n_records, len(docs), len(rejected)) == (7, 5, 2)
    assert (docs, rejected, manifest) == run([tmp_path / "in"], tmp_path / "fresh")[1:]


def test_removed_file_drops_its_part_and_old_layouts_go(tmp_path: Path) -> None:
    a, b, c = three_files(tmp_path / "in")
    lake = tmp_path / "lake"
    corpus = lake / "corpus"
    # what an ingest before the part runner left, and temporaries of a killed run
    (corpus / "documents").mkdir(parents=True)
    (corpus / "documents" / "part-00000.parquet").write_bytes(b"old layout")
    (corpus / "FINGERPRINT").write_text("0123\n")
    (corpus / "part-000000.parquet.77-deadbeef.tmp").write_bytes(b"torn")
    (corpus / f"{MANIFEST_NAME}.77-deadbeef.tmp").write_bytes(b"torn")
    (lake / ".corpus-0123.tmp" / "documents").mkdir(parents=True)
    run([tmp_path / "in"], lake)
    assert sorted(p.name for p in corpus.iterdir()) == [MANIFEST_NAME] + [f"part-{i:06d}.parquet" for i in range(3)]
    assert not list(lake.glob(".corpus-*"))
    c.unlink()
    stats, docs, _, manifest = run([tmp_path / "in"], lake)
    assert sorted(p.name for p in corpus.iterdir()) == [MANIFEST_NAME, "part-000000.parquet", "part-000001.parquet"]
    assert [m["source_file"] for m in manifest] == [str(a), str(b)] and stats.n_records == 5
    assert {d["source"] for d in docs} == {"A", "B"}


def test_manifest_positions_counts_and_reasons(tmp_path: Path) -> None:
    a, b, c = three_files(tmp_path / "in")
    ingest(CorpusConfig(inputs=[str(tmp_path / "in")]), tmp_path / "lake", progress=False)
    manifest = sorted(staged(tmp_path / "lake", "manifest"), key=lambda m: m["file_index"])
    assert [(m["file_index"], m["source_file"], m["n_records"], m["first_record_index"]) for m in manifest] == [
        (0, str(a), 3, 0), (1, str(b), 2, 3), (2, str(c), 2, 5)]
    assert [m["reasons"] for m in manifest] == [{"bad_json": 1}, {"empty_text": 1}, {}]
    parts = sorted((tmp_path / "lake" / "corpus").glob("part-*.parquet"))
    assert [m["fingerprint"] for m in manifest] == [existing_fingerprint(p) for p in parts]


def test_changed_options_reingest(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [pile(SENTENCES[0])])
    lake = tmp_path / "lake"
    _, docs, _, _ = run([path], lake, default_source="first")
    assert docs[0]["source"] == "first"
    _, docs, _, _ = run([path], lake, default_source="second")
    assert docs[0]["source"] == "second"


def test_ingest_step_and_parts_pickle(tmp_path: Path) -> None:
    import pickle

    from python_udfs.corpus.ingest import corpus_step, file_parts

    a, b, _ = three_files(tmp_path / "in")
    config = CorpusConfig(inputs=[str(tmp_path / "in")])
    step = pickle.loads(pickle.dumps(corpus_step(config, tmp_path / "lake" / "corpus")))
    part = pickle.loads(pickle.dumps(list(file_parts([str(a), str(b)], config))[1]))
    table = step.make_worker()(part.input_rows()).read_all()
    assert table.column("file_index").to_pylist() == [1, 1]
    assert table.column("reason").to_pylist() == [None, "empty_text"]
    # shard_size (row groups) is no setting: changing it reuses every part
    assert corpus_step(CorpusConfig(inputs=[], shard_size=3), tmp_path).salt() == step.salt()


# --- errors -------------------------------------------------------------------------

def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        ingest(CorpusConfig(inputs=[str(missing)]), tmp_path / "lake", progress=False)
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.jsonl")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no corpus files"):
        expand_inputs([str(tmp_path / "empty")])
    assert not (tmp_path / "lake" / "corpus").exists()


def test_unknown_suffix_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "corpus.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(ValueError, match=r"unknown corpus file type.*\.jsonl"):
        ingest(CorpusConfig(inputs=[str(path)]), tmp_path / "lake", progress=False)


def test_hf_input_must_be_alone() -> None:
    with pytest.raises(ValueError, match="only input"):
        expand_inputs(["hf:some/dataset", "a.jsonl"])
    assert expand_inputs(["hf:some/dataset"]) == ["hf:some/dataset"]


def test_main_cli(tmp_path: Path, capsys) -> None:
    from python_udfs.corpus.ingest import main

    path = write_lines(tmp_path / "in.jsonl", [pile(SENTENCES[0]), "nope"])
    assert main([str(path), "--lake", str(tmp_path / "lake"), "--default-source", "CLI",
                 "--executor", "local"]) == 0
    err = capsys.readouterr().err
    assert "2 records: 1 accepted, 1 rejected (bad_json: 1)" in err
    docs = staged(tmp_path / "lake", "documents")
    assert docs[0]["source"] == "CLI"
    assert os.path.exists(tmp_path / "lake" / "corpus" / MANIFEST_NAME)
    with pytest.raises(SystemExit):
        main([str(path), "--lake", str(tmp_path / "lake2"), "--executor", "nowhere"])
    assert "invalid choice: 'nowhere'" in capsys.readouterr().err  # argparse lists local and ray

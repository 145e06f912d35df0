"""The Hugging Face reader streams through `datasets` (online users); offline we hand it a
local streaming dataset built by `datasets` itself, so the real iteration code runs."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from corpus_lake import staged

from python_udfs.corpus.ingest import ingest
from python_udfs.corpus.readers import CorpusConfig


def test_hf_dataset_is_streamed_with_positions_and_rejections(tmp_path: Path, monkeypatch):
    rows = [
        {"text": "The river Thames flows through London.", "meta": {"pile_set_name": "Wiki"}},
        {"text": "", "meta": {"pile_set_name": "Wiki"}},
        {"text": "Bridges were built in stone and later in iron.", "meta": {"pile_set_name": "Books"}},
    ]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = {}
    real_load = datasets.load_dataset

    def load_dataset(name, config=None, split=None, streaming=False):
        calls.update(name=name, config=config, split=split, streaming=streaming)
        return real_load("json", data_files=str(data), split="train", streaming=True)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    stats = ingest(CorpusConfig(inputs=["hf:someone/corpus:en"], hf_split="train"), tmp_path / "lake",
                   progress=False)
    assert calls == {"name": "someone/corpus", "config": "en", "split": "train", "streaming": True}
    assert (stats.n_records, stats.n_accepted, stats.n_rejected) == (3, 2, 1)
    docs = sorted(staged(tmp_path / "lake", "documents"), key=lambda d: d["doc_id"])
    assert [(d["doc_id"], d["source"], d["source_file"]) for d in docs] == [
        (0, "Wiki", "hf:someone/corpus:en/train"), (2, "Books", "hf:someone/corpus:en/train")]
    rejected = staged(tmp_path / "lake", "rejected")
    assert [(r["record_index"], r["reason"]) for r in rejected] == [(1, "empty_text")]
    (manifest,) = staged(tmp_path / "lake", "manifest")
    assert (manifest["source_file"], manifest["n_records"], manifest["reasons"]) == (
        "hf:someone/corpus:en/train", 3, {"empty_text": 1})
    # one stream is one part: a rerun streams nothing again
    calls.clear()
    again = ingest(CorpusConfig(inputs=["hf:someone/corpus:en"], hf_split="train"), tmp_path / "lake",
                   progress=False)
    assert calls == {} and (again.n_records, again.n_accepted) == (3, 2)

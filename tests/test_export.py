"""pilehouse export: a warehouse table as a dataset folder that datasets.load_dataset reads back."""

from __future__ import annotations

import json

import duckdb
import pytest

from python_udfs import cli
from python_udfs import export as ex
from python_udfs.corpus.sample import iter_sample_records

datasets = pytest.importorskip("datasets")


@pytest.fixture
def warehouse(tmp_path):
    records = list(iter_sample_records(per_source=6))
    path = tmp_path / "wh.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create table documents (doc_id bigint, source varchar, text varchar, n_chars integer)")
        con.executemany("insert into documents values (?, ?, ?, ?)",
                        [(i * 7 + 3, r["meta"]["pile_set_name"], r["text"], len(r["text"]))
                         for i, r in enumerate(records)])
        con.execute("""create table minipile as
            select doc_id, case when doc_id % 3 = 0 then 'train' when doc_id % 3 = 1 then 'validation'
                                else 'test' end as split, (doc_id % 4)::integer as cluster_id, source, text
            from documents where doc_id % 5 != 0""")
        con.execute("""create table minipile_variant_documents as
            select 'density' as variant, doc_id, case when doc_id % 2 = 0 then 'train' else 'validation' end
                   as split, (doc_id % 4)::integer as cluster_id
            from documents where doc_id % 5 != 1""")
        con.execute("""create table top_trigrams as select * from (values
            (10::usmallint, 11::usmallint, 12::usmallint, 100, 90, 0.9, 'a', ' b', ' c', 'a b c'),
            (1::usmallint, 2::usmallint, 3::usmallint, 50, 30, 0.6, 'x', '\ny', '$z', 'x\ny$z'))
            t(id0, id1, id2, sum_count, max_count, frac_max, token0, token1, token2, seq)""")
    return path


def _load(folder, cache, **kw):
    return datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(cache), **kw)


def _rows(con, sql):
    cur = con.execute(sql)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def test_minipile_round_trips_through_load_dataset(warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    out = tmp_path / "minipile"
    run_results = tmp_path / "run_results.json"
    run_results.write_text(json.dumps({
        "metadata": {"generated_at": "2026-12-01T10:00:00Z"}, "args": {"vars": {"train_size": 12, "seed": 7}},
        "results": [{"unique_id": "model.pilehouse.minipile"}]}))
    counts = ex.export("minipile", out, warehouse, run_results=run_results)
    loaded = _load(out, tmp_path / "cache")
    assert sorted(loaded) == ["test", "train", "validation"]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for split in ("train", "validation", "test"):
            want = _rows(con, "select text, doc_id as pile_idx, cluster_id, source from minipile "
                              f"where split = '{split}' order by doc_id")
            assert counts[split] == len(want) > 0
            assert loaded[split].column_names == ["text", "pile_idx", "cluster_id", "source"]
            assert loaded[split].to_list() == want
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:\n- config_name: default\n")
    assert "| train_size | `12` |" in card and "| seed | `7` |" in card and "which built this table" in card
    assert f"| train | {counts['train']:,} |" in card
    # the card's YAML is what load_dataset(DIR) reads: the same splits
    by_card = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache2"))
    assert {k: len(v) for k, v in by_card.items()} == counts


def test_a_variant_and_a_catalog_table(warehouse, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    counts = ex.export("density", tmp_path / "density", warehouse, run_results=tmp_path / "none.json")
    assert set(counts) == {"train", "validation"}  # no test rows: no test split
    loaded = _load(tmp_path / "density", tmp_path / "cache")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        want = _rows(con, "select d.text, d.doc_id as pile_idx, v.cluster_id, d.source from "
                          "minipile_variant_documents v join documents d using (doc_id) "
                          "where v.split = 'train' order by d.doc_id")
        trigrams = _rows(con, "select * from top_trigrams order by id0, id1, id2")
    assert loaded["train"].to_list() == want
    assert "not recorded" in (tmp_path / "density" / "README.md").read_text()

    assert ex.export("top_trigrams", tmp_path / "tt", warehouse) == {"train": 2}
    table = _load(tmp_path / "tt", tmp_path / "cache3")
    assert list(table) == ["train"] and table["train"].to_list() == trigrams


def test_bad_input_fails_clearly(warehouse, tmp_path, capsys):
    with pytest.raises(ex.ExportError, match=r"unknown export 'dense'.*\(density\)"):
        ex.export("dense", tmp_path / "a", warehouse)
    with pytest.raises(ex.ExportError, match="no bigrams"):
        ex.export("bigrams", tmp_path / "b", warehouse)
    ex.export("minipile", tmp_path / "c", warehouse)
    with pytest.raises(ex.ExportError, match="--overwrite"):
        ex.export("minipile", tmp_path / "c", warehouse)
    assert ex.export("density", tmp_path / "c", warehouse, overwrite=True)
    assert not (tmp_path / "c" / "data" / "test-00000-of-00001.parquet").exists()  # the old split is gone
    with pytest.raises(FileNotFoundError):
        ex.export("minipile", tmp_path / "d", tmp_path / "missing.duckdb")
    assert cli.main(["export", "nope", "--out", str(tmp_path / "e"), "--db", str(warehouse)]) == 2
    assert "unknown export 'nope'" in capsys.readouterr().err

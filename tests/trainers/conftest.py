"""A small real-text warehouse for trainer tests: `documents` and `minipile` tables."""

from __future__ import annotations

import duckdb
import pytest

from python_udfs.corpus.sample import iter_sample_records


def build_warehouse(path) -> None:
    """60 documents (15 per sample source); minipile takes 48 of them: 36/6/6 train/val/test."""
    records = list(iter_sample_records(per_source=15))
    rows = [(i, r["meta"]["pile_set_name"], r["text"]) for i, r in enumerate(records)]
    with duckdb.connect(str(path)) as con:
        con.execute("create table documents (doc_id bigint, source varchar, text varchar)")
        con.executemany("insert into documents values (?, ?, ?)", rows)
        con.execute("""
            create table minipile as
            select doc_id,
                   case when n < 36 then 'train' when n < 42 then 'validation' else 'test' end
                       as split,
                   doc_id % 5 as cluster_id, source, text
            from (select *, row_number() over (order by md5(doc_id::varchar)) - 1 as n
                  from documents)
            where n < 48
        """)


@pytest.fixture(scope="session")
def warehouse_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("warehouse") / "template.duckdb"
    build_warehouse(path)
    return path


@pytest.fixture
def warehouse(warehouse_template, tmp_path):
    """A fresh copy per test, so tests that write training rows do not see each other's."""
    import shutil

    path = tmp_path / "pilehouse.duckdb"
    shutil.copy(warehouse_template, path)
    return path

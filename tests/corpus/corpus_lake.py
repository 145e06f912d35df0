"""The corpus as dbt sees it: the staging models' own SQL run over a lake in plain DuckDB.

``{{ source('lake', ...) }}`` is replaced by the parquet location the source names (as
dbt-duckdb does), so these tests check the models' doc_id arithmetic, not a copy of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[2]
STAGING = ROOT / "models" / "staging" / "corpus"
LOCATIONS = {"records": "corpus/part-*.parquet", "manifest": "corpus/manifest.parquet"}


def staged(lake: Path, model: str) -> list[dict]:
    """The rows of ``stg_lake__<model>`` over ``lake``, in the model's column order."""
    sql = (STAGING / f"stg_lake__{model}.sql").read_text()
    sql = re.sub(r"\{\{\s*source\('lake',\s*'(\w+)'\)\s*\}\}", lambda m: f"'{lake}/{LOCATIONS[m[1]]}'", sql)
    assert "{{" not in sql, f"stg_lake__{model}: unrendered jinja left"
    with duckdb.connect() as con:
        relation = con.sql(sql)
        names = relation.columns
        return [dict(zip(names, row)) for row in relation.fetchall()]

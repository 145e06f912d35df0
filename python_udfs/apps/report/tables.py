"""The report's view of the warehouse: queries that tolerate missing or empty tables.

A section asks ``missing(...)`` first and says why it is skipped instead of failing, so the
report works on a half-built warehouse. Cluster facts (main source, share, map position)
come from the ``cluster_summary`` mart only, the rule every consumer shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import duckdb


class Tables:
    """Read-only queries against the warehouse, tolerant of missing tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection, relations: set[str]) -> None:
        self.con = con
        self.cache: dict[str, Any] = {}
        self.relations = relations

    def has(self, *tables: str) -> bool:
        return all(t in self.relations for t in tables)

    def columns(self, table: str) -> list[str]:
        return [d[0] for d in self.con.execute(f"select * from {table} limit 0").description]

    def empty(self, table: str) -> bool:
        return not self.con.execute(f"select 1 from {table} limit 1").fetchall()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        cur = self.con.execute(sql, list(params))
        cols = [d[0] for d in cur.description]
        # DECIMAL columns (e.g. from SQL literals) come back as Decimal: plot them as floats
        return cols, [tuple(float(v) if isinstance(v, Decimal) else v for v in r) for r in cur.fetchall()]

    def scalar(self, sql: str) -> Any:
        rows = self.con.execute(sql).fetchall()
        return rows[0][0] if rows else None

    def missing(self, *tables: str) -> str | None:
        """A sentence naming the first missing or empty table, or None when all have rows."""
        for t in tables:
            if not self.has(t):
                return f"Table {t} is not in this warehouse, so this section is skipped."
            if self.empty(t):
                return f"Table {t} is empty, so this section is skipped."
        return None


def excluded_clusters(wh: Tables) -> set[int]:
    if not wh.has("cluster_exclusions"):
        return set()
    return {int(r[0]) for r in wh.rows("select cluster_id from cluster_exclusions")[1]}


def cluster_summary(wh: Tables) -> dict[int, dict[str, Any]]:
    """cluster_id -> its cluster_summary row (main_source, main_share, x, y, ...); read once."""
    if "cluster_summary" not in wh.cache:
        if not wh.has("cluster_summary"):
            return {}
        cols, rows = wh.rows("select * from cluster_summary order by cluster_id")
        wh.cache["cluster_summary"] = {int(r[0]): dict(zip(cols, r)) for r in rows}
    return wh.cache["cluster_summary"]


def main_sources(wh: Tables) -> dict[int, tuple[str, float]]:
    """cluster_id -> (main source, its share of the cluster), as cluster_summary names them."""
    return {c: (r["main_source"], float(r["main_share"])) for c, r in cluster_summary(wh).items()
            if r["main_source"] is not None}

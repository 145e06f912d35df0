"""Read-only queries over the warehouse for the review page.

Connections come from the apps' shared reader (python_udfs/apps/warehouse.py: read-only,
one per call, lake paths resolved from the project root). The cluster overview (sizes,
main sources and map positions from the `cluster_summary` mart, the source mix of each
cluster) is cached until the warehouse file changes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from python_udfs.apps.warehouse import WarehouseReader, WarehouseUnavailable
from python_udfs.settings import default

__all__ = ["ClusterSummary", "Example", "Inspection", "Overview", "Warehouse", "WarehouseUnavailable",
           "project_total", "scan_tasks"]

REQUIRED_TABLES = ("documents", "cluster_centroids", "cluster_assignments", "cluster_inspection", "cluster_summary")


@dataclass(frozen=True)
class ClusterSummary:
    """A row of `cluster_summary` (main source by its one tie rule, PCA position) and the cluster's mix."""

    cluster_id: int
    n_docs: int
    average_distance: float | None
    main_source: str  # "(empty)" for a cluster without documents
    main_share: float
    x: float
    y: float
    sources: list[tuple[str, int]]  # (source, documents), most documents first, ties by name


@dataclass(frozen=True)
class Overview:
    """What the last build left: clusters, its exclusions, quotas and split sizes."""

    clusters: list[ClusterSummary]
    n_documents: int
    built_exclusions: dict[int, tuple[str, str]]  # cluster_id -> (category, note)
    built_quotas: dict[int, int] | None  # int_cluster_quotas, when the warehouse has it
    built_splits: dict[str, int] | None  # minipile documents per split
    explained_variance: tuple[float, float] = (0.0, 0.0)
    by_id: dict[int, ClusterSummary] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_id", {c.cluster_id: c for c in self.clusters})

    @property
    def sizes(self) -> dict[int, int]:
        return {c.cluster_id: c.n_docs for c in self.clusters}

    @property
    def built_total(self) -> int | None:
        """MiniPile's size in the last build: the sum of its quotas, else its row count."""
        if self.built_quotas is not None:
            return sum(self.built_quotas.values())
        if self.built_splits is not None:
            return sum(self.built_splits.values())
        return None


@dataclass(frozen=True)
class Example:
    doc_id: int
    distance: float
    source: str | None
    excerpt: str
    n_chars: int | None = None


@dataclass(frozen=True)
class Inspection:
    total_examples: int
    average_distance: float
    sum_distance: float
    closest: list[Example]
    farthest: list[Example]


class Warehouse(WarehouseReader):
    """The review page's queries; each opens its own read-only connection."""

    def __init__(self, db: str | Path | None = None, root: str | Path | None = None) -> None:
        super().__init__(db, root)
        self._cache_key: tuple | None = None
        self._cache: Overview | None = None
        self._lock = threading.Lock()

    def overview(self) -> Overview:
        """The cluster overview, recomputed only when the warehouse file changed."""
        try:
            stat = self.db.stat()
        except FileNotFoundError:
            stat = None
        key = (stat.st_mtime_ns, stat.st_size) if stat else None
        with self._lock:
            if key is not None and key == self._cache_key and self._cache is not None:
                return self._cache
            overview = self._load_overview()
            self._cache_key, self._cache = key, overview
            return overview

    def _load_overview(self) -> Overview:
        with self.connect() as con:
            tables = self.tables(con)
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if missing:
                raise WarehouseUnavailable(
                    f"The warehouse {self.db} has no {', '.join(missing)}: run `make minipile` first."
                )
            rows = con.execute("""
                select s.cluster_id, s.n_docs, i.average_distance, s.main_source, s.main_share, s.x, s.y,
                    s.x_variance_share, s.y_variance_share
                from cluster_summary s
                left join cluster_inspection i using (cluster_id)
                order by s.cluster_id
            """).fetchall()
            mix: dict[int, list[tuple[str, int]]] = {}
            for cluster_id, source, n in con.execute("""
                select a.cluster_id, d.source, count(*) as n
                from cluster_assignments a
                join documents d using (doc_id)
                group by all
                order by a.cluster_id, n desc, source
            """).fetchall():
                mix.setdefault(cluster_id, []).append((source, n))
            n_documents = con.execute("select count(*) from documents").fetchone()[0]
            built_exclusions = {}
            if "cluster_exclusions" in tables:
                built_exclusions = {
                    cid: (category, note)
                    for cid, category, note in con.execute(
                        "select cluster_id, category, coalesce(note, '') from cluster_exclusions"
                    ).fetchall()
                }
            built_quotas = None
            if "int_cluster_quotas" in tables:
                built_quotas = dict(con.execute("select cluster_id, quota from int_cluster_quotas").fetchall())
            built_splits = None
            if "minipile" in tables:
                built_splits = dict(con.execute("select split, count(*) from minipile group by split").fetchall())

        clusters = [
            ClusterSummary(cluster_id=cid, n_docs=n_docs, average_distance=avg,
                           main_source=main if main is not None else "(empty)", main_share=share or 0.0,
                           x=x or 0.0, y=y or 0.0, sources=mix.get(cid, []))
            for cid, n_docs, avg, main, share, x, y, _, _ in rows
        ]
        variance = (float(rows[0][7] or 0.0), float(rows[0][8] or 0.0)) if rows else (0.0, 0.0)
        return Overview(clusters, n_documents, built_exclusions, built_quotas, built_splits, variance)

    def inspection(self, cluster_id: int) -> Inspection | None:
        with self.connect() as con:
            row = con.execute("""
                select total_examples, average_distance, sum_distance, closest, farthest
                from cluster_inspection where cluster_id = ?
            """, [cluster_id]).fetchone()
        if row is None:
            return None

        def examples(items) -> list[Example]:
            return [Example(e["doc_id"], e["distance"], None, e["excerpt"]) for e in items or []]

        return Inspection(row[0], row[1], row[2], examples(row[3]), examples(row[4]))

    def examples(self, cluster_id: int, offset: int, limit: int, farthest_first: bool = False,
                 excerpt_chars: int = 600) -> list[Example]:
        """A page of the cluster's documents ordered by distance to its centroid."""
        direction = "desc" if farthest_first else "asc"
        with self.connect() as con:
            rows = con.execute(f"""
                select a.doc_id, a.distance, d.source, left(d.text, ?) as excerpt, length(d.text) as n_chars
                from cluster_assignments a
                join documents d using (doc_id)
                where a.cluster_id = ?
                order by a.distance {direction}, a.doc_id
                limit ? offset ?
            """, [excerpt_chars, cluster_id, limit, offset]).fetchall()
        return [Example(*row) for row in rows]


def scan_tasks(warehouse: Warehouse, cluster_id: int, limit: int = 10) -> list[tuple]:
    """The cluster's most confident prompt-scan tasks (model, text, token_short, token_long, p_short,
    p_long), or nothing when no scan was built (`make scan`)."""
    with warehouse.connect() as con:
        if "prompt_scan" not in warehouse.tables(con):
            return []
        return con.execute("""
            select model, text, token_short, token_long, p_short, p_long
            from prompt_scan where cluster_id = ?
            order by p_long desc, model, text limit ?
        """, [cluster_id, limit]).fetchall()


def project_total() -> int:
    """MiniPile's size by dbt_project.yml's defaults: train_size + validation_size + test_size."""
    return sum(int(default(name)) for name in ("train_size", "validation_size", "test_size"))

"""Read-only queries over the warehouse for the review page.

Every call opens its own read-only DuckDB connection and closes it (a running `dbt build`
is never blocked by the review server); the cluster overview, which needs a PCA and a
scan of the assignments, is cached until the warehouse file changes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

REQUIRED_TABLES = ("documents", "cluster_centroids", "cluster_assignments", "cluster_inspection")


class WarehouseUnavailable(Exception):
    """The warehouse cannot be read now; the message says what to do."""


@dataclass(frozen=True)
class ClusterSummary:
    cluster_id: int
    n_docs: int
    average_distance: float | None
    sources: list[tuple[str, int]]  # (source, documents), most documents first
    x: float = 0.0
    y: float = 0.0

    @property
    def main_source(self) -> str:
        return self.sources[0][0] if self.sources else "(empty)"

    @property
    def main_share(self) -> float:
        return self.sources[0][1] / self.n_docs if self.sources and self.n_docs else 0.0


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


class Warehouse:
    """The warehouse file, opened read-only per call. `root` resolves the views' relative paths."""

    def __init__(self, db: Path, root: Path | None = None) -> None:
        self.db = Path(db)
        self.root = Path(root) if root is not None else Path.cwd()
        self._cache_key: tuple | None = None
        self._cache: Overview | None = None
        self._lock = threading.Lock()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.db.exists():
            raise WarehouseUnavailable(
                f"The warehouse {self.db} does not exist: run `make minipile` first "
                "(or point --db / $PILEHOUSE_DB at a built warehouse)."
            )
        try:
            con = duckdb.connect(str(self.db), read_only=True)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise WarehouseUnavailable(
                    f"The warehouse {self.db} is locked by another process (a running dbt build?): "
                    "reload this page when it has finished."
                ) from exc
            raise WarehouseUnavailable(f"Cannot open the warehouse {self.db}: {exc}") from exc
        try:
            # views over the lake use paths relative to the project root
            con.execute(f"set file_search_path = '{str(self.root.resolve()).replace(chr(39), chr(39) * 2)}'")
            yield con
        finally:
            con.close()

    @staticmethod
    def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
        return {row[0] for row in con.execute(
            "select table_name from information_schema.tables where table_schema = 'main'"
        ).fetchall()}

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
                select c.cluster_id, c.n_docs, c.centroid, i.average_distance
                from cluster_centroids c
                left join cluster_inspection i using (cluster_id)
                order by c.cluster_id
            """).fetchall()
            mix: dict[int, list[tuple[str, int]]] = {}
            for cluster_id, source, n in con.execute("""
                select a.cluster_id, coalesce(d.source, 'unknown') as source, count(*) as n
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

        coords, variance = project_2d([r[2] for r in rows])
        clusters = [
            ClusterSummary(
                cluster_id=cid, n_docs=n_docs, average_distance=avg, sources=mix.get(cid, []),
                x=float(coords[i, 0]), y=float(coords[i, 1]),
            )
            for i, (cid, n_docs, _, avg) in enumerate(rows)
        ]
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


def project_2d(centroids: list) -> tuple[np.ndarray, tuple[float, float]]:
    """PCA of the centroids to 2-D (deterministic: full SVD), with the explained variance ratios."""
    if not centroids:
        return np.zeros((0, 2)), (0.0, 0.0)
    matrix = np.asarray(centroids, dtype=np.float64)
    n_components = min(2, matrix.shape[0], matrix.shape[1])
    coords = np.zeros((matrix.shape[0], 2))
    variance = [0.0, 0.0]
    if matrix.shape[0] > 1:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=n_components, svd_solver="full")
        coords[:, :n_components] = pca.fit_transform(matrix)
        variance[:n_components] = [float(v) for v in pca.explained_variance_ratio_]
    return coords, (variance[0], variance[1])


def project_total(root: Path) -> int | None:
    """train_size + validation_size + test_size from dbt_project.yml (the defaults)."""
    path = Path(root) / "dbt_project.yml"
    if not path.exists():
        return None
    import yaml

    variables = (yaml.safe_load(path.read_text()) or {}).get("vars", {})
    try:
        return int(variables["train_size"]) + int(variables["validation_size"]) + int(variables["test_size"])
    except (KeyError, TypeError, ValueError):
        return None

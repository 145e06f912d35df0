"""SemDeDup (Abbas et al. 2023) inside each k-means cluster, as NeMo Curator computes it.

Inside a cluster the documents are put in the keep rule's order (rank 0 first):

- ``farthest``: cosine distance to the centroid descending (NeMo Curator's ``hard``: the
  least prototypical kept), ties to the smaller doc_id;
- ``closest``: distance ascending (NeMo Curator's ``easy``), ties to the smaller doc_id;
- ``random``: md5('semdedup:<seed>:<doc_id>') ascending, a seeded hash of the id alone.

Each document's *similarity* is its largest cosine similarity to any document ranked before
it (rank 0 has none and is always kept); it is removed when that similarity >= 1 - eps. The
similarity does not depend on eps, so one pass gives the ECDF of every eps. ``duplicate_of``
is the most similar earlier document that is itself kept (the first document of a cluster
always is, so every removed document has one).

The pass is exact (every pair, no approximate neighbours) and blocked: rows of ``block_size``
documents against column blocks of ``block_size`` earlier documents, so besides the
cluster's float32 embeddings (n x dim x 4 bytes) it holds two block_size x block_size
float64 similarity blocks. Products are float64, so a block size changes no decision.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

KEEP_RULES = ("farthest", "closest", "random")

#: semantic_duplicates' columns
DUPLICATE_SCHEMA = pa.schema([
    ("doc_id", pa.int64()),
    ("duplicate_of", pa.int64()),
    ("similarity", pa.float64()),
    ("cluster_id", pa.int32()),
    ("nearest_earlier", pa.int64()),
    ("similarity_to_kept", pa.float64()),
    ("keep_rank", pa.int64()),
])
#: one row per document of the pass (the ECDF's input)
SIMILARITY_SCHEMA = pa.schema([
    ("doc_id", pa.int64()),
    ("cluster_id", pa.int32()),
    ("keep_rank", pa.int64()),
    ("similarity", pa.float64()),
    ("nearest_earlier", pa.int64()),
])


def check_keep(keep: str) -> str:
    if keep not in KEEP_RULES:
        raise ValueError(f"semdedup_keep must be one of {', '.join(KEEP_RULES)}, not {keep!r}")
    return keep


def check_eps(eps: float) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"semdedup_eps must be a number in [0, 2) or null, not {eps!r}") from None
    if not 0.0 <= eps < 2.0:
        raise ValueError(f"semdedup_eps must be in [0, 2) (a cosine-distance threshold), not {eps!r}")
    return eps


def check_block_size(block_size: int) -> int:
    block_size = int(block_size)
    if block_size < 1:
        raise ValueError(f"semdedup_block_size must be a positive integer, not {block_size!r}")
    return block_size


def random_key(doc_id: int, seed: int) -> bytes:
    """The random rule's sort key: md5('semdedup:<seed>:<doc_id>') (as DuckDB's md5 of that string)."""
    return hashlib.md5(f"semdedup:{seed}:{int(doc_id)}".encode()).hexdigest().encode()


def keep_order(doc_ids: np.ndarray, distances: np.ndarray, keep: str, seed: int = 42) -> np.ndarray:
    """Indices of the cluster's documents in keep order (the first is always kept)."""
    check_keep(keep)
    doc_ids = np.asarray(doc_ids, dtype=np.int64)
    distances = np.asarray(distances, dtype=np.float64)
    if doc_ids.shape != distances.shape:
        raise ValueError("doc_ids and distances must have the same length")
    if keep == "farthest":
        return np.lexsort((doc_ids, -distances))
    if keep == "closest":
        return np.lexsort((doc_ids, distances))
    keys = np.array([random_key(d, seed) for d in doc_ids.tolist()], dtype="S32")
    return np.lexsort((doc_ids, keys))


@dataclass(frozen=True)
class EarlierSimilarity:
    """Per document, in rank order: the pass's results (indices are ranks; -1: none)."""

    similarity: np.ndarray  # max cosine to any earlier document; -inf for rank 0
    nearest: np.ndarray  # rank of that document (ties: the earliest)
    removed: np.ndarray  # similarity >= threshold (all False without a threshold)
    duplicate_of: np.ndarray  # rank of the most similar earlier kept document (removed only)
    similarity_to_kept: np.ndarray  # its cosine; nan where not removed


def _update(best: np.ndarray, arg: np.ndarray, block: np.ndarray, offset: int) -> None:
    """Fold a similarity block into running maxima; strict > keeps the earliest column on ties."""
    if block.shape[1] == 0:
        return
    cols = block.argmax(axis=1)
    values = block[np.arange(block.shape[0]), cols]
    better = values > best
    best[better] = values[better]
    arg[better] = cols[better] + offset


def earlier_similarity(units: np.ndarray, block_size: int = 1024, threshold: float | None = None) -> EarlierSimilarity:
    """The exact blocked pass over a cluster's unit vectors, already in keep order.

    ``threshold`` (1 - eps): also decide removals and find each removed document's most
    similar earlier kept one. Memory: ``units`` plus two block_size^2 float64 blocks.
    """
    block_size = check_block_size(block_size)
    units = np.asarray(units)
    if units.ndim != 2:
        raise ValueError(f"units must be a 2-D array (documents x dim), not shape {units.shape}")
    n = units.shape[0]
    similarity = np.full(n, -np.inf)
    nearest = np.full(n, -1, dtype=np.int64)
    removed = np.zeros(n, dtype=bool)
    kept_best = np.full(n, -np.inf)
    kept_arg = np.full(n, -1, dtype=np.int64)
    for a in range(0, n, block_size):
        b = min(a + block_size, n)
        rows = units[a:b].astype(np.float64)
        best, arg = similarity[a:b], nearest[a:b]  # views: updated in place
        diagonal = None
        for c in range(0, b, block_size):
            d = min(c + block_size, b)
            block = rows @ units[c:d].astype(np.float64).T
            if d > a:  # the diagonal block: only columns ranked before the row count
                block[np.arange(a, b)[:, None] <= np.arange(c, d)[None, :]] = -np.inf
                diagonal = block
            elif threshold is not None:  # earlier blocks: their kept flags are final
                _update(kept_best[a:b], kept_arg[a:b], np.where(~removed[c:d][None, :], block, -np.inf), c)
            _update(best, arg, block, c)
        if threshold is None:
            continue
        removed[a:b] = best >= threshold
        if diagonal is not None:
            _update(kept_best[a:b], kept_arg[a:b], np.where(~removed[a:b][None, :], diagonal, -np.inf), a)
    duplicate_of = np.where(removed, kept_arg, -1)
    similarity_to_kept = np.where(removed, kept_best, np.nan)
    return EarlierSimilarity(similarity, nearest, removed, duplicate_of, similarity_to_kept)


def brute_force(units: np.ndarray, threshold: float) -> EarlierSimilarity:
    """The same results from the full n x n matrix and a loop: the tests' reference."""
    units = np.asarray(units, dtype=np.float64)
    n = len(units)
    full = units @ units.T
    similarity = np.full(n, -np.inf)
    nearest = np.full(n, -1, dtype=np.int64)
    removed = np.zeros(n, dtype=bool)
    duplicate_of = np.full(n, -1, dtype=np.int64)
    to_kept = np.full(n, np.nan)
    for j in range(1, n):
        nearest[j] = int(np.argmax(full[j, :j]))
        similarity[j] = full[j, nearest[j]]
        removed[j] = similarity[j] >= threshold
        if removed[j]:
            kept = [i for i in range(j) if not removed[i]]
            best = max(kept, key=lambda i: (full[j, i], -i))
            duplicate_of[j], to_kept[j] = best, full[j, best]
    return EarlierSimilarity(similarity, nearest, removed, duplicate_of, to_kept)


def embeddings_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list<float> column as an n x dim float32 matrix (every row the same length)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("a document has no embedding: run the embedding (int_documents_embedded) first")
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    lengths = np.diff(column.offsets.to_numpy())
    if (lengths != lengths[0]).any():
        raise ValueError("embeddings of different lengths in one cluster")
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(column), int(lengths[0]))


def iter_clusters(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, pa.Table]]:
    """(cluster_id, its rows) from batches sorted by cluster_id: one cluster in memory at a time."""
    pending: list[pa.Table] = []
    current: int | None = None
    for batch in batches:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        if table.num_rows == 0:
            continue
        ids = table.column("cluster_id").to_numpy()
        if (np.diff(ids) < 0).any() or (current is not None and ids[0] < current):
            raise ValueError("iter_clusters needs rows sorted by cluster_id")
        bounds = np.flatnonzero(np.diff(ids)) + 1
        for start, stop in zip([0, *bounds.tolist()], [*bounds.tolist(), len(ids)], strict=True):
            cid = int(ids[start])
            if current is not None and cid != current:
                yield current, pa.concat_tables(pending)
                pending = []
            current = cid
            pending.append(table.slice(start, stop - start))
    if current is not None:
        yield current, pa.concat_tables(pending)


@dataclass(frozen=True)
class ClusterPass:
    cluster_id: int
    doc_ids: np.ndarray  # in keep order
    result: EarlierSimilarity

    def duplicates(self) -> pa.Table:
        r, ids = self.result, self.doc_ids
        ranks = np.flatnonzero(r.removed)
        return pa.table({
            "doc_id": pa.array(ids[ranks], pa.int64()),
            "duplicate_of": pa.array(ids[r.duplicate_of[ranks]], pa.int64()),
            "similarity": pa.array(r.similarity[ranks], pa.float64()),
            "cluster_id": pa.array(np.full(len(ranks), self.cluster_id), pa.int32()),
            "nearest_earlier": pa.array(ids[r.nearest[ranks]], pa.int64()),
            "similarity_to_kept": pa.array(r.similarity_to_kept[ranks], pa.float64()),
            "keep_rank": pa.array(ranks, pa.int64()),
        }, schema=DUPLICATE_SCHEMA)

    def similarities(self) -> pa.Table:
        r, ids = self.result, self.doc_ids
        first = r.nearest < 0
        return pa.table({
            "doc_id": pa.array(ids, pa.int64()),
            "cluster_id": pa.array(np.full(len(ids), self.cluster_id), pa.int32()),
            "keep_rank": pa.array(np.arange(len(ids)), pa.int64()),
            "similarity": pa.array(r.similarity, pa.float64(), mask=first),
            "nearest_earlier": pa.array(ids[np.maximum(r.nearest, 0)], pa.int64(), mask=first),
        }, schema=SIMILARITY_SCHEMA)


def dedup_clusters(batches: Iterable[pa.RecordBatch], keep: str = "farthest", seed: int = 42,
                   eps: float | None = None, block_size: int = 1024) -> Iterator[ClusterPass]:
    """The pass over every cluster of ``batches`` (doc_id, cluster_id, distance, embedding;
    sorted by cluster_id). ``eps`` None: similarities only (the ECDF)."""
    check_keep(keep)
    threshold = None if eps is None else 1.0 - check_eps(eps)
    for cluster_id, table in iter_clusters(batches):
        doc_ids = table.column("doc_id").to_numpy().astype(np.int64)
        order = keep_order(doc_ids, table.column("distance").to_numpy(), keep, seed)
        units = embeddings_matrix(table.column("embedding").take(pa.array(order)))
        yield ClusterPass(cluster_id, doc_ids[order], earlier_similarity(units, block_size, threshold))


def semantic_duplicates(batches: Iterable[pa.RecordBatch], eps: float, keep: str = "farthest", seed: int = 42,
                        block_size: int = 1024) -> pa.Table:
    """One row per removed document (semantic_duplicates), ordered by cluster and keep rank."""
    tables = [p.duplicates() for p in dedup_clusters(batches, keep, seed, eps, block_size)]
    return pa.concat_tables([DUPLICATE_SCHEMA.empty_table(), *tables])


DEFAULT_ECDF_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3)


def ecdf(batches: Iterable[pa.RecordBatch], grid: Sequence[float] = DEFAULT_ECDF_GRID, keep: str = "farthest",
         seed: int = 42, block_size: int = 1024) -> pa.Table:
    """Rows eps, threshold, documents_removed, share_removed, clusters_touched: what each eps would remove."""
    grid = sorted({check_eps(e) for e in grid})
    if not grid:
        raise ValueError("semdedup_ecdf_grid is empty")
    sims: list[np.ndarray] = []
    clusters: list[np.ndarray] = []
    n_docs = 0
    for p in dedup_clusters(batches, keep, seed, None, block_size):
        n_docs += len(p.doc_ids)
        sims.append(p.result.similarity)
        clusters.append(np.full(len(p.doc_ids), p.cluster_id))
    sim = np.concatenate(sims) if sims else np.zeros(0)
    cid = np.concatenate(clusters) if clusters else np.zeros(0, dtype=np.int64)
    removed = [int((sim >= 1.0 - e).sum()) for e in grid]
    return pa.table({
        "eps": pa.array(grid, pa.float64()),
        "threshold": pa.array([1.0 - e for e in grid], pa.float64()),
        "documents_removed": pa.array(removed, pa.int64()),
        "share_removed": pa.array([r / n_docs if n_docs else 0.0 for r in removed], pa.float64()),
        "clusters_touched": pa.array([len(np.unique(cid[sim >= 1.0 - e])) for e in grid], pa.int64()),
        "documents": pa.array([n_docs] * len(grid), pa.int64()),
    })

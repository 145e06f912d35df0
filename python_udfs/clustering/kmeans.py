"""Spherical mini-batch k-means over streamed, L2-normalised embeddings.

scikit-learn's ``MiniBatchKMeans.partial_fit`` does the updates; after each step the
centroids are re-normalised so that the clustering is by cosine similarity, as in MiniPile.
``partial_fit`` initialises only once and ignores ``n_init``, so the ``n_init`` k-means++
candidates are drawn here on the first batch and the one with the lowest inertia is kept,
as ``MiniBatchKMeans.fit`` does.

The fit is ONE sequential stream: every mini-batch step starts from the centroids the step
before left, so it is never split over threads, parts or executors (only the embedding and
the assignment are). What can change is which embeddings the stream holds and in what order:

- ``kmeans_fit_fraction`` (``KMeansConfig.fit_fraction``): fit on a seeded sample, the
  documents whose ``md5('kmeans-fit:<seed>:<doc_id>')`` falls below the fraction
  (``fit_sample_predicate``). It depends on the doc_id and the seed alone, so the same
  documents are drawn whatever the part layout, the threads or the executor, and a larger
  fraction draws a superset of a smaller one. Assignment still assigns every document.
- hash order (the default, ``hash_order_stream``): mini-batches drawn in the seeded
  ``md5('kmeans:<seed>:<doc_id>')`` order over all embeddings, so that a corpus stored source
  by source still gives mixed batches.
- part order (``kmeans_concurrent``, ``FitBeside`` and ``part_order_centroids``): embedding
  part 0, 1, 2, ... with rows in doc_id order within a part, so the first epoch can run
  beside the embedding, consuming each part as it lands. Its centroids depend only on the
  parts' contents and their order (never on when a part landed, or on the executor), and
  differ from the hash-order fit's.

Assignment is one runner step over the embedding parts: a part is one embedding file
(read where it is computed), its content digest is that file's fingerprint and the
centroids' digest is in the settings, so new centroids reassign everything and a new
embedding part reassigns only itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from python_udfs.runner.executors import Executor
from python_udfs.runner.run import RunStats, run_step
from python_udfs.runner.step import Part, Step, Worker
from python_udfs.settings import ROOT, default, int_or_none


@dataclass
class KMeansConfig:
    """Clustering settings (dbt vars).

    n_clusters: k (MiniPile: 220 for the Pile's 22 sources, i.e. 10 per source).
    batch_size: embeddings per mini-batch step (MiniPile: 16,384).
    n_init: k-means++ initialisations tried; the best on the first batch is kept.
    seed: random state for initialisation and sklearn's reassignment.
    max_epochs: passes over the stream at most.
    tol: stop once no centroid moved more than this (L2) over a whole epoch.
    fit_fraction: share of the embeddings the fit uses, in (0, 1]: 1.0 (the default) fits on
        all of them; 0.1 on the seeded tenth ``fit_sample_predicate`` picks.
    """

    n_clusters: int
    batch_size: int = default("kmeans_batch_size")
    n_init: int = default("kmeans_n_init")
    seed: int = default("seed")
    max_epochs: int = default("kmeans_max_epochs")
    tol: float = default("kmeans_tol")
    fit_fraction: float = default("kmeans_fit_fraction")

    def __post_init__(self) -> None:
        self.fit_fraction = check_fit_fraction(self.fit_fraction)


def check_fit_fraction(value: object) -> float:
    """``kmeans_fit_fraction`` as a float in (0, 1], or a ValueError saying what is allowed."""
    try:
        fraction = float(value)
    except (TypeError, ValueError):
        fraction = float("nan")
    if not 0.0 < fraction <= 1.0:  # NaN fails too
        raise ValueError(f"kmeans_fit_fraction must be a number in (0, 1] (1.0 fits on every embedding, "
                         f"0.1 on a seeded tenth of them), not {value!r}")
    return fraction


def config_from_vars(values: dict, n_sources: int) -> KMeansConfig:
    """The k-means settings from the dbt vars a model read (``n_clusters``, ``clusters_per_source``,
    ``seed``, ``kmeans_*``): k is ``n_clusters`` when set, else ``clusters_per_source`` x sources.

    Both ``int_kmeans_centroids`` and ``int_documents_embedded`` (which fits beside the
    embedding when ``kmeans_concurrent`` is on) build their settings here, so they agree.
    """
    k = int_or_none(values["n_clusters"]) or int(values["clusters_per_source"]) * int(n_sources)
    return KMeansConfig(
        n_clusters=k,
        batch_size=int(values["kmeans_batch_size"]),
        n_init=int(values["kmeans_n_init"]),
        seed=int(values["seed"]),
        max_epochs=int(values["kmeans_max_epochs"]),
        tol=float(values["kmeans_tol"]),
        fit_fraction=check_fit_fraction(values["kmeans_fit_fraction"]),
    )


def batch_to_numpy(batch: pa.RecordBatch, column: str = "embedding") -> np.ndarray:
    """A list<float> arrow column as a dense float32 matrix, without a Python loop."""
    array = batch.column(column)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if array.null_count:
        raise ValueError("embeddings hold NULL rows")
    lengths = pc.min_max(pc.list_value_length(array))
    if lengths["min"] != lengths["max"]:  # e.g. [3, 1] would otherwise reshape to (2, 2)
        raise ValueError("embeddings have differing lengths")
    flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, flat.size // n)


def normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def rebatch(batches: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Concatenate/cut matrices into batches of exactly ``size`` rows (the last may be short)."""
    buffer: list[np.ndarray] = []
    held = 0
    for x in batches:
        buffer.append(x)
        held += len(x)
        while held >= size:
            joined = np.concatenate(buffer)
            yield joined[:size]
            rest = joined[size:]
            buffer, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield np.concatenate(buffer)


def best_init(x: np.ndarray, config: KMeansConfig) -> np.ndarray:
    """k-means++ ``n_init`` times on ``x``; keep the candidate with the lowest cosine inertia."""
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.RandomState(config.seed)
    best, best_inertia = None, np.inf
    for _ in range(config.n_init):
        centres, _ = kmeans_plusplus(x, config.n_clusters, random_state=rng.randint(2**31 - 1))
        centres = normalise(centres)
        inertia = float(np.sum(1.0 - np.max(x @ centres.T, axis=1)))
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def fit(
    stream: Callable[[], Iterable[np.ndarray]],
    config: KMeansConfig,
    progress: bool = True,
    desc: str = "k-means",
) -> tuple[np.ndarray, dict]:
    """Fit on a re-playable stream of embedding matrices; returns (centroids, fit info).

    ``stream()`` is called once per epoch and must yield the same rows in the same order; it
    may block (``FitBeside``'s first epoch waits for each embedding part to land). The rows
    are cut into mini-batches of exactly ``batch_size`` whatever the chunks, so the result
    depends on the rows and their order only. ``info["n_docs"]`` is the embeddings per epoch
    (the ``n_fit`` column).
    """
    from sklearn.cluster import MiniBatchKMeans

    km = None
    info = {"epochs": 0, "steps": 0, "n_docs": 0, "last_shift": None}
    epochs = range(config.max_epochs)
    shown = time.monotonic()
    sampled = "" if config.fit_fraction >= 1.0 else f" (kmeans_fit_fraction {config.fit_fraction:g} kept them)"
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"{desc} k={config.n_clusters}", unit="epoch", file=sys.stderr)
    for epoch in epochs:
        before = None if km is None else km.cluster_centers_.copy()
        n_docs = 0
        for x in rebatch(stream(), config.batch_size):
            x = normalise(x.astype(np.float32, copy=False))
            if km is None:
                if len(x) < config.n_clusters:
                    raise ValueError(
                        f"cannot form {config.n_clusters} clusters from a first batch of "
                        f"{len(x)} embeddings{sampled}: lower n_clusters/clusters_per_source, "
                        + ("raise kmeans_fit_fraction " if sampled else "") + "or embed more documents"
                    )
                km = MiniBatchKMeans(
                    n_clusters=config.n_clusters, init=best_init(x, config), n_init=1,
                    batch_size=config.batch_size, random_state=config.seed,
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn warns on short final batches
                km.partial_fit(x)
            km.cluster_centers_[:] = normalise(km.cluster_centers_)
            n_docs += len(x)
            info["steps"] += 1
            # an epoch over the Pile is thousands of batches: show them go by, once a second
            if progress and time.monotonic() - shown >= 1.0:
                shown, shift = time.monotonic(), info["last_shift"]
                epochs.set_postfix(batches=info["steps"], docs=n_docs,
                                   shift="-" if shift is None else f"{shift:.2e}")
        if km is None:
            raise ValueError(f"no embeddings to cluster{sampled}"
                             + (": raise kmeans_fit_fraction" if sampled else ""))
        info["epochs"], info["n_docs"] = epoch + 1, n_docs
        if before is not None:
            shift = float(np.max(np.linalg.norm(km.cluster_centers_ - before, axis=1)))
            info["last_shift"] = shift
            if progress:
                epochs.set_postfix(batches=info["steps"], docs=n_docs, shift=f"{shift:.2e}")
            if shift < config.tol:
                break
    return km.cluster_centers_.astype(np.float32), info


#: float32's unit roundoff: a float32 dot product of length d is within d * u * |x| * |c| of the
#: exact one whatever the order BLAS sums it in (Higham's bound for any summation order).
_FLOAT32_U = 2.0 ** -24

#: What one assignment block holds: its rows of embeddings and their (rows, k) float32
#: similarities, small enough to stay in cache while argmax reads them back, big enough that
#: the matmul runs at BLAS speed.
ASSIGN_BLOCK_BYTES = 4 * 2**20

#: Up to this many centroids the assignment keeps its similarities k x rows (see ``_AssignContext.run``).
SMALL_K = 64


def assign_block_rows(k: int, d: int, block_bytes: int = ASSIGN_BLOCK_BYTES) -> int:
    """Rows per assignment block: a block's float32 rows (d) and similarities (k) fill
    ``block_bytes``, rounded down to a multiple of 64 rows, at least 64 and at most 16,384."""
    rows = block_bytes // (4 * max(int(k) + int(d), 1))
    return int(min(16384, max(64, rows // 64 * 64)))


ASSIGN_PATHS = ("fused", "numpy")


@functools.lru_cache(maxsize=1)
def _fused_kernel():
    """The ``assign_kernel`` module (numba's compiled row loops), or None where numba is not installed."""
    try:
        from python_udfs.clustering import assign_kernel
    except ImportError:
        return None
    return assign_kernel


def assign_path(path: str | None = None) -> str:
    """The assignment's row work: ``fused`` (one compiled loop per row, ``assign_kernel``) where
    numba is installed, else ``numpy``; ``path`` asks for one (``fused`` without numba is an error)."""
    if path is None:
        return "fused" if _fused_kernel() is not None else "numpy"
    if path not in ASSIGN_PATHS:
        raise ValueError(f"assign path must be one of {ASSIGN_PATHS}, not {path!r}")
    if path == "fused" and _fused_kernel() is None:
        raise RuntimeError("the fused assignment needs numba: pip install numba (or use path='numpy')")
    return path


def assign(x: np.ndarray, centroids: np.ndarray, block_rows: int | None = None,
           threads: int | None = None, path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine (ties: lowest id) and distance = 1 - dot, for unit vectors ``x``.

    Blocked: ``block_rows`` rows at a time (default ``assign_block_rows(k, d)``), one float32
    ``X @ C.T`` into a preallocated buffer, then argmax; no per-row Python. By default
    (``threads`` None or 1) one thread walks the blocks and each block's matmul uses every
    BLAS thread; ``threads`` > 1 shares the blocks among that many threads, each running
    single-threaded BLAS and its own argmax and distances, as scikit-learn's k-means does.
    Measured on 2 cores (``make bench-kmeans``), the single walker is faster at k = 40, 220
    and 1,000 (numpy path: 0.44x, 0.76x and 0.88x numpy's matmul rate, against 0.34x, 0.46x
    and 0.79x with 2 threads; fused path at k = 40: 0.65x against 0.37x): single-threaded
    BLAS in each thread is slower than both cores in one matmul.

    The result does not depend on the block size, the threads or the BLAS kernel (the float32
    sums' order): a row whose best two float32 similarities are closer than twice the
    float32 error bound (``4 (d + 2) u |x| max|c|``) is decided again in float64, over every
    centroid within that margin, summed in a fixed order, ties going to the lowest id. Every
    other row's winner is the same under any summation order. ``distance`` is ``1 - x . c``
    of the winner as float64, its dot product recomputed row by row (``np.vecdot``: one
    single-threaded float32 dot per row, the same kernel for every row of this machine; not
    read back from the blocked matmul), so it too is the same whatever the blocks or threads
    (the per-cluster ``sum_distance`` the sampling strategies read adds these up).

    ``path`` (``assign_path``): after each block's matmul, the per-row work (best two,
    norms, near ties, distances) runs either as numpy passes over the block or, by default
    where numba is installed, fused in one compiled loop per row (``assign_kernel``; for
    k > ``SMALL_K`` after numpy's SIMD argmax and max along the rows): the same decisions,
    each row read once while it is in cache. On 2 AVX2 cores (``make bench-kmeans``) that is
    0.63x, 0.83x and 0.97x numpy's matmul rate at k = 40, 220 and 1,000, against 0.43x,
    0.69x and 0.89x for the numpy passes. Each path is deterministic on its own; their
    distances may differ in the last bits.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    n, k = len(x), len(c)
    if n == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64)
    if k == 0:
        raise ValueError("no centroids to assign to")
    if x.shape[1] != c.shape[1]:
        raise ValueError(f"embeddings are {x.shape[1]}-dimensional, centroids {c.shape[1]}-dimensional")
    d = x.shape[1]
    rows = max(1, int(block_rows or assign_block_rows(k, d)))
    cluster = np.empty(n, dtype=np.int32)
    distance = np.empty(n, dtype=np.float64)
    blocks = [(start, min(start + rows, n)) for start in range(0, n, rows)]
    ctx = _AssignContext(x, c, cluster, distance, min(rows, n), fused=assign_path(path) == "fused")
    workers = min(len(blocks), max(1, int(threads or 1)))
    if workers == 1:
        ctx.run(blocks)
        return cluster, distance
    from concurrent.futures import ThreadPoolExecutor

    with _blas_controller().limit(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(ctx.run, [blocks[i::workers] for i in range(workers)]))
    return cluster, distance


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_threads() -> int:
    """The threads numpy's BLAS uses now (OpenBLAS: one per core unless limited)."""
    libs = _blas_controller().select(user_api="blas").lib_controllers
    return max([lib.num_threads for lib in libs] or [1])


class _AssignContext:
    """What the assignment's threads share: the inputs, the outputs they fill, the block size."""

    def __init__(self, x: np.ndarray, c: np.ndarray, cluster: np.ndarray, distance: np.ndarray, rows: int,
                 fused: bool = False) -> None:
        self.x, self.c, self.cluster, self.distance, self.rows = x, c, cluster, distance, rows
        self.kernel = _fused_kernel() if fused else None
        self.ct = np.ascontiguousarray(c.T)
        self.c64 = c.astype(np.float64)
        c_norm = float(np.max(np.sqrt(np.einsum("ij,ij->i", self.c64, self.c64))))
        self.bound = 4.0 * (x.shape[1] + 2) * _FLOAT32_U * c_norm

    def run(self, blocks: list[tuple[int, int]]) -> None:
        """Assign ``blocks`` (row ranges) with this thread's own buffers.

        For small k the similarities are kept k x rows (``C @ X.T``): the max over k is then
        elementwise over rows (SIMD), where a max along rows of k values is a short loop per row.
        The winners' centroids are gathered into a preallocated buffer (``np.take`` with
        ``mode="clip"``: with ``"raise"`` it would buffer ``out`` again) and dotted row by row
        (``np.vecdot``); a fresh ``c[win]`` per block cost as much as the block's matmul at k = 40.
        """
        x, c, k = self.x, self.c, len(self.c)
        if self.kernel is not None:
            buffer = np.empty(self.rows * k, dtype=np.float32)
            for start, stop in blocks:
                m = stop - start
                s = buffer[: k * m].reshape(m, k)
                np.matmul(x[start:stop], self.ct, out=s)
                out = (self.cluster[start:stop], self.distance[start:stop])
                if k <= SMALL_K:
                    self.kernel.assign_rows(s, x[start:stop], c, self.c64, self.bound, *out)
                    continue
                self.kernel.finish_rows(s, x[start:stop], c, self.c64, self.bound, *_best_two_rows(s), *out)
            return
        transposed = k <= SMALL_K
        buffer = np.empty(self.rows * k, dtype=np.float32)
        gathered = np.empty((self.rows, x.shape[1]), dtype=np.float32)
        for start, stop in blocks:
            m = stop - start
            xb, local = x[start:stop], np.arange(m)
            if transposed:
                s = buffer[: k * m].reshape(k, m)
                np.matmul(c, xb.T, out=s)
                win = np.argmax(s, axis=0)
                best = s[win, local]
            else:  # k > SMALL_K
                s = buffer[: k * m].reshape(m, k)
                np.matmul(xb, self.ct, out=s)
                win, best, second = _best_two_rows(s)
            if k > 1:
                # the margin needs only an upper bound of |x| (any summation order will do)
                margin = self.bound * np.sqrt(np.vecdot(xb, xb), dtype=np.float64)
                if transposed:
                    s[win, local] = -np.inf
                    second = np.max(s, axis=0)
                    s[win, local] = best
                near = np.flatnonzero(best - second <= margin)
                if len(near):
                    sims = s[:, near].T if transposed else s[near]
                    win[near] = _exact_winners(xb[near], self.c64, sims, best[near], margin[near])
            g = gathered[:m]
            np.take(c, win, axis=0, out=g, mode="clip")
            self.distance[start:stop] = 1.0 - np.vecdot(xb, g).astype(np.float64)
            self.cluster[start:stop] = win


def _best_two_rows(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``s`` (rows x k): the argmax (first on ties), its value and the second-best
    value, by numpy's SIMD argmax and max along the rows; ``s`` is left as it was."""
    local = np.arange(len(s))
    win = np.argmax(s, axis=1)
    best = s[local, win]
    s[local, win] = -np.inf
    second = np.max(s, axis=1)
    s[local, win] = best
    return win, best, second


def _exact_winners(x: np.ndarray, c64: np.ndarray, sims: np.ndarray, best: np.ndarray,
                   margin: np.ndarray) -> np.ndarray:
    """The rows' nearest centroid in float64 among those within ``margin`` of their float32 best
    (the true nearest is always one of them): products summed in a fixed order, ties to the lowest id."""
    row, col = np.nonzero(sims >= (best - margin)[:, None])
    exact = np.sum(x[row].astype(np.float64) * c64[col], axis=1)
    order = np.lexsort((col, -exact, row))  # by row, then highest similarity, then lowest id
    row, col = row[order], col[order]
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    return col[first]


ASSIGNMENT_SCHEMA = pa.schema([("doc_id", pa.int64()), ("cluster_id", pa.int32()), ("distance", pa.float64())])


def centroid_digest(centroids: np.ndarray) -> str:
    """Changes when any centroid changes (or k or the dimension does)."""
    x = np.ascontiguousarray(centroids, dtype=np.float32)
    return hashlib.sha1(f"{x.shape}".encode() + x.tobytes()).hexdigest()


def assign_part(rows: pa.Table, centroids: np.ndarray) -> pa.Table:
    """One part: (doc_id, embedding) rows in, (doc_id, cluster_id, distance) out, in the same order."""
    cluster, distance = assign(batch_to_numpy(rows), centroids)
    return pa.table([rows.column("doc_id").cast(pa.int64()), pa.array(cluster, pa.int32()),
                     pa.array(distance, pa.float64())], schema=ASSIGNMENT_SCHEMA)


def make_assigner(centroids: np.ndarray) -> Worker:
    return functools.partial(assign_part, centroids=normalise(np.asarray(centroids, dtype=np.float32)))


def read_embedding_part(path: str) -> pa.Table:
    """An embedding part's rows, read where the assignment part is computed."""
    return pq.read_table(path, columns=["doc_id", "embedding"])


def embedding_parts(manifest: pa.Table) -> Iterator[Part]:
    """One assignment part per embedding part of ``manifest`` (part_index, path, n_rows, fingerprint)."""
    for row in manifest.sort_by("part_index").to_pylist():
        yield Part(index=row["part_index"], content=row["fingerprint"],
                   load=functools.partial(read_embedding_part, row["path"]), size=row["n_rows"])


def assign_to_parts(
    embedding_manifest: pa.Table,
    centroids: np.ndarray,
    out_dir: Path,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> RunStats:
    """Nearest centroid for every embedding part, into ``out_dir/part-*.parquet`` (one per embedding part)."""
    step = Step(name="assign", out_dir=Path(out_dir),
                settings={"centroids": centroid_digest(centroids), "k": int(len(centroids)),
                          # how the rows' winners and distances are computed (fused: numba)
                          "distance": "fused" if assign_path() == "fused" else "vecdot"},
                make_worker=functools.partial(make_assigner, np.asarray(centroids, dtype=np.float32)), unit="doc")
    total = int(pc.sum(embedding_manifest.column("n_rows")).as_py() or 0)
    return run_step(step, embedding_parts(embedding_manifest), executor=executor, total=total, progress=progress)


# --- what the fit streams: a seeded sample, in hash order or in part order -----------------

#: The salt of the fit sample's hash; the hash order uses ``kmeans:`` so the two are independent.
FIT_SAMPLE_SALT = "kmeans-fit"


def fit_sample_predicate(seed: int, fraction: float, column: str = "doc_id") -> str | None:
    """SQL keeping the seeded ``fraction`` of rows the fit uses; None (keep every row) at 1.0.

    A row is kept when the first 32 bits of ``md5('kmeans-fit:<seed>:<doc_id>')`` are below
    ``fraction * 2**32``: a function of the doc_id and the seed alone, so the sample is the
    same whatever the part layout, the thread count, the executor or the order rows are
    read in, and both fit orders draw the same documents. One SQL text serves both (DuckDB
    evaluates it over the view and over single part files), so they cannot drift apart.
    """
    fraction = check_fit_fraction(fraction)
    if fraction >= 1.0:
        return None
    threshold = int(fraction * 2**32)
    return f"('0x' || left(md5('{FIT_SAMPLE_SALT}:{int(seed)}:' || {column}::varchar), 8))::ubigint < {threshold}"


def hash_order_stream(embeddings, config: KMeansConfig) -> Callable[[], Iterator[np.ndarray]]:
    """The default fit's stream: the sampled embeddings of a DuckDB relation (``doc_id``,
    ``embedding``) in the seeded ``md5('kmeans:<seed>:' || doc_id)`` order.

    Mini-batches are drawn in a seeded hash order, not doc_id order: a corpus stored source
    by source would otherwise give every batch a single source. At ``fit_fraction`` 1.0 the
    query is the one this model always ran, so its centroids are unchanged.
    """
    where = fit_sample_predicate(config.seed, config.fit_fraction)
    if where is not None:
        embeddings = embeddings.filter(where)
    shuffled = embeddings.select(
        f"embedding, md5('kmeans:{int(config.seed)}:' || doc_id::varchar) as batch_key"
    ).order("batch_key")

    def stream() -> Iterator[np.ndarray]:
        for batch in shuffled.fetch_record_batch(config.batch_size):
            yield batch_to_numpy(batch)

    return stream


_readers = threading.local()


def _reader():
    """This thread's own in-memory DuckDB connection (the fit beside the embedding runs beside
    dbt's connection, in another thread); opening one per part costs more than reading it."""
    if getattr(_readers, "con", None) is None:
        import duckdb

        _readers.con = duckdb.connect()
    return _readers.con


def read_part_for_fit(path: Path | str, config: KMeansConfig) -> np.ndarray:
    """One embedding part's sampled vectors, in doc_id order: what the part-order fit feeds in."""
    where = fit_sample_predicate(config.seed, config.fit_fraction)
    query = (f"select embedding from read_parquet($path) {'where ' + where if where else ''} "
             "order by doc_id")
    return batch_to_numpy(_reader().sql(query, params={"path": str(path)}).to_arrow_table())


def part_order_stream(paths: Iterable[Path | str], config: KMeansConfig) -> Callable[[], Iterator[np.ndarray]]:
    """The part-order fit's stream over finished parts: part 0, 1, 2, ..., rows in doc_id order."""
    paths = list(paths)

    def stream() -> Iterator[np.ndarray]:
        for path in paths:
            x = read_part_for_fit(path, config)
            if len(x):  # a part the sample left empty
                yield x

    return stream


CENTROIDS_SCHEMA = pa.schema([("cluster_id", pa.int32()), ("centroid", pa.list_(pa.float32())),
                              ("epochs", pa.int32()), ("steps", pa.int32()), ("n_fit", pa.int64())])


def centroids_table(centroids: np.ndarray, info: dict) -> pa.Table:
    """``int_kmeans_centroids``' rows: one per cluster, the fit's epochs, steps and embeddings
    per epoch (``n_fit``) repeated on each."""
    k = len(centroids)
    return pa.table([
        pa.array(range(k), pa.int32()),
        pa.array(np.asarray(centroids, dtype=np.float32).tolist(), pa.list_(pa.float32())),
        pa.array([info["epochs"]] * k, pa.int32()),
        pa.array([info["steps"]] * k, pa.int32()),
        pa.array([info["n_docs"]] * k, pa.int64()),
    ], schema=CENTROIDS_SCHEMA)


# --- given centroids: kmeans_centroids_file ------------------------------------------------

def load_centroids_file(path: Path | str, dim: int) -> np.ndarray:
    """A .npy array of k centroids (row i is cluster i, e.g. the seed's ``cluster_centers.npy``),
    L2-normalised, checked against the embeddings' dimension ``dim``: assigning with it gives the
    file's cluster ids instead of fitting (``kmeans_centroids_file``)."""
    path = Path(path)
    if not path.is_absolute() and not path.is_file() and (ROOT / path).is_file():
        path = ROOT / path  # relative to the project root, wherever dbt was started
    if not path.is_file():
        raise FileNotFoundError(f"kmeans_centroids_file {str(path)!r}: no such file (a relative path is "
                                f"looked up in the current folder, then in the project root {ROOT})")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"kmeans_centroids_file {str(path)!r}: not a readable .npy array ({err})") from None
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"kmeans_centroids_file {str(path)!r}: expected a 2-D array, one row per cluster, "
                         f"got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"kmeans_centroids_file {str(path)!r}: holds {array.dtype}, not numbers")
    if array.shape[1] != dim:
        raise ValueError(f"kmeans_centroids_file {str(path)!r} holds {array.shape[1]}-dimensional centroids, but the "
                         f"embeddings are {dim}-dimensional: embed with the model the centroids came from "
                         f"(the seed's: embedding_model dwzhu/e5-base-4k, 768 dimensions; configs/minipile_seed.yml)")
    x = array.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"kmeans_centroids_file {str(path)!r}: holds NaN or infinity")
    zero = np.flatnonzero(np.linalg.norm(x, axis=1) == 0)
    if len(zero):
        raise ValueError(f"kmeans_centroids_file {str(path)!r}: row(s) {', '.join(map(str, zero[:10]))} are all zeros")
    return normalise(x).astype(np.float32)


def file_centroids_table(path: Path | str, dim: int) -> pa.Table:
    """``int_kmeans_centroids``' rows from a centroids file: no fit, so epochs, steps and
    ``n_fit`` are 0 (what tells a file's centroids from a fit's)."""
    return centroids_table(load_centroids_file(path, dim), {"epochs": 0, "steps": 0, "n_docs": 0})


def embedding_dimension(embeddings) -> int:
    """The length of the first embedding of a relation with an ``embedding`` column."""
    first = embeddings.limit(1).arrow().read_all()
    if first.num_rows == 0:
        raise ValueError("there are no embeddings to assign: embed the corpus first")
    return batch_to_numpy(first).shape[1]


# --- the part-order fit: beside the embedding, or by int_kmeans_centroids ------------------

#: The part-order fit's result, in the embedding parts' folder (``part-*`` globs never match it).
PART_ORDER_FILE = "kmeans-part-order.parquet"


def part_order_path(embeddings_dir: Path | str) -> Path:
    return Path(embeddings_dir) / PART_ORDER_FILE


def part_order_stamp(fingerprints: Iterable[str], config: KMeansConfig) -> str:
    """What the part-order centroids depend on: every embedding part's fingerprint, in part
    order, and every k-means setting. A part re-embedded, added or dropped, or any setting
    changed, makes the stored centroids stale."""
    from dataclasses import asdict

    digest = hashlib.sha1(b"kmeans-part-order:v1|")
    digest.update(json.dumps(asdict(config), sort_keys=True, default=str).encode())
    for fingerprint in fingerprints:
        digest.update(b"|" + str(fingerprint).encode())
    return digest.hexdigest()


def part_order_centroids(manifest: pa.Table, config: KMeansConfig, progress: bool = True) -> tuple[pa.Table, str]:
    """The part-order centroids for the embedding parts of ``manifest`` (int_documents_embedded:
    part_index, path, fingerprint); returns (table, "reused" or "fitted").

    The file ``FitBeside`` left is used when its stamp matches these parts and settings;
    otherwise (missing, stale, or a fit that failed beside the embedding) the same fit runs
    here over the finished parts, in the same order, and gives the same centroids, and the
    file is written so the next build reuses it.
    """
    from python_udfs.runner.parts import existing_fingerprint, write_atomic

    rows = manifest.sort_by("part_index").to_pylist()
    if not rows:
        raise ValueError("no embeddings to cluster: int_documents_embedded lists no parts")
    paths = [row["path"] for row in rows]
    target = part_order_path(Path(paths[0]).parent)
    stamp = part_order_stamp([row["fingerprint"] for row in rows], config)
    if existing_fingerprint(target) == stamp:
        return pq.read_table(target).replace_schema_metadata(None), "reused"
    centroids, info = fit(part_order_stream(paths, config), config, progress=progress, desc="k-means (part order)")
    table = centroids_table(centroids, info)
    write_atomic(table, target, stamp)
    return table, "fitted"


class _Stopped(Exception):
    """Ends the fit beside the embedding early (the embedding failed, or the fit is not needed)."""


class FitBeside:
    """The part-order k-means fit, in a background thread, while the runner embeds.

    ``int_documents_embedded`` uses it when ``kmeans_concurrent`` is on::

        with FitBeside(config, out_dir) as beside:
            stats = embed_to_parts(..., watch=beside.watch)
            beside.finish(stats.fingerprints)

    ``watch`` passes the runner's parts through, noting the fingerprint each part's file will
    carry. The thread's first epoch takes part 0, 1, 2, ... in turn, each once its file exists
    with that fingerprint (reused parts at once, new ones when the executor writes them, in
    any order: it polls every ``poll_s`` seconds), rows in doc_id order within a part, the
    ``fit_fraction`` sample applied. Later epochs read the same parts in the same order after
    the embedding ends; ``finish`` waits for them and writes the centroids atomically to
    ``kmeans-part-order.parquet`` beside the parts, stamped with ``part_order_stamp``.

    It is still one sequential fit: only its first epoch overlaps the embedding. Its
    centroids depend only on the parts' contents and order, never on when they landed or on
    the executor, so ``part_order_centroids`` reproduces them exactly from the finished parts;
    they differ from the default hash-order fit's (different batches). A fit that fails here
    (too few embeddings for k, say) is reported and leaves no file: the embedding's parts are
    kept and ``int_kmeans_centroids`` fits again, raising the error where it belongs.
    """

    def __init__(self, config: KMeansConfig, out_dir: Path | str, poll_s: float = 1.0,
                 progress: bool = True) -> None:
        self.config, self.out_dir, self.poll_s, self.progress = config, Path(out_dir), poll_s, progress
        self.path = part_order_path(self.out_dir)
        self._cond = threading.Condition()
        self._expected: list[tuple[Path, str]] = []  # (part file, fingerprint it will carry), in part order
        self._all_known = False  # the runner has handed over every part
        self._embedded = False  # run_step returned: every part is on disk
        self._stop: str | None = None
        self._result: tuple[np.ndarray, dict] | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kmeans-beside-embedding", daemon=True)

    def __enter__(self) -> FitBeside:
        self._thread.start()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._thread.is_alive():  # the embedding raised (or finish was never called): stop
            self._stop_with("the embedding did not finish" if kind else "finish() was not called")
            self._thread.join()

    # --- the runner's side --------------------------------------------------------------------

    def watch(self, parts: Iterable[Part], step: Step) -> Iterator[Part]:
        """``parts`` unchanged, noting each part's output file and fingerprint for the fit."""
        for part in parts:
            with self._cond:
                self._expected.append((step.part_path(part.index), part.fingerprint(step)))
                self._cond.notify_all()
            yield part
        with self._cond:
            self._all_known = True
            self._cond.notify_all()

    def finish(self, fingerprints: list[str]) -> str:
        """After the embedding: wait for the fit and store it; returns what happened
        ("fitted", "reused": the stored fit already matched, so the thread was stopped, or
        "failed": reported, no file)."""
        from python_udfs.runner.parts import existing_fingerprint, write_atomic

        stamp = part_order_stamp(fingerprints, self.config)
        if existing_fingerprint(self.path) == stamp:  # nothing changed since the last build
            self._stop_with("the stored part-order fit is up to date")
            self._thread.join()
            return "reused"
        with self._cond:
            self._embedded = True
            self._cond.notify_all()
        self._thread.join()
        if self.error is None and self._result is None:
            self.error = RuntimeError(f"the fit stopped early: {self._stop}")
        if self.error is None and [fp for _, fp in self._expected] != list(fingerprints):
            self.error = RuntimeError("the parts the fit read are not the parts the embedding reports")
        if self.error is not None:
            print(f"k-means beside embedding failed, int_kmeans_centroids will fit itself: "
                  f"{type(self.error).__name__}: {self.error}", file=sys.stderr)
            return "failed"
        centroids, info = self._result
        write_atomic(centroids_table(centroids, info), self.path, stamp)
        return "fitted"

    # --- the fit's side ---------------------------------------------------------------------

    def _stop_with(self, reason: str) -> None:
        with self._cond:
            self._stop = reason
            self._cond.notify_all()

    def _check(self) -> None:
        if self._stop is not None:
            raise _Stopped(self._stop)

    def _landed(self) -> Iterator[np.ndarray]:
        """The first epoch: each part in part order, once it is on disk with its final fingerprint."""
        from python_udfs.runner.parts import existing_fingerprint

        index = 0
        while True:
            with self._cond:
                while index >= len(self._expected) and not self._all_known and self._stop is None:
                    self._cond.wait(self.poll_s)
                self._check()
                if index >= len(self._expected):
                    return
                path, fingerprint = self._expected[index]
            while True:
                with self._cond:
                    self._check()
                    embedded = self._embedded  # read before the file: a part cannot land after it
                if existing_fingerprint(path) == fingerprint:
                    break
                if embedded:
                    raise RuntimeError(f"the embedding finished, but {path} does not carry fingerprint {fingerprint}")
                with self._cond:
                    if self._stop is None and not self._embedded:
                        self._cond.wait(self.poll_s)
            x = read_part_for_fit(path, self.config)
            if len(x):
                yield x
            index += 1

    def _stream(self) -> Callable[[], Iterator[np.ndarray]]:
        epochs = 0

        def stream() -> Iterator[np.ndarray]:
            nonlocal epochs
            epochs += 1
            if epochs == 1:
                yield from self._landed()
                return
            for x in part_order_stream([path for path, _ in self._expected], self.config)():
                self._check()
                yield x

        return stream

    def _run(self) -> None:
        try:
            self._result = fit(self._stream(), self.config, progress=self.progress,
                               desc="k-means (beside embedding)")
        except _Stopped:
            pass
        except BaseException as err:  # reported by finish: the embedding goes on regardless
            self.error = err

"""Spherical mini-batch k-means over streamed, L2-normalised embeddings.

scikit-learn's ``MiniBatchKMeans.partial_fit`` does the updates; after each step the
centroids are re-normalised so that the clustering is by cosine similarity, as in MiniPile.
``partial_fit`` initialises only once and ignores ``n_init``, so the ``n_init`` k-means++
candidates are drawn here on the first batch and the one with the lowest inertia is kept,
as ``MiniBatchKMeans.fit`` does.

Assignment is one runner step over the embedding parts: a part is one embedding file
(read where it is computed), its content digest is that file's fingerprint and the
centroids' digest is in the settings, so new centroids reassign everything and a new
embedding part reassigns only itself.
"""

from __future__ import annotations

import functools
import hashlib
import sys
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
from python_udfs.settings import default


@dataclass
class KMeansConfig:
    """Clustering settings (dbt vars).

    n_clusters: k (MiniPile: 220 for the Pile's 22 sources, i.e. 10 per source).
    batch_size: embeddings per mini-batch step (MiniPile: 16,384).
    n_init: k-means++ initialisations tried; the best on the first batch is kept.
    seed: random state for initialisation and sklearn's reassignment.
    max_epochs: passes over the stream at most.
    tol: stop once no centroid moved more than this (L2) over a whole epoch.
    """

    n_clusters: int
    batch_size: int = default("kmeans_batch_size")
    n_init: int = default("kmeans_n_init")
    seed: int = default("seed")
    max_epochs: int = default("kmeans_max_epochs")
    tol: float = default("kmeans_tol")


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
) -> tuple[np.ndarray, dict]:
    """Fit on a re-playable stream of embedding matrices; returns (centroids, fit info).

    ``stream()`` is called once per epoch and must yield the same rows in the same order.
    """
    from sklearn.cluster import MiniBatchKMeans

    km = None
    info = {"epochs": 0, "steps": 0, "n_docs": 0, "last_shift": None}
    epochs = range(config.max_epochs)
    shown = time.monotonic()
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc=f"k-means k={config.n_clusters}", unit="epoch", file=sys.stderr)
    for epoch in epochs:
        before = None if km is None else km.cluster_centers_.copy()
        n_docs = 0
        for x in rebatch(stream(), config.batch_size):
            x = normalise(x.astype(np.float32, copy=False))
            if km is None:
                if len(x) < config.n_clusters:
                    raise ValueError(
                        f"cannot form {config.n_clusters} clusters from a first batch of "
                        f"{len(x)} embeddings: lower n_clusters/clusters_per_source or embed "
                        "more documents"
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
            raise ValueError("no embeddings to cluster")
        info["epochs"], info["n_docs"] = epoch + 1, n_docs
        if before is not None:
            shift = float(np.max(np.linalg.norm(km.cluster_centers_ - before, axis=1)))
            info["last_shift"] = shift
            if progress:
                epochs.set_postfix(batches=info["steps"], docs=n_docs, shift=f"{shift:.2e}")
            if shift < config.tol:
                break
    return km.cluster_centers_.astype(np.float32), info


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid by cosine (ties: lowest id) and distance = 1 - dot."""
    sims = x @ centroids.T
    cluster = np.argmax(sims, axis=1)
    distance = 1.0 - sims[np.arange(len(x)), cluster].astype(np.float64)
    return cluster.astype(np.int32), distance


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
                settings={"centroids": centroid_digest(centroids), "k": int(len(centroids))},
                make_worker=functools.partial(make_assigner, np.asarray(centroids, dtype=np.float32)), unit="doc")
    total = int(pc.sum(embedding_manifest.column("n_rows")).as_py() or 0)
    return run_step(step, embedding_parts(embedding_manifest), executor=executor, total=total, progress=progress)

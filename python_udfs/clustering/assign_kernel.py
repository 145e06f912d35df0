"""The k-means assignment's per-row work after the blocked matmul, fused in one compiled loop (numba).

``kmeans.assign`` computes a block's float32 similarities ``S = X_b @ C.T`` with BLAS, then,
per row, needs: the best and second-best similarity, ``|x|`` (the near-tie margin), the exact
float64 re-decision of a near tie, and the winner's dot product (the distance). In numpy those
are eight passes over the block (argmax, fancy indexing, two ``vecdot``, a gather ...), each
streaming the block from L3; here each row is read once while it is in L1, and the compiled
loop uses the CPU's own vector width (numba compiles for the host: AVX2, AVX-512 ...).

Same decisions as the numpy path, row by row: the float32 winner stands unless the best two
are within the margin; then every centroid within the margin is compared in float64 and the
highest wins, ties to the lowest id. The sums are compiled with reassociation allowed (so they
vectorise), which fixes their order per machine kind and ``d``, never per block or thread: the
results do not depend on the block size or the threads. They may differ from the numpy path
in the distances' last bits, which is why the assign step's settings name the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numba
import numpy as np

#: Compiled code is cached next to this file when that folder is writable (or wherever
#: ``NUMBA_CACHE_DIR`` says), so a process (a Ray worker, a dbt run) compiles it once per machine.
_CACHE = bool(os.environ.get("NUMBA_CACHE_DIR")) or os.access(Path(__file__).parent, os.W_OK)


@numba.njit(nogil=True, cache=_CACHE, fastmath={"reassoc", "contract"}, boundscheck=False)
def _finish_row(i: int, s: np.ndarray, xb: np.ndarray, c: np.ndarray, c64: np.ndarray, bound: float,
                win: int, best: float, second: float, cluster: np.ndarray,
                distance: np.ndarray) -> None:  # pragma: no cover - compiled
    """Row ``i`` given its float32 winner and best two similarities: the near-tie check (and
    float64 re-decision), then ``cluster[i]`` and ``distance[i]``."""
    k = s.shape[1]
    d = xb.shape[1]
    norm = np.float32(0.0)
    for t in range(d):
        norm += xb[i, t] * xb[i, t]
    margin = bound * np.sqrt(np.float64(norm))
    if np.float64(best) - np.float64(second) <= margin:
        low = np.float64(best) - margin
        exact_best = -np.inf
        for j in range(k):
            if np.float64(s[i, j]) >= low:
                exact = 0.0
                for t in range(d):
                    exact += np.float64(xb[i, t]) * c64[j, t]
                if exact > exact_best:  # strictly: a tie keeps the lower id
                    exact_best = exact
                    win = j
    dot = np.float32(0.0)
    for t in range(d):
        dot += xb[i, t] * c[win, t]
    cluster[i] = win
    distance[i] = 1.0 - np.float64(dot)


@numba.njit(nogil=True, cache=_CACHE, fastmath={"reassoc", "contract"}, boundscheck=False)
def assign_rows(s: np.ndarray, xb: np.ndarray, c: np.ndarray, c64: np.ndarray, bound: float,
                cluster: np.ndarray, distance: np.ndarray) -> None:  # pragma: no cover - compiled
    """Rows of one block: ``s`` (m x k float32 similarities), ``xb`` (m x d), ``c`` / ``c64``
    (k x d, float32 / float64); writes ``cluster`` (the winner) and ``distance`` (1 - x . c).
    For small k: the best two are found in the same pass (a branch per similarity)."""
    m, k = s.shape
    for i in range(m):
        best = -np.inf
        second = -np.inf
        win = 0
        for j in range(k):
            v = s[i, j]
            if v > best:
                second = best
                best = v
                win = j
            elif v > second:
                second = v
        _finish_row(i, s, xb, c, c64, bound, win, best, second, cluster, distance)


@numba.njit(nogil=True, cache=_CACHE, fastmath={"reassoc", "contract"}, boundscheck=False)
def finish_rows(s: np.ndarray, xb: np.ndarray, c: np.ndarray, c64: np.ndarray, bound: float,
                win: np.ndarray, best: np.ndarray, second: np.ndarray, cluster: np.ndarray,
                distance: np.ndarray) -> None:  # pragma: no cover - compiled
    """``assign_rows`` for large k, the winner and best two already found by numpy's SIMD
    argmax and max along each row (faster than a branch per similarity when k is large)."""
    for i in range(s.shape[0]):
        _finish_row(i, s, xb, c, c64, bound, win[i], best[i], second[i], cluster, distance)

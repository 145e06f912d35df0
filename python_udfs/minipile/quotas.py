"""How many documents MiniPile takes from each kept cluster, under every sampling strategy.

The one place this arithmetic lives: dbt's ``int_cluster_quotas`` calls ``quotas`` through the
UDF ``pilehouse_quotas`` (``python_udfs/udfs.py``), and ``pilehouse quotas`` calls it on a stats
file (``python_udfs/minipile/cli.py``), so both give the same numbers for the same inputs.

Notation (docs/minipile.md#sampling-strategies): T the total, |Cᵢ| cluster i's size, N = Σ|Cⱼ|
over the kept clusters, ρᵢ = sum_distance / |Cᵢ| its mean cosine distance to the centroid (0 for
an empty cluster), δᵢ the mean cosine distance of its centroid to the other kept centroids,
Lᵢ the mean loss of a reference causal LM on the cluster's scored documents (loss_informed;
``python_udfs/minipile/lossi.py`` computes it).

Strategies give each kept cluster a weight; ``total_mode`` turns weights into whole quotas:

- ``exact``: the real-valued quotas xᵢ = min(|Cᵢ|, bᵢ + μ·wᵢ), with the μ that makes Σxᵢ = T
  (water-filling: a cluster smaller than its share gives everything and the rest is shared by
  the others in the same proportions; bᵢ is 0 except for low_density's first phase), then
  largest-remainder rounding, ties to the lowest cluster id. Computed in exact rationals, so
  the result never depends on float rounding or on the order of the clusters. The total is
  exactly T whenever the kept clusters hold T documents.
- ``seed``: the seed's own float arithmetic (MK2112/minicorpus): floor(T·shareᵢ) capped at |Cᵢ|
  (loss_informed: rounded half to even, as the seed's lossi rounds), nothing redistributed, so
  the total usually misses T.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from python_udfs.settings import default, resolve

STRATEGIES = {
    "uniform": "the same quota for every kept cluster (MiniPile's rule; the default)",
    "proportionate": "quota proportional to the cluster's size (the seed's idea 1)",
    "density": "size x (1 - density_weight x mean distance): shrinks spread-out clusters (the seed's idea 3)",
    "density_spread": "size x (1 + density_weight x mean distance): favours spread-out clusters",
    "low_density": "density shares at low_density_weight, the shortfall topped up by size (the seed's idea 3.1)",
    "inter_cluster": "a x size share + b x (1 - mean distance) + c x centroid spread (the seed's idea 6)",
    "loss_informed": "quota proportional to a reference LM's mean loss on the cluster (the seed's idea 2, lossi)",
}
TOTAL_MODES = ("exact", "seed")
#: the strategies that read the clusters' distances, and the one that needs centroids
USES_DISTANCES = ("density", "density_spread", "low_density", "inter_cluster")
USES_CENTROIDS = ("inter_cluster",)
#: the strategies that read the clusters' mean loss (int_cluster_losses)
USES_LOSSES = ("loss_informed",)


@dataclass(frozen=True)
class ClusterStats:
    """One kept cluster: its size, its documents' summed cosine distance to the centroid,
    (inter_cluster only) the centroid itself and (loss_informed only) a reference LM's mean
    loss on its documents, in nats per token (``cluster_losses.mean_loss``)."""

    cluster_id: int
    n_docs: int
    sum_distance: float = 0.0
    centroid: Sequence[float] | None = None
    mean_loss: float | None = None

    @property
    def mean_distance(self) -> float:
        """ρ: the seed's "density" (0.0 for an empty cluster, as the seed's code)."""
        return self.sum_distance / self.n_docs if self.n_docs > 0 else 0.0


def _weights_default() -> tuple[float, float, float]:
    return tuple(float(w) for w in default("inter_cluster_weights"))


@dataclass(frozen=True)
class QuotaParams:
    """The strategies' knobs; each default is its dbt var's, in dbt_project.yml."""

    #: ω of density and density_spread (seed, idea 3: 0.5)
    density_weight: float = field(default_factory=lambda: float(default("density_weight")))
    #: ω of low_density's first phase (seed, idea 3.1: 0.75)
    low_density_weight: float = field(default_factory=lambda: float(default("low_density_weight")))
    #: inter_cluster's (a, b, c): size share, 1 - mean distance, centroid spread (seed, idea 6: 0.33 each)
    inter_cluster_weights: tuple[float, float, float] = field(default_factory=_weights_default)

    @classmethod
    def from_vars(cls, given: Mapping[str, Any] | None = None) -> QuotaParams:
        """The build's params from its vars (``given``), each missing one from dbt_project.yml."""
        return cls(
            density_weight=float(resolve("density_weight", given)),
            low_density_weight=float(resolve("low_density_weight", given)),
            inter_cluster_weights=tuple(float(w) for w in resolve("inter_cluster_weights", given)),
        )


@dataclass(frozen=True)
class Quota:
    cluster_id: int
    n_docs: int
    #: documents MiniPile takes from the cluster
    quota: int
    #: the cluster gives all its documents (its share reached its size)
    is_capped: bool
    #: the real-valued quota before rounding (exact), or T x share capped at the size (seed)
    target: float


class QuotaError(ValueError):
    """Input the quota arithmetic cannot use; the message names the value and what is allowed."""


def quotas(stats: Iterable[ClusterStats], strategy: str, params: QuotaParams | None, total: int,
           total_mode: str = "exact") -> list[Quota]:
    """Per kept cluster (ordered by cluster_id), how many documents MiniPile takes from it."""
    clusters = sorted(stats, key=lambda c: c.cluster_id)
    params = params or QuotaParams()
    _check(clusters, strategy, params, total, total_mode)
    if not clusters:
        return []
    if total_mode == "seed":
        return _seed_quotas(clusters, strategy, params, total)
    return _exact_quotas(clusters, strategy, params, total)


def centroid_spread(centroids: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """δᵢ: the mean cosine distance from centroid i to every other one (0 when there is no other)."""
    x = np.asarray(centroids, dtype=np.float64)
    k = len(x)
    if k < 2:
        return np.zeros(k)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    unit = x / np.where(norms == 0, 1.0, norms)
    distances = 1.0 - unit @ unit.T
    np.fill_diagonal(distances, 0.0)
    return distances.sum(axis=1) / (k - 1)


# --- checks --------------------------------------------------------------------------------

def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _finite(name: str, value: float, minimum: float | None = 0.0) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise QuotaError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise QuotaError(f"{name} must be >= {minimum:g}, got {value!r}")


def _check(clusters: list[ClusterStats], strategy: str, params: QuotaParams, total: int, total_mode: str) -> None:
    if strategy not in STRATEGIES:
        raise QuotaError(f"sampling_strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if total_mode not in TOTAL_MODES:
        raise QuotaError(f"sampling_total {total_mode!r} is not one of {', '.join(TOTAL_MODES)}")
    if not _whole(total) or total < 0:
        raise QuotaError(f"the total must be a whole number >= 0, got {total!r}")
    _finite("density_weight", params.density_weight)
    _finite("low_density_weight", params.low_density_weight)
    weights = params.inter_cluster_weights
    if len(weights) != 3:
        raise QuotaError(f"inter_cluster_weights must be 3 numbers (size, density, spread), got {list(weights)!r}")
    for w in weights:
        _finite("inter_cluster_weights", w)
    if strategy == "inter_cluster" and not any(weights):
        raise QuotaError("inter_cluster_weights are all 0: give at least one a positive weight")
    seen: set[int] = set()
    for c in clusters:
        if c.cluster_id in seen:
            raise QuotaError(f"cluster {c.cluster_id} appears twice")
        seen.add(c.cluster_id)
        if not _whole(c.n_docs) or c.n_docs < 0:
            raise QuotaError(f"cluster {c.cluster_id}: n_docs must be a whole number >= 0, got {c.n_docs!r}")
        _finite(f"cluster {c.cluster_id}: sum_distance", c.sum_distance, minimum=None)
    if strategy in USES_CENTROIDS:
        missing = [c.cluster_id for c in clusters if c.centroid is None or len(c.centroid) == 0]
        if missing:
            raise QuotaError(f"{strategy} needs every kept cluster's centroid; missing for cluster(s) "
                             f"{', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''}")
        dims = {len(c.centroid) for c in clusters}
        if len(dims) > 1:
            raise QuotaError(f"the centroids have different lengths: {sorted(dims)}")
        if not np.isfinite(np.asarray([c.centroid for c in clusters], dtype=np.float64)).all():
            raise QuotaError("a centroid holds NaN or infinity")
    if strategy in USES_LOSSES:
        # an empty cluster has nothing to score and nothing to give: it may lack a loss
        missing = [c.cluster_id for c in clusters if c.mean_loss is None and c.n_docs > 0]
        if missing:
            raise QuotaError(f"{strategy} needs every kept cluster's mean_loss (int_cluster_losses); missing for "
                             f"cluster(s) {', '.join(map(str, missing[:10]))}{' ...' if len(missing) > 10 else ''}")
        for c in clusters:
            if c.mean_loss is not None:
                _finite(f"cluster {c.cluster_id}: mean_loss", c.mean_loss)
        if clusters and not any(c.mean_loss for c in clusters if c.n_docs > 0) and any(c.n_docs for c in clusters):
            raise QuotaError(f"{strategy}: every kept cluster's mean_loss is 0, so there is nothing to share by")


# --- exact: rationals, water-filling, largest remainder --------------------------------------

def _exact_weights(clusters: list[ClusterStats], strategy: str, params: QuotaParams,
                   total: int) -> tuple[list[Fraction], list[Fraction]]:
    """(bᵢ, wᵢ): what each cluster gets before sharing, and its weight in the sharing."""
    sizes = [Fraction(c.n_docs) for c in clusters]
    n_all = sum(sizes)
    rho = [Fraction(c.sum_distance) / c.n_docs if c.n_docs > 0 else Fraction(0) for c in clusters]
    zero = [Fraction(0)] * len(clusters)
    if strategy == "uniform":
        return zero, [Fraction(1)] * len(clusters)
    if strategy == "proportionate":
        return zero, sizes
    if strategy == "density":
        omega = Fraction(params.density_weight)
        return zero, [max(Fraction(0), n * (1 - omega * r)) for n, r in zip(sizes, rho)]
    if strategy == "density_spread":
        omega = Fraction(params.density_weight)
        return zero, [n * (1 + omega * r) for n, r in zip(sizes, rho)]
    if strategy == "low_density":
        # the seed's first phase, T x |Cᵢ|/N x (1 - ω ρᵢ), then the shortfall shared by size
        omega = Fraction(params.low_density_weight)
        if n_all == 0:
            return zero, sizes
        return [total * n / n_all * max(Fraction(0), 1 - omega * r) for n, r in zip(sizes, rho)], sizes
    if strategy == "loss_informed":
        # nᵢ ∝ Lᵢ (the seed's lossi: T x Lᵢ / Σ L); an empty cluster's missing loss weighs 0
        return zero, [Fraction(c.mean_loss or 0.0) for c in clusters]
    a, b, c = (Fraction(w) for w in params.inter_cluster_weights)
    spread = [Fraction(float(d)) for d in centroid_spread([cl.centroid for cl in clusters])]
    top = max(spread)
    scores = []
    for n, r, d in zip(sizes, rho, spread):
        size_term = n / n_all if n_all else Fraction(0)
        spread_term = d / top if top > 0 else Fraction(0)
        scores.append(max(Fraction(0), a * size_term + b * (1 - r) + c * spread_term))
    return zero, scores


def water_fill(caps: Sequence[int], base: Sequence[Fraction], weights: Sequence[Fraction],
               total: int) -> list[Fraction]:
    """xᵢ = min(capᵢ, baseᵢ + μ·weightᵢ) for the smallest μ >= 0 with Σxᵢ = total; every
    cluster at its cap when even that falls short. Requires Σ min(capᵢ, baseᵢ) <= total."""
    x = [min(Fraction(cap), b) for cap, b in zip(caps, base)]
    free = [i for i in range(len(caps)) if weights[i] > 0 and base[i] < caps[i]]
    is_free = set(free)
    if sum(x) + sum(caps[i] - x[i] for i in free) <= total:
        return [Fraction(caps[i]) if i in is_free else x[i] for i in range(len(caps))]
    # clusters reach their cap in the order of the μ at which they do; the level stops before the next one
    free.sort(key=lambda i: ((caps[i] - base[i]) / weights[i], i))
    left = total - sum(x[i] for i in range(len(caps)) if i not in is_free)
    base_left = sum(base[i] for i in free)
    weight_left = sum(weights[i] for i in free)
    level = Fraction(0)
    for i in free:
        level = (left - base_left) / weight_left
        if level <= (caps[i] - base[i]) / weights[i]:
            break
        left -= caps[i]
        base_left -= base[i]
        weight_left -= weights[i]
    return [min(Fraction(caps[i]), base[i] + level * weights[i]) if i in is_free else x[i]
            for i in range(len(caps))]


def largest_remainder(ids: Sequence[int], targets: Sequence[Fraction], total: int) -> list[int]:
    """Whole numbers summing to min(total, floor(Σ targets)): each target's floor, plus one for the
    largest fractional parts (ties: the lowest id)."""
    floors = [math.floor(t) for t in targets]
    extra = min(total, math.floor(sum(targets))) - sum(floors)
    order = sorted(range(len(ids)), key=lambda i: (-(targets[i] - floors[i]), ids[i]))
    for i in order[:max(extra, 0)]:
        floors[i] += 1
    return floors


def _exact_quotas(clusters: list[ClusterStats], strategy: str, params: QuotaParams, total: int) -> list[Quota]:
    caps = [c.n_docs for c in clusters]
    base, weights = _exact_weights(clusters, strategy, params, total)
    x = water_fill(caps, base, weights, total)
    if sum(x) < total:
        # clusters of weight 0 (e.g. density with ω ρ >= 1) take documents only once the others are exhausted
        x = water_fill(caps, x, [Fraction(int(xi < cap)) for xi, cap in zip(x, caps)], total)
    whole = largest_remainder([c.cluster_id for c in clusters], x, total)
    return [Quota(c.cluster_id, c.n_docs, q, xi >= c.n_docs, float(xi)) for c, q, xi in zip(clusters, whole, x)]


# --- seed: the seed's float expressions, floor, cap, nothing redistributed ---------------------

def _seed_quotas(clusters: list[ClusterStats], strategy: str, params: QuotaParams, total: int) -> list[Quota]:
    sizes = [c.n_docs for c in clusters]
    n_all = sum(sizes)
    rho = [c.mean_distance for c in clusters]
    if strategy == "uniform":
        raw = [total / len(clusters)] * len(clusters)
    elif n_all == 0:
        raw = [0.0] * len(clusters)
    elif strategy == "proportionate":
        raw = [total * (n / n_all) for n in sizes]
    elif strategy in ("density", "low_density"):
        omega = params.density_weight if strategy == "density" else params.low_density_weight
        raw = [total * (n / n_all * (1 - omega * r)) for n, r in zip(sizes, rho)]
    elif strategy == "density_spread":
        spread = [n / n_all * (1 + params.density_weight * r) for n, r in zip(sizes, rho)]
        spread_sum = sum(spread)
        raw = [total * (s / spread_sum) for s in spread]
    elif strategy == "loss_informed":
        # the seed's lossi: (mean_loss / total_loss) x total_count, summed over the kept clusters
        losses = [c.mean_loss or 0.0 for c in clusters]
        total_loss = sum(losses)
        raw = [(loss / total_loss) * total for loss in losses]
    else:
        a, b, c = params.inter_cluster_weights
        spread = centroid_spread([cl.centroid for cl in clusters]).tolist()
        top = max(spread)
        scores = [a * (n / n_all) + b * (1 - r) + c * (d / top if top > 0 else 0.0)
                  for n, r, d in zip(sizes, rho, spread)]
        total_score = sum(scores)
        raw = [total * (s / total_score) if total_score > 0 else 0.0 for s in scores]
    targets = [max(0.0, min(r, float(n))) for r, n in zip(raw, sizes)]
    if strategy == "loss_informed":
        # the seed's lossi script 2 rounds its proportions (int(np.round(p)), half to even), then caps
        whole = [max(0, min(int(np.round(r)), n)) for r, n in zip(raw, sizes)]
    else:
        whole = [max(0, min(int(r), n)) for r, n in zip(raw, sizes)]
    if strategy == "low_density" and n_all > 0 and sum(whole) < total:
        # the seed's top-up: cluster by cluster in id order, floor(remaining x |Cᵢ|/N) more from
        # what is left in the cluster, the remaining count shrinking as it goes
        remaining = total - sum(whole)
        for i, n in enumerate(sizes):
            more = min(int(remaining * (n / n_all)), n - whole[i])
            whole[i] += more
            targets[i] = min(float(n), targets[i] + more)
            remaining -= more
            if sum(whole) >= total:
                break
    return [Quota(c.cluster_id, n, q, q == n, t) for c, n, q, t in zip(clusters, sizes, whole, targets)]

"""``python_udfs.minipile.quotas``: every strategy in both totals modes, against rules written
out independently here (the seed's own float expressions, the old uniform SQL's steps) and
against the properties the modes promise."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from python_udfs.minipile.quotas import (
    STRATEGIES,
    ClusterStats,
    QuotaError,
    QuotaParams,
    centroid_spread,
    quotas,
)
from python_udfs.settings import default

PARAMS = QuotaParams(density_weight=0.5, low_density_weight=0.75, inter_cluster_weights=(0.33, 0.33, 0.33))


def by_id(result) -> dict[int, int]:
    return {q.cluster_id: q.quota for q in result}


def fixture_clusters() -> list[ClusterStats]:
    """The dbt unit tests' fixture: sizes 50, 2, 30, 18; mean distances 0.25, 0.5, 0.375, 0.75."""
    centroids = [(1.0, 0.0), (0.0, 1.0), (0.6, 0.8), (-1.0, 0.0)]
    rows = [(0, 50, 0.25), (1, 2, 0.5), (2, 30, 0.375), (3, 18, 0.75)]
    return [ClusterStats(c, n, n * d, centroids[c]) for c, n, d in rows]


def random_clusters(rng: random.Random, with_centroids: bool = True) -> list[ClusterStats]:
    k = rng.randint(1, 20)
    ids = rng.sample(range(300), k)
    out = []
    for cid in ids:
        n = rng.choice([0, 1, 2, rng.randint(0, 50), rng.randint(0, 3000)])
        rho = rng.uniform(0.0, 1.2)
        centroid = tuple(rng.gauss(0, 1) for _ in range(4)) if with_centroids else None
        out.append(ClusterStats(cid, n, rho * n, centroid, mean_loss=rng.uniform(0.5, 6.0)))
    return out


def uniform_reference(sizes: dict[int, int], total: int) -> dict[int, tuple[int, bool]]:
    """The uniform rule as the SQL model wrote it before: clusters sorted by (size, id), a cluster
    capped when the docs below it plus its size times the clusters from it up fit the total, the
    rest split evenly with the remainder to the lowest ids."""
    kept = sorted((n, cid) for cid, n in sizes.items())
    capped, capped_docs, smaller = set(), 0, 0
    for rank, (n, cid) in enumerate(kept):
        if smaller + n * (len(kept) - rank) <= total:
            capped.add(cid)
            capped_docs += n
        smaller += n
    uncapped = sorted(cid for _, cid in kept if cid not in capped)
    base, plus = divmod(total - capped_docs, len(uncapped)) if uncapped else (0, 0)
    return {cid: (n, True) if cid in capped else (base + (uncapped.index(cid) < plus), False) for n, cid in kept}


# --- the default: unchanged -------------------------------------------------------------------

def test_uniform_exact_is_the_old_rule_on_random_cases():
    rng = random.Random(0)
    for _ in range(400):
        clusters = random_clusters(rng, with_centroids=False)
        supply = sum(c.n_docs for c in clusters)
        total = rng.choice([rng.randint(0, max(supply, 1)), supply, supply + rng.randint(1, 9)])
        got = {q.cluster_id: (q.quota, q.is_capped) for q in quotas(clusters, "uniform", PARAMS, total)}
        assert got == uniform_reference({c.cluster_id: c.n_docs for c in clusters}, total), (clusters, total)


def test_uniform_exact_by_hand():
    clusters = [ClusterStats(0, 50), ClusterStats(1, 50), ClusterStats(2, 50)]
    assert by_id(quotas(clusters, "uniform", PARAMS, 10)) == {0: 4, 1: 3, 2: 3}


# --- exact: the promised properties, every strategy ---------------------------------------------

@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_exact_totals_are_exact_and_within_the_clusters(strategy):
    rng = random.Random(hash(strategy) % 1000)
    for _ in range(150):
        clusters = random_clusters(rng)
        supply = sum(c.n_docs for c in clusters)
        total = rng.choice([rng.randint(0, max(supply, 1)), supply, supply + 5])
        result = quotas(clusters, strategy, PARAMS, total)
        assert [q.cluster_id for q in result] == sorted(c.cluster_id for c in clusters)
        assert sum(q.quota for q in result) == min(total, supply)
        for q, c in zip(result, sorted(clusters, key=lambda c: c.cluster_id)):
            assert 0 <= q.quota <= c.n_docs
            assert abs(q.quota - q.target) < 1  # rounding moves a quota by less than one document
            assert q.is_capped == (q.target >= c.n_docs)
        # the order the clusters come in changes nothing
        shuffled = clusters[:]
        rng.shuffle(shuffled)
        assert quotas(shuffled, strategy, PARAMS, total) == result


def test_exact_density_spreads_a_capped_clusters_shortfall():
    # weights 43.75, 1.5, 24.375, 11.25: at 96, clusters 0 and 2 exceed their sizes in turn
    result = quotas(fixture_clusters(), "density", PARAMS, 96)
    assert by_id(result) == {0: 50, 1: 2, 2: 30, 3: 14}
    assert [q.is_capped for q in result] == [True, False, True, False]


def test_exact_clusters_of_weight_zero_fill_only_what_the_others_cannot():
    # ω ρ >= 1 gives cluster 1 weight 0; cluster 0 holds 10, so cluster 1 gives the other 5
    clusters = [ClusterStats(0, 10, 0.0), ClusterStats(1, 100, 250.0)]
    assert by_id(quotas(clusters, "density", PARAMS, 15)) == {0: 10, 1: 5}
    assert by_id(quotas(clusters, "density", PARAMS, 8)) == {0: 8, 1: 0}


def test_density_shrinks_and_density_spread_favours_spread_out_clusters():
    tight, spread = ClusterStats(0, 100, 10.0), ClusterStats(1, 100, 80.0)  # ρ = 0.1 and 0.8
    assert by_id(quotas([tight, spread], "proportionate", PARAMS, 100)) == {0: 50, 1: 50}
    shrunk = by_id(quotas([tight, spread], "density", PARAMS, 100))
    favoured = by_id(quotas([tight, spread], "density_spread", PARAMS, 100))
    assert shrunk[1] < 50 < favoured[1]
    # 0.95 : 0.6 and 1.05 : 1.4
    assert shrunk == {0: round(100 * 0.95 / 1.55), 1: round(100 * 0.6 / 1.55)}
    assert favoured == {0: round(100 * 1.05 / 2.45), 1: round(100 * 1.4 / 2.45)}


# --- seed: the seed's own expressions -----------------------------------------------------------

def seed_density(clusters, total, omega):
    n_all = sum(c.n_docs for c in clusters)
    return {c.cluster_id: min(int(total * (c.n_docs / n_all * (1 - omega * c.mean_distance))), c.n_docs)
            for c in clusters}


def test_seed_density_is_the_seeds_expression():
    rng = random.Random(3)
    for _ in range(200):
        clusters = [c for c in random_clusters(rng) if c.mean_distance <= 1.0]  # the seed: 1 - ω ρ >= 0
        if not sum(c.n_docs for c in clusters):
            continue
        total = rng.randint(0, sum(c.n_docs for c in clusters))
        omega = rng.choice([0.5, 0.75, rng.uniform(0, 1)])
        params = QuotaParams(density_weight=omega, low_density_weight=0.75, inter_cluster_weights=(1, 1, 1))
        assert by_id(quotas(clusters, "density", params, total, "seed")) == seed_density(clusters, total, omega)


def test_seed_density_falls_short_of_the_total():
    result = quotas(fixture_clusters(), "density", PARAMS, 90, "seed")
    assert by_id(result) == {0: 39, 1: 1, 2: 21, 3: 10}
    assert sum(q.quota for q in result) == 71  # 90 x (1 - 0.5 x 0.4375), floored per cluster


def test_seed_uniform_and_proportionate():
    clusters = fixture_clusters()
    assert by_id(quotas(clusters, "uniform", PARAMS, 90, "seed")) == {0: 22, 1: 2, 2: 22, 3: 18}
    # 96 x 0.3 is 28.799999999999997 in floats: the seed's int() gives 28
    assert by_id(quotas(clusters, "proportionate", PARAMS, 96, "seed")) == {0: 48, 1: 1, 2: 28, 3: 17}


def test_seed_low_density_tops_up_with_a_shrinking_remainder():
    # floors 36, 1, 19, 7; then 27 -> 13, 14 -> 0, 14 -> 4, 10 -> 1
    assert by_id(quotas(fixture_clusters(), "low_density", PARAMS, 90, "seed")) == {0: 49, 1: 1, 2: 23, 3: 8}


def seed_inter_cluster(clusters, centroids_all, kept_rows, total, weights):
    """The seed's idea 6 written out: loops over pairs of centroids, no matrix algebra."""
    a, b, c = weights

    def cosine_distance(u, v):
        norms = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
        return 1 - sum(x * y for x, y in zip(u, v)) / norms

    spread = {}
    for i in kept_rows:
        others = [j for j in kept_rows if j != i]
        spread[i] = sum(cosine_distance(centroids_all[i], centroids_all[j]) for j in others) / len(others)
    n_all = sum(cl.n_docs for cl in clusters)
    top = max(spread.values())
    score = {cl.cluster_id: a * cl.n_docs / n_all + b * (1 - cl.mean_distance) + c * spread[cl.cluster_id] / top
             for cl in clusters}
    total_score = sum(score.values())
    return {cid: min(int(total * (s / total_score)), cl.n_docs)
            for (cid, s), cl in zip(score.items(), clusters)}


def test_seed_inter_cluster_matches_the_seeds_formula():
    rng = np.random.default_rng(5)
    for _ in range(30):
        k = int(rng.integers(2, 12))
        centroids = rng.normal(size=(k, 6))
        clusters = [ClusterStats(i, int(rng.integers(1, 500)), 0.0, tuple(centroids[i])) for i in range(k)]
        clusters = [ClusterStats(c.cluster_id, c.n_docs, c.n_docs * float(rng.uniform(0.1, 0.6)), c.centroid)
                    for c in clusters]
        total = int(rng.integers(1, sum(c.n_docs for c in clusters)))
        weights = (0.25, 0.25, 0.5)
        params = QuotaParams(density_weight=0.5, low_density_weight=0.75, inter_cluster_weights=weights)
        expected = seed_inter_cluster(clusters, centroids, range(k), total, weights)
        got = by_id(quotas(clusters, "inter_cluster", params, total, "seed"))
        # the spread is summed in another order here: allow a floor to move by one at a boundary
        assert all(abs(got[i] - expected[i]) <= 1 for i in expected), (got, expected)
        assert sum(abs(got[i] - expected[i]) for i in expected) <= 1


def test_centroid_spread_uses_only_the_centroids_it_is_given():
    kept = [(1.0, 0.0), (0.0, 1.0), (0.6, 0.8), (-1.0, 0.0)]
    np.testing.assert_allclose(centroid_spread(kept), [3.4 / 3, 2.2 / 3, 2.2 / 3, 4.6 / 3])
    with_excluded = centroid_spread([*kept, (0.0, -1.0)])[:4]
    assert not np.allclose(with_excluded, centroid_spread(kept))
    assert centroid_spread([(1.0, 0.0)]).tolist() == [0.0]
    # inter_cluster sees only the kept clusters: an excluded one is simply not passed
    result = quotas(fixture_clusters(), "inter_cluster", PARAMS, 90)
    assert by_id(result) == {0: 41, 1: 2, 2: 29, 3: 18}


# --- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: quotas([ClusterStats(0, 5)], "dense", PARAMS, 3), "sampling_strategy 'dense' is not one of uniform"),
    (lambda: quotas([ClusterStats(0, 5)], "uniform", PARAMS, 3, "approx"), "sampling_total 'approx' is not one of"),
    (lambda: quotas([ClusterStats(0, 5)], "uniform", PARAMS, -1), "the total must be a whole number >= 0"),
    (lambda: quotas([ClusterStats(0, 5), ClusterStats(0, 2)], "uniform", PARAMS, 3), "cluster 0 appears twice"),
    (lambda: quotas([ClusterStats(0, -5)], "uniform", PARAMS, 3), "cluster 0: n_docs must be a whole number >= 0"),
    (lambda: quotas([ClusterStats(0, 5, float("nan"))], "density", PARAMS, 3), "sum_distance must be a finite"),
    (lambda: quotas([ClusterStats(0, 5, 1.0, (1.0,)), ClusterStats(1, 5)], "inter_cluster", PARAMS, 3),
     "needs every kept cluster's centroid; missing for cluster(s) 1"),
    (lambda: quotas([ClusterStats(0, 5, 1.0, (1.0,)), ClusterStats(1, 5, 1.0, (1.0, 0.0))], "inter_cluster",
                    PARAMS, 3), "the centroids have different lengths"),
    (lambda: quotas([ClusterStats(0, 5)], "density", QuotaParams(density_weight=-0.1), 3),
     "density_weight must be >= 0"),
    (lambda: quotas([ClusterStats(0, 5)], "uniform", QuotaParams(inter_cluster_weights=(1.0, 1.0)), 3),
     "inter_cluster_weights must be 3 numbers"),
    (lambda: quotas([ClusterStats(0, 5, 1.0, (1.0,))], "inter_cluster", QuotaParams(inter_cluster_weights=(0, 0, 0)),
                    3), "inter_cluster_weights are all 0"),
])
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(QuotaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_no_clusters_no_quotas_and_the_defaults_are_the_dbt_vars():
    assert quotas([], "density", None, 10) == []
    params = QuotaParams()
    assert params.density_weight == default("density_weight") == 0.5
    assert params.low_density_weight == default("low_density_weight") == 0.75
    assert list(params.inter_cluster_weights) == default("inter_cluster_weights") == [0.33, 0.33, 0.33]
    assert default("sampling_strategy") == "uniform" and default("sampling_total") == "exact"
    assert QuotaParams.from_vars({"density_weight": 0.2}).density_weight == 0.2

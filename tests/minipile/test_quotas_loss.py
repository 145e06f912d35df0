"""The ``loss_informed`` strategy (the seed's lossi): nᵢ ∝ Lᵢ in both totals modes, against the
seed's own expression (MK2112/minicorpus ``04_distill_pile_embed_idea_2_lossi_1.py``,
``calculate_proportions``) and the exact mode's water-filling, and its clear errors."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from python_udfs.minipile.quotas import ClusterStats, QuotaError, quotas

# the dbt unit tests' fixture (sizes 50, 2, 30, 18) with losses 1, 1, 2, 0.5
FIXTURE = [ClusterStats(0, 50, 12.5, None, 1.0), ClusterStats(1, 2, 1.0, None, 1.0),
           ClusterStats(2, 30, 11.25, None, 2.0), ClusterStats(3, 18, 13.5, None, 0.5)]


def by_id(result) -> dict[int, int]:
    return {q.cluster_id: q.quota for q in result}


def test_exact_by_hand_with_a_capped_cluster():
    result = quotas(FIXTURE, "loss_informed", None, 50, "exact")
    assert by_id(result) == {0: 14, 1: 2, 2: 27, 3: 7}
    assert [q.is_capped for q in result] == [False, True, False, False]
    # cluster 1 capped at 2; the other 48 shared by loss 1 : 2 : 0.5
    assert [q.target for q in result] == pytest.approx([48 / 3.5, 2, 96 / 3.5, 24 / 3.5])


def test_seed_is_the_seeds_expression():
    result = quotas(FIXTURE, "loss_informed", None, 50, "seed")
    total_loss = sum(c.mean_loss for c in FIXTURE)
    # the seed: proportion = (mean_loss / total_loss) * total_count (lossi_1), then
    # min(int(np.round(proportion)), cluster size) (lossi_2)
    expected = {c.cluster_id: min(int(np.round((c.mean_loss / total_loss) * 50)), c.n_docs) for c in FIXTURE}
    assert by_id(result) == expected == {0: 11, 1: 2, 2: 22, 3: 6}
    assert sum(expected.values()) < 50  # nothing redistributed


def test_seed_rounds_half_to_even_as_numpy():
    # shares 2.5 and 3.5 of 6: np.round gives 2 and 4
    clusters = [ClusterStats(0, 10, 0.0, None, 2.5), ClusterStats(1, 10, 0.0, None, 3.5)]
    assert by_id(quotas(clusters, "loss_informed", None, 6, "seed")) == {0: 2, 1: 4}


def test_exact_without_caps_is_proportional_to_the_loss():
    rng = random.Random(7)
    for _ in range(100):
        k = rng.randint(1, 12)
        losses = [rng.uniform(0.5, 8.0) for _ in range(k)]
        clusters = [ClusterStats(i, 10_000, 0.0, None, loss) for i, loss in enumerate(losses)]
        total = rng.randint(0, 5_000)
        result = quotas(clusters, "loss_informed", None, total, "exact")
        assert sum(q.quota for q in result) == total
        shares = [Fraction(total) * Fraction(loss) / sum(Fraction(x) for x in losses) for loss in losses]
        for q, share in zip(result, shares):
            assert q.quota in (math.floor(share), math.ceil(share))
            assert q.target == pytest.approx(float(share))


def test_doubling_every_loss_changes_nothing():
    doubled = [ClusterStats(c.cluster_id, c.n_docs, c.sum_distance, None, 2 * c.mean_loss) for c in FIXTURE]
    for mode in ("exact", "seed"):
        assert by_id(quotas(doubled, "loss_informed", None, 50, mode)) == by_id(quotas(FIXTURE, "loss_informed", None,
                                                                                         50, mode))


def test_an_empty_cluster_may_lack_a_loss():
    clusters = FIXTURE + [ClusterStats(7, 0, 0.0, None, None)]
    assert by_id(quotas(clusters, "loss_informed", None, 50, "exact"))[7] == 0
    assert by_id(quotas(clusters, "loss_informed", None, 50, "seed"))[7] == 0


@pytest.mark.parametrize("clusters, message", [
    ([ClusterStats(0, 5, 0.0, None, 1.0), ClusterStats(3, 4, 0.0, None, None)],
     r"loss_informed needs every kept cluster's mean_loss \(int_cluster_losses\); missing for cluster\(s\) 3"),
    ([ClusterStats(0, 5, 0.0, None, -1.0)], "cluster 0: mean_loss must be >= 0"),
    ([ClusterStats(0, 5, 0.0, None, float("nan"))], "cluster 0: mean_loss must be a finite number"),
    ([ClusterStats(0, 5, 0.0, None, 0.0), ClusterStats(1, 5, 0.0, None, 0.0)], "every kept cluster's mean_loss is 0"),
])
def test_bad_losses_are_a_clear_error(clusters, message):
    for mode in ("exact", "seed"):
        with pytest.raises(QuotaError, match=message):
            quotas(clusters, "loss_informed", None, 5, mode)


def test_other_strategies_ignore_the_loss():
    plain = [ClusterStats(c.cluster_id, c.n_docs, c.sum_distance) for c in FIXTURE]
    for strategy in ("uniform", "proportionate", "density"):
        assert quotas(plain, strategy, None, 50) == quotas(FIXTURE, strategy, None, 50)


def test_the_udf_takes_mean_loss_in_the_struct_and_names_a_missing_one():
    import duckdb

    from python_udfs import udfs

    con = duckdb.connect()
    udfs.register(con)

    def call(strategy: str, second_loss: str) -> list[int]:
        sql = (f"select [q.quota for q in pilehouse_quotas(["
               f"{{'cluster_id': 0, 'n_docs': 50::bigint, 'sum_distance': 1.0::double, 'centroid': null::float[], "
               f"'mean_loss': 3.0::double}}, "
               f"{{'cluster_id': 1, 'n_docs': 50::bigint, 'sum_distance': 1.0::double, 'centroid': null::float[], "
               f"'mean_loss': {second_loss}}}], '{strategy}', 8, 'exact', 0.5, 0.75, [0.33, 0.33, 0.33])]")
        return con.execute(sql).fetchall()[0][0]

    assert call("loss_informed", "1.0::double") == [6, 2]
    assert call("uniform", "null::double") == [4, 4]  # other strategies: NULL is fine
    with pytest.raises(duckdb.Error, match=r"missing for cluster\(s\) 1"):
        call("loss_informed", "null::double")

"""The blocked SemDeDup pass against a brute-force all-pairs reference."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from python_udfs.curation import semdedup as sd


def clustered_units(rng: np.random.Generator, n: int, dim: int, near: int) -> np.ndarray:
    """n unit vectors, ``near`` of them perturbations of earlier ones (so some pairs are close)."""
    x = rng.normal(size=(n, dim))
    for j in rng.choice(np.arange(1, n), size=near, replace=False):
        i = rng.integers(0, j)
        x[j] = x[i] + rng.normal(scale=rng.choice([0.02, 0.1, 0.3]), size=dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block_size", [1, 3, 7, 16, 64, 1000])
@pytest.mark.parametrize("keep", sd.KEEP_RULES)
def test_blocked_equals_brute_force(block_size, keep):
    rng = np.random.default_rng(block_size * 7 + len(keep))
    n = 90
    units = clustered_units(rng, n, 12, near=40)
    doc_ids = rng.permutation(10_000)[:n]
    distances = np.round(rng.uniform(0, 1, n), 2)  # rounded: ties, broken by doc_id
    ranked = units[sd.keep_order(doc_ids, distances, keep, seed=3)]
    for eps in (0.001, 0.01, 0.05, 0.2):
        got = sd.earlier_similarity(ranked, block_size, 1 - eps)
        want = sd.brute_force(ranked, 1 - eps)
        np.testing.assert_allclose(got.similarity[1:], want.similarity[1:], rtol=0, atol=1e-12)
        assert got.similarity[0] == -np.inf and got.nearest[0] == -1
        assert (got.nearest == want.nearest).all()
        assert (got.removed == want.removed).all()
        assert (got.duplicate_of == want.duplicate_of).all()
        np.testing.assert_allclose(got.similarity_to_kept, want.similarity_to_kept, atol=1e-12)
        assert not got.removed[0]
        assert (~got.removed[got.duplicate_of[got.removed]]).all()  # duplicate_of is kept
        assert (got.duplicate_of[got.removed] < np.flatnonzero(got.removed)).all()  # and ranked earlier
    assert want.removed.any() and not want.removed.all()  # the fixture has both kinds


def test_keep_orders():
    ids = np.array([5, 3, 9, 1])
    dist = np.array([0.2, 0.7, 0.7, 0.1])
    assert ids[sd.keep_order(ids, dist, "farthest")].tolist() == [3, 9, 5, 1]  # tie at 0.7: smaller id
    assert ids[sd.keep_order(ids, dist, "closest")].tolist() == [1, 5, 3, 9]
    key = {int(i): hashlib.md5(f"semdedup:11:{int(i)}".encode()).hexdigest() for i in ids}
    assert ids[sd.keep_order(ids, dist, "random", seed=11)].tolist() == sorted(ids.tolist(), key=key.get)


def test_random_keep_is_duckdbs_md5_order():
    import duckdb

    ids = list(range(1, 200, 7))
    want = [r[0] for r in duckdb.sql(f"select i from unnest({ids}) t(i) order by md5('semdedup:42:' || i::varchar)")
            .fetchall()]
    assert np.array(ids)[sd.keep_order(np.array(ids), np.zeros(len(ids)), "random", 42)].tolist() == want


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="semdedup_keep"):
        sd.keep_order(np.array([1]), np.array([0.1]), "hard")
    with pytest.raises(ValueError, match="semdedup_eps"):
        sd.check_eps(-0.1)
    with pytest.raises(ValueError, match="semdedup_block_size"):
        sd.earlier_similarity(np.eye(3), 0)


def batches_of(doc_ids, cluster_ids, distances, units, size):
    table = pa.table({"doc_id": pa.array(doc_ids, pa.int64()), "cluster_id": pa.array(cluster_ids, pa.int32()),
                      "distance": pa.array(distances, pa.float64()),
                      "embedding": pa.array([u.tolist() for u in units], pa.list_(pa.float32()))})
    return table.to_batches(max_chunksize=size)


def test_clusters_are_independent_and_batches_do_not_matter():
    rng = np.random.default_rng(5)
    n = 120
    units = clustered_units(rng, n, 8, near=50)
    cluster = np.sort(rng.integers(0, 4, n))
    ids = np.arange(n) * 3 + 100
    dist = rng.uniform(0, 1, n)
    a = sd.semantic_duplicates(batches_of(ids, cluster, dist, units, 7), 0.05, "farthest", block_size=5)
    b = sd.semantic_duplicates(batches_of(ids, cluster, dist, units, 1000), 0.05, "farthest", block_size=64)
    assert a.to_pylist() == b.to_pylist() and a.num_rows > 0
    want = []
    for c in np.unique(cluster):  # the reference, cluster by cluster
        m = cluster == c
        order = sd.keep_order(ids[m], dist[m], "farthest")
        ref = sd.brute_force(units[m][order], 0.95)
        want += [int(ids[m][order][r]) for r in np.flatnonzero(ref.removed)]
    assert sorted(a.column("doc_id").to_pylist()) == sorted(want)
    assert set(a.column("duplicate_of").to_pylist()).isdisjoint(a.column("doc_id").to_pylist())
    for d, cid, dup in zip(*(a.column(c).to_pylist() for c in ("doc_id", "cluster_id", "duplicate_of")), strict=True):
        assert cid == cluster[ids == d][0] == cluster[ids == dup][0]


def test_ecdf_counts_what_each_eps_removes():
    rng = np.random.default_rng(9)
    n = 80
    units = clustered_units(rng, n, 8, near=40)
    cluster = np.sort(rng.integers(0, 3, n))
    ids, dist = np.arange(n), rng.uniform(0, 1, n)
    table = sd.ecdf(batches_of(ids, cluster, dist, units, 16), [0.3, 0.001, 0.05], "closest")
    assert table.column("eps").to_pylist() == [0.001, 0.05, 0.3]
    removed = table.column("documents_removed").to_pylist()
    for eps, count in zip(table.column("eps").to_pylist(), removed, strict=True):
        assert count == sd.semantic_duplicates(batches_of(ids, cluster, dist, units, 16), eps, "closest").num_rows
    assert table.column("documents").to_pylist() == [n] * 3
    assert removed == sorted(removed) and removed[-1] > 0


def test_unsorted_clusters_are_an_error():
    units = np.eye(3, dtype=np.float32)
    with pytest.raises(ValueError, match="sorted by cluster_id"):
        list(sd.iter_clusters(batches_of([1, 2, 3], [1, 0, 1], [0.1, 0.2, 0.3], units, 10)))

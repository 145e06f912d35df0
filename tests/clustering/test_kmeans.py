"""Tests for the streamed spherical k-means (python_udfs.clustering.kmeans)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from python_udfs.clustering.kmeans import (
    ASSIGNMENT_SCHEMA,
    KMeansConfig,
    assign,
    assign_to_parts,
    batch_to_numpy,
    centroid_digest,
    embedding_parts,
    fit,
    make_assigner,
    normalise,
    rebatch,
)
from python_udfs.runner.parts import write_atomic

K, DIM, N = 5, 32, 2000


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """N unit vectors around K random directions (cosine to own centre ~0.99)."""
    rng = np.random.default_rng(1234)
    centres = normalise(rng.normal(size=(K, DIM)))
    labels = rng.integers(0, K, size=N)
    x = centres[labels] + 0.03 * rng.normal(size=(N, DIM))
    return normalise(x).astype(np.float32), labels


def chunked(x: np.ndarray, sizes: list[int]):
    """A replayable stream cutting x into chunks of the given sizes (cycled), in order."""

    def stream():
        start, i = 0, 0
        while start < len(x):
            size = sizes[i % len(sizes)]
            yield x[start:start + size]
            start += size
            i += 1

    return stream


def config(**kwargs) -> KMeansConfig:
    base = {"n_clusters": K, "batch_size": 256, "n_init": 3, "seed": 7, "max_epochs": 10}
    return KMeansConfig(**{**base, **kwargs})


# --- rebatch -------------------------------------------------------------------------

def test_rebatch_exact_sizes_same_rows() -> None:
    x = np.arange(100 * 2, dtype=np.float32).reshape(100, 2)
    pieces = [x[:7], x[7:7], x[7:40], x[40:41], x[41:100]]  # uneven, with an empty chunk
    out = list(rebatch(pieces, 16))
    assert [len(b) for b in out] == [16] * 6 + [4]
    np.testing.assert_array_equal(np.concatenate(out), x)
    assert [len(b) for b in rebatch([x], 25)] == [25] * 4
    assert list(rebatch([], 8)) == []


# --- fit -----------------------------------------------------------------------------

def test_fit_recovers_groups_with_streamed_batches(data) -> None:
    x, labels = data
    calls = []

    def stream():
        calls.append(1)
        yield from chunked(x, [100, 333, 7, 560])()

    centroids, info = fit(stream, config(), progress=False)
    assert centroids.shape == (K, DIM) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    cluster, distance = assign(x, centroids)
    assert adjusted_rand_score(labels, cluster) > 0.99
    assert len(set(cluster.tolist())) == K
    assert float(distance.max()) < 0.05  # every point sits close to its centroid
    assert info["n_docs"] == N
    assert info["epochs"] == len(calls) >= 1
    assert info["steps"] == info["epochs"] * int(np.ceil(N / 256))


def test_fit_stops_early_when_converged(data) -> None:
    x, _ = data
    _, info = fit(chunked(x, [500]), config(max_epochs=30, tol=1e-2), progress=False)
    assert 2 <= info["epochs"] < 30
    assert info["last_shift"] is not None and info["last_shift"] < 1e-2


def test_max_epochs_is_respected(data) -> None:
    x, _ = data
    _, info = fit(chunked(x, [500]), config(max_epochs=1), progress=False)
    assert info["epochs"] == 1 and info["last_shift"] is None


def test_same_seed_same_centroids_whatever_the_chunking(data) -> None:
    x, _ = data
    a, _ = fit(chunked(x, [256]), config(max_epochs=3), progress=False)
    b, _ = fit(chunked(x, [1, 999, 50, 13]), config(max_epochs=3), progress=False)
    c, _ = fit(chunked(x, [2000]), config(max_epochs=3), progress=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_different_seed_changes_initialisation(data) -> None:
    x, _ = data
    a, _ = fit(chunked(x, [256]), config(max_epochs=1, n_init=1, seed=1), progress=False)
    b, _ = fit(chunked(x, [256]), config(max_epochs=1, n_init=1, seed=2), progress=False)
    assert not np.array_equal(a, b)


def test_unnormalised_float64_input_is_normalised(data) -> None:
    x, labels = data
    scaled = x.astype(np.float64) * np.linspace(0.5, 3.0, N)[:, None]
    centroids, _ = fit(chunked(scaled, [300]), config(), progress=False)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert adjusted_rand_score(labels, assign(x, centroids)[0]) > 0.99


def test_too_few_points_for_k_is_a_clear_error() -> None:
    x = normalise(np.random.default_rng(0).normal(size=(3, DIM))).astype(np.float32)
    with pytest.raises(ValueError, match=r"cannot form 5 clusters .* 3 embeddings"):
        fit(chunked(x, [2]), config(), progress=False)


def test_empty_stream_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no embeddings"):
        fit(lambda: iter([]), config(), progress=False)


# --- assign --------------------------------------------------------------------------

#: The assignment's two row paths (kmeans.assign_path): numba's fused loop and numpy's passes.
PATHS = ["fused", "numpy"]


@pytest.mark.parametrize("path", PATHS)
def test_assign_distance_and_ties(path) -> None:
    centroids = np.eye(3, dtype=np.float32)
    x = np.array([
        [0.0, 1.0, 0.0],                   # exactly centroid 1
        [0.6, 0.0, 0.8],                   # nearer 2 (0.8) than 0 (0.6)
        [np.sqrt(0.5), np.sqrt(0.5), 0.0],  # tie between 0 and 1 -> 0
        [0.0, np.sqrt(0.5), np.sqrt(0.5)],  # tie between 1 and 2 -> 1
        [-1.0, 0.0, 0.0],                  # opposite of 0: ties 1 and 2 at 0 -> 1
    ], dtype=np.float32)
    cluster, distance = assign(x, centroids, path=path)
    assert cluster.dtype == np.int32 and distance.dtype == np.float64
    assert cluster.tolist() == [1, 2, 0, 1, 1]
    expected = 1.0 - np.array([1.0, 0.8, np.sqrt(0.5), np.sqrt(0.5), 0.0])
    np.testing.assert_allclose(distance, expected, atol=1e-6)
    np.testing.assert_allclose(distance, 1.0 - np.max(x @ centroids.T, axis=1), atol=1e-12)


@pytest.mark.parametrize("path", PATHS)
def test_assign_exact_duplicate_centroids_pick_lowest_id(path) -> None:
    c = normalise(np.array([[1.0, 2.0], [3.0, -1.0], [1.0, 2.0]], dtype=np.float32))
    cluster, distance = assign(c[[2, 0, 1]], c, path=path)
    assert cluster.tolist() == [0, 0, 1]
    np.testing.assert_allclose(distance, 0.0, atol=1e-6)


# --- batch_to_numpy ------------------------------------------------------------------

def test_batch_to_numpy_list_of_float() -> None:
    rows = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]]
    batch = pa.record_batch({
        "doc_id": pa.array([4, 5, 6], pa.int64()),
        "embedding": pa.array(rows, pa.list_(pa.float32())),
    })
    out = batch_to_numpy(batch)
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out, np.array(rows, dtype=np.float32))
    # a sliced batch (non-zero offset) and a double column with another name
    sliced = batch.slice(1, 2)
    np.testing.assert_allclose(batch_to_numpy(sliced), np.array(rows[1:], dtype=np.float32))
    other = pa.record_batch({"vec": pa.array(rows, pa.list_(pa.float64()))})
    np.testing.assert_allclose(batch_to_numpy(other, "vec"), np.array(rows, dtype=np.float32))
    # a table's column is a ChunkedArray
    table = pa.Table.from_batches([batch, batch])
    assert batch_to_numpy(table).shape == (6, 3)


def test_batch_to_numpy_empty_and_ragged() -> None:
    empty = pa.record_batch({"embedding": pa.array([], pa.list_(pa.float32()))})
    assert batch_to_numpy(empty).shape[0] == 0
    ragged = pa.record_batch({"embedding": pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="differing lengths"):
        batch_to_numpy(ragged)
    # lengths 3 + 1 = 4 divide evenly by 2 rows, yet the rows still differ
    sneaky = pa.record_batch({"embedding": pa.array([[1.0, 2.0, 3.0], [4.0]],
                                                    pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="differing lengths"):
        batch_to_numpy(sneaky)
    with_null = pa.record_batch({"embedding": pa.array([[1.0, 2.0], None, [3.0, 4.0]],
                                                       pa.list_(pa.float32()))})
    with pytest.raises(ValueError, match="NULL"):
        batch_to_numpy(with_null)


def test_batch_to_numpy_fixed_size_list() -> None:
    values = pa.array(np.arange(12, dtype=np.float32))
    batch = pa.record_batch({"embedding": pa.FixedSizeListArray.from_arrays(values, 4)})
    np.testing.assert_array_equal(batch_to_numpy(batch),
                                  np.arange(12, dtype=np.float32).reshape(3, 4))


# --- assignment parts (the runner step over embedding parts) -------------------------------

def write_embedding_parts(folder: Path, x: np.ndarray, part_size: int, tag: str = "") -> pa.Table:
    """Embedding parts as int_documents_embedded leaves them, and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, start in enumerate(range(0, len(x), part_size)):
        chunk = x[start:start + part_size]
        path = folder / f"part-{index:06d}.parquet"
        fingerprint = f"embedding-part-{index}{tag}"
        write_atomic(pa.table({"doc_id": pa.array(range(start, start + len(chunk)), pa.int64()),
                               "embedding": pa.array(chunk.tolist(), pa.list_(pa.float32()))}), path, fingerprint)
        rows.append({"part_index": index, "path": str(path), "n_rows": len(chunk), "fingerprint": fingerprint})
    return pa.Table.from_pylist(rows)


def read_assignments(out: Path) -> pa.Table:
    return pq.read_table(sorted(out.glob("part-*.parquet"))).sort_by("doc_id")


def test_assignment_parts_match_a_whole_assign(data, tmp_path: Path) -> None:
    x, _ = data
    x = x[:700]
    centroids, _ = fit(chunked(x, [256]), config(max_epochs=2), progress=False)
    manifest = write_embedding_parts(tmp_path / "emb", x, 256)
    out = tmp_path / "assign"
    stats = assign_to_parts(manifest, centroids, out, progress=False)
    assert (stats.parts, stats.computed_parts, stats.computed) == (3, 3, 700)
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:06d}.parquet" for i in range(3)]
    got = read_assignments(out)
    assert got.schema == ASSIGNMENT_SCHEMA
    cluster, distance = assign(x, normalise(centroids))
    assert got.column("doc_id").to_pylist() == list(range(700))
    assert got.column("cluster_id").to_pylist() == cluster.tolist()
    np.testing.assert_allclose(got.column("distance").to_numpy(), distance, atol=1e-6)
    assert stats.manifest().column("n_rows").to_pylist() == [256, 256, 188]


def test_assignment_parts_are_reused_until_centroids_or_embeddings_change(data, tmp_path: Path) -> None:
    x, _ = data
    x = x[:600]
    a, _ = fit(chunked(x, [200]), config(max_epochs=1, seed=1), progress=False)
    b, _ = fit(chunked(x, [200]), config(max_epochs=1, seed=2), progress=False)
    manifest = write_embedding_parts(tmp_path / "emb", x, 200)
    out = tmp_path / "assign"
    assign_to_parts(manifest, a, out, progress=False)
    again = assign_to_parts(manifest, a, out, progress=False)
    assert (again.computed_parts, again.reused_parts) == (0, 3)
    assert centroid_digest(a) != centroid_digest(b) and centroid_digest(a) == centroid_digest(a.copy())
    moved = assign_to_parts(manifest, b, out, progress=False)  # new centroids: every part again
    assert (moved.computed_parts, moved.reused_parts) == (3, 0)
    assert read_assignments(out).column("cluster_id").to_pylist() == assign(x, normalise(b))[0].tolist()
    # one embedding part re-embedded (new fingerprint), and the corpus one part shorter
    changed = x[:400].copy()
    changed[250:260] = changed[::-1][:10]
    manifest = write_embedding_parts(tmp_path / "emb2", changed, 200, tag="-v2")
    manifest = pa.Table.from_pylist([
        {**row, "fingerprint": "embedding-part-0"} if row["part_index"] == 0 else row for row in manifest.to_pylist()
    ])
    shorter = assign_to_parts(manifest, b, out, progress=False)
    assert (shorter.parts, shorter.computed_parts, shorter.reused_parts) == (2, 1, 1)
    assert sorted(p.name for p in out.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    assert read_assignments(out).column("cluster_id").to_pylist() == assign(changed, normalise(b))[0].tolist()


def test_assignment_step_travels_to_other_workers(data, tmp_path: Path) -> None:
    import pickle

    x, _ = data
    manifest = write_embedding_parts(tmp_path / "emb", x[:50], 20)
    parts = [pickle.loads(pickle.dumps(p)) for p in embedding_parts(manifest)]
    assert [(p.index, p.content, p.size, p.rows) for p in parts] == [
        (0, "embedding-part-0", 20, None), (1, "embedding-part-1", 20, None), (2, "embedding-part-2", 10, None)]
    assert parts[2].input_rows().column("doc_id").to_pylist() == list(range(40, 50))  # loaded where computed
    centroids = normalise(x[:K])
    worker = pickle.loads(pickle.dumps(make_assigner(centroids)))
    assert worker(parts[0].input_rows()).column("cluster_id").to_pylist() == assign(x[:20], centroids)[0].tolist()


def naive_assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition: the full float64 distance matrix, argmin (numpy's first = lowest id)."""
    dist = 1.0 - x.astype(np.float64) @ centroids.astype(np.float64).T
    cluster = np.argmin(dist, axis=1)
    return cluster, dist[np.arange(len(x)), cluster]


def near_tie_data(n: int = 3000, k: int = 60, d: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors and centroids with exact duplicates and near-duplicates (float32 ties)."""
    rng = np.random.default_rng(99)
    c = normalise(rng.normal(size=(k, d))).astype(np.float32)
    c[10] = c[3]  # exact duplicate: always 3
    c[11] = normalise(c[3:4] + 1e-6 * rng.normal(size=(1, d))).astype(np.float32)[0]  # within float32 error
    x = normalise(c[rng.integers(0, k, n)] + 0.2 * rng.normal(size=(n, d))).astype(np.float32)
    x[:50] = normalise(c[3:4] + 0.01 * rng.normal(size=(50, d))).astype(np.float32)  # near 3, 10 and 11
    return x, c


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [60, 100])  # numpy keeps similarities k x rows (small k) or rows x k
def test_assign_same_whatever_block_size_and_threads(k, path) -> None:
    x, c = near_tie_data(k=k)
    cluster, distance = assign(x, c, block_rows=64, threads=1, path=path)
    for block_rows in (1, 7, 100, 1000, len(x)):
        for threads in (1, 2, 3):
            got = assign(x, c, block_rows=block_rows, threads=threads, path=path)
            assert np.array_equal(got[0], cluster) and np.array_equal(got[1], distance), (block_rows, threads)
    assert np.array_equal(assign(x, c, path=path)[0], cluster)
    assert 10 not in set(cluster.tolist())  # the duplicate of 3 never wins


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [1, 2, 60, 100])
def test_assign_matches_the_naive_distance_matrix(k, path) -> None:
    x, c = near_tie_data(k=k) if k > 11 else (near_tie_data()[0], near_tie_data()[1][:k])
    cluster, distance = assign(x, c, block_rows=128, threads=2, path=path)
    ref_cluster, ref_distance = naive_assign(x, c)
    assert cluster.tolist() == ref_cluster.tolist()
    np.testing.assert_allclose(distance, ref_distance, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_assign_decides_float32_near_ties_in_float64(path) -> None:
    # Two centroids whose similarities to x differ by less than float32 can resolve: the
    # float32 matmul may rank them either way, the float64 decision picks the truly nearer.
    d = 64
    rng = np.random.default_rng(5)
    base = normalise(rng.normal(size=(1, d)))[0]
    x = base.astype(np.float32)[None]
    step = np.zeros(d)
    step[int(np.argmax(np.abs(base)))] = 1e-7 * np.sign(base[int(np.argmax(np.abs(base)))])
    c = np.stack([base - step, base]).astype(np.float32)  # row 1 is x exactly: nearer in exact arithmetic
    exact = c.astype(np.float64) @ x[0].astype(np.float64)
    assert exact[1] > exact[0]
    for threads in (1, 2):
        assert assign(x, c, threads=threads, path=path)[0].tolist() == [int(np.argmax(exact))]


def test_the_fused_path_is_the_default_and_agrees_with_numpy() -> None:
    from python_udfs.clustering.kmeans import assign_path

    assert assign_path() == "fused"  # numba is a dependency
    with pytest.raises(ValueError, match="assign path must be one of"):
        assign_path("cuda")
    x, c = near_tie_data(k=100)
    fused, default = assign(x, c, path="fused"), assign(x, c)
    assert np.array_equal(fused[0], default[0]) and np.array_equal(fused[1], default[1])
    slow = assign(x, c, path="numpy")
    assert np.array_equal(fused[0], slow[0])
    np.testing.assert_allclose(fused[1], slow[1], atol=1e-6)

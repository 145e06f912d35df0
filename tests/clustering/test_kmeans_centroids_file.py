"""``kmeans_centroids_file``: assigning with given centroids instead of fitting
(python_udfs.clustering.kmeans.load_centroids_file, file_centroids_table), so that a user with
the seed's embeddings and its ``cluster_centers.npy`` gets the seed's cluster ids."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from python_udfs.clustering.kmeans import (
    CENTROIDS_SCHEMA,
    KMeansConfig,
    assign,
    batch_to_numpy,
    embedding_dimension,
    file_centroids_table,
    fit,
    load_centroids_file,
    normalise,
)

K, DIM, N = 6, 24, 1500


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(99)
    centres = normalise(rng.normal(size=(K, DIM)))
    x = centres[rng.integers(0, K, size=N)] + 0.05 * rng.normal(size=(N, DIM))
    return normalise(x).astype(np.float32)


def test_given_centroids_assign_by_the_largest_dot_product(tmp_path, data):
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(K, DIM)) * rng.uniform(0.1, 50, size=(K, 1))  # not unit length
    np.save(tmp_path / "centers.npy", raw.astype(np.float64))
    centroids = load_centroids_file(tmp_path / "centers.npy", DIM)
    assert centroids.dtype == np.float32 and centroids.shape == (K, DIM)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-6)
    cluster, distance = assign(data, centroids)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    dots = data.astype(np.float64) @ unit.T
    np.testing.assert_array_equal(cluster, np.argmax(dots, axis=1))
    np.testing.assert_allclose(distance, 1.0 - dots.max(axis=1), atol=1e-5)
    assert len(set(cluster.tolist())) > 1


def test_a_file_written_from_a_fit_reproduces_the_fits_assignments(tmp_path, data):
    config = KMeansConfig(n_clusters=K, batch_size=256, n_init=2, seed=5, max_epochs=3, tol=1e-4)

    def stream():
        for start in range(0, N, 256):
            yield data[start:start + 256]

    fitted, _ = fit(stream, config, progress=False)
    np.save(tmp_path / "fit.npy", fitted)
    table = file_centroids_table(tmp_path / "fit.npy", DIM)
    assert table.schema == CENTROIDS_SCHEMA
    assert table.column("cluster_id").to_pylist() == list(range(K))
    assert set(table.column("n_fit").to_pylist()) == {0} and set(table.column("epochs").to_pylist()) == {0}
    given = batch_to_numpy(table, "centroid")
    np.testing.assert_array_equal(assign(data, given)[0], assign(data, fitted)[0])


@pytest.mark.parametrize("array, message", [
    (np.zeros((4, 10)) + 1, r"holds 10-dimensional centroids, but the embeddings are 24-dimensional"),
    (np.ones(24), r"expected a 2-D array, one row per cluster, got shape \(24,\)"),
    (np.array([[1.0] * 24, [np.nan] * 24]), "holds NaN or infinity"),
    (np.vstack([np.ones(24), np.zeros(24)]), r"row\(s\) 1 are all zeros"),
])
def test_bad_files_are_a_clear_error(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message) as err:
        load_centroids_file(tmp_path / "bad.npy", DIM)
    assert "bad.npy" in str(err.value)  # names the file


def test_a_missing_or_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="kmeans_centroids_file .*nothing.npy.*: no such file"):
        load_centroids_file(tmp_path / "nothing.npy", DIM)
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="not a readable .npy array"):
        load_centroids_file(tmp_path / "text.npy", DIM)


def test_a_relative_path_is_also_looked_up_in_the_project_root(tmp_path, monkeypatch):
    from python_udfs.clustering import kmeans

    (tmp_path / "seed").mkdir()
    np.save(tmp_path / "seed" / "centers.npy", np.eye(3, DIM))
    monkeypatch.setattr(kmeans, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path / "seed")
    assert load_centroids_file("centers.npy", DIM).shape == (3, DIM)  # the current folder
    monkeypatch.chdir("/")
    assert load_centroids_file("seed/centers.npy", DIM).shape == (3, DIM)  # the project root


def test_the_embedding_dimension_comes_from_the_relation():
    con = duckdb.connect()
    con.register("e", pa.table({"doc_id": [1, 2], "embedding": pa.array([[0.1] * 7, [0.2] * 7],
                                                                        pa.list_(pa.float32()))}))
    assert embedding_dimension(con.sql("select * from e")) == 7
    with pytest.raises(ValueError, match="no embeddings to assign"):
        embedding_dimension(con.sql("select * from e where false"))


@pytest.mark.slow
def test_dbt_int_kmeans_centroids_takes_the_file(tmp_path, data):
    """Real `dbt run` of int_kmeans_centroids over a warehouse holding its inputs: the file's
    centroids, normalised, n_fit 0; a file of the wrong dimension fails naming both."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    db = tmp_path / "pilehouse.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table stg_lake__documents as select range::bigint as doc_id, 'Pile-CC' as source, "
                    "'text' as text from range(?)", [N])
        con.register("e", pa.table({"doc_id": pa.array(range(N), pa.int64()),
                                    "embedding": pa.array(data.tolist(), pa.list_(pa.float32()))}))
        con.execute("create table int_document_embeddings as select * from e")
        con.execute("create table int_documents_embedded (part_index integer)")
    raw = np.random.default_rng(8).normal(size=(9, DIM))
    np.save(tmp_path / "centers.npy", raw)
    np.save(tmp_path / "wrong.npy", raw[:, :10])
    env = {**os.environ, "PILEHOUSE_DB": str(db), "PILEHOUSE_LAKE": str(tmp_path / "lake"), "HF_HUB_OFFLINE": "1",
           "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "dbt"), "run", "--select", "int_kmeans_centroids",
             "--project-dir", str(root), "--profiles-dir", str(root), "--target-path", str(tmp_path / "target"),
             "--log-path", str(tmp_path / "logs"), "--vars", json.dumps({"kmeans_centroids_file": str(path)})],
            cwd=root, env=env, capture_output=True, text=True, timeout=600)

    result = run(tmp_path / "centers.npy")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    with duckdb.connect(str(db)) as con:
        rows = con.execute("select cluster_id, centroid, n_fit, epochs from int_kmeans_centroids "
                           "order by cluster_id").fetchall()
    assert [r[0] for r in rows] == list(range(9)) and {(r[2], r[3]) for r in rows} == {(0, 0)}
    np.testing.assert_allclose(np.array([r[1] for r in rows]), raw / np.linalg.norm(raw, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    result = run(tmp_path / "wrong.npy")
    assert result.returncode != 0
    assert "wrong.npy' holds 10-dimensional centroids, but the embeddings are 24-dimensional" in result.stdout

"""`cluster_summary` names each cluster's main source by one rule (most documents, ties to the
alphabetically first source), and the review page, the report and `prompt_scan_clusters`
all show that name; its x, y are the centroids' 2-D PCA, the same however the rows arrive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warehouses import Corpus, build_models, build_warehouse, connect, render_model, unit_rows

from python_udfs.apps.report.tables import Tables, main_sources
from python_udfs.apps.review.warehouse import Warehouse
from python_udfs.apps.warehouse import WarehouseReader, WarehouseUnavailable

CLUSTERS = {
    0: ["beta", "beta", "alpha", "alpha", "gamma"],  # tie beta/alpha -> alpha
    1: ["alpha", "Zeta", "Zeta", "alpha"],  # tie -> Zeta ('Z' sorts before 'a')
    2: ["gamma", "gamma", "alpha", "gamma"],
    3: [],  # no documents
}
EXPECTED = {0: ("alpha", 2 / 5, 5), 1: ("Zeta", 0.5, 4), 2: ("gamma", 0.75, 4), 3: (None, None, 0)}
SPLITS = {"train_size": 4, "validation_size": 1, "test_size": 1}


def tie_corpus() -> Corpus:
    sources = [s for cid in CLUSTERS for s in CLUSTERS[cid]]
    cluster_of = [cid for cid in CLUSTERS for _ in CLUSTERS[cid]]
    return Corpus(sources, [f"document {i} of {s}" for i, s in enumerate(sources)], cluster_of,
                  [0.1 + 0.01 * i for i in range(len(sources))], unit_rows(np.random.default_rng(5), 4, 6))


@pytest.fixture(scope="module")
def tie_warehouse(tmp_path_factory) -> Path:
    return build_warehouse(tmp_path_factory.mktemp("ties") / "wh.duckdb", tie_corpus(), splits=SPLITS)


def summary(path: Path) -> dict[int, tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("select cluster_id, main_source, main_share, n_docs, x, y, x_variance_share, "
                           "y_variance_share from cluster_summary order by cluster_id").fetchall()
    return {r[0]: r[1:] for r in rows}


def test_main_source_by_the_one_tie_rule(tie_warehouse) -> None:
    got = summary(tie_warehouse)
    assert {c: (r[0], r[1], r[2]) for c, r in got.items()} == EXPECTED


def test_map_is_the_pca_of_the_centroids(tie_warehouse) -> None:
    centroids = tie_corpus().centroids.astype(np.float32).astype(np.float64)  # stored as FLOAT[]
    centred = centroids - centroids.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    got = summary(tie_warehouse)
    for j, k in enumerate([-1, -2]):
        expected = centred @ vectors[:, k]
        expected *= np.sign(expected[np.argmax(np.abs(expected))])
        np.testing.assert_allclose([got[c][3 + j] for c in sorted(got)], expected, atol=1e-6)
        assert {round(r[5 + j], 9) for r in got.values()} == {round(values[k] / values.sum(), 9)}


def test_the_same_rows_in_another_order_give_the_same_summary(tie_warehouse, tmp_path) -> None:
    with connect(tmp_path / "shuffled.duckdb") as con, duckdb.connect(str(tie_warehouse), read_only=True) as built:
        for table in ("stg_lake__documents", "int_cluster_assignments", "int_kmeans_centroids", "cluster_exclusions"):
            rows = built.sql(f"select * from {table}").arrow().read_all()
            shuffled = rows.take(np.random.default_rng(1).permutation(rows.num_rows)) if rows.num_rows else rows
            con.register("shuffled", shuffled)
            con.execute(f"create table {table} as select * from shuffled")
            con.unregister("shuffled")
        build_models(con, ["cluster_summary"], SPLITS)
    assert summary(tmp_path / "shuffled.duckdb") == summary(tie_warehouse)


def test_review_page_shows_the_marts_main_source(tie_warehouse) -> None:
    overview = Warehouse(tie_warehouse).overview()
    got = summary(tie_warehouse)
    for cluster in overview.clusters:
        main, share, n_docs, x, y = got[cluster.cluster_id][:5]
        assert (cluster.main_source, cluster.n_docs, cluster.x, cluster.y) == (main or "(empty)", n_docs, x, y)
        assert cluster.main_share == pytest.approx(share or 0.0)
    assert overview.by_id[1].sources[0] == ("Zeta", 2)  # the mix lists the main source first
    assert overview.explained_variance == pytest.approx(got[0][5:7])


def test_report_uses_the_marts_main_source(tie_warehouse) -> None:
    reader = WarehouseReader(tie_warehouse)
    with reader.connect() as con:
        got = main_sources(Tables(con, reader.tables(con)))
    assert got == {c: (m, pytest.approx(s)) for c, (m, s, _) in EXPECTED.items() if m is not None}


def test_prompt_scan_clusters_uses_the_marts_main_source(tie_warehouse, tmp_path) -> None:
    scan = tmp_path / "scan" / "some-model"
    scan.mkdir(parents=True)
    pq.write_table(pa.table({"model": ["m"] * 3, "cluster_id": pa.array([0, 1, 2], pa.int32()),
                             "text": ["a", "b", "c"], "token_long": ["x", "y", "z"], "p_long": [0.9, 0.8, 0.7]}),
                   scan / "part-00000.parquet")
    with duckdb.connect(str(tie_warehouse), read_only=True) as built, duckdb.connect() as con:
        con.register("summary", built.sql("select * from cluster_summary").arrow().read_all())
        con.execute("create table cluster_summary as select * from summary")
        con.execute("create table int_prompt_scan_windows as select * from (values ('m', 0, 10), ('m', 1, 10), "
                    "('m', 2, 10), ('m', 3, 10)) t(model, cluster_id, windows)")
        sql = render_model("prompt_scan_clusters", macros={"scan_dir()": str(tmp_path / "scan")})
        rows = dict(con.execute(f"select cluster_id, main_source from ({sql})").fetchall())
    assert rows == {c: m for c, (m, _, _) in EXPECTED.items()}


def test_the_shared_reader_says_what_to_do(tmp_path, tie_warehouse) -> None:
    with pytest.raises(WarehouseUnavailable, match="does not exist: run `make minipile` first"):
        with WarehouseReader(tmp_path / "nope.duckdb").connect():
            pass
    # another process writing the file, as a dbt build does
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(tie_warehouse)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WarehouseUnavailable, match=f"in use by process {holder.pid}"):
            with WarehouseReader(tie_warehouse).connect():
                pass
    finally:
        holder.kill()
        holder.wait()


def test_the_shared_reader_resolves_lake_views_from_the_project_root(tmp_path, monkeypatch) -> None:
    root = tmp_path / "project"
    (root / "warehouse" / "lake").mkdir(parents=True)
    pq.write_table(pa.table({"doc_id": [1, 2, 3]}), root / "warehouse" / "lake" / "part-0.parquet")
    db = root / "wh.duckdb"
    monkeypatch.chdir(root)  # a build runs from the project root and writes relative paths
    with duckdb.connect(str(db)) as con:
        con.execute("create view docs as select * from read_parquet('warehouse/lake/part-*.parquet')")
    monkeypatch.chdir(tmp_path)  # the app runs elsewhere
    with WarehouseReader(db, root).connect() as con:
        assert con.execute("select count(*) from docs").fetchone()[0] == 3
        assert "docs" in WarehouseReader.tables(con)

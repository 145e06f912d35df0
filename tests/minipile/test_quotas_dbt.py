"""``pilehouse quotas`` and dbt's ``int_cluster_quotas`` agree on the same inputs.

A small warehouse (9 clusters of uneven sizes, random distances and centroids, one cluster
excluded) is built from the models' own SQL (tests/warehouses.py). For every strategy in both
totals modes, the model's SQL and the CLI fed the model's own stats export give the same
quotas; the CLI fed ``cluster_inspection`` and the seed file gives them too. Then real `dbt build`
runs (which also runs the models' YAML unit tests) with two non-default strategies, and the
CLI, run as a separate process, reproduces the built table.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from warehouses import ROOT, Corpus, build_warehouse, connect, render_model, unit_rows

from python_udfs import cli
from python_udfs.minipile.quotas import STRATEGIES, TOTAL_MODES

SIZES = [40, 3, 25, 1, 18, 60, 9, 0, 30]  # cluster 7 is empty, 3 and 1 smaller than a uniform share
EXCLUDED = [(5, "near_duplicates", "the largest, excluded")]
SPLITS = {"train_size": 70, "validation_size": 5, "test_size": 15}
TOTAL = sum(SPLITS.values())
DBT = Path(sys.executable).parent / "dbt"
VARIANTS = [(strategy, mode) for strategy in STRATEGIES for mode in TOTAL_MODES]
# int_cluster_losses' mean_loss: every non-empty cluster (the empty cluster 7 has nothing to score)
LOSSES = {cid: 1.5 + 0.37 * ((cid * 5) % 9) for cid, n in enumerate(SIZES) if n > 0}


def corpus() -> Corpus:
    rng = np.random.default_rng(11)
    cluster_of = [cid for cid, n in enumerate(SIZES) for _ in range(n)]
    spread = rng.uniform(0.1, 0.7, size=len(SIZES))  # each cluster's own spread, so ρ differs
    distances = [float(np.clip(rng.normal(spread[c], 0.05), 0.0, 2.0)) for c in cluster_of]
    return Corpus(["Pile-CC"] * len(cluster_of), [f"document {i}" for i in range(len(cluster_of))],
                  cluster_of, distances, unit_rows(rng, len(SIZES), 8))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return build_warehouse(tmp_path_factory.mktemp("quotas") / "pilehouse.duckdb", corpus(), EXCLUDED, SPLITS,
                           losses=LOSSES)


def model_quotas(con: duckdb.DuckDBPyConnection, variables: dict) -> list[tuple]:
    sql = render_model("int_cluster_quotas", {**SPLITS, **variables})
    return con.execute(f"select cluster_id, quota, n_docs, sum_distance, mean_loss from ({sql}) "
                       "order by cluster_id").fetchall()


def write_csv(path: Path, header: list[str], rows) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)  # floats as repr: they read back to the same double
    return path


def export_centroids(con: duckdb.DuckDBPyConnection, path: Path) -> Path:
    rows = con.execute("select cluster_id, centroid from int_kmeans_centroids order by cluster_id").fetchall()
    assert [r[0] for r in rows] == list(range(len(rows)))
    np.save(path, np.array([r[1] for r in rows], dtype=np.float32))
    return path


def cli_args(strategy: str, mode: str, variables: dict) -> list[str]:
    weights = ",".join(map(str, variables.get("inter_cluster_weights", [0.33, 0.33, 0.33])))
    return ["--sampling-strategy", strategy, "--sampling-total", mode, "--total", str(TOTAL),
            "--density-weight", str(variables.get("density_weight", 0.5)), "--inter-cluster-weights", weights]


def parse(out: str) -> tuple[list[tuple[int, int]], int]:
    lines = out.splitlines()
    assert lines[0] == "cluster_id,quota" and lines[-1].startswith("total "), out
    return [tuple(map(int, line.split(","))) for line in lines[1:-1]], int(lines[-1].split()[1])


def run_cli(capsys, args: list[str]) -> tuple[list[tuple[int, int]], int]:
    assert cli.main(["quotas", *args]) == 0
    return parse(capsys.readouterr().out)


@pytest.mark.parametrize("strategy, mode", VARIANTS)
def test_the_cli_gives_the_models_quotas(warehouse, tmp_path, capsys, strategy, mode):
    variables = {"sampling_strategy": strategy, "sampling_total": mode}
    with connect(warehouse) as con:
        built = model_quotas(con, variables)
        centroids = export_centroids(con, tmp_path / "centroids.npy")
        inspection = con.execute("select cluster_inspection.cluster_id, total_examples, sum_distance, mean_loss "
                                 "from cluster_inspection left join int_cluster_losses using (cluster_id) "
                                 "order by cluster_id").fetchall()
        seed = con.execute("select * from cluster_exclusions").fetchall()
    expected = [(cid, quota) for cid, quota, *_ in built]
    assert 5 not in {cid for cid, _ in expected} and 7 in {cid for cid, _ in expected}
    if mode == "exact":
        assert sum(q for _, q in expected) == TOTAL
    # 1. the model's own stats (kept clusters only: no exclusions to pass)
    stats = write_csv(tmp_path / "stats.csv", ["cluster_id", "n_docs", "sum_distance", "mean_loss"],
                      [(cid, n, s, "" if loss is None else loss) for cid, _, n, s, loss in built])
    args = cli_args(strategy, mode, variables) + ["--centroids", str(centroids)]
    assert run_cli(capsys, [str(stats), *args]) == (expected, sum(q for _, q in expected))
    # 2. cluster_inspection's columns (no row for the empty cluster 7) and the seed's exclusions
    inspection_csv = write_csv(tmp_path / "inspection.csv",
                               ["cluster_id", "total_examples", "sum_distance", "mean_loss"],
                               [(c, n, s, "" if loss is None else loss) for c, n, s, loss in inspection]
                               + [(7, 0, 0.0, "")])
    seed_csv = write_csv(tmp_path / "exclusions.csv", ["cluster_id", "category", "note"], seed)
    got = run_cli(capsys, [str(inspection_csv), "--exclusions", str(seed_csv), *args])
    assert got == (expected, sum(q for _, q in expected))


def test_the_strategies_really_differ(warehouse):
    with connect(warehouse) as con:
        results = {v: tuple(model_quotas(con, {"sampling_strategy": v[0], "sampling_total": v[1]})) for v in VARIANTS}
    assert len(set(results.values())) == len(VARIANTS)


def dbt_env(db: Path) -> dict:
    env = dict(os.environ)
    env.update(PILEHOUSE_DB=str(db), PILEHOUSE_LAKE=str(db.parent / "lake"), PILEHOUSE_ROOT=str(ROOT),
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HF_HUB_OFFLINE="1", DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    return env


@pytest.mark.parametrize("variables", [
    {"sampling_strategy": "inter_cluster", "sampling_total": "exact", "inter_cluster_weights": [0.25, 0.25, 0.5]},
    {"sampling_strategy": "density_spread", "sampling_total": "seed", "density_weight": 0.3},
])
def test_dbt_build_and_the_cli_agree(warehouse, tmp_path, variables):
    """Real `dbt build` of the sampling models (their unit tests and data tests included, the
    split sizes of a seed-mode build too), then `pilehouse quotas` as its own process."""
    db = tmp_path / "pilehouse.duckdb"
    shutil.copy(warehouse, db)
    env = dbt_env(db)
    result = subprocess.run(
        [str(DBT), "build", "--select", "int_cluster_quotas", "int_documents_sampled", "int_minipile_splits",
         "minipile", "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
         "--vars", json.dumps({**SPLITS, **variables})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "quotas_low_density_seed_tops_up_as_the_seed_did" in result.stdout  # the YAML unit tests ran
    assert "quotas_loss_informed_seed_rounds_the_loss_shares" in result.stdout
    assert "quotas_loss_informed_exact_caps_and_water_fills_by_loss" in result.stdout
    with connect(db) as con:
        built = con.execute("select cluster_id, quota, n_docs, sum_distance, mean_loss from int_cluster_quotas "
                            "order by cluster_id").fetchall()
        splits = dict(con.execute("select split, count(*) from minipile group by split").fetchall())
        centroids = export_centroids(con, tmp_path / "centroids.npy")
    expected = [(cid, quota) for cid, quota, *_ in built]
    sampled = sum(q for _, q in expected)
    assert sum(splits.values()) == sampled
    if variables["sampling_total"] == "seed":
        assert sampled < TOTAL  # the seed's floors: nothing redistributed
        assert splits["train"] == sampled * 70 // TOTAL and splits["validation"] == sampled * 5 // TOTAL
    else:
        assert splits == {"train": 70, "validation": 5, "test": 15}
    stats = write_csv(tmp_path / "stats.csv", ["cluster_id", "n_docs", "sum_distance", "mean_loss"],
                      [(cid, n, s, "" if loss is None else loss) for cid, _, n, s, loss in built])
    process = subprocess.run(
        [sys.executable, "-m", "python_udfs.cli", "quotas", str(stats), "--centroids", str(centroids),
         *cli_args(variables["sampling_strategy"], variables["sampling_total"], variables)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert parse(process.stdout) == (expected, sampled)


@pytest.mark.slow
def test_dbt_scores_the_clusters_only_for_loss_informed_and_the_cli_agrees(warehouse, tmp_path):
    """Real `dbt build` of int_cluster_losses: the default build loads no LM and leaves it empty;
    a loss_informed build scores the kept clusters with a tiny GPT-NeoX checkpoint, equal to
    the per-document losses computed here one document at a time, and `pilehouse quotas` fed
    the built stats gives the built quotas."""
    pytest.importorskip("transformers")
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("scan_fixtures", ROOT / "tests" / "scan" / "conftest.py")
    scan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan)
    checkpoint = scan.save_tiny_neox(tmp_path / "tiny-neox")
    db = tmp_path / "pilehouse.duckdb"
    shutil.copy(warehouse, db)
    env = dbt_env(db)

    def build(variables: dict) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(DBT), "build", "--select", "int_cluster_loss_documents", "int_cluster_losses", "cluster_losses",
             "int_cluster_quotas", "int_documents_sampled", "int_minipile_splits", "minipile",
             "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
             "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
             "--vars", json.dumps({**SPLITS, **variables})],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        return result

    build({"sampling_strategy": "uniform"})
    with connect(db) as con:
        assert con.execute("select count(*) from cluster_losses").fetchall() == [(0,)]
        assert con.execute("select count(*) from int_cluster_quotas where mean_loss is not null").fetchall() == [(0,)]

    variables = {"sampling_strategy": "loss_informed", "sampling_total": "exact", "lossi_model": checkpoint,
                 "lossi_docs_per_cluster": 3, "lossi_max_tokens": 8, "lossi_batch_size": 2, "lossi_device": "cpu"}
    build(variables)
    from python_udfs.scan.model import load_scan_model

    tiny = load_scan_model(checkpoint, device="cpu", dtype="float32")
    with connect(db) as con:
        scored = con.execute("select cluster_id, doc_id, text from int_cluster_loss_documents "
                             "order by cluster_id, pick_rank").fetchall()
        losses = con.execute("select cluster_id, n_docs_scored, n_tokens, mean_loss, model from cluster_losses "
                             "order by cluster_id").fetchall()
        built = con.execute("select cluster_id, quota, n_docs, sum_distance, mean_loss from int_cluster_quotas "
                            "order by cluster_id").fetchall()
    kept = [cid for cid, n in enumerate(SIZES) if n > 0 and cid != 5]
    assert sorted({cid for cid, _, _ in scored}) == kept
    per: dict[int, list[float]] = {}
    for cid, _, text in scored:
        ids = torch.tensor([[int(i) for i in tiny.encode_batch([text])[0]][:8]])
        with torch.no_grad():
            per.setdefault(cid, []).append(float(tiny.lm(input_ids=ids, labels=ids).loss))
    assert [row[0] for row in losses] == kept
    for cid, n_scored, _, mean_loss, model in losses:
        assert n_scored == min(3, SIZES[cid]) == len(per[cid]) and model == tiny.name
        assert mean_loss == pytest.approx(float(np.mean(per[cid])), rel=1e-5)
    assert {cid: loss for cid, *_, loss in built if loss is not None} == {cid: loss for cid, _, _, loss, _ in losses}
    assert sum(quota for _, quota, *_ in built) == TOTAL
    stats = write_csv(tmp_path / "stats.csv", ["cluster_id", "n_docs", "sum_distance", "mean_loss"],
                      [(cid, n, s, "" if loss is None else loss) for cid, _, n, s, loss in built])
    process = subprocess.run(
        [sys.executable, "-m", "python_udfs.cli", "quotas", str(stats), *cli_args("loss_informed", "exact", {})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert parse(process.stdout) == ([(cid, quota) for cid, quota, *_ in built], TOTAL)

"""``pilehouse quotas``: its inputs (CSV, the seed's JSON, exclusion lists, .npy centroids), its
output, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from python_udfs import cli
from python_udfs.minipile.quotas import ClusterStats, QuotaParams, quotas

STATS = "cluster_id,n_docs,sum_distance\n0,50,12.5\n1,2,1.0\n2,30,11.25\n3,18,13.5\n4,100,12.5\n"
CENTROIDS = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0], [0, -1]], dtype=np.float32)


def run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["quotas", *map(str, args)])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def parse(out: str) -> tuple[dict[int, int], int]:
    lines = out.splitlines()
    assert lines[0] == "cluster_id,quota" and lines[-1].startswith("total ")
    rows = dict(tuple(map(int, line.split(","))) for line in lines[1:-1])
    return rows, int(lines[-1].split()[1])


@pytest.fixture
def files(tmp_path):
    (tmp_path / "stats.csv").write_text(STATS)
    (tmp_path / "exclusions.csv").write_text("cluster_id,category,note\n4,other,excluded\n")
    np.save(tmp_path / "centroids.npy", CENTROIDS)
    return tmp_path


def test_prints_the_quotas_and_the_total(capsys, files):
    code, out, err = run(capsys, files / "stats.csv", "--exclusions", files / "exclusions.csv",
                         "--sampling-strategy", "uniform", "--total", 90)
    assert code == 0 and err == ""
    assert out == "cluster_id,quota\n0,40\n1,2\n2,30\n3,18\ntotal 90\n"


@pytest.mark.parametrize("strategy, mode, expected", [
    ("density", "seed", {0: 39, 1: 1, 2: 21, 3: 10}),
    ("density", "exact", {0: 49, 1: 2, 2: 27, 3: 12}),
    ("low_density", "seed", {0: 49, 1: 1, 2: 23, 3: 8}),
    ("inter_cluster", "exact", {0: 41, 1: 2, 2: 29, 3: 18}),
])
def test_strategies_as_the_dbt_unit_tests_expect(capsys, files, strategy, mode, expected):
    # the same fixture and numbers as the int_cluster_quotas unit tests of the models' YAML
    code, out, _ = run(capsys, files / "stats.csv", "--exclusions", files / "exclusions.csv",
                       "--sampling-strategy", strategy, "--sampling-total", mode, "--total", 90,
                       "--centroids", files / "centroids.npy")
    assert code == 0
    assert parse(out) == (expected, sum(expected.values()))


@pytest.mark.parametrize("mode, expected", [("exact", {0: 14, 1: 2, 2: 27, 3: 7}),
                                            ("seed", {0: 11, 1: 2, 2: 22, 3: 6})])
def test_loss_informed_reads_a_mean_loss_column(capsys, tmp_path, mode, expected):
    # the loss_informed unit tests' fixture: losses 1, 1, 2, 0.5 (cluster 4, excluded, 9)
    (tmp_path / "stats.csv").write_text("cluster_id,n_docs,sum_distance,mean_loss\n0,50,12.5,1.0\n1,2,1.0,1.0\n"
                                        "2,30,11.25,2.0\n3,18,13.5,0.5\n4,100,12.5,9.0\n")
    (tmp_path / "ex.txt").write_text("4\n")
    code, out, _ = run(capsys, tmp_path / "stats.csv", "--exclusions", tmp_path / "ex.txt",
                       "--sampling-strategy", "loss_informed", "--sampling-total", mode, "--total", 50)
    assert code == 0
    assert parse(out) == (expected, sum(expected.values()))


def test_loss_informed_reads_the_seeds_cluster_loss_jsonl(capsys, tmp_path):
    # the seed's lossi files: cluster_info_for_inspection.json and MiniPile_Lossi_1/cluster_loss.jsonl,
    # whose "proportion" is (mean_loss / total_loss) x 1,010,500 over the kept clusters; its script 2
    # then samples min(int(np.round(proportion)), cluster size) from each
    rng = np.random.default_rng(4)
    sizes = {cid: int(rng.integers(3_000, 900_000)) for cid in range(12)}
    excluded = {3, 7}
    losses = {cid: float(rng.uniform(1.4, 3.7)) for cid in sizes if cid not in excluded}
    total_loss = sum(losses.values())
    (tmp_path / "info.json").write_text(json.dumps(
        {str(cid): {"total_examples": n, "sum_distance": 0.2 * n} for cid, n in sizes.items()}))
    order = sorted(losses, key=lambda cid: -losses[cid])  # the seed's file is in no particular order
    (tmp_path / "cluster_loss.jsonl").write_text("".join(
        json.dumps({"cluster_idx": cid, "mean_loss": losses[cid], "proportion": losses[cid] / total_loss * 1010500})
        + "\n" for cid in order))
    (tmp_path / "excluded.txt").write_text("3, 7\n")
    code, out, _ = run(capsys, tmp_path / "info.json", "--exclusions", tmp_path / "excluded.txt",
                       "--sampling-strategy", "loss_informed", "--losses", tmp_path / "cluster_loss.jsonl",
                       "--sampling-total", "seed", "--total", 1010500)
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "cluster_loss.jsonl").read_text().splitlines()]
    expected = {r["cluster_idx"]: min(int(np.round(r["proportion"])), sizes[r["cluster_idx"]]) for r in rows}
    assert parse(out) == (dict(sorted(expected.items())), sum(expected.values()))
    # the same losses as a CSV (cluster_losses exported)
    (tmp_path / "losses.csv").write_text("cluster_id,mean_loss\n" + "".join(f"{c},{v!r}\n" for c, v in losses.items()))
    code, again, _ = run(capsys, tmp_path / "info.json", "--exclusions", tmp_path / "excluded.txt",
                         "--sampling-strategy", "loss_informed", "--losses", tmp_path / "losses.csv",
                         "--sampling-total", "seed", "--total", 1010500)
    assert code == 0 and again == out


def test_reads_the_seeds_cluster_info_json(capsys, tmp_path):
    # the shape of MK2112/minicorpus' cluster_info_for_inspection.json: keyed by cluster id
    info = {
        str(cid): {"closest": [{"text": "a", "distance": 0.1}], "farthest": [{"text": "b", "distance": 0.9}],
                   "total_examples": n, "average_distance": s / n, "sum_distance": s}
        for cid, n, s in [(0, 454678, 103427.1), (1, 488572, 83563.3), (2, 604943, 123039.9), (3, 571658, 90088.5)]
    }
    (tmp_path / "info.json").write_text(json.dumps(info))
    (tmp_path / "excluded.txt").write_text("# the seed's list, comma-separated\n2,\n")
    np.save(tmp_path / "centers.npy", np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32))
    code, out, _ = run(capsys, tmp_path / "info.json", "--exclusions", tmp_path / "excluded.txt",
                       "--sampling-strategy", "inter_cluster", "--sampling-total", "seed",
                       "--inter-cluster-weights", "0.25,0.25,0.5", "--centroids", tmp_path / "centers.npy",
                       "--total", 1010500)
    assert code == 0
    centers = np.load(tmp_path / "centers.npy")
    kept = [ClusterStats(c, info[str(c)]["total_examples"], info[str(c)]["sum_distance"], centers[c].tolist())
            for c in (0, 1, 3)]
    params = QuotaParams(inter_cluster_weights=(0.25, 0.25, 0.5))
    expected = {q.cluster_id: q.quota for q in quotas(kept, "inter_cluster", params, 1010500, "seed")}
    assert parse(out) == (expected, sum(expected.values()))
    assert sum(expected.values()) < 1010500  # the seed's floors, nothing redistributed


def test_json_lists_and_average_distances(capsys, tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([
        {"cluster_id": 0, "total_examples": 50, "average_distance": 0.25},
        {"cluster_id": 1, "n_docs": 50, "sum_distance": 37.5},
    ]))
    code, out, _ = run(capsys, tmp_path / "list.json", "--sampling-strategy", "density", "--total", 10)
    assert code == 0
    # weights 50 x 0.875 and 50 x 0.625
    assert parse(out) == ({0: 6, 1: 4}, 10)


def test_exclusions_one_per_line_or_several(capsys, files):
    (files / "ids.txt").write_text("4\n\n  # nothing here\n")
    code, out, _ = run(capsys, files / "stats.csv", "--exclusions", files / "ids.txt", "--total", 90)
    assert code == 0 and parse(out)[0] == {0: 40, 1: 2, 2: 30, 3: 18}
    (files / "ids.txt").write_text("3 4\n")
    code, out, _ = run(capsys, files / "stats.csv", "--exclusions", files / "ids.txt", "--total", 10)
    assert parse(out) == ({0: 4, 1: 2, 2: 4}, 10)


def test_too_few_documents_warns(capsys, files):
    code, out, err = run(capsys, files / "stats.csv", "--exclusions", files / "exclusions.csv", "--total", 1000)
    assert code == 0 and parse(out) == ({0: 50, 1: 2, 2: 30, 3: 18}, 100)
    assert "hold only 100 documents, fewer than --total 1000" in err


@pytest.mark.parametrize("setup, args, message", [
    (None, ["missing.csv", "--total", 5], "missing.csv: cannot read it"),
    ("stats.csv:cluster,size\n0,5\n", ["stats.csv", "--total", 5], "the header must name cluster_id and n_docs"),
    ("stats.csv:cluster_id,n_docs\n0,2.5\n", ["stats.csv", "--total", 5], "line 2: n_docs: expected a whole number"),
    ("stats.csv:cluster_id,n_docs\n0,5\n0,6\n", ["stats.csv", "--total", 5], "cluster 0 appears twice"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--sampling-strategy", "density", "--total", 5],
     "no sum_distance or average_distance, which this strategy needs"),
    ("stats.json:{\"0\": {\"total_examples\": 3", ["stats.json", "--total", 5], "not valid JSON"),
    ("stats.json:{\"0\": {\"sum_distance\": 3}}", ["stats.json", "--total", 5], "no cluster size"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--exclusions", "ex.txt", "--total", 5],
     "ex.txt: names cluster(s) 7, which"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--exclusions", "bad.txt", "--total", 5],
     "bad.txt: line 1: cluster id: expected a whole number, got 'seven'"),
    ("stats.csv:cluster_id,n_docs,sum_distance\n0,5,1\n", ["stats.csv", "--sampling-strategy", "inter_cluster",
                                                           "--total", 5], "needs --centroids FILE.npy"),
    ("stats.csv:cluster_id,n_docs,sum_distance\n0,5,1\n9,5,1\n",
     ["stats.csv", "--sampling-strategy", "inter_cluster", "--centroids", "c.npy", "--total", 5],
     "c.npy: has 2 rows, so no centroid for cluster(s) 9"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--inter-cluster-weights", "1,2", "--total", 5],
     "expected three numbers a,b,c"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--density-weight", "-1", "--total", 5],
     "density_weight must be >= 0"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv"], "the following arguments are required: --total"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--sampling-strategy", "loss_informed", "--total", 5],
     "needs a mean_loss for every kept cluster: stats.csv has none"),
    ("stats.csv:cluster_id,n_docs,mean_loss\n0,5,2.0\n1,5,\n", ["stats.csv", "--sampling-strategy",
                                                                 "loss_informed", "--total", 5],
     "missing for cluster(s) 1"),
    ("stats.csv:cluster_id,n_docs,mean_loss\n0,5,high\n", ["stats.csv", "--total", 5],
     "line 2: mean_loss: expected a number, got 'high'"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--losses", "l.jsonl", "--total", 5],
     "l.jsonl: line 2: expected cluster_idx (or cluster_id) and mean_loss"),
    ("stats.csv:cluster_id,n_docs\n0,5\n", ["stats.csv", "--losses", "l.csv", "--total", 5],
     "l.csv: the header must name cluster_id and mean_loss"),
])
def test_bad_input_is_a_clear_error(capsys, tmp_path, monkeypatch, setup, args, message):
    monkeypatch.chdir(tmp_path)
    if setup:
        name, _, text = setup.partition(":")
        (tmp_path / name).write_text(text)
    (tmp_path / "ex.txt").write_text("7\n")
    (tmp_path / "bad.txt").write_text("seven\n")
    (tmp_path / "l.jsonl").write_text('{"cluster_idx": 0, "mean_loss": 2.0}\n{"cluster": 1, "loss": 2.0}\n')
    (tmp_path / "l.csv").write_text("cluster,loss\n0,2.0\n")
    np.save(tmp_path / "c.npy", np.eye(2, dtype=np.float32))
    code, out, err = run(capsys, *args)
    assert code == 2 and out == ""
    assert "pilehouse quotas: error:" in err and message in err, err

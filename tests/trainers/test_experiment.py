"""trainers.experiment: the pairs an experiment over variants derives from its runs, and the
scores over seeds (mean, sd, 95% interval), against hand computations."""

from __future__ import annotations

import math
import statistics

import duckdb
import pytest

from trainers import compare as cmp
from trainers import experiment as exp
from trainers.evaluate import ensure_eval_scores
from trainers.warehouse_log import ensure_tables

# (variant, seed) -> arc_easy acc; stderr 0.01 each
ACC = {("uniform", 1): 0.30, ("uniform", 2): 0.32, ("uniform", 3): 0.31,
       ("density", 1): 0.35, ("density", 2): 0.33, ("density", 3): 0.37}


def _warehouse(path):
    with duckdb.connect(str(path)) as con:
        ensure_eval_scores(con)
        ensure_tables(con)
        con.execute("create table eval_pairs (model_a varchar, model_b varchar)")
        con.execute("insert into eval_pairs values ('exp-tiny-documents', 'exp-tiny-minipile')")

        def run(run_id, dataset, seed, status="finished", steps=10):
            con.execute("insert into training_runs (run_id, dataset, preset, seed, steps, batch_size, "
                        "seq_len, status) values (?, ?, 'tiny', ?, ?, 16, 128, ?)",
                        [run_id, dataset, seed, steps, status])

        def score(model, task, metric, value, stderr, limit=20):
            con.execute("insert into eval_scores (model, task, metric, value, stderr, n, num_fewshot, "
                        "doc_limit, higher_is_better, is_group) values (?, ?, ?, ?, ?, 20, 0, ?, ?, false)",
                        [model, task, metric, value, stderr, limit, metric != "loss"])

        for (variant, seed), acc in ACC.items():
            run_id = f"exp-tiny-{variant}-s{seed}"
            run(run_id, variant, seed)
            score(run_id, "arc_easy", "acc", acc, 0.01)
            score(run_id, "heldout_loss", "loss", 5.0 - acc, 0.01, limit=500)
        run("exp-tiny-random-s1", "random", 1, status="running")  # unfinished: no pair
        score("exp-tiny-random-s1", "arc_easy", "acc", 0.2, 0.01)
        run("exp-tiny-long-s1", "long", 1, steps=99)  # another token budget: no pair
        score("exp-tiny-long-s1", "arc_easy", "acc", 0.2, 0.01)
        run("exp-tiny-unscored-s1", "unscored", 1)  # never evaluated: no pair
    return path


@pytest.fixture
def db(tmp_path):
    return _warehouse(tmp_path / "wh.duckdb")


def test_pairs_come_from_the_runs(db):
    assert exp.experiment_pairs(db, "uniform") == [
        (f"exp-tiny-uniform-s{s}", f"exp-tiny-density-s{s}") for s in (1, 2, 3)]
    assert exp.experiment_pairs(db, "density") == [
        (f"exp-tiny-density-s{s}", f"exp-tiny-uniform-s{s}") for s in (1, 2, 3)]
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(f"select * from ({exp.pairs_sql('uniform')}) order by model_a, model_b").fetchall()
    assert ("exp-tiny-documents", "exp-tiny-minipile", "eval_pairs") in rows  # the seed's pairs stay
    assert len(rows) == 4
    with pytest.raises(ValueError):
        exp.pairs_sql("")


def test_comparison_over_derived_pairs_is_compare_sql(db):
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(cmp.compare_sql(f"({exp.pairs_sql('uniform')})")).fetchall()
        names = [d[0] for d in con.description]
    got = {(r["model_a"], r["model_b"], r["task"]): r for r in (dict(zip(names, x, strict=True)) for x in rows)}
    one = got[("exp-tiny-uniform-s1", "exp-tiny-density-s1", "arc_easy")]
    want = cmp.compare(0.30, 0.01, 0.35, 0.01, model_a="exp-tiny-uniform-s1", model_b="exp-tiny-density-s1")
    assert one["ci95_low"] == pytest.approx(want["ci95_low"])
    assert one["interpretation"] == want["interpretation"] == "exp-tiny-density-s1 better"
    loss = got[("exp-tiny-uniform-s1", "exp-tiny-density-s1", "heldout_loss")]
    assert loss["higher_is_better"] is False and loss["interpretation"] == "exp-tiny-density-s1 better"


def test_scores_over_seeds(db):
    rows = {(r["experiment"], r["task"]): r for r in exp.variant_scores(db)}
    d = rows[("exp-tiny-density", "arc_easy")]
    values = [ACC[("density", s)] for s in (1, 2, 3)]
    assert d["n_seeds"] == 3 and d["variant"] == "density" and d["preset"] == "tiny"
    assert d["models"] == [f"exp-tiny-density-s{s}" for s in (1, 2, 3)]
    assert d["value_mean"] == pytest.approx(statistics.fmean(values))
    assert d["value_sd"] == pytest.approx(statistics.stdev(values))
    assert (d["value_min"], d["value_max"]) == pytest.approx((0.33, 0.37))
    se = math.sqrt(statistics.stdev(values) ** 2 / 3 + 0.01 ** 2)
    assert (d["ci95_low"], d["ci95_high"]) == pytest.approx((0.35 - 1.96 * se, 0.35 + 1.96 * se))
    single = rows[("exp-tiny-long", "arc_easy")]  # one seed: lm-eval's own interval
    assert single["n_seeds"] == 1 and single["value_sd"] is None
    assert single["ci95_high"] - single["value_mean"] == pytest.approx(1.96 * 0.01)
    loss = rows[("exp-tiny-uniform", "heldout_loss")]
    assert loss["doc_limit"] == 500 and loss["value_mean"] == pytest.approx(5.0 - 0.31)


def test_compare_cli_variants(db, capsys):
    cmp.main(["--variants", "--db", str(db)])
    out = capsys.readouterr().out
    assert "| Benchmark | Measure | exp-tiny-density |" in out.splitlines()[0] or "exp-tiny-density" in out
    assert "0.3500 ± 0.0200 sd (3)" in out
    assert out.count(" against exp-tiny-uniform-s") == 3
    with pytest.raises(SystemExit):
        cmp.main(["--variants", "--db", str(db), "--prefix", "nothing-"])
    with pytest.raises(SystemExit):
        cmp.main(["--db", str(db)])  # neither two models nor --variants

"""The report's evaluation chart: only the headline benchmarks, every model side by side with
95% intervals, one screen tall (the sub-tasks go to a table)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from python_udfs.apps.report.plots import STYLE, Report, plt
from python_udfs.apps.report.sections import training as sec
from python_udfs.apps.report.tables import Tables

HEADLINE = [("arc_easy", "acc"), ("arc_easy", "acc_norm"), ("arc_challenge", "acc"),
            ("arc_challenge", "acc_norm"), ("mmlu", "acc"), ("hellaswag", "acc"), ("hellaswag", "acc_norm"),
            ("winogrande", "acc"), ("lambada_openai", "acc"), ("lambada_openai", "perplexity"),
            ("blimp", "acc"), ("heldout_loss", "loss")]


def _warehouse(models: list[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create table eval_scores (model varchar, task varchar, metric varchar, value double, "
                "stderr double, doc_limit integer)")
    rows = []
    for i, m in enumerate(models):
        for task, metric in HEADLINE:
            value = 1000.0 * (i + 1) if metric == "perplexity" else 0.3 + 0.01 * i
            rows.append((m, task, metric, value, value / 20, 20))
        rows += [(m, f"mmlu_subject_{k}", "acc", 0.25, 0.05, 20) for k in range(57)]
        rows += [(m, f"blimp_paradigm_{k}", "acc", 0.6, 0.05, 20) for k in range(67)]
        rows += [(m, f"heldout_loss:source=S{k}", "loss", 6.0, 0.1, 500) for k in range(4)]
        rows.append((m, "arc_easy", "acc", 0.99, 0.01, 5))  # another --limit: the larger one wins
    con.executemany("insert into eval_scores values (?, ?, ?, ?, ?, ?)", rows)
    return con


def _tables(con) -> Tables:
    names = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
    return Tables(con, names)


@pytest.mark.parametrize("n_models", [2, 6])
def test_chart_draws_the_headline_rows_in_one_screen(tmp_path: Path, n_models: int) -> None:
    from PIL import Image

    models = [f"exp-tiny-variant{i}-s1" for i in range(n_models)]
    wh = _tables(_warehouse(models))
    scores = sec.score_rows(wh)
    assert len(scores) == n_models * (len(HEADLINE) + 57 + 67 + 4)
    assert 0.99 not in {s.value for s in scores if s.task == "arc_easy" and s.metric == "acc"}
    with plt.rc_context(STYLE):
        fig, keys = sec.headline_figure(scores)
        assert keys == HEADLINE  # one panel per headline (benchmark, metric), in lm-eval's order
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert [ax.get_title().rsplit(" ", 1)[0] for ax in visible] == [f"{t} \u00b7 {m}" for t, m in HEADLINE]
        # each panel holds every model: a point and an interval line per model
        assert all(len(ax.lines) == 2 * n_models for ax in visible)
        assert visible[HEADLINE.index(("lambada_openai", "perplexity"))].get_xscale() == "log"
        plt.close(fig)
        section = sec.eval_comparison(wh, Report(tmp_path))
    with Image.open(tmp_path / "eval_comparison.png") as image:
        assert image.height <= 900, image.size
        assert image.width >= 600
    assert "mmlu_subject_56" in section.body and "blimp_paradigm_66" in section.body  # in the table
    assert "heldout_loss:source=S3" in section.body


def test_means_over_seeds_come_from_eval_variant_scores(tmp_path: Path) -> None:
    con = _warehouse(["exp-tiny-uniform-s1"])
    con.execute("""create table eval_variant_scores as select * from (values
        ('exp-tiny-uniform', 'arc_easy', 'acc', 20, 3, 0.31, 0.29, 0.33, 0.01, 0.30, 0.32),
        ('exp-tiny-density', 'arc_easy', 'acc', 20, 3, 0.35, 0.32, 0.38, 0.02, 0.33, 0.37))
        t(experiment, task, metric, doc_limit, n_seeds, value_mean, ci95_low, ci95_high, value_sd,
          value_min, value_max)""")
    wh = _tables(con)
    scores = sec.score_rows(wh)
    assert [(s.model, s.value, s.low, s.n_seeds) for s in scores] == [
        ("exp-tiny-density", 0.35, 0.32, 3), ("exp-tiny-uniform", 0.31, 0.29, 3)]
    with plt.rc_context(STYLE):
        section = sec.eval_comparison(wh, Report(tmp_path))
    assert "eval_variant_scores" in section.body and section.figures == ["eval_comparison.png"]
    assert "0.02 (0.33 \u2013 0.37)" in section.body  # the spread over seeds

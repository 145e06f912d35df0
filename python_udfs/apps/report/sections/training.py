"""Training loss curves and the evaluation comparison with 95% intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from matplotlib.ticker import FuncFormatter, NullFormatter

from python_udfs.apps.report.html import Section, fmt, html_table, name, note
from python_udfs.apps.report.plots import PALETTE, Report, plt
from python_udfs.apps.report.tables import Tables


def training(wh: Tables, report: Report) -> Section:
    """Loss against step for every run in training_steps (validation loss as markers)."""
    section = Section("training", "Training runs")
    if reason := wh.missing("training_steps"):
        section.body = note(reason)
        return section
    step_cols = wh.columns("training_steps")
    val = "val_loss" if "val_loss" in step_cols else "null"
    _, rows = wh.rows(f"select run_id, step, loss, {val} from training_steps order by run_id, step")
    runs: dict[str, list[tuple]] = {}
    for r in rows:
        runs.setdefault(r[0], []).append(r)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, (run, pts) in enumerate(runs.items()):
        col = PALETTE[i % len(PALETTE)]
        steps = [p[1] for p in pts if p[2] is not None]
        ax.plot(steps, [p[2] for p in pts if p[2] is not None], color=col, lw=1.6, label=f"{name(run, 48)} (train)")
        vpts = [(p[1], p[3]) for p in pts if p[3] is not None]
        if vpts:
            ax.plot(*zip(*vpts), "o--", color=col, ms=5, lw=1, alpha=0.9, label=f"{name(run, 48)} (validation)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title("Training loss")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    section.body = report.figure(fig, "training_loss", "Training loss curves")
    section.figures.append("training_loss.png")
    if wh.has("training_runs") and not wh.empty("training_runs"):
        cols = wh.columns("training_runs")
        show = [c for c in ("run_id", "dataset", "preset", "params", "tokens_seen", "step", "steps",
                            "final_loss", "final_val_loss", "status", "device", "started_at") if c in cols]
        _, run_rows = wh.rows(f"select {', '.join(show)} from training_runs order by started_at nulls last, run_id"
                              if "started_at" in cols else f"select {', '.join(show)} from training_runs")
        section.body += html_table(show, run_rows)
    return section


# lm-eval's headline groups and the held-out loss, in the report's row order, with the
# metrics each is read by (acc_norm where lm-eval reports it; perplexity for LAMBADA).
HEADLINE_TASKS = ("arc_easy", "arc_challenge", "mmlu", "hellaswag", "winogrande", "lambada_openai",
                  "blimp", "heldout_loss")
HEADLINE_METRICS = ("acc", "acc_norm", "perplexity", "loss")
LOWER_IS_BETTER = ("perplexity", "loss")
MAX_CHART_INCHES = 7.6  # at the report's 110 dpi, with the legend: under ~900 px
PANEL_COLUMNS = 4


@dataclass(frozen=True)
class Score:
    """One model's (or one experiment's mean over seeds) score with its 95% interval."""

    model: str
    task: str
    metric: str
    value: float
    low: float | None
    high: float | None
    n_seeds: int
    sd: float | None = None  # over seeds (eval_variant_scores), else None
    low_seed: float | None = None  # the lowest and highest seed's value
    high_seed: float | None = None


def score_rows(wh: Tables) -> list[Score]:
    """Every (model or experiment, task, metric) score: eval_variant_scores' means over seeds
    when the warehouse has them, else eval_scores' values with value +- 1.96 stderr. Where a
    model was scored with several --limit values, the full split wins, then the largest."""
    if wh.has("eval_variant_scores") and not wh.empty("eval_variant_scores"):
        sql = """select experiment, task, metric, value_mean, ci95_low, ci95_high, n_seeds,
                        doc_limit, value_sd, value_min, value_max
                 from eval_variant_scores where value_mean is not null"""
    elif wh.has("eval_scores") and not wh.empty("eval_scores"):
        limit = "doc_limit" if "doc_limit" in wh.columns("eval_scores") else "null::integer"
        sql = f"""select model, task, metric, value, value - 1.96 * stderr, value + 1.96 * stderr, 1,
                         {limit}, null::double, null::double, null::double
                  from eval_scores where value is not null"""
    else:
        return []
    _, rows = wh.rows(f"""
        select * exclude (k) from (
            select *, row_number() over (partition by m, t, me order by lim is null desc, lim desc) as k
            from ({sql}) as s(m, t, me, v, lo, hi, seeds, lim, sd, vmin, vmax))
        where k = 1 order by m, t, me""")

    def num(v):
        return None if v is None else float(v)

    return [Score(r[0], r[1], r[2], float(r[3]), num(r[4]), num(r[5]), int(r[6]), num(r[8]), num(r[9]),
                  num(r[10])) for r in rows]


def is_headline(score: Score) -> bool:
    return score.task in HEADLINE_TASKS and score.metric in HEADLINE_METRICS


def headline_figure(scores: list[Score]):
    """One panel per headline (benchmark, metric), the models side by side in it (a point and
    its 95% interval each, one colour per model), at most MAX_CHART_INCHES tall.
    Returns (figure, panel keys in order)."""
    rows = [s for s in scores if is_headline(s)]
    keys = sorted({(s.task, s.metric) for s in rows},
                  key=lambda k: (HEADLINE_TASKS.index(k[0]), HEADLINE_METRICS.index(k[1])))
    models = sorted({s.model for s in rows})
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}
    by_key = {(s.task, s.metric, s.model): s for s in rows}
    ncols = min(PANEL_COLUMNS, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    panel = min(0.5 + 0.2 * len(models), (MAX_CHART_INCHES - 0.9) / nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(11, 0.9 + panel * nrows), squeeze=False)
    for ax, (task, metric) in zip(axes.flat, keys):
        values = []
        for y, m in enumerate(models):
            s = by_key.get((task, metric, m))
            if s is None:
                continue
            values.append(s.value)
            if s.low is not None and s.high is not None:
                low = s.low if metric != "perplexity" else max(s.low, s.value / 1e3)
                ax.plot([low, s.high], [y, y], color=colour[m], lw=2.2, solid_capstyle="butt")
            ax.plot([s.value], [y], "o", color=colour[m], ms=5)
        if metric == "perplexity" and values and min(values) > 0:
            ax.set_xscale("log")  # plain labels: the report's style turns mathtext off
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks([])
        ax.set_ylim(len(models) - 0.5, -0.5)
        arrow = "\u2193" if metric in LOWER_IS_BETTER else "\u2191"
        ax.set_title(f"{task} \u00b7 {metric} {arrow}", fontsize=9.5)
        ax.tick_params(axis="x", labelsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=colour[m], marker="o", lw=2.2) for m in models]
    fig.legend(handles, [name(m, 40) for m in models], fontsize=8.5, frameon=False,
               loc="upper center", ncol=min(4, max(1, len(models))))
    top = 1 - min(0.35, (0.2 * math.ceil(len(models) / 4) + 0.05) / (0.9 + panel * nrows))
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig, keys


def _score_cells(s: Score) -> tuple:
    interval = "" if s.low is None else f"[{fmt(s.low)}, {fmt(s.high)}]"
    spread = ("" if s.sd is None else
              f"{fmt(s.sd)} ({fmt(s.low_seed)} \u2013 {fmt(s.high_seed)})")
    return (s.model, s.task, s.metric, fmt(s.value), interval, s.n_seeds, spread)


def eval_comparison(wh: Tables, report: Report) -> Section:
    """The headline benchmarks, every model (or experiment: mean over seeds) side by side with
    95% intervals in one screen-sized chart; sub-tasks and the pairwise comparison in tables."""
    section = Section("eval", "Evaluation: model B against model A")
    scores = score_rows(wh)
    if not scores and (reason := wh.missing("eval_comparison")):
        section.body = note(reason)
        return section
    body = []
    if any(is_headline(s) for s in scores):
        fig, _ = headline_figure(scores)
        body.append(report.figure(fig, "eval_comparison", "Headline benchmarks with 95% intervals"))
        section.figures.append("eval_comparison.png")
        seeds = max(s.n_seeds for s in scores)
        body.append("<p>Each panel is one benchmark (lm-eval's group score) and metric: a point per model "
                    "and its 95% interval (value \u00b1 1.96 stderr"
                    + ("; for an experiment over seeds, the mean with the interval of eval_variant_scores"
                       if seeds > 1 else "") + "). Lower is better where the arrow points down.</p>")
    columns = ["model", "task", "metric", "value (mean over seeds)", "95% interval", "seeds",
               "sd over seeds (min \u2013 max)"]
    head = [_score_cells(s) for s in scores if is_headline(s)]
    if head:
        body.append(html_table(columns, head))
    subtasks = [_score_cells(s) for s in scores if not is_headline(s)]
    if subtasks:
        body.append(f"<details><summary>Sub-tasks and other metrics ({len(subtasks):,} rows)</summary>"
                    + html_table(columns, subtasks) + "</details>")
    if wh.has("eval_comparison") and not wh.empty("eval_comparison"):
        cols = ["model_a", "model_b", "task", "metric", "value_a", "stderr_a", "value_b", "stderr_b",
                "pct_difference", "ci95_low", "ci95_high", "interpretation"]
        _, rows = wh.rows(f"select {', '.join(cols)} from eval_comparison order by model_a, model_b, task, metric")
        table_rows = [(r[0], r[1], r[2], r[3], f"{fmt(r[4])} \u00b1 {fmt(r[5])}", f"{fmt(r[6])} \u00b1 {fmt(r[7])}",
                       None if r[8] is None else round(float(r[8]), 2),
                       "" if r[9] is None else f"({fmt(r[9])}; {fmt(r[10])})", r[11]) for r in rows]
        body.append("<h3>Model B against model A (eval_comparison)</h3>")
        body.append(html_table(["model A", "model B", "task", "metric", "A \u00b1 se", "B \u00b1 se",
                                "% difference", "95% interval of B \u2212 A", "interpretation"], table_rows))
    section.body = "".join(body) or note("Table eval_comparison is empty, so this section is skipped.")
    return section

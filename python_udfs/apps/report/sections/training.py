"""Training loss curves and the evaluation comparison with 95% intervals."""

from __future__ import annotations

import numpy as np

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


def eval_comparison(wh: Tables, report: Report) -> Section:
    """B - A per task and metric, relative to A, with the 95% interval as error bars."""
    section = Section("eval", "Evaluation: model B against model A")
    if reason := wh.missing("eval_comparison"):
        section.body = note(reason)
        return section
    cols = ["model_a", "model_b", "task", "metric", "value_a", "stderr_a", "value_b", "stderr_b",
            "pct_difference", "ci95_low", "ci95_high", "interpretation"]
    _, rows = wh.rows(f"select {', '.join(cols)} from eval_comparison order by model_a, model_b, task, metric")
    pairs: dict[tuple[str, str], list[tuple]] = {}
    for r in rows:
        pairs.setdefault((r[0], r[1]), []).append(r)
    clip = 150.0
    height = sum(0.34 * len(v) + 1.3 for v in pairs.values())
    fig, axes = plt.subplots(len(pairs), 1, figsize=(10, max(3.0, height)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(v) + 2 for v in pairs.values()]})
    clipped = False
    for ax, ((a, b), pts) in zip(axes[:, 0], pairs.items()):
        y = np.arange(len(pts))
        for yi, r in zip(y, pts):
            value_a, pct, low, high, verdict = r[4], r[8], r[9], r[10], r[11] or ""
            if pct is None:
                continue
            lo_pct = hi_pct = None
            if low is not None and high is not None and value_a:
                lo_pct, hi_pct = 100 * low / abs(value_a), 100 * high / abs(value_a)
            colour = ("#888888" if "not significant" in verdict
                      else "#2a9d55" if verdict.startswith(str(b)) else "#c44e52")
            shown = max(-clip, min(clip, pct))
            if lo_pct is not None:
                clipped |= lo_pct < -clip or hi_pct > clip
                lo_c, hi_c = max(-clip, lo_pct), min(clip, hi_pct)
                ax.plot([lo_c, hi_c], [yi, yi], color=colour, lw=2.2, solid_capstyle="butt")
                for end, raw in ((lo_c, lo_pct), (hi_c, hi_pct)):
                    ax.plot([end], [yi], marker="<" if raw < -clip else ">" if raw > clip else "|",
                            color=colour, ms=8)
            ax.plot([shown], [yi], "o", color=colour, ms=6)
        ax.axvline(0, color="#333333", lw=1)
        ax.set_yticks(y, [f"{r[2]} \u00b7 {r[3]}" for r in pts], fontsize=8.5)
        ax.set_ylim(len(pts) - 0.4, -0.6)  # first row on top, none on the axis line
        ax.set_xlim(-clip * 1.05, clip * 1.05)
        ax.set_title(f"A = {name(a, 50)}   B = {name(b, 50)}", fontsize=10.5)
    axes[-1, 0].set_xlabel("100 \u00b7 (B \u2212 A) / A: point, and the 95% interval of B \u2212 A, in % of A")
    handles = [plt.Line2D([], [], color=c, marker="o", lw=2.2) for c in ("#2a9d55", "#c44e52", "#888888")]
    fig.legend(handles, ["B significantly better", "A significantly better", "not significant"],
               fontsize=8.5, frameon=False, loc="lower center", ncol=3)
    fig.tight_layout(rect=(0, 0.06 if len(pairs) < 3 else 0.03, 1, 1))
    section.body = report.figure(fig, "eval_comparison", "Evaluation comparison with 95% intervals")
    section.figures.append("eval_comparison.png")
    if clipped:
        section.body += (f"<p>Intervals wider than \u00b1{clip:.0f}% are cut at the edge (arrow heads); "
                         "the table has the exact numbers.</p>")
    table_rows = [(r[0], r[1], r[2], r[3], f"{fmt(r[4])} \u00b1 {fmt(r[5])}", f"{fmt(r[6])} \u00b1 {fmt(r[7])}",
                   None if r[8] is None else round(float(r[8]), 2),
                   "" if r[9] is None else f"({fmt(r[9])}; {fmt(r[10])})", r[11]) for r in rows]
    section.body += html_table(["model A", "model B", "task", "metric", "A \u00b1 se", "B \u00b1 se",
                                "% difference", "95% interval of B \u2212 A", "interpretation"], table_rows)
    return section

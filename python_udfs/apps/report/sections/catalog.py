"""The n-gram catalog's most predictable prefixes and the prompt scan's kept windows by cluster."""

from __future__ import annotations

import matplotlib
import numpy as np

from python_udfs.apps.report.html import Section, esc, html_table, note, visible
from python_udfs.apps.report.plots import Report, plt
from python_udfs.apps.report.tables import Tables


def ngram_catalog(wh: Tables, report: Report, top: int = 15) -> Section:
    """The most common predictable prefixes (top_bigrams / top_trigrams): chart + excerpts."""
    section = Section("ngrams", "N-gram catalog (GPT-NeoX token ids)")
    present = [t for t in ("top_bigrams", "top_trigrams") if wh.has(t) and not wh.empty(t)]
    notes = [wh.missing(t) for t in ("top_bigrams", "top_trigrams") if t not in present]
    if not present:
        section.body = "".join(note(n) for n in notes if n)
        return section
    fig, axes = plt.subplots(1, len(present), figsize=(6.2 * len(present), 0.32 * top + 1.8), squeeze=False)
    body = []
    for ax, table in zip(axes[0], present):
        cols = wh.columns(table)
        show = [c for c in ("seq", "token0", "token1", "token2", "sum_count", "max_count", "frac_max") if c in cols]
        show += [c for c in cols if c.startswith("p_")]
        _, rows = wh.rows(f"select {', '.join(show)} from {table} order by sum_count desc limit {int(top)}")
        seq_i, sum_i, frac_i = show.index("seq"), show.index("sum_count"), show.index("frac_max")
        # "prefix → completion", each token with its spaces shown
        tokens = [c for c in ("token0", "token1", "token2") if c in show]
        if len(tokens) >= 2:
            labels = ["".join(visible(str(r[show.index(t)]), 16) for t in tokens[:-1])
                      + " \u2192 " + visible(str(r[show.index(tokens[-1])]), 12) for r in rows]
        else:
            labels = [visible(str(r[seq_i]), 32) for r in rows]
        fracs = np.array([float(r[frac_i]) for r in rows])
        y = np.arange(len(rows))
        cmap = matplotlib.colormaps["viridis"]
        ax.barh(y, fracs, color=cmap(0.25 + 0.6 * (fracs - 0.5) / 0.5))
        for yi, r in zip(y, rows):
            ax.text(float(r[frac_i]) + 0.005, yi, f"{float(r[frac_i]):.2f} of {int(r[sum_i]):,}",
                    va="center", fontsize=7.5)
        ax.set_yticks(y, labels, fontfamily="monospace", fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0.5, 1.22)  # room for the labels right of the bars
        ax.set_xticks([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
        ax.set_xlabel("frac_max = share of the most common next token\n(bar label: frac_max of sum_count occurrences)")
        ax.set_title(f"{table}\n{len(rows)} most frequent prefixes \u2192 most common next token", fontsize=11)
        excerpt_cols = show
        body.append(f"<h3>{esc(table)} (first {len(rows)} by sum_count)</h3>")
        body.append(html_table(excerpt_cols, rows, code_columns=("seq", "token0", "token1", "token2")))
    fig.tight_layout()
    section.body = report.figure(fig, "ngrams", "Most frequent predictable n-gram prefixes")
    section.figures.append("ngrams.png")
    section.body += ('<p>Tokens are shown with <code>\u2423</code> for a space and <code>\\n</code> for a '
                     "newline; <code>seq</code> is the prefix followed by its most common completion.</p>")
    section.body += "".join(note(n) for n in notes if n) + "".join(body)
    return section


def prompt_scan(wh: Tables, report: Report, colours: dict[str, str], top: int = 15) -> Section:
    """Kept scan windows per 1,000 scanned, by cluster (prompt_scan_clusters), and the best tasks."""
    section = Section("scan", "Prompt scan (one more token of context)")
    if reason := wh.missing("prompt_scan_clusters", "prompt_scan"):
        section.body = note(reason)
        return section
    _, rows = wh.rows("select model, cluster_id, main_source, windows_scanned, windows_kept, kept_per_1k_windows "
                      "from prompt_scan_clusters where cluster_id is not null "
                      "order by model, kept_per_1k_windows desc, cluster_id")
    models = sorted({r[0] for r in rows})
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 3.2 * len(models) + 0.6), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        pts = [r for r in rows if r[0] == model]
        x = np.arange(len(pts))
        ax.bar(x, [float(r[5] or 0) for r in pts], color=[colours.get(r[2], "#999999") for r in pts])
        ax.set_xticks(x, [str(r[1]) for r in pts], fontsize=7)
        ax.set_xlabel("cluster")
        ax.set_ylabel("kept per 1,000 windows")
        ax.set_title(f"{model}: kept windows per 1,000 scanned, by cluster (colour = main source)", fontsize=11)
        for src in sorted({r[2] for r in pts if r[2]}):
            ax.bar([0], [0], color=colours.get(src, "#999999"), label=src)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    section.body = report.figure(fig, "prompt_scan", "Kept scan windows per 1,000 scanned, by cluster")
    section.figures.append("prompt_scan.png")
    cols, best = wh.rows(
        "select model, text, token_short, token_long, round(p_short, 3) as p_short, round(p_long, 3) as p_long, "
        "round(js, 2) as js, cluster_id from prompt_scan where token_short <> token_long "
        f"order by p_long desc, text limit {int(top)}")
    section.body += (f"<h3>The {len(best)} most confident windows where the extra token changed the answer</h3>"
                     "<p><code>text</code> shows the long prompt with its first token in brackets; the short "
                     "prompt is the rest.</p>")
    section.body += html_table(cols, best, code_columns=("text", "token_short", "token_long"))
    return section

"""A self-contained HTML report of a pilehouse warehouse (``make report``).

    python -m python_udfs.apps.report --db warehouse/pilehouse.duckdb --out reports/

writes ``reports/report.html`` with every chart embedded as a base64 PNG (the file can be
mailed or opened offline; it loads nothing from the network) and the same PNGs beside it.
Sections: headline numbers, cluster sizes, the source mix before and after distillation,
a 2-D map of the clusters (PCA of the centroids), the n-gram catalog, training loss
curves and the evaluation comparison with 95% intervals. A section whose tables are
missing or empty says so instead of failing, so the report works on a half-built
warehouse (no n-grams yet, nothing trained).

The warehouse is opened read-only. Some of its views read parquet under
``warehouse/lake`` by relative paths: run from the repository root.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

# One colour per source, in order of size; "other" sources beyond the palette share grey.
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860",
           "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd"]
EXCLUDED_COLOUR = "#bbbbbb"
STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "text.parse_math": False,  # tokens and model names may contain "$"
}


@dataclass
class Section:
    """One part of the report: an anchor id, a heading and its HTML body."""

    id: str
    title: str
    body: str = ""
    figures: list[str] = field(default_factory=list)  # PNG file names written for it


@dataclass
class Report:
    """The output folder and the figures written so far (name -> PNG bytes)."""

    out: Path
    images: dict[str, bytes] = field(default_factory=dict)

    def figure(self, fig: Figure, name: str, alt: str) -> str:
        """Save ``fig`` as ``<out>/<name>.png`` and return an <img> embedding it."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
        plt.close(fig)
        png = buf.getvalue()
        self.images[f"{name}.png"] = png
        (self.out / f"{name}.png").write_bytes(png)
        data = base64.b64encode(png).decode("ascii")
        return f'<img class="chart" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


# --- small helpers ----------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def visible(token: str, limit: int = 40, spaces: bool = True) -> str:
    """Text a chart can draw: newlines and tabs spelled out, rare glyphs escaped, and with
    ``spaces`` each space shown as an open box (a token's leading space matters)."""
    out = []
    for ch in token:
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == " " and spaces:
            out.append("\u2423")
        elif not ch.isprintable() or ord(ch) > 0x052F:  # outside DejaVu's wide coverage
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def name(text: str, limit: int = 40) -> str:
    """A source, run or model name for a chart: spaces kept."""
    return visible(text, limit, spaces=False)


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: thousands separators, ``digits`` significant decimals."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], code_columns: Sequence[str] = ()) -> str:
    """An HTML table; numbers right-aligned, ``code_columns`` shown as whitespace-exact code."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for col, value in zip(columns, row):
            if col in code_columns and value is not None:
                cells.append(f"<td><code>{esc(visible(str(value), 80))}</code></td>")
            elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
                cells.append(f'<td class="num">{esc(fmt(value))}</td>')
            else:
                cells.append(f"<td>{esc(fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


class Warehouse:
    """Read-only queries against the warehouse, tolerant of missing tables."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.cache: dict[str, Any] = {}
        rows = con.execute("select table_name from information_schema.tables").fetchall()
        self.relations = {r[0] for r in rows}

    def has(self, *tables: str) -> bool:
        return all(t in self.relations for t in tables)

    def columns(self, table: str) -> list[str]:
        return [d[0] for d in self.con.execute(f"select * from {table} limit 0").description]

    def empty(self, table: str) -> bool:
        return not self.con.execute(f"select 1 from {table} limit 1").fetchall()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        cur = self.con.execute(sql, list(params))
        cols = [d[0] for d in cur.description]
        # DECIMAL columns (e.g. from SQL literals) come back as Decimal: plot them as floats
        return cols, [tuple(float(v) if isinstance(v, Decimal) else v for v in r) for r in cur.fetchall()]

    def scalar(self, sql: str) -> Any:
        rows = self.con.execute(sql).fetchall()
        return rows[0][0] if rows else None

    def missing(self, *tables: str) -> str | None:
        """A sentence naming the first missing or empty table, or None when all have rows."""
        for t in tables:
            if not self.has(t):
                return f"Table {t} is not in this warehouse, so this section is skipped."
            if self.empty(t):
                return f"Table {t} is empty, so this section is skipped."
        return None


def source_colours(wh: Warehouse) -> dict[str, str]:
    """Sources by document count, each with a fixed colour used by every chart."""
    if not wh.has("documents"):
        return {}
    _, rows = wh.rows("select source, count(*) as n from documents group by source order by n desc, source")
    return {r[0]: PALETTE[i] if i < len(PALETTE) else PALETTE[-3] for i, r in enumerate(rows)}


def excluded_clusters(wh: Warehouse) -> set[int]:
    if not wh.has("cluster_exclusions"):
        return set()
    return {int(r[0]) for r in wh.rows("select cluster_id from cluster_exclusions")[1]}


def dominant_sources(wh: Warehouse) -> dict[int, tuple[str, float]]:
    """cluster_id -> (most common source, its share of the cluster); computed once."""
    if "dominant" in wh.cache:
        return wh.cache["dominant"]
    if not wh.has("cluster_assignments", "documents"):
        return {}
    _, rows = wh.rows("""
        select cluster_id, arg_max(source, n) as source, max(n) / sum(n) as share
        from (
            select a.cluster_id, d.source, count(*) as n
            from cluster_assignments as a
            inner join documents as d using (doc_id)
            group by all
        )
        group by cluster_id
    """)
    wh.cache["dominant"] = {int(c): (s, float(share)) for c, s, share in rows}
    return wh.cache["dominant"]


# --- sections ---------------------------------------------------------------------------

def headline(wh: Warehouse) -> Section:
    """The numbers people ask first: corpus, clusters, MiniPile, n-grams, training."""
    items: list[tuple[str, Any]] = []
    if wh.has("documents"):
        items.append(("Documents (accepted)", wh.scalar("select count(*) from documents")))
        items.append(("Sources", wh.scalar("select count(distinct source) from documents")))
    if wh.has("rejected_documents"):
        items.append(("Rejected input records", wh.scalar("select count(*) from rejected_documents")))
    if wh.has("document_embeddings") and "model" in wh.columns("document_embeddings"):
        items.append(("Embedding model", wh.scalar("select model from document_embeddings limit 1")))
    if wh.has("cluster_centroids"):
        items.append(("Clusters (k)", wh.scalar("select count(*) from cluster_centroids")))
        items.append(("Clusters excluded by hand", len(excluded_clusters(wh))))
    if wh.has("minipile"):
        _, rows = wh.rows("select split, count(*) from minipile group by split")
        by_split = dict(rows)
        items.append(("MiniPile documents", sum(by_split.values())))
        split_text = ", ".join(f"{s} {by_split[s]:,}" for s in ("train", "validation", "test") if s in by_split)
        items.append(("MiniPile splits", split_text or "none"))
    if wh.has("document_tokens"):
        items.append(("GPT-NeoX tokens (n-gram source)", wh.scalar("select sum(n_tokens) from document_tokens")))
    if wh.has("int_ngram_counts"):
        cols = wh.columns("int_ngram_counts")
        if {"n", "distinct_ngrams"} <= set(cols):
            for n, count in wh.rows("select n, distinct_ngrams from int_ngram_counts order by n")[1]:
                items.append((f"Distinct {'bigrams' if n == 2 else 'trigrams' if n == 3 else f'{n}-grams'}", count))
    for table in ("top_bigrams", "top_trigrams"):
        if wh.has(table):
            items.append((f"Rows in {table}", wh.scalar(f"select count(*) from {table}")))
    if wh.has("training_runs"):
        items.append(("Training runs", wh.scalar("select count(*) from training_runs")))
    if wh.has("eval_scores"):
        items.append(("Evaluated models", wh.scalar("select count(distinct model) from eval_scores")))
    if not items:
        return Section("headline", "Headline numbers", note("No pilehouse tables found in this warehouse."))
    rows = "".join(
        f'<tr><th scope="row">{esc(k)}</th><td class="num">{esc(fmt(v))}</td></tr>' for k, v in items
    )
    return Section("headline", "Headline numbers", f'<table class="headline">{rows}</table>')


def cluster_sizes(wh: Warehouse, report: Report, colours: dict[str, str]) -> Section:
    """Sorted cluster sizes coloured by dominant source (excluded ones grey) + a histogram."""
    section = Section("cluster-sizes", "Cluster sizes")
    if reason := wh.missing("cluster_centroids"):
        section.body = note(reason)
        return section
    _, rows = wh.rows("select cluster_id, n_docs from cluster_centroids order by n_docs desc, cluster_id")
    ids = [int(r[0]) for r in rows]
    sizes = np.array([int(r[1] or 0) for r in rows])
    excluded = excluded_clusters(wh)
    dominant = dominant_sources(wh)

    fig, (ax_bar, ax_hist) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    bar_colours = [EXCLUDED_COLOUR if c in excluded else colours.get(dominant.get(c, ("", 0))[0], PALETTE[0])
                   for c in ids]
    x = np.arange(len(ids))
    bars = ax_bar.bar(x, sizes, color=bar_colours, width=0.85)
    for bar, c in zip(bars, ids):
        if c in excluded:
            bar.set_hatch("//")
            bar.set_edgecolor("#555555")
    if len(ids) <= 40:
        ax_bar.set_xticks(x, [str(c) for c in ids], fontsize=8, rotation=90 if len(ids) > 20 else 0)
    else:
        ax_bar.set_xticks([])
    ax_bar.set_xlabel("cluster id, largest first" if len(ids) <= 40 else f"{len(ids)} clusters, largest first")
    ax_bar.set_ylabel("documents")
    ax_bar.set_title("Documents per cluster (colour: dominant source)")
    ax_bar.axhline(sizes.mean(), color="#333333", lw=1, ls="--")
    ax_bar.annotate(f"mean {sizes.mean():,.0f}", xy=(len(ids) - 0.5, sizes.mean()), ha="right", va="bottom",
                    fontsize=8, color="#333333")
    handles = [plt.Rectangle((0, 0), 1, 1, color=col) for s, col in colours.items()
               if any(dominant.get(c, ("",))[0] == s for c in ids)]
    labels = [s for s in colours if any(dominant.get(c, ("",))[0] == s for c in ids)]
    if excluded:
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor=EXCLUDED_COLOUR, hatch="//", edgecolor="#555555"))
        labels.append("excluded")
    if handles:
        ax_bar.legend(handles, labels, fontsize=8, frameon=False, loc="upper right")

    ax_hist.hist(sizes, bins=min(30, max(5, len(ids) // 3)), color=PALETTE[0], edgecolor="white")
    ax_hist.set_xlabel("documents in cluster")
    ax_hist.set_ylabel("clusters")
    ax_hist.set_title("Distribution of cluster sizes")
    fig.tight_layout()
    section.body = report.figure(fig, "cluster_sizes", "Cluster sizes")
    section.figures.append("cluster_sizes.png")
    kept = [s for c, s in zip(ids, sizes) if c not in excluded]
    section.body += (
        f"<p>{len(ids):,} clusters; sizes from {sizes.min():,} to {sizes.max():,} documents "
        f"(median {int(np.median(sizes)):,}). {len(excluded):,} excluded, "
        f"{len(kept):,} kept holding {sum(kept):,} documents.</p>"
    )
    return section


def source_mix(wh: Warehouse, report: Report, colours: dict[str, str]) -> Section:
    """Each source's share of all documents and of MiniPile: what distillation changed."""
    section = Section("source-mix", "Source mix before and after distillation")
    if reason := wh.missing("documents", "minipile"):
        section.body = note(reason)
        return section
    _, rows = wh.rows("""
        with before as (select source, count(*) as n from documents group by source),
        after as (select source, count(*) as n from minipile group by source),
        splits as (
            select source,
                count(*) filter (where split = 'train') as train,
                count(*) filter (where split = 'validation') as validation,
                count(*) filter (where split = 'test') as test,
            from minipile group by source
        )
        select b.source, b.n, coalesce(a.n, 0), coalesce(s.train, 0), coalesce(s.validation, 0), coalesce(s.test, 0)
        from before as b
        left join after as a using (source)
        left join splits as s using (source)
        order by b.n desc, b.source
    """)
    sources = [r[0] for r in rows]
    before = np.array([r[1] for r in rows], dtype=float)
    after = np.array([r[2] for r in rows], dtype=float)
    pct_before = 100 * before / before.sum()
    pct_after = 100 * after / after.sum() if after.sum() else np.zeros_like(after)

    fig, (ax_share, ax_stack) = plt.subplots(1, 2, figsize=(12, 0.55 * len(sources) + 2.2),
                                             gridspec_kw={"width_ratios": [1.6, 1]})
    y = np.arange(len(sources))
    h = 0.38
    ax_share.barh(y - h / 2, pct_before, height=h, color="#9aa9c2", label="documents (before)")
    ax_share.barh(y + h / 2, pct_after, height=h, color=[colours.get(s, PALETTE[0]) for s in sources],
                  label="minipile (after)")
    for yi, (b, a) in enumerate(zip(pct_before, pct_after)):
        ax_share.text(b, yi - h / 2, f" {b:.1f}%", va="center", fontsize=8)
        ax_share.text(a, yi + h / 2, f" {a:.1f}%", va="center", fontsize=8)
    ax_share.set_yticks(y, [name(s, 30) for s in sources])
    ax_share.invert_yaxis()
    ax_share.set_xlabel("share of documents (%)")
    ax_share.set_xlim(0, max(pct_before.max(), pct_after.max()) * 1.18)
    ax_share.set_title("Share of each source")
    ax_share.legend(fontsize=8, frameon=False, loc="lower right")

    left = np.zeros(2)
    for s, b, a in zip(sources, pct_before, pct_after):
        ax_stack.bar([0, 1], [b, a], bottom=left, color=colours.get(s, PALETTE[0]), edgecolor="white",
                     label=name(s, 30), width=0.6)
        left += np.array([b, a])
    ax_stack.set_xticks([0, 1], [f"documents\n{int(before.sum()):,}", f"minipile\n{int(after.sum()):,}"])
    ax_stack.set_ylabel("% of documents")
    ax_stack.set_ylim(0, 100)
    ax_stack.set_title("Composition")
    ax_stack.legend(fontsize=8, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.tight_layout()
    section.body = report.figure(fig, "source_mix", "Source mix before and after distillation")
    section.figures.append("source_mix.png")
    table_rows = [(s, int(b), round(pb, 2), int(a), round(pa, 2), int(tr), int(va), int(te))
                  for (s, b, a, tr, va, te), pb, pa in zip(rows, pct_before, pct_after)]
    section.body += html_table(["source", "documents", "% of documents", "minipile", "% of minipile",
                                "train", "validation", "test"], table_rows)
    return section


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of the rows of ``x`` and their explained-variance shares."""
    centred = x - x.mean(axis=0, keepdims=True)
    if len(x) < 2 or not np.any(centred):
        return np.zeros((len(x), 2)), np.zeros(2)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    var = s**2
    share = var[:2] / var.sum()
    return coords, np.pad(share, (0, 2 - len(share)))


def cluster_map(wh: Warehouse, report: Report, colours: dict[str, str]) -> Section:
    """Centroids projected to 2-D with PCA: size = documents, colour = dominant source."""
    section = Section("cluster-map", "Map of the clusters")
    if reason := wh.missing("cluster_centroids"):
        section.body = note(reason)
        return section
    _, rows = wh.rows("select cluster_id, n_docs, centroid from cluster_centroids order by cluster_id")
    ids = np.array([int(r[0]) for r in rows])
    sizes = np.array([float(r[1] or 0) for r in rows])
    centroids = np.array([np.asarray(r[2], dtype=np.float64) for r in rows])
    coords, share = pca_2d(centroids)
    excluded = excluded_clusters(wh)
    dominant = dominant_sources(wh)

    fig, ax = plt.subplots(figsize=(10, 7))
    area = 40 + 1400 * sizes / max(sizes.max(), 1)
    for s, col in colours.items():
        mask = np.array([dominant.get(int(c), ("",))[0] == s and int(c) not in excluded for c in ids])
        if mask.any():
            ax.scatter(coords[mask, 0], coords[mask, 1], s=area[mask], color=col, alpha=0.75,
                       edgecolor="white", linewidth=0.8, label=name(s, 30))
    unknown = np.array([int(c) not in excluded and dominant.get(int(c), ("",))[0] not in colours for c in ids])
    if unknown.any():
        ax.scatter(coords[unknown, 0], coords[unknown, 1], s=area[unknown], color=PALETTE[0], alpha=0.75,
                   edgecolor="white", linewidth=0.8, label="(source unknown)")
    ex = np.array([int(c) in excluded for c in ids])
    if ex.any():
        ax.scatter(coords[ex, 0], coords[ex, 1], s=area[ex], facecolor=EXCLUDED_COLOUR, alpha=0.8,
                   edgecolor="#333333", linewidth=1.0, hatch="xx", label="excluded")
    if len(ids) <= 80:
        for c, (px, py) in zip(ids, coords):
            ax.annotate(str(c), (px, py), ha="center", va="center", fontsize=7, color="#222222")
    ax.set_xlabel(f"PC 1 ({100 * share[0]:.1f}% of centroid variance)")
    ax.set_ylabel(f"PC 2 ({100 * share[1]:.1f}% of centroid variance)")
    ax.set_title(f"{len(ids)} cluster centroids, PCA to 2-D (area = documents, colour = dominant source)")
    legend = ax.legend(fontsize=8, frameon=False, loc="best", markerscale=0.4)
    for handle in legend.legend_handles:
        handle.set_sizes([60])
    ax.margins(0.08)
    fig.tight_layout()
    section.body = report.figure(fig, "cluster_map", "Map of the clusters")
    section.figures.append("cluster_map.png")
    if dominant:
        purity = [dominant[int(c)][1] for c in ids if int(c) in dominant]
        section.body += (f"<p>Median share of a cluster's dominant source: {100 * float(np.median(purity)):.0f}%. "
                         "Numbers are cluster ids (query <code>cluster_inspection</code> for their examples).</p>")
    return section


def ngram_catalog(wh: Warehouse, report: Report, top: int = 15) -> Section:
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


def prompt_scan(wh: Warehouse, report: Report, colours: dict[str, str], top: int = 15) -> Section:
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
        ax.set_title(f"{model}: kept windows per 1,000 scanned, by cluster (colour = dominant source)", fontsize=11)
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


def training(wh: Warehouse, report: Report) -> Section:
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


def eval_comparison(wh: Warehouse, report: Report) -> Section:
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


# --- page -------------------------------------------------------------------------------

# What fills a section that has nothing to show yet (HTML).
_BUILD = "Build the warehouse with <code>make minipile</code>."
HINTS = {
    "cluster-sizes": _BUILD,
    "source-mix": _BUILD,
    "cluster-map": _BUILD,
    "ngrams": "<code>dbt build</code> builds the catalog (alone: <code>dbt build --select tag:ngrams</code>).",
    "scan": "<code>make scan</code> scans a slice of the warehouse (<code>dbt build --select tag:scan</code>).",
    "training": ("Train a model on a warehouse table: <code>python -m trainers.train --preset tiny "
                 "--dataset minipile</code>, or <code>make experiment</code>."),
    "eval": ("Score models with <code>python -m trainers.evaluate</code>, list the pairs in "
             "<code>seeds/eval_pairs.csv</code> and rebuild <code>eval_comparison</code>; "
             "<code>make experiment</code> does all of it."),
}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: white; }
h1 { margin-bottom: 4px; } .sub { color: #666; margin-top: 0; }
h2 { border-bottom: 2px solid #4c72b0; padding-bottom: 4px; margin-top: 40px; }
nav ol { columns: 2; color: #4c72b0; } nav a { color: #4c72b0; text-decoration: none; }
img.chart { max-width: 100%; height: auto; display: block; margin: 12px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 10px 0 18px; display: block; overflow-x: auto; }
td { white-space: nowrap; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; vertical-align: top; }
thead th { background: #f0f3f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.headline th { font-weight: normal; color: #555; } table.headline td { font-weight: 600; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; white-space: pre; }
p.hint { color: #555; margin-top: -4px; }
p.missing { color: #8a6d3b; background: #fcf8e3; border-left: 4px solid #e0c060; padding: 8px 12px; }
"""


def render(sections: list[Section], db: Path) -> str:
    """The whole page as one HTML string (no external resources)."""
    toc = "".join(f'<li><a href="#{s.id}">{esc(s.title)}</a></li>' for s in sections)
    parts = "".join(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pilehouse report</title><style>{CSS}</style></head><body><main>"
        f'<h1>pilehouse report</h1><p class="sub">Warehouse <code>{esc(db)}</code>, generated {stamp}.</p>'
        f"<nav><ol>{toc}</ol></nav>{parts}</main></body></html>\n"
    )


def build_report(db: str | Path, out: str | Path) -> Path:
    """Write ``<out>/report.html`` and its PNGs from the warehouse at ``db``; returns the HTML path."""
    db, out = Path(db), Path(out)
    if not db.exists():
        raise FileNotFoundError(f"no warehouse at {db}: run `make minipile` first (or pass --db)")
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out)
    con = duckdb.connect(str(db), read_only=True)
    try:
        wh = Warehouse(con)
        try:
            colours = source_colours(wh)
        except duckdb.Error:
            colours = {}
        builders: list[tuple[str, str, Callable[[], Section]]] = [
            ("headline", "Headline numbers", lambda: headline(wh)),
            ("cluster-sizes", "Cluster sizes", lambda: cluster_sizes(wh, report, colours)),
            ("source-mix", "Source mix before and after distillation", lambda: source_mix(wh, report, colours)),
            ("cluster-map", "Map of the clusters", lambda: cluster_map(wh, report, colours)),
            ("ngrams", "N-gram catalog (GPT-NeoX token ids)", lambda: ngram_catalog(wh, report)),
            ("scan", "Prompt scan (one more token of context)", lambda: prompt_scan(wh, report, colours)),
            ("training", "Training runs", lambda: training(wh, report)),
            ("eval", "Evaluation: model B against model A", lambda: eval_comparison(wh, report)),
        ]
        sections = []
        with plt.rc_context(STYLE), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing")
            for section_id, title, build in builders:
                try:
                    section = build()
                except duckdb.Error as error:  # e.g. a view whose parquet files are gone
                    plt.close("all")
                    section = Section(section_id, title, note(f"Could not read this section's tables: {error}"))
                if not section.figures and 'class="missing"' in section.body and section_id in HINTS:
                    section.body += f'<p class="hint">{HINTS[section_id]}</p>'
                sections.append(section)
    finally:
        con.close()
    path = out / "report.html"
    path.write_text(render(sections, db), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="warehouse/pilehouse.duckdb", help="the warehouse (opened read-only)")
    parser.add_argument("--out", default="reports", help="folder for report.html and the PNGs")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.db, args.out)
    except (FileNotFoundError, duckdb.IOException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

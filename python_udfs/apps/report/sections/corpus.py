"""Headline numbers and the source mix before and after distillation."""

from __future__ import annotations

from typing import Any

import numpy as np

from python_udfs.apps.report.html import Section, esc, fmt, html_table, name, note
from python_udfs.apps.report.plots import PALETTE, Report, plt
from python_udfs.apps.report.tables import Tables, excluded_clusters


def headline(wh: Tables) -> Section:
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


def source_mix(wh: Tables, report: Report, colours: dict[str, str]) -> Section:
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

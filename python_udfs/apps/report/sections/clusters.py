"""Cluster sizes and the map of the clusters, coloured by each cluster's main source (cluster_summary)."""

from __future__ import annotations

import numpy as np

from python_udfs.apps.report.html import Section, name, note
from python_udfs.apps.report.plots import EXCLUDED_COLOUR, PALETTE, Report, plt
from python_udfs.apps.report.tables import Tables, cluster_summary, excluded_clusters, main_sources


def cluster_sizes(wh: Tables, report: Report, colours: dict[str, str]) -> Section:
    """Sorted cluster sizes coloured by main source (excluded ones grey) + a histogram."""
    section = Section("cluster-sizes", "Cluster sizes")
    if reason := wh.missing("cluster_centroids"):
        section.body = note(reason)
        return section
    _, rows = wh.rows("select cluster_id, n_docs from cluster_centroids order by n_docs desc, cluster_id")
    ids = [int(r[0]) for r in rows]
    sizes = np.array([int(r[1] or 0) for r in rows])
    excluded = excluded_clusters(wh)
    dominant = main_sources(wh)

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
    ax_bar.set_title("Documents per cluster (colour: main source)")
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


def cluster_map(wh: Tables, report: Report, colours: dict[str, str]) -> Section:
    """Centroids on cluster_summary's 2-D PCA map: size = documents, colour = main source."""
    section = Section("cluster-map", "Map of the clusters")
    if reason := wh.missing("cluster_summary"):
        section.body = note(reason)
        return section
    summary = cluster_summary(wh)
    ids = np.array(list(summary), dtype=int)
    sizes = np.array([float(r["n_docs"] or 0) for r in summary.values()])
    coords = np.array([[float(r["x"] or 0), float(r["y"] or 0)] for r in summary.values()])
    first = next(iter(summary.values()))
    share = (float(first["x_variance_share"] or 0), float(first["y_variance_share"] or 0))
    excluded = excluded_clusters(wh)
    dominant = main_sources(wh)

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
    ax.set_title(f"{len(ids)} cluster centroids, PCA to 2-D (area = documents, colour = main source)")
    legend = ax.legend(fontsize=8, frameon=False, loc="best", markerscale=0.4)
    for handle in legend.legend_handles:
        handle.set_sizes([60])
    ax.margins(0.08)
    fig.tight_layout()
    section.body = report.figure(fig, "cluster_map", "Map of the clusters")
    section.figures.append("cluster_map.png")
    if dominant:
        purity = [dominant[int(c)][1] for c in ids if int(c) in dominant]
        section.body += (f"<p>Median share of a cluster's main source: {100 * float(np.median(purity)):.0f}%. "
                         "Numbers are cluster ids (query <code>cluster_inspection</code> for their examples).</p>")
    return section

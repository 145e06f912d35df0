"""A self-contained HTML report of a pilehouse warehouse (``make report``).

    python -m python_udfs.apps.report --out reports/          # --db: another warehouse file

writes ``reports/report.html`` with every chart embedded as a base64 PNG (the file can be
mailed or opened offline; it loads nothing from the network) and the same PNGs beside it.
Sections: headline numbers, cluster sizes, the source mix before and after distillation,
a 2-D map of the clusters (``cluster_summary``: PCA of the centroids), the n-gram catalog,
the prompt scan, training loss curves and the evaluation comparison with 95% intervals. A
section whose tables are missing or empty says so instead of failing, so the report works
on a half-built warehouse (no n-grams yet, nothing trained).

The warehouse is opened read-only by the apps' shared reader (python_udfs/apps/warehouse.py),
which resolves the lake views' relative paths from the project root. The parts: ``html``
(escaping, tables, the page), ``plots`` (matplotlib style, colours), ``tables`` (queries
that tolerate missing tables), ``sections/`` (one module per stage) and this entry point.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import duckdb

from python_udfs import settings
from python_udfs.apps.report.html import Section, note, render
from python_udfs.apps.report.plots import STYLE, Report, plt, source_colours
from python_udfs.apps.report.sections.catalog import ngram_catalog, prompt_scan
from python_udfs.apps.report.sections.clusters import cluster_map, cluster_sizes
from python_udfs.apps.report.sections.corpus import headline, source_mix
from python_udfs.apps.report.sections.training import eval_comparison, training
from python_udfs.apps.report.tables import Tables
from python_udfs.apps.warehouse import WarehouseReader, WarehouseUnavailable

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
             "<code>make experiment</code> does all of it (<code>make experiment VARIANTS=\"uniform density\" "
             "EXP_SEEDS=3</code>: sampling variants over seeds, pairs derived from the runs)."),
}


def build_report(db: str | Path | None, out: str | Path, root: str | Path | None = None) -> Path:
    """Write ``<out>/report.html`` and its PNGs from the warehouse at ``db``; returns the HTML path.

    Raises WarehouseUnavailable (missing or locked file) before writing anything.
    """
    reader = WarehouseReader(db, root)
    out = Path(out)
    with reader.connect() as con:
        out.mkdir(parents=True, exist_ok=True)
        report = Report(out)
        wh = Tables(con, reader.tables(con))
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
    path = out / "report.html"
    path.write_text(render(sections, reader.db), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=str(settings.db_path()),
                        help="the warehouse, opened read-only (default %(default)s, from $PILEHOUSE_DB when set)")
    parser.add_argument("--out", default="reports", help="folder for report.html and the PNGs")
    parser.add_argument("--root", default=str(settings.ROOT),
                        help="project root: the warehouse's views read the lake relative to it (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = build_report(args.db, args.out, args.root)
    except WarehouseUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

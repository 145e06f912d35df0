"""``pilehouse export``: a warehouse table as a Hugging Face dataset folder (parquet + card).

    pilehouse export minipile --out exports/minipile
    pilehouse export density --out exports/minipile-density     # a variant of minipile_variant_documents
    pilehouse export top_trigrams --out exports/top_trigrams    # a table of the n-gram catalog

    >>> datasets.load_dataset("parquet", data_dir="exports/minipile")   # or load_dataset("exports/minipile")

What it writes in ``--out``: ``data/<split>-00000-of-00001.parquet`` per split and a dataset
card ``README.md`` whose YAML header lists the configs and splits (so ``load_dataset(DIR)``
names them; ``load_dataset("parquet", data_dir=DIR)`` finds them by file name).

- ``minipile`` and every variant of ``minipile_variant_documents``: train, validation and
  test splits with ``text``, ``pile_idx`` (= ``doc_id``, the seed's name: the document's
  index in the corpus), ``cluster_id`` and ``source``, rows in ``pile_idx`` order;
- the catalog's tables (``CATALOG_TABLES``): one ``train`` split with the table's own
  columns, as the catalog publishes them.

The card names the build's settings: the vars given to the last ``dbt`` invocation recorded
in ``target/run_results.json`` (and whether it built this table), every other var at its
``dbt_project.yml`` default, the row counts and the export date. The warehouse is opened
read-only, for the export only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from python_udfs.settings import ROOT, db_path, project_vars

DOCUMENT_SPLITS = ("train", "validation", "test")
CATALOG_TABLES = ("bigrams", "trigrams", "bigram_prefixes", "trigram_prefixes", "top_bigrams",
                  "top_trigrams", "prompt_scan")
VARIANTS_TABLE = "minipile_variant_documents"
# The vars that decide what MiniPile (and a variant) holds, shown first on the card.
KEY_VARS = ("seed", "embedding_model", "n_clusters", "sampling_strategy", "train_size",
            "validation_size", "test_size", "ngram_source", "ngram_seq_len")


class ExportError(ValueError):
    """What to export is unknown, or the output folder is in the way."""


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}


def _variants(con: duckdb.DuckDBPyConnection, relations: set[str]) -> list[str]:
    if VARIANTS_TABLE not in relations:
        return []
    return [r[0] for r in con.execute(f"select distinct variant from {VARIANTS_TABLE} order by 1").fetchall()]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def export_queries(con: duckdb.DuckDBPyConnection, name: str) -> tuple[str, dict[str, str]]:
    """(kind, split -> SQL) for `name`: minipile, a variant, or a catalog table."""
    relations = _relations(con)
    columns = "d.text, d.doc_id::bigint as pile_idx, m.cluster_id::integer as cluster_id, d.source"
    if name == "minipile":
        if "minipile" not in relations:
            raise ExportError("the warehouse has no minipile table: build it first (make minipile)")
        return "documents", {
            split: (f"select m.text, m.doc_id::bigint as pile_idx, m.cluster_id::integer as cluster_id, "
                    f"m.source from minipile as m where m.split = '{split}' order by m.doc_id")
            for split in DOCUMENT_SPLITS}
    if name in CATALOG_TABLES:
        if name not in relations:
            raise ExportError(f"the warehouse has no {name}: build the catalog first "
                              "(dbt build --select tag:ngrams, or tag:scan for prompt_scan)")
        cols = [d[0] for d in con.execute(f"select * from {name} limit 0").description]
        order = ", ".join(c for c in cols if c in ("id0", "id1", "id2")) or "all"
        return "catalog", {"train": f"select * from {name} order by {order}"}
    variants = _variants(con, relations)
    if name in variants:
        return "documents", {
            split: (f"select {columns} from {VARIANTS_TABLE} as m join documents as d using (doc_id) "
                    f"where m.variant = {_quote(name)} and m.split = '{split}' order by d.doc_id")
            for split in DOCUMENT_SPLITS}
    known = ["minipile", *variants, *CATALOG_TABLES]
    raise ExportError(f"unknown export {name!r}: choose minipile, a variant of {VARIANTS_TABLE} "
                      f"({', '.join(variants) or 'none in this warehouse'}) or a catalog table "
                      f"({', '.join(CATALOG_TABLES)}); known here: {', '.join(known)}")


def build_settings(run_results: Path | None) -> dict[str, Any]:
    """The vars of the build as far as they are recorded: the last dbt invocation's --vars
    (target/run_results.json) over dbt_project.yml's defaults."""
    given: dict[str, Any] = {}
    info: dict[str, Any] = {"run_results": None}
    if run_results is not None and run_results.exists():
        data = json.loads(run_results.read_text(encoding="utf-8"))
        given = dict((data.get("args") or {}).get("vars") or {})
        info = {"run_results": str(run_results),
                "generated_at": (data.get("metadata") or {}).get("generated_at"),
                "built": sorted(r.get("unique_id", "") for r in data.get("results", []))}
    effective = {**project_vars(), **given}
    return {"given": given, "effective": effective, **info}


def _yaml_header(splits: Sequence[str], name: str) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    lines += ["tags:", "- pilehouse", f"- {name}", "---", ""]
    return "\n".join(lines)


def dataset_card(name: str, kind: str, counts: dict[str, int], columns: list[str],
                 settings: dict[str, Any], db: Path, exported_at: datetime) -> str:
    """README.md: the YAML header `load_dataset` reads, then what, how many, from which build."""
    built = [u for u in settings.get("built", []) if u.split(".")[-1] == name]
    lines = [_yaml_header(list(counts), name), f"# {name} (pilehouse export)", ""]
    what = (f"Documents of `{name}` with `text`, `pile_idx` (the document's `doc_id`, its index in "
            "the corpus, as MiniPile's `pile_idx`), `cluster_id` (its k-means cluster) and `source`."
            if kind == "documents" else
            f"The n-gram catalog's `{name}` table, one split, the table's own columns.")
    lines += [what, "", f"Exported {exported_at:%Y-%m-%d %H:%M} UTC from `{db}` by `pilehouse export {name}`.", "",
              "| split | rows |", "| --- | --- |"]
    lines += [f"| {split} | {n:,} |" for split, n in counts.items()]
    lines += ["", f"Columns: {', '.join(f'`{c}`' for c in columns)}.", "", "## Build settings", ""]
    if settings.get("run_results"):
        note = ("which built this table" if built else "which did not build this table itself: the "
                "vars below are those of the last dbt run, not necessarily of this table's build")
        lines.append(f"From `{settings['run_results']}` (dbt run of {settings.get('generated_at')}), "
                     f"{note}; vars given on its command line: "
                     f"`{json.dumps(settings['given'], sort_keys=True) if settings['given'] else 'none'}`; "
                     "every other var at its `dbt_project.yml` default.")
    else:
        lines.append("No dbt run_results.json was found, so the build's vars are not recorded: the "
                     "values below are `dbt_project.yml`'s defaults.")
    lines += ["", "| var | value |", "| --- | --- |"]
    effective = settings["effective"]
    for key in [k for k in KEY_VARS if k in effective] + sorted(k for k in effective if k not in KEY_VARS):
        lines.append(f"| {key} | `{json.dumps(effective[key], default=str)}` |")
    lines += ["", "Load it with `datasets.load_dataset(\"parquet\", data_dir=...)` or "
              "`datasets.load_dataset(...)` on this folder.", ""]
    return "\n".join(lines)


def export(name: str, out: str | os.PathLike, db: str | os.PathLike | None = None, *,
           run_results: str | os.PathLike | None = None, overwrite: bool = False) -> dict[str, int]:
    """Write `name` to `out` (data/*.parquet and README.md); returns rows per split."""
    db = Path(db) if db is not None else db_path()
    out = Path(out)
    if not db.exists():
        raise FileNotFoundError(f"warehouse {db} not found (set --db or PILEHOUSE_DB)")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out} is not empty: pass --overwrite to replace its data/ and README.md")
        shutil.rmtree(out / "data", ignore_errors=True)
        (out / "README.md").unlink(missing_ok=True)
    results = Path(run_results) if run_results is not None else ROOT / "target" / "run_results.json"
    with duckdb.connect(str(db), read_only=True) as con:
        kind, queries = export_queries(con, name)
        counts: dict[str, int] = {}
        columns: list[str] = []
        (out / "data").mkdir(parents=True, exist_ok=True)
        for split, sql in queries.items():
            (n,) = con.execute(f"select count(*) from ({sql})").fetchall()[0]
            columns = columns or [d[0] for d in con.execute(f"select * from ({sql}) limit 0").description]
            if not n:
                continue  # a split with no rows is left out of the folder and the card
            target = out / "data" / f"{split}-00000-of-00001.parquet"
            con.execute(f"copy ({sql}) to {_quote(str(target))} (format parquet, compression zstd, "
                        "row_group_size 10000)")
            counts[split] = int(n)
    if not counts:
        raise ExportError(f"{name!r} has no rows to export")
    card = dataset_card(name, kind, counts, columns, build_settings(results), db,
                        datetime.now(UTC).replace(tzinfo=None))
    (out / "README.md").write_text(card, encoding="utf-8")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pilehouse export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="minipile, a variant of minipile_variant_documents, or a catalog "
                                     f"table ({', '.join(CATALOG_TABLES)})")
    parser.add_argument("--out", required=True, help="the dataset folder to write")
    parser.add_argument("--db", help=f"warehouse file (default {db_path()}, from $PILEHOUSE_DB when set)")
    parser.add_argument("--run-results", help="dbt's run_results.json naming the build's vars "
                                              "(default target/run_results.json)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    args = parser.parse_args(argv)
    try:
        counts = export(args.name, args.out, args.db, run_results=args.run_results, overwrite=args.overwrite)
    except (ExportError, FileNotFoundError) as error:
        print(f"pilehouse export: error: {error}", file=sys.stderr)
        return 2
    print(f"{args.name} -> {args.out}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Scan a slice of the warehouse for prompts where one more token changes a model's mind.

Reads the warehouse read-only and writes the kept windows as resumable parts under
LAKE/scan/<model>/ (a rerun reuses every finished part); ``dbt build --select tag:scan``
then builds ``prompt_scan`` from them::

    python -m python_udfs.scan --model smollm2 --docs 20 --max-tokens 128 --where "d.source = 'BBC News'"
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from python_udfs.runner.executors import open_executor
from python_udfs.scan.model import load_scan_model
from python_udfs.scan.runner import NothingToScan, ScanSettings, iter_rows, scan_document_stream, slice_query
from python_udfs.settings import db_path, default, lake_dir


def main(argv: Iterable[str] | None = None) -> None:
    import duckdb

    parser = argparse.ArgumentParser(prog="python -m python_udfs.scan", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default("scan_model"),
                        help="smollm2 (offline default), a .gguf file, a checkpoint folder or a hub name")
    parser.add_argument("--name", help="prompt_scan.model (default: from --model)")
    parser.add_argument("--db", default=str(db_path()),
                        help="the warehouse (default %(default)s, from $PILEHOUSE_DB when set)")
    parser.add_argument("--lake", default=str(lake_dir()),
                        help="parts go to LAKE/scan/<model>/ (default %(default)s, from $PILEHOUSE_LAKE when set)")
    parser.add_argument("--where", default=default("scan_where"),
                        help="SQL predicate over documents d and cluster_assignments a")
    parser.add_argument("--docs", type=int, default=default("scan_docs"),
                        help="how many documents (seeded hash order); 0 = all")
    parser.add_argument("--seed", type=int, default=default("seed"))
    parser.add_argument("--max-tokens", type=int, default=ScanSettings.max_tokens,
                        help="first tokens of each document; 0 = all")
    parser.add_argument("--seq-len", type=int, default=ScanSettings.seq_len)
    parser.add_argument("--min-p-long", type=float, default=ScanSettings.min_p_long)
    parser.add_argument("--min-js", type=float, default=ScanSettings.min_js)
    parser.add_argument("--batch-size", type=int, default=ScanSettings.batch_size)
    parser.add_argument("--part-docs", type=int, default=ScanSettings.part_docs)
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--executor", default=default("executor"), choices=["local", "ray"],
                        help="where parts are computed (default %(default)s)")
    parser.add_argument("--ray-address", default=default("ray_address"),
                        help="executor ray: the cluster to join; empty: a local Ray on 127.0.0.1")
    parser.add_argument("--ray-workers", default=default("ray_workers"),
                        help="executor ray: actors (empty: the cluster's GPUs, else its CPUs)")
    parser.add_argument("--show", type=int, default=10, help="print this many of the best kept windows")
    args = parser.parse_args(list(argv) if argv is not None else None)

    if not Path(args.db).exists():
        parser.error(f"{args.db} does not exist: run `make minipile` first")
    scan_model = load_scan_model(args.model, device=args.device, dtype=args.dtype, name=args.name)
    settings = ScanSettings(args.seq_len, args.min_p_long, args.min_js, args.max_tokens, args.batch_size,
                            args.part_docs)
    out_dir = Path(args.lake) / "scan" / scan_model.slug
    with duckdb.connect(args.db, read_only=True) as con:
        tables = {r[0] for r in con.sql("select table_name from information_schema.tables").fetchall()}
        query = slice_query("documents", "cluster_assignments" if "cluster_assignments" in tables else None,
                            args.where, args.docs, args.seed)
        try:
            with open_executor(args.executor, args.ray_address, args.ray_workers) as executor:
                stats = scan_document_stream(scan_model, iter_rows(con.sql(query)), out_dir, settings,
                                             executor=executor)
        except NothingToScan:
            parser.error(f"no documents match --where {args.where!r}")
    print(f"scan {scan_model.name}: {stats['documents']} documents in {stats['parts']} parts "
          f"({stats['reused_parts']} reused), {stats['windows']} windows scanned now, "
          f"{stats['kept']} kept -> {out_dir}")
    if args.show:
        best = duckdb.sql(
            f"select text, token_short, token_long, round(p_short, 3) p_short, round(p_long, 3) p_long, "
            f"round(js, 3) js from read_parquet('{out_dir}/part-*.parquet') "
            f"qualify row_number() over (partition by text order by p_long desc, seq_id, position) = 1 "
            f"order by p_long desc, text limit {int(args.show)}")
        print(best)
    print("build the table with: dbt build --select tag:scan (with the same scan_* vars)")


if __name__ == "__main__":
    main()

"""Windows scanned per (model, document): runs the prompt scanner, then reads every model's parts.

Tagged `scan`: a plain `dbt build` skips it (selectors.yml); `dbt build --select tag:scan`
scans the scan_* vars' slice of the warehouse with the scan_model var's model and writes
the kept windows as resumable parquet parts under `{lake_dir}/scan/<model>/`. A rerun
skips every finished part, so a killed scan resumes where it stopped.
"""

from pathlib import Path

import pyarrow as pa

from python_udfs.prompt_scan import (
    ScanSettings,
    fetch_slice,
    load_scan_model,
    scan_documents,
    scanned_windows,
    slice_query,
)
from python_udfs.settings import none_if_blank


def model(dbt, session):
    dbt.config(materialized="table", tags=["scan"])
    # Direct dbt.config.get calls only: dbt finds the keys a Python model reads by parsing these.
    lake_dir = dbt.config.get("lake_dir")
    seed = dbt.config.get("seed")
    scan_model_name = dbt.config.get("scan_model")
    scan_where = dbt.config.get("scan_where")
    scan_docs = dbt.config.get("scan_docs")
    scan_max_tokens = dbt.config.get("scan_max_tokens")
    scan_seq_len = dbt.config.get("scan_seq_len")
    scan_min_p_long = dbt.config.get("scan_min_p_long")
    scan_min_js = dbt.config.get("scan_min_js")
    scan_batch_size = dbt.config.get("scan_batch_size")
    scan_part_docs = dbt.config.get("scan_part_docs")
    scan_device = dbt.config.get("scan_device")
    scan_dtype = dbt.config.get("scan_dtype")

    documents = dbt.ref("documents")
    assignments = dbt.ref("cluster_assignments")
    documents.create_view("_scan_documents", replace=True)
    assignments.create_view("_scan_assignments", replace=True)
    query = slice_query("_scan_documents", "_scan_assignments", scan_where, required_int(scan_docs, "scan_docs"),
                        required_int(seed, "seed"))
    doc_ids, cluster_ids, texts = fetch_slice(session.sql(query))
    session.sql("drop view _scan_documents; drop view _scan_assignments")
    if not doc_ids:
        raise ValueError(f"scan_where {scan_where!r} matches no documents")
    scan_model = load_scan_model(scan_model_name, device=none_if_blank(scan_device), dtype=none_if_blank(scan_dtype))
    settings = ScanSettings(
        seq_len=required_int(scan_seq_len, "scan_seq_len"), min_p_long=float(scan_min_p_long),
        min_js=float(scan_min_js), max_tokens=required_int(scan_max_tokens, "scan_max_tokens"),
        batch_size=required_int(scan_batch_size, "scan_batch_size"),
        part_docs=required_int(scan_part_docs, "scan_part_docs"),
    )
    scan_dir = Path(lake_dir) / "scan"
    stats = scan_documents(scan_model, doc_ids, texts, cluster_ids, scan_dir / scan_model.slug, settings)
    print(f"scan {scan_model.name}: {stats['documents']} documents in {stats['parts']} parts "
          f"({stats['reused_parts']} reused); {stats['windows']} windows scanned now, {stats['kept']} kept")
    table: pa.Table = scanned_windows(scan_dir)
    return table


def required_int(value, name: str) -> int:
    """A var as an int; a missing one is an error, never a silent 'all documents'."""
    if value is None or str(value).strip() in ("", "None"):
        raise ValueError(f"var {name} is not set (see dbt_project.yml)")
    return int(value)

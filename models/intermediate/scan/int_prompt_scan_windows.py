"""Windows scanned per (model, document): runs the prompt scanner, then reads every model's parts.

scan_source picks what is scanned: `documents` (default; each document's first
scan_max_tokens tokens in the model's own tokenizer, any model) or `token_sequences` (the
n-gram catalog's packed GPT-NeoX sequences, as the published catalog scanned the Pile;
GPT-NeoX-tokenizer models only: Pythia, pilehouse checkpoints).

Tagged `scan`: a plain `dbt build` skips it (selectors.yml); `dbt build --select tag:scan`
scans the scan_* vars' slice of the warehouse with the scan_model var's model and writes
the kept windows as resumable parquet parts under `{lake_dir}/scan/<model>/` (runner steps,
python_udfs.scan.runner). A rerun reuses every finished part, so a killed scan resumes where
it stopped.
"""

import pyarrow as pa

from python_udfs.runner.executors import make_executor
from python_udfs.scan.model import load_scan_model
from python_udfs.scan.provenance import DocumentIndex, scanned_windows
from python_udfs.scan.runner import (
    NothingToScan,
    ScanSettings,
    iter_rows,
    iter_sequences,
    scan_document_stream,
    scan_token_sequences,
    sequence_query,
    slice_query,
)
from python_udfs.settings import lake_path, none_if_blank


def model(dbt, session):
    dbt.config(materialized="table", tags=["scan"])
    # Direct dbt.config.get calls only: dbt finds the keys a Python model reads by parsing these.
    lake_dir = dbt.config.get("lake_dir")
    scan_source = dbt.config.get("scan_source")
    packed_len = dbt.config.get("ngram_seq_len")
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
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))

    documents = dbt.ref("stg_lake__documents")
    assignments = dbt.ref("int_cluster_assignments")
    if scan_source not in ("documents", "token_sequences"):
        raise ValueError(f"scan_source must be 'documents' or 'token_sequences', not {scan_source!r}")
    n_items, order_seed = required_int(scan_docs, "scan_docs"), required_int(seed, "seed")
    scan_model = load_scan_model(scan_model_name, device=none_if_blank(scan_device), dtype=none_if_blank(scan_dtype))
    settings = ScanSettings(
        seq_len=required_int(scan_seq_len, "scan_seq_len"), min_p_long=float(scan_min_p_long),
        min_js=float(scan_min_js), max_tokens=required_int(scan_max_tokens, "scan_max_tokens"),
        batch_size=required_int(scan_batch_size, "scan_batch_size"),
        part_docs=required_int(scan_part_docs, "scan_part_docs"),
    )
    scan_dir = lake_path("scan", {"lake_dir": lake_dir})
    out_dir = scan_dir / scan_model.slug
    documents.create_view("_scan_documents", replace=True)
    assignments.create_view("_scan_assignments", replace=True)
    try:
        if scan_source == "documents":  # streamed: one part of documents in memory at a time
            query = slice_query("_scan_documents", "_scan_assignments", scan_where, n_items, order_seed)
            stats = scan_document_stream(scan_model, iter_rows(session.sql(query)), out_dir, settings,
                                         executor=executor)
            what = f"{stats['documents']} documents"
        else:
            # token_sequences and document_tokens are read by name, not ref'd: a ref would put the scan
            # downstream of minipile (ngram_source may be minipile), so `cluster_exclusions+` would scan.
            tables = {r[0] for r in session.sql("select table_name from information_schema.tables").fetchall()}
            if not {"token_sequences", "document_tokens"} <= tables:
                raise ValueError("scan_source token_sequences needs the n-gram catalog: run `dbt build` "
                                 "(or `dbt build --select tag:ngrams`) first")
            lengths = session.sql("select doc_id, n_tokens from document_tokens order by doc_id").fetchall()
            clusters = dict(session.sql("select doc_id, cluster_id from _scan_assignments").fetchall())
            index = DocumentIndex([r[0] for r in lengths], [r[1] for r in lengths],
                                  required_int(packed_len, "ngram_seq_len"), clusters)
            seq_ids, seq_tokens = iter_sequences(session.sql(sequence_query("token_sequences", scan_where, n_items,
                                                                             order_seed)))
            stats = scan_token_sequences(scan_model, seq_ids, seq_tokens, index, out_dir, settings,
                                         executor=executor)
            what = f"{stats['sequences']} token sequences"
    except NothingToScan as err:
        raise ValueError(f"scan_where {scan_where!r} matches no {scan_source}") from err
    session.sql("drop view _scan_documents; drop view _scan_assignments")
    print(f"scan {scan_model.name}: {what} in {stats['parts']} parts "
          f"({stats['reused_parts']} reused); {stats['windows']} windows scanned now, {stats['kept']} kept")
    table: pa.Table = scanned_windows(scan_dir)
    return table


def required_int(value, name: str) -> int:
    """A var as an int; a missing one is an error, never a silent 'all documents'."""
    if value is None or str(value).strip() in ("", "None"):
        raise ValueError(f"var {name} is not set (see dbt_project.yml)")
    return int(value)

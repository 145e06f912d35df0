"""SemDeDup inside each k-means cluster (python_udfs/curation/semdedup.py): one row per
removed document. Empty, and the pairwise pass not run, while semdedup_eps is null."""

from python_udfs.curation.semdedup import DUPLICATE_SCHEMA, check_eps, semantic_duplicates
from python_udfs.settings import none_if_blank, true_or_false


def model(dbt, session):
    dbt.config(materialized="table")
    assignments = dbt.ref("int_cluster_assignments")
    embeddings = dbt.ref("int_document_embeddings")
    exact = dbt.ref("int_exact_duplicates")
    eps = none_if_blank(dbt.config.get("semdedup_eps"))
    if eps is None:
        return DUPLICATE_SCHEMA.empty_table()
    rows = assignments.join(embeddings, "doc_id")
    if true_or_false(dbt.config.get("exact_dedup")):  # exact duplicates go first
        rows = rows.join(exact.select("doc_id"), "doc_id", how="anti")
    rows = rows.select("doc_id, cluster_id, distance, embedding").order("cluster_id, doc_id")
    return semantic_duplicates(
        rows.arrow(), check_eps(eps), keep=str(dbt.config.get("semdedup_keep")),
        seed=int(dbt.config.get("seed")), block_size=int(dbt.config.get("semdedup_block_size")),
    )

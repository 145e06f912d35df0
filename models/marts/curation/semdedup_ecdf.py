"""What each eps would remove: SemDeDup's pairwise pass (python_udfs/curation/semdedup.py) once,
then, per eps of semdedup_ecdf_grid, the documents whose similarity to an earlier-ranked
document of their cluster is >= 1 - eps. Tagged curation_ecdf: run it with
`dbt build --select semdedup_ecdf`, before turning semdedup_eps on."""

import json

from python_udfs.curation.semdedup import ecdf
from python_udfs.settings import true_or_false


def model(dbt, session):
    dbt.config(materialized="table")
    assignments = dbt.ref("int_cluster_assignments")
    embeddings = dbt.ref("int_document_embeddings")
    exact = dbt.ref("int_exact_duplicates")
    rows = assignments.join(embeddings, "doc_id")
    if true_or_false(dbt.config.get("exact_dedup")):  # as the pass semantic_duplicates runs
        rows = rows.join(exact.select("doc_id"), "doc_id", how="anti")
    rows = rows.select("doc_id, cluster_id, distance, embedding").order("cluster_id, doc_id")
    grid = dbt.config.get("semdedup_ecdf_grid")
    grid = json.loads(grid) if isinstance(grid, str) else list(grid)
    return ecdf(rows.arrow(), grid, keep=str(dbt.config.get("semdedup_keep")),
                seed=int(dbt.config.get("seed")), block_size=int(dbt.config.get("semdedup_block_size")))

"""One row per (document, benchmark task) for the documents some sampling variant drew that
share a 13-gram with the task's examples (python_udfs/curation/contamination.py, the same
definition as contaminated_documents): minipile_variants.contaminated_left counts them.

Only the variants' documents are scanned (a few per cent of a Pile-sized corpus). With
decontaminate on, no contaminated document is eligible, so nothing is scanned and the table
is empty."""

from python_udfs.curation.contamination import CONTAMINATION_SCHEMA, BenchmarkNgrams
from python_udfs.settings import true_or_false


def model(dbt, session):
    dbt.config(materialized="table")
    sampled = dbt.ref("int_variant_splits").aggregate("doc_id")
    documents = dbt.ref("stg_lake__documents").select("doc_id, text")
    if true_or_false(dbt.config.get("decontaminate")):
        return CONTAMINATION_SCHEMA.empty_table()
    rows = documents.join(sampled, "doc_id", how="semi").order("doc_id")
    ngrams = BenchmarkNgrams.load()
    return ngrams.contaminated(rows.fetch_arrow_reader(int(dbt.config.get("decontaminate_batch_size"))))

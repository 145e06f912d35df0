"""13-gram overlap with the benchmarks make experiment scores (python_udfs/curation/contamination.py):
one row per (document, task) with an overlap. Empty, and nothing scanned, while decontaminate is false."""

from python_udfs.curation.contamination import CONTAMINATION_SCHEMA, BenchmarkNgrams
from python_udfs.settings import true_or_false


def model(dbt, session):
    dbt.config(materialized="table")
    documents = dbt.ref("stg_lake__documents")
    if not true_or_false(dbt.config.get("decontaminate")):
        return CONTAMINATION_SCHEMA.empty_table()
    ngrams = BenchmarkNgrams.load()
    batches = documents.select("doc_id, text").order("doc_id").fetch_arrow_reader(
        int(dbt.config.get("decontaminate_batch_size")))
    return ngrams.contaminated(batches)

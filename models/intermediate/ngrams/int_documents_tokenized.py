"""One row per tokenized document (doc_id, n_tokens); the ids live in resumable parquet parts.

Tokenizing is a step of the one part runner: a part is `tokenize_part_size` documents, and a
rebuild reuses every part whose documents (and the tokenizer) are unchanged.
"""

from python_udfs.ngrams.counts import tokenize_to_parts
from python_udfs.runner.executors import make_executor
from python_udfs.settings import lake_path


def model(dbt, session):
    dbt.config(materialized="table")
    # Direct dbt.config.get calls only: dbt finds the keys a Python model reads by parsing these.
    lake_dir = dbt.config.get("lake_dir")
    source = dbt.config.get("ngram_source")
    part_size = int(dbt.config.get("tokenize_part_size"))
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))

    documents = dbt.ref("stg_lake__documents")
    if source == "minipile":
        train = dbt.ref("int_minipile_splits").filter("split = 'train'").select("doc_id")
        documents = documents.join(train, "doc_id")
    elif source != "documents":
        raise ValueError(f"ngram_source must be 'documents' or 'minipile', not {source!r}")
    out_dir = lake_path("tokens", {"lake_dir": lake_dir, "ngram_source": source})
    total = documents.count("*").fetchall()[0][0]
    reader = documents.select("doc_id, text").order("doc_id").fetch_record_batch(part_size)
    stats = tokenize_to_parts(reader, out_dir, part_size=part_size, total=total, executor=executor)
    print(f"tokenize: {stats.computed} documents tokenized, {stats.reused} reused "
          f"({stats.computed_parts} parts computed, {stats.reused_parts} reused) -> {out_dir}")
    return session.sql(
        f"select doc_id, n_tokens from read_parquet('{out_dir}/part-*.parquet') order by doc_id"
    )

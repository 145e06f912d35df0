"""One row per tokenized document (doc_id, n_tokens); the ids live in resumable parquet parts."""

from pathlib import Path

from python_udfs.ngrams.counts import tokenize_to_parts


def model(dbt, session):
    dbt.config(materialized="table")
    source = dbt.config.get("ngram_source")
    if source == "minipile":
        train = dbt.ref("int_minipile_splits").filter("split = 'train'").select("doc_id")
        documents = dbt.ref("stg_lake__documents").join(train, "doc_id")
        slug = "minipile-train"
    elif source == "documents":
        documents = dbt.ref("stg_lake__documents")
        slug = "documents"
    else:
        raise ValueError(f"ngram_source must be 'documents' or 'minipile', not {source!r}")
    out_dir = Path(dbt.config.get("lake_dir")) / "tokens" / slug
    part_size = int(dbt.config.get("tokenize_part_size"))
    total = documents.count("*").fetchall()[0][0]
    reader = documents.select("doc_id, text").order("doc_id").fetch_record_batch(part_size)
    stats = tokenize_to_parts(reader, out_dir, part_size=part_size, total=total)
    print(f"tokenize: {stats['computed']} documents tokenized, {stats['reused']} reused -> {out_dir}")
    return session.sql(
        f"select doc_id, n_tokens from read_parquet('{out_dir}/part-*.parquet') order by doc_id"
    )

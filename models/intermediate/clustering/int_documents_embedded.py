"""One row per embedding part in the lake: the vectors stay in parquet, int_document_embeddings reads them."""

from python_udfs.clustering.embed import EmbedConfig, embed_to_parts
from python_udfs.runner.executors import make_executor
from python_udfs.settings import lake_path, none_if_blank


def model(dbt, session):
    dbt.config(materialized="table")
    # vars are read with direct dbt.config.get calls: wrapped calls come back as None
    build_vars = {
        "lake_dir": dbt.config.get("lake_dir"),
        "embedding_model": dbt.config.get("embedding_model"),
        "embedding_max_tokens": dbt.config.get("embedding_max_tokens"),
        "embedding_prefix": dbt.config.get("embedding_prefix"),
        "embedding_dtype": dbt.config.get("embedding_dtype"),
    }
    config = EmbedConfig(
        model=build_vars["embedding_model"],
        max_tokens=int(build_vars["embedding_max_tokens"]),
        prefix=build_vars["embedding_prefix"] or "",
        batch_size=int(dbt.config.get("embedding_batch_size")),
        part_size=int(dbt.config.get("embedding_part_size")),
        device=none_if_blank(dbt.config.get("embedding_device")),
        dtype=build_vars["embedding_dtype"],
    )
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))
    out_dir = lake_path("embeddings", build_vars)

    documents = dbt.ref("stg_lake__documents")
    total = documents.count("*").fetchall()[0][0]
    reader = documents.select("doc_id, text").order("doc_id").fetch_record_batch(config.part_size)
    stats = embed_to_parts(reader, out_dir, config, total=total, executor=executor)
    print(f"embeddings: {stats.computed} embedded, {stats.reused} reused -> {out_dir} ({stats.summary()})")
    return stats.manifest()

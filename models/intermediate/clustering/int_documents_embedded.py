"""One row per document: its L2-normalised sentence embedding (parts resumable in the lake)."""

from pathlib import Path

from python_udfs.clustering.embed import EmbedConfig, embed_to_parts
from python_udfs.settings import none_if_blank


def model(dbt, session):
    dbt.config(materialized="table")
    # vars are read with direct dbt.config.get calls: wrapped calls come back as None. dbt's
    # parser does not look inside `x or y`, so the prefix is read on a line of its own
    prefix = dbt.config.get("embedding_prefix")
    config = EmbedConfig(
        model=dbt.config.get("embedding_model"),
        max_tokens=int(dbt.config.get("embedding_max_tokens")),
        prefix=prefix or "",
        batch_size=int(dbt.config.get("embedding_batch_size")),
        part_size=int(dbt.config.get("embedding_part_size")),
        device=none_if_blank(dbt.config.get("embedding_device")),
        dtype=dbt.config.get("embedding_dtype"),
    )
    out_dir = Path(dbt.config.get("lake_dir")) / "embeddings" / config.slug()

    documents = dbt.ref("stg_lake__documents").select("doc_id, text").order("doc_id")
    total = dbt.ref("stg_lake__documents").count("*").fetchall()[0][0]
    reader = documents.fetch_record_batch(config.part_size)
    stats = embed_to_parts(reader, out_dir, config, total=total)
    print(f"embeddings: {stats['embedded']} embedded, {stats['reused']} reused -> {out_dir}")

    model_name = config.model.replace("'", "''")
    return session.sql(
        f"select doc_id, embedding::float[] as embedding, '{model_name}' as model "
        f"from read_parquet('{out_dir}/part-*.parquet') order by doc_id"
    )

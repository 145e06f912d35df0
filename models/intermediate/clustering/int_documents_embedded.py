"""One row per embedding part in the lake: the vectors stay in parquet, int_document_embeddings reads them.

With kmeans_concurrent, the k-means fit runs beside the embedding (kmeans.FitBeside): its
first epoch consumes the parts in part order as they land, and this model waits for the
remaining epochs before it returns; int_kmeans_centroids then reads the stored centroids.
"""

from python_udfs.clustering.embed import EmbedConfig, embed_to_parts
from python_udfs.clustering.kmeans import FitBeside, config_from_vars
from python_udfs.runner.executors import make_executor
from python_udfs.settings import lake_path, none_if_blank, true_or_false


def model(dbt, session):
    dbt.config(materialized="table")
    # vars are read with direct dbt.config.get calls: wrapped calls come back as None
    build_vars = {
        "lake_dir": dbt.config.get("lake_dir"),
        "embedding_model": dbt.config.get("embedding_model"),
        "embedding_max_tokens": dbt.config.get("embedding_max_tokens"),
        "embedding_prefix": dbt.config.get("embedding_prefix"),
        "embedding_dtype": dbt.config.get("embedding_dtype"),
        "embedding_backend": dbt.config.get("embedding_backend"),
    }
    config = EmbedConfig(
        model=build_vars["embedding_model"],
        max_tokens=int(build_vars["embedding_max_tokens"]),
        prefix=build_vars["embedding_prefix"] or "",
        batch_size=int(dbt.config.get("embedding_batch_size")),
        part_size=int(dbt.config.get("embedding_part_size")),
        device=none_if_blank(dbt.config.get("embedding_device")),
        dtype=build_vars["embedding_dtype"],
        backend=build_vars["embedding_backend"],
    )
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))
    out_dir = lake_path("embeddings", build_vars)
    kmeans_vars = {
        "n_clusters": dbt.config.get("n_clusters"),
        "clusters_per_source": dbt.config.get("clusters_per_source"),
        "seed": dbt.config.get("seed"),
        "kmeans_batch_size": dbt.config.get("kmeans_batch_size"),
        "kmeans_n_init": dbt.config.get("kmeans_n_init"),
        "kmeans_max_epochs": dbt.config.get("kmeans_max_epochs"),
        "kmeans_tol": dbt.config.get("kmeans_tol"),
        "kmeans_fit_fraction": dbt.config.get("kmeans_fit_fraction"),
    }
    concurrent = true_or_false(dbt.config.get("kmeans_concurrent"))

    documents = dbt.ref("stg_lake__documents")
    total = documents.count("*").fetchall()[0][0]
    # k needs the number of sources: asked before the reader below holds the connection
    n_sources = documents.aggregate("count(distinct source)").fetchall()[0][0] if concurrent else 0
    reader = documents.select("doc_id, text").order("doc_id").fetch_record_batch(config.part_size)
    if not concurrent:
        stats = embed_to_parts(reader, out_dir, config, total=total, executor=executor)
    else:
        with FitBeside(config_from_vars(kmeans_vars, n_sources), out_dir) as beside:
            stats = embed_to_parts(reader, out_dir, config, total=total, executor=executor, watch=beside.watch)
            print(f"k-means beside embedding: {beside.finish(stats.fingerprints)} -> {beside.path}")
    print(f"embeddings: {stats.computed} embedded, {stats.reused} reused -> {out_dir} ({stats.summary()})")
    return stats.manifest()

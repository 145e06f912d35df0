"""One row per cluster: spherical mini-batch k-means centroids fitted on the embeddings, or,
with kmeans_centroids_file, the given centroids (L2-normalised; no fit, n_fit 0).

One sequential fit either way (python_udfs/clustering/kmeans.py): by default over the
(sampled) embeddings in a seeded hash order; with kmeans_concurrent, in embedding-part
order, reusing the fit int_documents_embedded ran beside the embedding when it matches the
parts and settings, and otherwise running the same part-order fit here (same centroids).
"""

from python_udfs.clustering.kmeans import (
    centroids_table,
    config_from_vars,
    embedding_dimension,
    file_centroids_table,
    fit,
    hash_order_stream,
    part_order_centroids,
)
from python_udfs.settings import none_if_blank, true_or_false


def model(dbt, session):
    dbt.config(materialized="table")
    embeddings = dbt.ref("int_document_embeddings")
    embedded = dbt.ref("int_documents_embedded")
    n_sources = dbt.ref("stg_lake__documents").aggregate("count(distinct source)").fetchall()[0][0]
    # vars are read with direct dbt.config.get calls: wrapped calls come back as None
    config = config_from_vars({
        "n_clusters": dbt.config.get("n_clusters"),
        "clusters_per_source": dbt.config.get("clusters_per_source"),
        "seed": dbt.config.get("seed"),
        "kmeans_batch_size": dbt.config.get("kmeans_batch_size"),
        "kmeans_n_init": dbt.config.get("kmeans_n_init"),
        "kmeans_max_epochs": dbt.config.get("kmeans_max_epochs"),
        "kmeans_tol": dbt.config.get("kmeans_tol"),
        "kmeans_fit_fraction": dbt.config.get("kmeans_fit_fraction"),
    }, n_sources)

    centroids_file = none_if_blank(dbt.config.get("kmeans_centroids_file"))
    if centroids_file:
        table = file_centroids_table(centroids_file, embedding_dimension(embeddings))
        print(f"k-means: no fit, k={table.num_rows} centroids from {centroids_file} (kmeans_centroids_file)")
        return table
    if true_or_false(dbt.config.get("kmeans_concurrent")):
        table, how = part_order_centroids(embedded.order("part_index").arrow().read_all(), config)
        order = f"part order, {how}"
    else:
        centroids, info = fit(hash_order_stream(embeddings, config), config)
        table, order = centroids_table(centroids, info), "hash order"
    row = table.slice(0, 1).to_pylist()[0]
    print(f"k-means ({order}): k={config.n_clusters}, fit on {row['n_fit']} embeddings "
          f"(kmeans_fit_fraction {config.fit_fraction:g}), {row['epochs']} epochs, {row['steps']} steps")
    return table

"""One row per cluster: spherical mini-batch k-means centroids fitted on the embeddings."""

import pyarrow as pa

from python_udfs.clustering.kmeans import KMeansConfig, batch_to_numpy, fit
from python_udfs.settings import int_or_none


def model(dbt, session):
    dbt.config(materialized="table")
    embeddings = dbt.ref("int_document_embeddings")
    n_sources = dbt.ref("stg_lake__documents").aggregate("count(distinct source)").fetchall()[0][0]
    k = int_or_none(dbt.config.get("n_clusters")) or (
        int(dbt.config.get("clusters_per_source")) * n_sources
    )
    seed = int(dbt.config.get("seed"))
    config = KMeansConfig(
        n_clusters=k,
        batch_size=int(dbt.config.get("kmeans_batch_size")),
        n_init=int(dbt.config.get("kmeans_n_init")),
        seed=seed,
        max_epochs=int(dbt.config.get("kmeans_max_epochs")),
        tol=float(dbt.config.get("kmeans_tol")),
    )
    # mini-batches are drawn in a seeded hash order, not doc_id order: a corpus stored
    # source by source would otherwise give every batch a single source
    shuffled = embeddings.select(
        f"embedding, md5('kmeans:{seed}:' || doc_id::varchar) as batch_key"
    ).order("batch_key")

    def stream():
        for batch in shuffled.fetch_record_batch(config.batch_size):
            yield batch_to_numpy(batch)

    centroids, info = fit(stream, config)
    print(f"k-means: k={k}, {info['epochs']} epochs, {info['steps']} steps, "
          f"last centroid shift {info['last_shift']}")
    return pa.table({
        "cluster_id": pa.array(range(k), pa.int32()),
        "centroid": pa.array(centroids.tolist(), pa.list_(pa.float32())),
        "epochs": pa.array([info["epochs"]] * k, pa.int32()),
        "steps": pa.array([info["steps"]] * k, pa.int32()),
    })

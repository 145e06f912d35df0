"""One row per assignment part in the lake (nearest centroid by cosine); int_cluster_assignments reads them."""

from python_udfs.clustering.kmeans import assign_to_parts, batch_to_numpy
from python_udfs.runner.executors import make_executor
from python_udfs.settings import lake_path


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
    centroids = batch_to_numpy(dbt.ref("int_kmeans_centroids").order("cluster_id").arrow().read_all(), "centroid")
    embedded = dbt.ref("int_documents_embedded").order("part_index").arrow().read_all()
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))
    out_dir = lake_path("assignments", build_vars)
    stats = assign_to_parts(embedded, centroids, out_dir, executor=executor)
    print(f"assignments: {stats.computed} assigned, {stats.reused} reused -> {out_dir} ({stats.summary()})")
    return stats.manifest()

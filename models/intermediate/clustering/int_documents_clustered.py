"""One row per document: its nearest centroid by cosine and the cosine distance to it."""

import numpy as np
import pyarrow as pa

from python_udfs.clustering.kmeans import assign, batch_to_numpy, normalise


def model(dbt, session):
    dbt.config(materialized="table")
    centroid_table = dbt.ref("int_kmeans_centroids").order("cluster_id").arrow().read_all()
    centroids = normalise(batch_to_numpy(centroid_table.combine_chunks().to_batches()[0], "centroid"))
    embeddings = dbt.ref("int_document_embeddings").select("doc_id, embedding").order("doc_id")

    def batches():
        for batch in embeddings.fetch_record_batch(16_384):
            cluster, distance = assign(batch_to_numpy(batch), centroids)
            yield pa.record_batch({
                "doc_id": batch.column("doc_id"),
                "cluster_id": pa.array(cluster, pa.int32()),
                "distance": pa.array(distance.astype(np.float64)),
            })

    schema = pa.schema([("doc_id", pa.int64()), ("cluster_id", pa.int32()), ("distance", pa.float64())])
    return pa.RecordBatchReader.from_batches(schema, batches())

"""Stage 2, clustering: sentence embeddings (``embed``) and spherical mini-batch k-means
(``kmeans``: fit, then nearest-centroid assignment)."""

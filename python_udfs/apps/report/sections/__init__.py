"""The report's sections, one module per stage: corpus, clusters, n-grams and scan, training."""

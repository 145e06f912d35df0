"""Stage 1, corpus: read raw records (``readers``), write them to the lake as `documents` and
`rejected_documents` shards (``ingest``); ``sample`` builds the embedded sample corpus.

``python -m python_udfs.corpus FILES...`` ingests (``pilehouse ingest`` is the same).
"""

"""pilehouse's typed, tested Python, one subpackage per pipeline stage.

    corpus/       1. read raw records, write `documents` / `rejected_documents` parts (+ the sample corpus)
    clustering/   2. embed documents, fit spherical mini-batch k-means, assign clusters
                  3. MiniPile itself (quotas, selection, splits) is SQL: models/*/minipile/
    ngrams/       4. GPT-NeoX tokenizer, exact out-of-core n-gram counts, LM probabilities
    scan/         5. the prompt scan
    runner/       every resumable step: one part runner, its executors, atomic parquet parts
    apps/         for people: the review page and the HTML report
    settings.py   the one owner of defaults (dbt_project.yml vars) and paths (db, lake)
    udfs.py, dbt_plugin.py   the only UDF code: DuckDB functions for SQL
    cli.py        the `pilehouse` command

docs/architecture.md explains how they fit; warehouse/README.md the lake they write.
"""

"""One row per n (2, 3): exact counts, sharded by id0 % ngram_shards, reduced shard by shard.

Two runner steps: partial counts (a part = one sequence part, counted in numpy in chunks that
fit ngram_memory_mb) and the reduce (a part = one shard: numpy when it fits ngram_memory_mb,
else its own DuckDB connection under ngram_memory_limit). A rebuild with unchanged
sequences reuses every partial and every shard.
"""

import pyarrow as pa

from python_udfs.ngrams.counts import count_partials, reduce_shards
from python_udfs.runner.executors import make_executor
from python_udfs.settings import default, lake_path, none_if_blank


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("int_token_sequences_packed")  # the sequence parts below are its output
    lake_dir = dbt.config.get("lake_dir")
    source = dbt.config.get("ngram_source")
    seq_len = dbt.config.get("ngram_seq_len")
    n_shards = int(dbt.config.get("ngram_shards"))
    memory_limit = none_if_blank(dbt.config.get("ngram_memory_limit"))
    memory_mb = dbt.config.get("ngram_memory_mb")
    memory_mb = float(memory_mb) if none_if_blank(memory_mb) is not None else default("ngram_memory_mb")
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))

    ngram_dir = lake_path("ngrams", {"lake_dir": lake_dir, "ngram_source": source, "ngram_seq_len": seq_len})
    seq_parts = sorted((ngram_dir / "sequences").glob("part-*.parquet"))
    counted = count_partials(seq_parts, ngram_dir / "partials", n_shards, executor=executor, memory_mb=memory_mb)
    rows = reduce_shards(counted["paths"], ngram_dir / "counts", n_shards, memory_limit=memory_limit,
                         executor=executor, memory_mb=memory_mb)
    print(f"n-grams: {counted['counted']} of {counted['parts']} sequence parts counted, "
          f"{rows['computed']} shards reduced, {rows['reused']} reused; "
          f"{rows['bigrams']} distinct bigrams, {rows['trigrams']} distinct trigrams")
    return pa.table({"n": [2, 3], "distinct_ngrams": [rows["bigrams"], rows["trigrams"]],
                     "n_shards": [n_shards, n_shards]})

"""One row per n (2, 3): exact counts, sharded by id0 % ngram_shards, reduced shard by shard."""

from pathlib import Path

import pyarrow as pa

from python_udfs.ngrams.counts import count_partials, reduce_shards
from python_udfs.settings import none_if_blank


def model(dbt, session):
    dbt.config(materialized="table")
    packed = dbt.ref("int_token_sequences_packed").fetchall()[0]
    seq_dir = Path(packed[-1])
    n_shards = int(dbt.config.get("ngram_shards"))
    partial_dir = seq_dir.parent / "partials"
    counted = count_partials(sorted(seq_dir.glob("part-*.parquet")), partial_dir, n_shards)
    rows = reduce_shards(session, partial_dir, seq_dir.parent / "counts", n_shards,
                         memory_limit=none_if_blank(dbt.config.get("ngram_memory_limit")))
    print(f"n-grams: {counted['counted']} of {counted['parts']} sequence parts counted; "
          f"{rows['bigrams']} distinct bigrams, {rows['trigrams']} distinct trigrams")
    return pa.table({"n": [2, 3], "distinct_ngrams": [rows["bigrams"], rows["trigrams"]],
                     "n_shards": [n_shards, n_shards]})

"""One row (the packing run): documents' tokens + EOS, concatenated, cut into seq_len sequences.

Packing is a runner step whose parts are cut here, in order (each part starts where the
previous one ended); a part is rewritten only when its tokens change, so the n-gram counts
of unchanged parts are reused.
"""

import pyarrow as pa

from python_udfs.ngrams.counts import pack_sequences
from python_udfs.runner.executors import make_executor
from python_udfs.settings import lake_path


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("int_documents_tokenized")  # the parts below are its output
    lake_dir = dbt.config.get("lake_dir")
    source = dbt.config.get("ngram_source")
    seq_len = int(dbt.config.get("ngram_seq_len"))
    executor = make_executor(dbt.config.get("executor"), dbt.config.get("ray_address"),
                             dbt.config.get("ray_workers"))

    given = {"lake_dir": lake_dir, "ngram_source": source, "ngram_seq_len": seq_len}
    doc_parts = sorted(lake_path("tokens", given).glob("part-*.parquet"))
    out_dir = lake_path("ngrams", given) / "sequences"
    stats = pack_sequences(doc_parts, out_dir, seq_len=seq_len, executor=executor)
    print(f"pack: {stats['tokens']} tokens in {stats['sequences']} sequences of {seq_len}, "
          f"{stats['written']} of {stats['parts']} parts rewritten -> {out_dir}")
    return pa.table({
        "n_parts": [stats["parts"]], "n_tokens": [stats["tokens"]],
        "n_sequences": [stats["sequences"]], "seq_len": [seq_len], "path": [str(out_dir)],
    })

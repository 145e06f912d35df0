"""One row per sequence part: documents' tokens + EOS, concatenated, cut into seq_len sequences."""

from pathlib import Path

import pyarrow as pa

from python_udfs.ngrams.counts import pack_sequences


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("int_documents_tokenized")  # the parts below are its output
    slug = "minipile-train" if dbt.config.get("ngram_source") == "minipile" else "documents"
    lake = Path(dbt.config.get("lake_dir"))
    seq_len = int(dbt.config.get("ngram_seq_len"))
    doc_parts = sorted((lake / "tokens" / slug).glob("part-*.parquet"))
    out_dir = lake / "ngrams" / f"{slug}-{seq_len}" / "sequences"
    stats = pack_sequences(doc_parts, out_dir, seq_len=seq_len)
    print(f"pack: {stats['tokens']} tokens in {stats['sequences']} sequences of {seq_len}, "
          f"{stats['written']} of {stats['parts']} parts rewritten -> {out_dir}")
    return pa.table({
        "n_parts": [stats["parts"]], "n_tokens": [stats["tokens"]],
        "n_sequences": [stats["sequences"]], "seq_len": [seq_len], "path": [str(out_dir)],
    })

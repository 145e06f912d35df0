"""One row per GPT-NeoX token id: the tokenizer's own decode of that id alone (the catalog's `tokens`)."""

import pyarrow as pa

from python_udfs.ngrams import tokenizer as neox


def model(dbt, session):
    dbt.config(materialized="table")
    strings = neox.vocab_strings()
    return pa.table({"id": pa.array(range(len(strings)), pa.int32()), "token": strings})

"""Python functions exposed to SQL (registered by the dbt plugin, or by ``register`` by hand).

- ``pilehouse_embed(text)``: the embedding a document would get (same model, pooling and
  normalisation as ``document_embeddings`` under the default vars), for semantic search:
  ``list_cosine_similarity(embedding, pilehouse_embed('stock markets'))``.
- ``neox_encode(text)`` -> INTEGER[]: GPT-NeoX (Pythia) token ids, no BOS.
- ``neox_decode(ids)`` -> VARCHAR: the tokenizer's own decode.
"""

from __future__ import annotations

from functools import lru_cache

import duckdb
import pyarrow as pa
from duckdb.sqltypes import FLOAT, INTEGER, VARCHAR

from python_udfs.clustering.embed import EmbedConfig, embed_texts, load_model
from python_udfs.ngrams import tokenizer as neox

DEFAULT_MODEL = EmbedConfig.model


@lru_cache(maxsize=4)
def _model(name: str):
    return load_model(EmbedConfig(model=name))


def embed_arrow(texts: pa.Array, model_name: str = DEFAULT_MODEL) -> pa.Array:
    """Vectorised: one arrow list<float> per input string (NULL in, NULL out)."""
    values = texts.to_pylist()
    present = [i for i, v in enumerate(values) if v is not None]
    out: list[list[float] | None] = [None] * len(values)
    if present:
        config = EmbedConfig(model=model_name)
        vectors = embed_texts(_model(model_name), [values[i] for i in present], config)
        for i, vector in zip(present, vectors):
            out[i] = vector.tolist()
    return pa.array(out, type=pa.list_(pa.float32()))


def neox_encode_arrow(texts: pa.Array) -> pa.Array:
    values = texts.to_pylist()
    present = [i for i, v in enumerate(values) if v is not None]
    out: list[list[int] | None] = [None] * len(values)
    for i, ids in zip(present, neox.encode_batch([values[i] for i in present])):
        out[i] = ids.astype("int32").tolist()
    return pa.array(out, type=pa.list_(pa.int32()))


def neox_decode_arrow(ids: pa.Array) -> pa.Array:
    return pa.array([None if v is None else neox.decode(v) for v in ids.to_pylist()], pa.string())


def register(conn: duckdb.DuckDBPyConnection, embedding_model: str = DEFAULT_MODEL) -> None:
    """Register the UDFs on a connection (idempotent per connection)."""
    functions = [
        ("pilehouse_embed", lambda texts: embed_arrow(texts, embedding_model), [VARCHAR],
         duckdb.list_type(FLOAT)),
        ("neox_encode", neox_encode_arrow, [VARCHAR], duckdb.list_type(INTEGER)),
        ("neox_decode", neox_decode_arrow, [duckdb.list_type(INTEGER)], VARCHAR),
    ]
    for name, function, params, returns in functions:
        _register_one(conn, name, function, params, returns)


def _register_one(conn, name, function, params, returns) -> None:
    try:
        conn.create_function(
            name, function, params, returns,
            type="arrow", null_handling="special", side_effects=False,
        )
    except (duckdb.CatalogException, duckdb.NotImplementedException) as err:
        # duckdb 2.0 reports a second registration as NotImplementedException
        # ("... is already created ..."); older versions used CatalogException.
        if "already" not in str(err):
            raise
        # already registered on this connection

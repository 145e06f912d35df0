"""Python functions exposed to SQL (registered by the dbt plugin, or by ``register`` by hand).

- ``pilehouse_embed(text)``: the embedding a document gets under the build's embedding vars
  (``embedding_model``, ``embedding_prefix``, ``embedding_max_tokens``, ``embedding_dtype``,
  ``embedding_backend``):
  the dbt plugin passes them, so ``list_cosine_similarity(embedding, pilehouse_embed('stock
  markets'))`` compares a query with vectors made the same way.
- ``pilehouse_pca_2d(points)``: FLOAT[][] -> STRUCT(x, y, x_variance_share, y_variance_share)[]:
  each row on the first two principal components (``cluster_summary``'s map of the centroids).
- ``neox_encode(text)`` -> INTEGER[]: GPT-NeoX (Pythia) token ids, no BOS.
- ``neox_decode(ids)`` -> VARCHAR: the tokenizer's own decode.
- ``pilehouse_quotas(clusters, strategy, total, total_mode, density_weight, low_density_weight,
  inter_cluster_weights)``: STRUCT(cluster_id, n_docs, sum_distance, centroid, mean_loss)[] -> STRUCT(cluster_id,
  n_docs, quota, is_capped, target)[]: ``python_udfs.minipile.quotas.quotas`` over the kept clusters
  (``int_cluster_quotas``; ``pilehouse quotas`` runs the same function on a stats file).
  ``mean_loss`` (DOUBLE, NULL when no loss was computed) is read by loss_informed only; every
  caller passes the field, NULL or not (DuckDB does not fill a missing struct field).
- ``pilehouse_text_hash(text)`` -> BIGINT: ``python_udfs.curation.normalise.text_hash``, the
  64-bit hash of the text after NFKC, casefold and whitespace collapsing (exact dedup).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.sqltypes import BIGINT, BOOLEAN, DOUBLE, FLOAT, INTEGER, VARCHAR

from python_udfs.clustering.embed import EmbedConfig, embed_texts, load_model
from python_udfs.curation.normalise import text_hash_arrow
from python_udfs.minipile import quotas as minipile_quotas
from python_udfs.ngrams import tokenizer as neox
from python_udfs.settings import none_if_blank, resolve

DEFAULT_MODEL = EmbedConfig.model

#: EmbedConfig field -> the dbt var that sets it (what makes a query vector match the stored ones).
EMBED_VARS = {
    "model": "embedding_model",
    "max_tokens": "embedding_max_tokens",
    "prefix": "embedding_prefix",
    "dtype": "embedding_dtype",
    "backend": "embedding_backend",
    "device": "embedding_device",
    "batch_size": "embedding_batch_size",
}

PCA_FIELDS = ("x", "y", "x_variance_share", "y_variance_share")
PCA_TYPE = pa.list_(pa.struct([(name, pa.float64()) for name in PCA_FIELDS]))
QUOTA_TYPE = pa.list_(pa.struct([("cluster_id", pa.int32()), ("n_docs", pa.int64()), ("quota", pa.int64()),
                                 ("is_capped", pa.bool_()), ("target", pa.float64())]))


def embed_config(given: Mapping[str, Any] | None = None) -> EmbedConfig:
    """The build's EmbedConfig from its vars (``given``), each missing one from dbt_project.yml."""
    values = {field: resolve(var, given) for field, var in EMBED_VARS.items()}
    return EmbedConfig(
        model=str(values["model"]),
        max_tokens=int(values["max_tokens"]),
        prefix=str(values["prefix"] or ""),
        dtype=str(values["dtype"]),
        backend=str(values["backend"]),
        device=none_if_blank(values["device"]),
        batch_size=int(values["batch_size"]),
    )


@lru_cache(maxsize=4)
def _model(name: str, max_tokens: int, dtype: str, device: str | None, backend: str = "torch"):
    return load_model(EmbedConfig(model=name, max_tokens=max_tokens, dtype=dtype, device=device, backend=backend))


def model_for(config: EmbedConfig):
    """The loaded model for ``config`` (cached: a query per row must not reload it)."""
    return _model(config.model, config.max_tokens, config.dtype, config.device, config.backend)


def embed_arrow(texts: pa.Array, config: EmbedConfig | None = None) -> pa.Array:
    """Vectorised: one arrow list<float> per input string (NULL in, NULL out)."""
    config = config or EmbedConfig()
    values = texts.to_pylist()
    present = [i for i, v in enumerate(values) if v is not None]
    out: list[list[float] | None] = [None] * len(values)
    if present:
        vectors = embed_texts(model_for(config), [values[i] for i in present], config)
        for i, vector in zip(present, vectors):
            out[i] = vector.tolist()
    return pa.array(out, type=pa.list_(pa.float32()))


def pca_2d(points: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``points`` on their first two principal components, and each one's share of the variance.

    Exact and deterministic: the eigendecomposition of the centred rows' Gram matrix (k x k,
    so cheap however wide the embeddings are); each component's sign is fixed so that its
    largest coordinate by absolute value (the first such row on ties, up to rounding) is
    positive, since an eigenvector may come with either sign. A component without variance
    stays 0.
    """
    x = np.asarray(points, dtype=np.float64)
    coords, shares = np.zeros((len(x), 2)), np.zeros(2)
    if x.ndim != 2 or len(x) < 2:
        return coords, shares
    centred = x - x.mean(axis=0, keepdims=True)
    values, vectors = np.linalg.eigh(centred @ centred.T)  # ascending; values = squared singular values
    values = np.clip(values[::-1], 0.0, None)
    total = float(np.trace(centred @ centred.T))
    if total <= 0.0:
        return coords, shares
    for j in range(min(2, len(values))):
        if values[j] <= 1e-12 * values[0]:  # rounding noise, not a direction
            break
        column = vectors[:, -1 - j] * np.sqrt(values[j])
        size = np.abs(column)
        first_largest = int(np.argmax(size >= size.max() * (1 - 1e-9)))  # ties up to rounding: the first row
        if column[first_largest] < 0:
            column = -column
        coords[:, j], shares[j] = column, values[j] / total
    return coords, shares


def pca_2d_arrow(rows: pa.Array) -> pa.Array:
    """Per input row (a list of equal-length vectors), the list of their 2-D PCA points."""
    out: list[list[dict] | None] = []
    for row in rows.to_pylist():
        if row is None:
            out.append(None)
            continue
        if len({len(v) for v in row}) > 1:
            raise ValueError("pilehouse_pca_2d: the vectors have different lengths")
        coords, shares = pca_2d(row)
        out.append([dict(zip(PCA_FIELDS, (float(px), float(py), float(shares[0]), float(shares[1]))))
                    for px, py in coords])
    return pa.array(out, type=PCA_TYPE)


def quotas_arrow(clusters: pa.Array, strategy: pa.Array, total: pa.Array, total_mode: pa.Array,
                 density_weight: pa.Array, low_density_weight: pa.Array, inter_cluster_weights: pa.Array) -> pa.Array:
    """Per input row (the kept clusters' stats and the vars), the list of their quotas."""
    out: list[list[dict] | None] = []
    rows = zip(clusters.to_pylist(), strategy.to_pylist(), total.to_pylist(), total_mode.to_pylist(),
               density_weight.to_pylist(), low_density_weight.to_pylist(), inter_cluster_weights.to_pylist())
    for stats, strategy_, total_, mode, omega, omega_low, weights in rows:
        if stats is None:  # no kept cluster: list() over no rows is NULL
            out.append(None)
            continue
        params = minipile_quotas.QuotaParams(density_weight=omega, low_density_weight=omega_low,
                                             inter_cluster_weights=tuple(weights or ()))
        clusters_ = [minipile_quotas.ClusterStats(c["cluster_id"], c["n_docs"], c["sum_distance"], c["centroid"],
                                                  c.get("mean_loss"))
                     for c in stats]
        out.append([q.__dict__ for q in minipile_quotas.quotas(clusters_, strategy_, params, total_, mode)])
    return pa.array(out, type=QUOTA_TYPE)



def neox_encode_arrow(texts: pa.Array) -> pa.Array:
    values = texts.to_pylist()
    present = [i for i, v in enumerate(values) if v is not None]
    out: list[list[int] | None] = [None] * len(values)
    for i, ids in zip(present, neox.encode_batch([values[i] for i in present])):
        out[i] = ids.astype("int32").tolist()
    return pa.array(out, type=pa.list_(pa.int32()))


def neox_decode_arrow(ids: pa.Array) -> pa.Array:
    return pa.array([None if v is None else neox.decode(v) for v in ids.to_pylist()], pa.string())


def register(conn: duckdb.DuckDBPyConnection, config: EmbedConfig | None = None) -> None:
    """Register the UDFs on a connection (idempotent per connection).

    ``config``: how pilehouse_embed embeds; the default is dbt_project.yml's embedding vars.
    Outside dbt, pass ``embed_config(vars)`` with the vars the warehouse was built with.
    """
    config = config or embed_config()
    pca_type = duckdb.list_type(duckdb.struct_type({name: DOUBLE for name in PCA_FIELDS}))
    cluster_stats = duckdb.list_type(duckdb.struct_type(
        {"cluster_id": INTEGER, "n_docs": BIGINT, "sum_distance": DOUBLE, "centroid": duckdb.list_type(FLOAT),
         "mean_loss": DOUBLE}))
    quota_type = duckdb.list_type(duckdb.struct_type(
        {"cluster_id": INTEGER, "n_docs": BIGINT, "quota": BIGINT, "is_capped": BOOLEAN, "target": DOUBLE}))
    functions = [
        ("pilehouse_embed", lambda texts: embed_arrow(texts, config), [VARCHAR], duckdb.list_type(FLOAT)),
        ("pilehouse_pca_2d", pca_2d_arrow, [duckdb.list_type(duckdb.list_type(FLOAT))], pca_type),
        ("neox_encode", neox_encode_arrow, [VARCHAR], duckdb.list_type(INTEGER)),
        ("neox_decode", neox_decode_arrow, [duckdb.list_type(INTEGER)], VARCHAR),
        ("pilehouse_quotas", quotas_arrow,
         [cluster_stats, VARCHAR, BIGINT, VARCHAR, DOUBLE, DOUBLE, duckdb.list_type(DOUBLE)], quota_type),
        ("pilehouse_text_hash", text_hash_arrow, [VARCHAR], BIGINT),
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

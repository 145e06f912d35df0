"""Add the catalog's ``p_<model>`` columns to a top-n-gram table (shared by both dbt models)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from python_udfs.ngrams.lm import column_name, load_causal_lm, next_token_probability


def parse_models(value: object) -> list[str]:
    """The ngram_models var arrives through YAML config as a list, a JSON string or ''."""
    if value is None or value == "" or value == "None":
        return []
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text.replace("'", '"')) if text.startswith("[") else [text]
    return [str(v) for v in value]


def add_model_probabilities(
    table: pa.Table, prefix_columns: list[str], target_column: str, models: list[str],
    batch_size: int = 512, device: str | None = None,
) -> pa.Table:
    if not models or table.num_rows == 0:
        return table
    prefixes = np.stack([table.column(c).to_numpy() for c in prefix_columns], axis=1)
    targets = table.column(target_column).to_numpy()
    for model in models:
        lm = load_causal_lm(model, device)
        probs = next_token_probability(lm, prefixes, targets, batch_size=batch_size)
        table = table.append_column(column_name(model), pa.array(probs))
        del lm
    return table

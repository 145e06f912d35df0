"""A tiny deterministic warehouse for the review page, built in seconds (used by conftest.py).

48 real documents of the sample corpus in 6 clusters of uneven sizes (two smaller than
their MiniPile share). `cluster_inspection`, `int_cluster_quotas`, `int_documents_sampled`,
`int_minipile_splits` and `minipile` are built by running the dbt models' own SQL (refs, vars and the
`minipile_total()` macro substituted), so the fixture follows the models if they change.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np

from python_udfs.corpus.sample import iter_sample_records

ROOT = Path(__file__).resolve().parents[3]
SIZES = [15, 2, 10, 1, 12, 8]  # documents per cluster 0..5
SPLITS = {"train_size": 14, "validation_size": 2, "test_size": 4}
TOTAL = sum(SPLITS.values())
# refs that the warehouse holds under another (public) name
REF_TABLES = {"int_cluster_assignments": "cluster_assignments", "int_kmeans_centroids": "cluster_centroids"}


def render_model(name: str, variables: dict | None = None) -> str:
    """A dbt model's SQL runnable in plain DuckDB: refs -> table names, vars and minipile_total() inlined."""
    (path,) = (ROOT / "models").rglob(f"{name}.sql")
    variables = {"seed": 42, **SPLITS, **(variables or {})}
    text = path.read_text()
    text = re.sub(r"^\{\{\s*config\(.*$", "", text, flags=re.M)
    text = re.sub(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}", lambda m: REF_TABLES.get(m[1], m[1]), text)
    total = variables["train_size"] + variables["validation_size"] + variables["test_size"]
    text = re.sub(r"\{\{\s*minipile_total\(\)\s*\}\}", f"({total})", text)
    text = re.sub(r"\{\{\s*var\(\s*['\"](\w+)['\"]\s*\)\s*\}\}", lambda m: str(variables[m[1]]), text)
    assert "{{" not in text and "{%" not in text, f"{path}: unrendered jinja left"
    return text


def build_tiny_warehouse(path: Path, exclusions: list[tuple[int, str, str]] = ()) -> None:
    records = list(iter_sample_records(per_source=12))  # 4 sources x 12, grouped by source
    assert len(records) == sum(SIZES)
    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(len(SIZES), 8))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    cluster_of = [cid for cid, n in enumerate(SIZES) for _ in range(n)]  # consecutive docs: mostly one source
    distances = np.round(rng.uniform(0.2, 0.8, size=len(records)), 6)
    with duckdb.connect(str(path)) as con:
        con.execute("create table documents (doc_id bigint, source varchar, text varchar, n_chars integer)")
        con.executemany("insert into documents values (?, ?, ?, ?)", [
            (i, r["meta"]["pile_set_name"], r["text"], len(r["text"])) for i, r in enumerate(records)
        ])
        con.execute("create table cluster_assignments (doc_id bigint, cluster_id integer, distance double)")
        con.executemany("insert into cluster_assignments values (?, ?, ?)",
                        [(i, cluster_of[i], float(distances[i])) for i in range(len(records))])
        con.execute("create table cluster_centroids (cluster_id integer, centroid float[], n_docs bigint)")
        con.executemany("insert into cluster_centroids values (?, ?, ?)",
                        [(cid, centroids[cid].tolist(), n) for cid, n in enumerate(SIZES)])
        con.execute("create table cluster_exclusions (cluster_id integer, category varchar, note varchar)")
        if exclusions:
            con.executemany("insert into cluster_exclusions values (?, ?, ?)", list(exclusions))
        for model in ["cluster_inspection", "int_cluster_quotas", "int_documents_sampled", "int_minipile_splits",
                      "minipile"]:
            con.execute(f"create table {model} as {render_model(model)}")

"""`make docs`: every model, seed, source and column is described, and the lineage is whole.

`dbt parse` (conftest.py) gives the manifest that `dbt docs generate` serves. The
column-coverage test compares the YAML with the columns of the real tables in a built
warehouse: $PILEHOUSE_DOCS_DB, else warehouse/pilehouse.duckdb when it exists and no build
holds it (opened read-only for a few milliseconds); skipped otherwise.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTED = ("model", "seed")


def project_nodes(manifest: dict) -> list[dict]:
    nodes = [n for n in manifest["nodes"].values()
             if n["resource_type"] in DOCUMENTED and n["package_name"] == "pilehouse"]
    return nodes + [s for s in manifest["sources"].values() if s["package_name"] == "pilehouse"]


def label(node: dict) -> str:
    if node["resource_type"] == "source":
        return f"source {node['source_name']}.{node['name']} ({node['original_file_path']})"
    return f"{node['resource_type']} {node['name']} ({node['original_file_path']})"


def test_every_model_seed_and_source_is_described(manifest: dict) -> None:
    missing = [label(n) for n in project_nodes(manifest) if not n.get("description", "").strip()]
    assert not missing, "no description:\n  " + "\n  ".join(sorted(missing))


def test_every_listed_column_is_described(manifest: dict) -> None:
    missing = [f"{label(n)}: {col}" for n in project_nodes(manifest)
               for col, spec in n["columns"].items() if not spec.get("description", "").strip()]
    assert not missing, "columns without a description:\n  " + "\n  ".join(sorted(missing))


def test_lineage_runs_from_the_raw_documents_to_minipile(manifest: dict) -> None:
    start, goal = "source.pilehouse.lake.records", "model.pilehouse.minipile"
    children = manifest["child_map"]
    seen, queue = {start}, deque([start])
    while queue:
        node = queue.popleft()
        for child in children.get(node, []):
            if child not in seen:
                seen.add(child)
                queue.append(child)
    assert goal in seen, f"{goal} is not downstream of {start}"
    assert "model.pilehouse.int_documents_embedded" in seen and "model.pilehouse.cluster_inspection" in seen


def built_warehouse() -> Path | None:
    path = Path(os.environ.get("PILEHOUSE_DOCS_DB") or ROOT / "warehouse" / "pilehouse.duckdb")
    return path if path.exists() else None


def test_yaml_columns_cover_the_built_tables(manifest: dict) -> None:
    db = built_warehouse()
    if db is None:
        pytest.skip("no built warehouse (set PILEHOUSE_DOCS_DB or run make minipile)")
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as error:  # a build holds the file
        pytest.skip(f"cannot open {db} read-only now: {error}")
    try:
        rows = con.execute(
            "select table_name, column_name from information_schema.columns where table_schema = 'main'"
        ).fetchall()
    finally:
        con.close()
    actual: dict[str, set[str]] = {}
    for table, column in rows:
        actual.setdefault(table.lower(), set()).add(column.lower())
    missing, checked = [], 0
    for node in project_nodes(manifest):
        if node["resource_type"] == "source" and "external_location" in node.get("source_meta", {}):
            continue  # parquet in the lake, not a table of the warehouse
        relation = (node.get("alias") or node.get("identifier") or node["name"]).lower()
        if relation not in actual:
            continue  # not built here (training_run, a source read from parquet, ...)
        checked += 1
        listed = {c.lower() for c, spec in node["columns"].items() if spec.get("description", "").strip()}
        for column in sorted(actual[relation] - listed):
            missing.append(f"{label(node)}: {column}")
    assert checked >= 10, f"only {checked} documented relations found in {db}"
    assert not missing, f"columns in {db} without a YAML description:\n  " + "\n  ".join(missing)

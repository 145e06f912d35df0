"""The project's shape, read from `dbt parse`'s manifest (conftest.py).

- Layers: staging models are the only ones that read a `source()`; intermediate models ref
  staging or intermediate models, never a mart (docs/architecture.md).
- Stages: every model lives in `models/<layer>/<stage>/` and is described by a YAML file in
  that same folder.
- Storage: the large contract relations are views over the lake (or external parquet), the
  small ones tables in the DuckDB file (warehouse/README.md).
- Tags: the scan, training and semdedup_ecdf models carry the tags the default selector leaves out.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

LAYERS = {"staging": 0, "intermediate": 1, "marts": 2}
STAGES = ("corpus", "clustering", "curation", "minipile", "ngrams", "scan", "training")
# relations as large as the corpus: never copied into the DuckDB file
LAKE_BACKED = ("documents", "rejected_documents", "document_embeddings", "cluster_assignments", "minipile",
               "document_tokens", "token_sequences", "bigrams", "trigrams", "trigram_prefixes")
# small: kept in the DuckDB file
IN_THE_FILE = ("cluster_centroids", "cluster_inspection", "int_kmeans_centroids", "int_cluster_quotas",
               "int_minipile_splits", "neox_vocab", "bigram_prefixes", "top_bigrams", "top_trigrams",
               "prompt_scan_clusters")


def project_models(manifest: dict) -> list[dict]:
    return [n for n in manifest["nodes"].values()
            if n["resource_type"] == "model" and n["package_name"] == "pilehouse"]


def layer_of(node: dict) -> str:
    return node["fqn"][1]


def layer_violations(manifest: dict) -> list[str]:
    """Every edge that reads against the layers: a source outside staging, a later layer's model."""
    nodes, problems = manifest["nodes"], []
    for node in project_models(manifest):
        layer = layer_of(node)
        for parent_id in node["depends_on"]["nodes"]:
            if parent_id.startswith("source.") and layer != "staging":
                problems.append(f"{layer} model {node['name']} reads {parent_id} (only staging reads sources)")
            parent = nodes.get(parent_id)
            if parent is None or parent["resource_type"] != "model":
                continue  # seeds and sources
            if LAYERS[layer_of(parent)] > LAYERS[layer]:
                problems.append(f"{layer} model {node['name']} refs the {layer_of(parent)} model {parent['name']}")
    return sorted(problems)


def test_no_intermediate_model_refs_a_mart(manifest: dict) -> None:
    problems = layer_violations(manifest)
    assert not problems, "layering broken:\n  " + "\n  ".join(problems)


def test_the_layer_check_finds_a_mart_read_by_an_intermediate_model() -> None:
    def model(layer: str, name: str, parents: list[str]) -> dict:
        return {"resource_type": "model", "package_name": "pilehouse", "name": name,
                "fqn": ["pilehouse", layer, "minipile", name], "depends_on": {"nodes": parents}}

    manifest = {"nodes": {
        "model.pilehouse.cluster_centroids": model("marts", "cluster_centroids", []),
        "model.pilehouse.int_cluster_quotas": model("intermediate", "int_cluster_quotas",
                                                    ["model.pilehouse.cluster_centroids"]),
        "model.pilehouse.int_other": model("intermediate", "int_other", ["source.pilehouse.lake.documents"]),
    }}
    assert layer_violations(manifest) == [
        "intermediate model int_cluster_quotas refs the marts model cluster_centroids",
        "intermediate model int_other reads source.pilehouse.lake.documents (only staging reads sources)",
    ]


def test_models_are_grouped_by_layer_and_stage_with_their_yaml_beside_them(manifest: dict) -> None:
    problems = []
    for node in project_models(manifest):
        path = PurePosixPath(node["original_file_path"])
        if len(path.parts) != 4 or path.parts[1] not in LAYERS or path.parts[2] not in STAGES:
            problems.append(f"{path}: not in models/<layer>/<stage>/ (stages: {', '.join(STAGES)})")
            continue
        yaml = PurePosixPath(node["patch_path"].split("://", 1)[-1]) if node.get("patch_path") else None
        if yaml is None or yaml.parent != path.parent:
            problems.append(f"{path}: described in {yaml}, not in a YAML file of its own folder")
        elif not (yaml.name.startswith("_") and yaml.name.endswith("__models.yml")):
            problems.append(f"{path}: its YAML {yaml.name} is not named _<name>__models.yml")
    assert not problems, "\n  ".join(["models out of place:", *problems])


@pytest.mark.parametrize("name", LAKE_BACKED)
def test_large_relations_stay_in_the_lake(manifest: dict, name: str) -> None:
    (node,) = [n for n in project_models(manifest) if n["name"] == name]
    assert node["config"]["materialized"] in ("view", "external"), (
        f"{name} is materialised as {node['config']['materialized']}: it would copy the lake into the DuckDB file"
    )


@pytest.mark.parametrize("name", IN_THE_FILE)
def test_small_relations_are_tables(manifest: dict, name: str) -> None:
    (node,) = [n for n in project_models(manifest) if n["name"] == name]
    assert node["config"]["materialized"] == "table", f"{name} is a {node['config']['materialized']}"


def test_scan_and_training_models_carry_the_tags_a_plain_build_leaves_out(manifest: dict) -> None:
    models = project_models(manifest)
    scan = {n["name"] for n in models if n["fqn"][2] == "scan"}
    assert scan and all("scan" in n["tags"] for n in models if n["name"] in scan)
    assert {"prompt_scan", "int_prompt_scan_windows"} <= scan
    (training,) = [n for n in models if n["name"] == "training_run"]
    assert "training" in training["tags"]
    ngrams = [n for n in models if n["fqn"][2] == "ngrams"]
    assert ngrams and all("ngrams" in n["tags"] for n in ngrams)
    default = [s for s in manifest["selectors"].values() if s.get("default")]
    assert [s["name"] for s in default] == ["everything_but_training"]
    excluded = {item["value"] for item in default[0]["definition"]["union"][1]["exclude"]}
    assert excluded == {"scan", "training", "curation_ecdf"}
    (ecdf,) = [n for n in models if n["name"] == "semdedup_ecdf"]
    assert "curation_ecdf" in ecdf["tags"]  # it runs SemDeDup's pairwise pass: only when selected

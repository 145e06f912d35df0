"""The seed's ready-made MiniPile files: configs/minipile_exclusions.csv (its 38 excluded clusters
of k=220, MK2112/minicorpus MiniPile_BatchKMeans/Clusters_to_exclude.txt) and
configs/minipile_seed.yml (E5-base-4k, the seed's centroids file, its sizes)."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from python_udfs.apps.review.seed import CATEGORIES, read_exclusions
from python_udfs.minipile.cli import read_exclusions as cli_exclusions
from python_udfs.settings import project_vars

ROOT = Path(__file__).resolve().parents[2]
EXCLUSIONS = ROOT / "configs" / "minipile_exclusions.csv"
CONFIG = ROOT / "configs" / "minipile_seed.yml"
# the seed's list, as its Clusters_to_exclude.txt and its distill scripts' excluded_clusters give it
SEED_LIST = {10, 15, 16, 22, 26, 28, 35, 37, 39, 40, 44, 46, 51, 57, 61, 64, 78, 86, 87, 88, 90, 94, 99, 101,
             102, 103, 111, 114, 152, 155, 163, 166, 167, 181, 196, 200, 218, 219}


def test_the_exclusions_are_the_seeds_38_in_the_seed_format():
    with EXCLUSIONS.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["cluster_id", "category", "note"]  # seeds/cluster_exclusions.csv's columns
    assert len(rows) == 38
    ids = [int(r["cluster_id"]) for r in rows]
    assert len(set(ids)) == 38 and set(ids) == SEED_LIST and ids == sorted(ids)
    assert all(0 <= i < 220 for i in ids)
    assert {r["category"] for r in rows} <= set(CATEGORIES)
    assert all("Clusters_to_exclude.txt" in r["note"] for r in rows)  # the source, cited


def test_the_review_app_and_the_cli_read_it():
    assert {e.cluster_id for e in read_exclusions(EXCLUSIONS)} == SEED_LIST
    assert cli_exclusions(EXCLUSIONS) == SEED_LIST


def test_the_config_is_the_seeds_setup_and_names_only_known_vars():
    config = yaml.safe_load(CONFIG.read_text())
    unknown = set(config) - set(project_vars())
    assert not unknown, f"not vars of dbt_project.yml: {sorted(unknown)}"
    assert config["embedding_model"] == "dwzhu/e5-base-4k" and config["embedding_prefix"] == "query: "
    assert config["embedding_max_tokens"] == 1024 and config["n_clusters"] == 220
    assert config["kmeans_centroids_file"].endswith("cluster_centers.npy")
    assert (config["train_size"], config["validation_size"], config["test_size"]) == (1_000_000, 500, 10_000)

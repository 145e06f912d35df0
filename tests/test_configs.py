"""Every ready-made config in configs/ is a vars file dbt can take: a YAML mapping that names
only vars of dbt_project.yml, with known sampling strategies; its sampling_variants compile
(macros/variants.sql, rendered as dbt renders it) into one row per variant with known settings."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml
from warehouses import ROOT, render_jinja

from python_udfs import settings
from python_udfs.minipile.quotas import STRATEGIES, TOTAL_MODES

CONFIGS = sorted((ROOT / "configs").glob("*.yml"))


def test_there_are_the_seeds_smaller_editions_and_a_variants_example() -> None:
    names = {p.name for p in CONFIGS}
    assert {"pile.yml", "minipile_tiny.yml", "minipile_nano.yml", "minipile_pico.yml", "variants.yml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_names_only_known_vars(path: Path) -> None:
    merged = settings.merged_vars(str(path), {})
    assert merged, f"{path.name} sets nothing"
    unknown = sorted(set(merged) - set(settings.project_vars()))
    assert not unknown, f"{path.name}: not dbt vars: {unknown}"
    assert settings.resolve("sampling_strategy", merged) in STRATEGIES
    assert settings.resolve("sampling_total", merged) in TOTAL_MODES
    assert settings.resolve("sampling_unit", merged) in ("documents", "tokens")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_variants_compile(path: Path) -> None:
    merged = settings.merged_vars(str(path), {})
    sql = render_jinja("int_sampling_variants", merged)
    rows = duckdb.sql(sql).fetchall()
    items = merged.get("sampling_variants") or []
    assert len(rows) == 1 + len(items)
    for row in rows:
        assert row[2] in STRATEGIES and row[3] in TOTAL_MODES and row[4] in ("documents", "tokens"), row


@pytest.mark.parametrize("name, train", [("tiny", 900_007), ("nano", 800_758), ("pico", 550_758)])
def test_smaller_editions_are_the_seeds(name: str, train: int) -> None:
    # MK2112/minicorpus 04_distill_pile_embed_idea_{7,8,9}_density-{tiny,nano,pico}.py, DistillConfig
    given = yaml.safe_load((ROOT / "configs" / f"minipile_{name}.yml").read_text())
    assert (given["train_size"], given["validation_size"], given["test_size"]) == (train, 534, 10_676)
    assert (given["sampling_strategy"], given["sampling_total"], given["density_weight"]) == ("density", "seed", 0.5)
    pile = yaml.safe_load((ROOT / "configs" / "pile.yml").read_text())
    for key in ("embedding_model", "embedding_max_tokens", "embedding_prefix", "clusters_per_source", "seed"):
        assert given[key] == pile[key], key

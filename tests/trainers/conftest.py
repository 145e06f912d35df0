"""Fixtures for trainer tests: a small real-text warehouse (trainer_warehouse.py), copied per test."""

from __future__ import annotations

import shutil

import pytest
from trainer_warehouse import build_warehouse


@pytest.fixture(scope="session")
def warehouse_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("warehouse") / "template.duckdb"
    build_warehouse(path)
    return path


@pytest.fixture
def warehouse(warehouse_template, tmp_path):
    """A fresh copy per test, so tests that write training rows do not see each other's."""
    path = tmp_path / "pilehouse.duckdb"
    shutil.copy(warehouse_template, path)
    return path


@pytest.fixture
def token_parts(warehouse_template) -> str:
    """The glob of the template's document_tokens parts (shared, read-only)."""
    return str(warehouse_template.parent / "lake" / "tokens" / "documents" / "part-*.parquet")

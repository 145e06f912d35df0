"""Fixtures for the review page tests: the tiny review warehouse (tests/warehouses.py), a seeds folder, a client."""

from __future__ import annotations

from pathlib import Path

import pytest
from review_clients import review_client
from warehouses import ROOT, review_warehouse


@pytest.fixture(scope="session")
def tiny_warehouse(tmp_path_factory) -> Path:
    return review_warehouse(tmp_path_factory.mktemp("review_warehouse") / "pilehouse.duckdb")


@pytest.fixture
def seeds_dir(tmp_path) -> Path:
    """A seeds folder with an exclusion seed holding only the repository seed's header line."""
    folder = tmp_path / "seeds"
    folder.mkdir()
    header = (ROOT / "seeds" / "cluster_exclusions.csv").read_text().splitlines()[0]
    (folder / "cluster_exclusions.csv").write_text(header + "\n")
    return folder


@pytest.fixture
def client(tiny_warehouse, seeds_dir):
    from python_udfs.apps.review.app import ReviewConfig, create_app

    app = create_app(ReviewConfig(db=tiny_warehouse, seeds_dir=seeds_dir, root=ROOT))
    with review_client(app) as test_client:
        yield test_client

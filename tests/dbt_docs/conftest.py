"""The parsed project: one `dbt parse` (about 10 s, into a temporary target folder) per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DBT = Path(sys.executable).parent / "dbt"


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    target = tmp_path_factory.mktemp("dbt_target")
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "PILEHOUSE_DB": str(target / "unused.duckdb")}  # parse never opens it
    result = subprocess.run(
        [str(DBT), "parse", "--target-path", str(target), "--log-path", str(target / "logs"),
         "--no-partial-parse", "--project-dir", str(ROOT), "--profiles-dir", str(ROOT)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"dbt parse failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    return json.loads((target / "manifest.json").read_text())

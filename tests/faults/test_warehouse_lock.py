"""A second writer (another `dbt build`) or a reader (make shell, make report, the review page)
while a process holds the warehouse: refused at once with a message naming the holder, and the
warehouse is untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from python_udfs.apps.warehouse import WarehouseReader, WarehouseUnavailable, check_free

ROOT = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("create or replace table t as select range as x from range(1000)")
print("holding", flush=True)
time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """A warehouse file held for writing by another process (as a running dbt build holds it)."""
    db = tmp_path / "pilehouse.duckdb"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "holding"
    yield db, process.pid
    process.kill()
    process.wait()


def test_readers_and_writers_are_told_who_holds_it(held):
    db, pid = held
    for read_only in (True, False):
        message = check_free(db, read_only=read_only)
        assert message and f"process {pid}" in message and "nothing was changed" in message
    with pytest.raises(WarehouseUnavailable, match=f"in use by process {pid}"):
        with WarehouseReader(db).connect():
            pass
    result = subprocess.run([sys.executable, "-m", "python_udfs.apps.warehouse", "check", str(db)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and f"process {pid}" in result.stderr


def test_make_report_during_a_build_says_so(held, tmp_path):
    db, pid = held
    result = subprocess.run([sys.executable, "-m", "python_udfs.apps.report.build", "--db", str(db), "--out",
                             str(tmp_path / "r")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"in use by process {pid}" in result.stdout + result.stderr


def test_a_second_dbt_build_is_refused_at_once_and_nothing_is_corrupted(held, tmp_path):
    db, pid = held
    env = {**os.environ, "PILEHOUSE_DB": str(db), "PILEHOUSE_LAKE": str(tmp_path / "lake"), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "dbt"), "build", "--select", "cluster_exclusions"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    assert result.returncode != 0
    assert f"is in use by process {pid}" in result.stdout, result.stdout[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert took < 60, f"refused after {took:.0f} s, not at once"
    # the holder's data is intact: once it lets go, the file opens and holds its table
    os.kill(pid, 9)
    time.sleep(0.5)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("select count(*) from t").fetchall() == [(1000,)]

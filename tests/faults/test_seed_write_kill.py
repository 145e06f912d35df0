"""kill -9 while the review page writes the exclusion seed: the file is always the old one or
the new one (it parses, and is one of the states written), and a stale temporary is cleared by
the next write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from python_udfs.apps.review import seed

ROOT = Path(__file__).resolve().parents[2]
WRITER = """
import sys
from pathlib import Path
from python_udfs.apps.review import seed
path = Path(sys.argv[1])
i = 0
while True:  # each write is one whole state: cluster i % 40 excluded with note 'write i', long
    seed.set_exclusion(path, i % 40, "other", f"write {i} " + "x" * (i % 400))
    i += 1
"""


@pytest.mark.parametrize("trial", range(5))
def test_killed_seed_writes_leave_a_whole_file(tmp_path, trial):
    path = tmp_path / "cluster_exclusions.csv"
    path.write_text(",".join(seed.HEADER) + "\n")
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(random.Random(trial).uniform(1.0, 3.0))  # seeded: python start-up is ~0.5 s
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    rows = seed.read_exclusions(path)  # parses: never a torn file
    assert rows and all(r.problem is None for r in rows)
    assert len({r.cluster_id for r in rows}) == len(rows)
    writes = sorted(int(r.note.split()[1]) for r in rows)
    assert all(r.note == f"write {n} " + "x" * (n % 400) for r, n in zip(sorted(rows, key=lambda r: int(
        r.note.split()[1])), writes))
    # a temporary the killed writer left (if it was mid-write) goes with the next write, once stale
    for tmp in tmp_path.glob(".cluster_exclusions.csv.*.tmp"):
        os.utime(tmp, (time.time() - 120, time.time() - 120))
    seed.set_exclusion(path, 99, "other", "after the kill")
    assert not list(tmp_path.glob(".cluster_exclusions.csv.*.tmp"))
    assert seed.read_exclusions(path)[-1].note == "after the kill"

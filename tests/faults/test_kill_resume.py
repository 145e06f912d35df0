"""kill -9 at seeded moments in every long step, then damaged parts: the next run finishes and
every step's output is identical to an uninterrupted run's; no part is half-written or counted
twice, no temporary is left.

The pipeline is tests/faults/pipeline.py (ingest, embedding, k-means, assignment, tokenize,
pack, partial counts, reduce on 96 real documents, through the functions the dbt models call).
A trial chain kills one run inside each step in turn (the moment within the step drawn from a
seeded generator, scaled by the step's duration in the reference run), then lets a last run
finish. FAULT_CHAINS (default 2) sets how many chains run; each has its own seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from python_udfs.runner.parts import FINGERPRINT_KEY

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from pipeline import STEPS  # noqa: E402

CHAINS = int(os.environ.get("FAULT_CHAINS", "2"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}


def start(work: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "pipeline.py"), str(work.resolve())], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def steps_log(work: Path) -> list[tuple[str, float]]:
    path = work / "steps.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            rows.append((parts[1], float(parts[2])))
    return rows


def run_to_end(work: Path, timeout: float = 600) -> None:
    process = start(work)
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()[-3000:]


def durations(work: Path) -> dict[str, float]:
    rows = steps_log(work)
    return {step: later - at for (step, at), (_, later) in zip(rows, rows[1:]) if step in STEPS}


#: where each runner step writes its parts (k-means has none: it is killed by time)
STEP_DIRS = {"ingest": "lake/corpus", "embed": "lake/embeddings", "assign": "lake/assignments",
             "tokenize": "lake/tokens", "pack": "lake/sequences", "count": "lake/partials", "reduce": "lake/counts"}


def part_count(work: Path, step: str) -> int:
    folder = work / STEP_DIRS[step]
    return sum(1 for _ in folder.rglob("part-*.parquet")) if folder.exists() else 0


def kill_inside(work: Path, step: str, rng: random.Random, reference: Path, took: dict[str, float],
                timeout: float = 300) -> str:
    """Start a run and SIGKILL it inside ``step``: once a seeded number of its parts beyond those
    already there are written (0: as soon as it starts), or for k-means a seeded moment of the
    reference fit. Returns the step the run was in when killed ('done' if it finished first)."""
    seen = len(steps_log(work))
    if step in STEP_DIRS:
        remaining = part_count(reference, step) - part_count(work, step)
        if remaining <= 0:
            return "complete before"
        # within the first three quarters: a fast step writes parts faster than they are polled
        more = rng.randrange(0, max(1, remaining * 3 // 4))
    else:
        delay = rng.uniform(0.05, 0.5) * took[step]
    process = start(work)
    deadline = time.monotonic() + timeout
    started = base = None
    while process.poll() is None and time.monotonic() < deadline:
        rows = steps_log(work)[seen:]
        if started is None and any(s == step for s, _ in rows):
            started = time.monotonic()
            base = part_count(work, step) if step in STEP_DIRS else 0
        if started is not None and (part_count(work, step) - base >= more if step in STEP_DIRS
                                    else time.monotonic() - started >= delay):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            rows = steps_log(work)[seen:]
            return rows[-1][0] if rows else "startup"
        time.sleep(0.002)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"the run never reached {step}")
    assert process.returncode == 0, process.stderr.read().decode()[-3000:]
    return "done"


def outputs(work: Path) -> dict[str, object]:
    """Every part's rows and fingerprint, the centroids, by relative path."""
    found: dict[str, object] = {}
    for path in sorted((work / "lake").rglob("*")):
        if path.is_file():
            relative = str(path.relative_to(work))
            assert not path.name.endswith(".tmp"), f"a temporary was left: {relative}"
            table = pq.read_table(path)
            found[relative] = (table.replace_schema_metadata(None), (table.schema.metadata or {}).get(FINGERPRINT_KEY))
    found["centroids.npy"] = np.load(work / "centroids.npy")
    return found


def assert_same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        else:
            table, fingerprint = got[name]
            assert fingerprint == value[1], f"{name}: another fingerprint"
            assert table.equals(value[0]), f"{name}: other rows"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    run_to_end(work)
    return work


@pytest.mark.parametrize("chain", range(CHAINS))
def test_kill_9_inside_every_step_then_resume(reference, tmp_path, chain):
    rng = random.Random(1000 + chain)
    took = durations(reference)
    work = tmp_path / "killed"
    work.mkdir()
    # the same input files (mtimes too: the ingest fingerprints them), so the tables can be compared
    import shutil

    shutil.copytree(reference / "input", work / "input")
    killed_in = []
    for step in STEPS:
        killed_in.append((step, kill_inside(work, step, rng, reference, took)))
    run_to_end(work)
    assert_same(outputs(work), outputs(reference))
    hits = sum(target == actual for target, actual in killed_in if target in STEP_DIRS)
    print(f"chain {chain}: killed in {killed_in}; {hits} of {len(STEP_DIRS)} part-writing steps hit")
    # the output must be identical whatever happened; and the kills must have landed: in each
    # part-writing step but at most one (a fast step may finish between two polls; k-means'
    # kill is by time, so it is reported, not counted)
    assert hits >= len(STEP_DIRS) - 1, killed_in


DAMAGES = ["truncate", "flip", "zero", "foreign", "empty_tmp"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_torn_corrupt_or_foreign_parts_are_recomputed(reference, tmp_path, damage):
    """A copy of the finished run, one part of every step damaged: the rerun detects each,
    recomputes it, and ends identical; the damaged bytes are never read as data."""
    import shutil

    work = tmp_path / "damaged"
    shutil.copytree(reference, work)
    rng = random.Random(damage)
    folders = sorted({p.parent for p in (work / "lake").rglob("part-*.parquet")})
    for folder in folders:
        parts = sorted(folder.glob("part-*.parquet"))
        victim = rng.choice(parts)
        data = bytearray(victim.read_bytes())
        if damage == "truncate":
            victim.write_bytes(bytes(data[: rng.randrange(1, len(data))]))
        elif damage == "flip":  # inside the data pages, the footer (and its fingerprint) intact
            footer = int.from_bytes(data[-8:-4], "little") + 8
            at = rng.randrange(4, len(data) - footer)
            data[at] ^= rng.randrange(1, 256)
            victim.write_bytes(bytes(data))
        elif damage == "zero":
            victim.write_bytes(b"")
        elif damage == "foreign":  # a whole, valid part of another step, under this step's name
            other = rng.choice([f for f in folders if f != folder])
            shutil.copy(sorted(other.glob("part-*.parquet"))[0], victim)
        else:  # a zero-byte temporary, as a killed writer leaves it
            (folder / f"{parts[0].name}.123-deadbeef.tmp").write_bytes(b"")
    run_to_end(work)
    assert_same(outputs(work), outputs(reference))


FULL = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG, as a full disk fails with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
sys.argv = ["pipeline.py", sys.argv[1]]
runpy.run_path(sys.argv[0].replace("pipeline.py", "") + "{pipeline}", run_name="__main__")
"""


@pytest.mark.parametrize("limit", [20_000, 60_000])
def test_a_full_disk_fails_clearly_keeps_nothing_partial_and_resumes(reference, tmp_path, limit):
    """Writes past a size limit fail as on a full disk (RLIMIT_FSIZE: EFBIG, the same path as
    ENOSPC): the error names the file, no temporary is kept, and the next run with room resumes
    to the same outputs."""
    import shutil

    work = tmp_path / "full"
    work.mkdir()
    shutil.copytree(reference / "input", work / "input")
    script = FULL.replace("{pipeline}", str(HERE / "pipeline.py"))
    result = subprocess.run([sys.executable, "-c", script, str(work.resolve()), str(limit)], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "the disk is full (or the file size limit is reached)" in last and "part-" in last, last
    assert "Nothing partial was kept" in last
    assert not list(work.rglob("*.tmp"))
    run_to_end(work)
    assert_same(outputs(work), outputs(reference))

"""kill -9 at seeded moments during the prompt scan and during training: the next run finishes
and its results are identical to an uninterrupted run's (the scan's parts row for row; the
trained weights bitwise, each step logged to the warehouse once), nothing half-written is kept.

The job is tests/faults/scan_train_job.py in its own process. A trial starts it and sends
SIGKILL to its process group a seeded time after it says it has started (a uniform fraction of
the reference run's working time), or lets it finish, FAULT_KILLS times (default 4), and then
lets a last run finish. FAULT_CHAINS_SCAN_TRAIN (default 1) sets how many seeded chains run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
KILLS = int(os.environ.get("FAULT_KILLS", "4"))  # kills per chain
SEEDS = range(1, 1 + int(os.environ.get("FAULT_CHAINS_SCAN_TRAIN", "1")))  # one chain per seed


def start(job: str, work: Path, *args: str) -> subprocess.Popen:
    (work / "started").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, str(HERE / "scan_train_job.py"), job, str(work), *args], cwd=ROOT,
                            env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def run_to_end(job: str, work: Path, *args: str, timeout: float = 600) -> float:
    """Run the job uninterrupted; returns its working time (from 'started' to exit)."""
    process = start(job, work, *args)
    while process.poll() is None and not (work / "started").exists():
        time.sleep(0.01)
    began = time.monotonic()
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode()[-3000:]
    return time.monotonic() - began


def kill_chain(job: str, work: Path, took: float, seed: int, *args: str, timeout: float = 600,
               remaining=None) -> list[str]:
    """Kill the job KILLS times at seeded moments, then let it finish; returns what each trial saw.

    ``remaining()``: the fraction of the reference run's work still to do (a resumed run skips
    what earlier ones finished); each delay is a seeded fraction of that much of ``took``, so
    the kills keep landing while the job works instead of after a short resumed run ended.
    """
    rng = random.Random(seed)
    trials = []
    for _ in range(KILLS):
        delay = rng.uniform(0.05, 0.9) * took * (remaining() if remaining else 1.0)
        process = start(job, work, *args)
        deadline = time.monotonic() + timeout
        while process.poll() is None and not (work / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        began = time.monotonic()
        while process.poll() is None and time.monotonic() - began < delay:
            time.sleep(0.005)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            trials.append(f"killed after {delay:.2f}s")
        else:
            assert process.returncode == 0, process.stderr.read().decode()[-3000:]
            trials.append("finished first")
    trials.append(f"then finished in {run_to_end(job, work, *args):.1f}s")
    return trials


def no_temporaries(folder: Path) -> None:
    left = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and
            (p.name.endswith(".tmp") or ".tmp" in p.suffixes or p.stat().st_size == 0)]
    assert not left, f"temporaries or empty files left: {left}"


# --- the scan -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scan_reference(tmp_path_factory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("scan_conftest", ROOT / "tests" / "scan" / "conftest.py")
    scan_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scan_conftest)
    save_tiny_neox = scan_conftest.save_tiny_neox

    work = tmp_path_factory.mktemp("scan-reference")
    model = save_tiny_neox(work / "model")
    took = run_to_end("scan", work, model)
    return work, took, model


def scan_rows(work: Path) -> list[dict]:
    parts = sorted((work / "out").glob("part-*.parquet"))
    return pq.read_table(parts).to_pylist()


@pytest.mark.parametrize("seed", SEEDS)
def test_the_scan_survives_kill_9(scan_reference, tmp_path, seed):
    reference, took, model = scan_reference
    work = tmp_path / "scan"
    work.mkdir()
    total = len(list((reference / "out").glob("part-*.parquet")))

    def remaining() -> float:
        return 1.0 - len(list((work / "out").glob("part-*.parquet"))) / total

    trials = kill_chain("scan", work, took, seed, model, remaining=remaining)
    print(f"scan, seed {seed}: {trials}")
    assert sum(t.startswith("killed") for t in trials) >= KILLS // 2, trials
    no_temporaries(work / "out")
    assert sorted(p.name for p in (work / "out").glob("part-*")) == \
        sorted(p.name for p in (reference / "out").glob("part-*"))
    assert scan_rows(work) == scan_rows(reference)


# --- training -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_template(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests" / "trainers"))
    from trainer_warehouse import build_warehouse

    folder = tmp_path_factory.mktemp("train-template")
    build_warehouse(folder / "pilehouse.duckdb")
    return folder


def train_copy(template: Path, work: Path) -> Path:
    shutil.copytree(template, work)
    return work


def trained(work: Path) -> tuple[dict, list[tuple], list[tuple]]:
    from safetensors.torch import load_file

    with duckdb.connect(str(work / "pilehouse.duckdb"), read_only=True) as con:
        runs = con.sql("select run_id, tokens_seen, checkpoint_path from training_runs "
                       "where run_id = 'killed'").fetchall()
        steps = con.sql("select step, loss, lr from training_steps where run_id = 'killed' order by step").fetchall()
    assert len(runs) == 1, runs
    weights = load_file(Path(runs[0][2]) / "model.safetensors")
    return weights, steps, [(r[0], r[1]) for r in runs]


@pytest.fixture(scope="module")
def train_reference(train_template, tmp_path_factory):
    work = train_copy(train_template, tmp_path_factory.mktemp("train-reference") / "work")
    took = run_to_end("train", work)
    return work, took


@pytest.mark.parametrize("seed", SEEDS)
def test_training_survives_kill_9(train_template, train_reference, tmp_path, seed):
    import torch

    reference, took = train_reference
    work = train_copy(train_template, tmp_path / "work")
    trials = kill_chain("train", work, took, seed)
    print(f"training, seed {seed}: {trials}")
    assert sum(t.startswith("killed") for t in trials) >= KILLS // 2, trials
    no_temporaries(work / "checkpoints")
    want_weights, want_steps, want_runs = trained(reference)
    got_weights, got_steps, got_runs = trained(work)
    assert got_steps == want_steps  # every step logged once, with the same loss and lr
    assert got_runs == want_runs
    assert want_weights.keys() == got_weights.keys()
    for name, tensor in want_weights.items():
        assert torch.equal(got_weights[name], tensor), name  # bitwise

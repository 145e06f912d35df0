"""`make experiment VARIANTS=... EXP_SEEDS=...` end to end on the trainer's tiny warehouse:
two variants x two seeds, two steps each, one task; the pairs and means come out of dbt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_experiment_over_variants(warehouse, tmp_path):
    venv = Path(sys.executable).parent.parent
    if not (venv / ".installed").exists():
        pytest.skip(f"{venv} was not made by make setup")
    env = {**os.environ, "PILEHOUSE_DB": str(warehouse), "PILEHOUSE_LAKE": str(warehouse.parent / "lake"),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # -o: never remake the (shared) environment from here
    cmd = ["make", "-C", str(ROOT), "-o", f"{venv}/.installed", "experiment", f"VENV={venv}",
           "VARIANTS=uniform density", "EXP_SEEDS=2", "EXP_STEPS=2", "EXP_TASKS=arc_easy", "EXP_LIMIT=2",
           "EXP_HELDOUT=6", "THREADS=1", f"EXP_OUT={tmp_path}/checkpoints",
           "EXP_TRAIN_FLAGS=--seq-len 32 --batch-size 4 --micro-batch-size 4 --eval-every 0 --no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute("select run_id, dataset, seed from training_runs order by run_id").fetchall()
        pairs = con.execute("select distinct model_a, model_b from eval_comparison order by 1").fetchall()
        loss = con.execute("select n_seeds, value_sd is not null from eval_variant_scores "
                           "where experiment = 'exp-tiny-density' and task = 'heldout_loss'").fetchall()
    assert runs == [("exp-tiny-density-s1", "density", 1), ("exp-tiny-density-s2", "density", 2),
                    ("exp-tiny-uniform-s1", "uniform", 1), ("exp-tiny-uniform-s2", "uniform", 2)]
    assert pairs == [("exp-tiny-uniform-s1", "exp-tiny-density-s1"), ("exp-tiny-uniform-s2", "exp-tiny-density-s2")]
    assert loss == [(2, True)]
    assert "exp-tiny-density-s2 against exp-tiny-uniform-s2" in out.stdout

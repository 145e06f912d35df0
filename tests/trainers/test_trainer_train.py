"""trainers.train end to end on a tiny model: learning, bitwise resume, warehouse rows, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import text_reference
import torch
from safetensors.torch import load_file

from trainers import data
from trainers.presets import TrainConfig
from trainers.train import train

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_RUNS = ["run_id", "model_config", "dataset", "params", "tokens_seen", "started_at",
                 "finished_at", "checkpoint_path"]
CONTRACT_STEPS = ["run_id", "step", "loss", "lr", "tokens_per_s"]


def tiny(warehouse, out_dir, **overrides) -> TrainConfig:
    """The tiny preset cut down to a few fast steps: 4 sequences of 32 tokens per step."""
    base = dict(dataset="minipile", seq_len=32, batch_size=4, micro_batch_size=2, steps=6,
                warmup=2, eval_every=3, eval_batches=1, checkpoint_every=3,
                out_dir=str(out_dir), db=str(warehouse), progress=False, db_wait=5)
    return TrainConfig.from_preset("tiny", **{**base, **overrides})


def weights(run: dict) -> dict[str, torch.Tensor]:
    return load_file(Path(run["checkpoint_path"]) / "model.safetensors")


def test_loss_falls_on_a_repeated_batch(warehouse, tmp_path):
    # One document, no validation rows: every sequence of every step is that document.
    one_doc = "sql:select doc_id, text from documents where doc_id = 1"
    cfg = tiny(warehouse, tmp_path, dataset=one_doc,
               val_fraction=0.0, steps=20, warmup=3, checkpoint_every=0, lr=1e-2, min_lr=1e-2,
               batch_size=2, micro_batch_size=2)
    losses = []
    run = train(cfg, on_step=lambda step, row: losses.append(row["loss"]))
    assert len(losses) == 20 and run["final_val_loss"] is None
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("packing", [False, True])
def test_killed_run_resumes_to_the_same_weights(warehouse, tmp_path, packing):
    # --deterministic: bitwise equal to the uninterrupted run (the default mode is only close).
    straight = train(tiny(warehouse, tmp_path / "a", packing=packing, deterministic=True, run_id="straight"))

    class Killed(Exception):
        pass

    def kill_after_4(step, row):
        if step == 4:  # the last checkpoint is step 3: step 4 is lost and done again
            raise Killed

    cfg = tiny(warehouse, tmp_path / "b", packing=packing, deterministic=True, run_id="resumed")
    with pytest.raises(Killed):
        train(cfg, on_step=kill_after_4)
    assert sorted(p.name for p in (tmp_path / "b" / "resumed").glob("step-*")) == ["step-000003"]
    resumed = train(cfg)

    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bitwise, not just close
    assert resumed["final_loss"] == straight["final_loss"]
    assert resumed["final_val_loss"] == straight["final_val_loss"]
    assert resumed["tokens_seen"] == straight["tokens_seen"] == 6 * 4 * 32

    with duckdb.connect(str(warehouse), read_only=True) as con:
        steps = con.sql("select step, loss from training_steps where run_id = 'resumed' "
                        "order by step").fetchall()
        same = con.sql("select step, loss from training_steps where run_id = 'straight' "
                       "order by step").fetchall()
        status = con.execute("select status from training_runs where run_id = 'resumed'").fetchone()
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5, 6]  # step 4 once, though it ran twice
    assert steps == same
    assert status == ("finished",)

    # A finished run run again does nothing new; a changed config refuses to resume it.
    again = train(cfg)
    assert again["step"] == 6
    assert torch.equal(weights(again)["embed_out.weight"], b["embed_out.weight"])
    with pytest.raises(ValueError, match="lr"):
        train(tiny(warehouse, tmp_path / "b", packing=packing, deterministic=True, run_id="resumed", lr=1e-2))


def test_default_mode_resumes_correctly(warehouse, tmp_path):
    """The fast default (no deterministic kernels, the fused loss) still resumes from the
    checkpoint's data position, optimizer, schedule and RNG: the same run up to rounding."""
    assert not tiny(warehouse, tmp_path).deterministic and tiny(warehouse, tmp_path).fused_loss
    straight = train(tiny(warehouse, tmp_path / "a", run_id="straight"))

    class Killed(Exception):
        pass

    def kill_after_4(step, row):
        if step == 4:
            raise Killed

    cfg = tiny(warehouse, tmp_path / "b", run_id="resumed")
    with pytest.raises(Killed):
        train(cfg, on_step=kill_after_4)
    resumed = train(cfg)
    assert resumed["step"] == straight["step"] == 6
    assert resumed["tokens_seen"] == straight["tokens_seen"]
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-5)
    a, b = weights(straight), weights(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_fused_loss_trains_as_the_plain_loss(warehouse, tmp_path):
    """The fused output projection + loss gives the plain path's losses and weights (rounding)."""
    losses = {}
    for fused in (False, True):
        rows = []
        run = train(tiny(warehouse, tmp_path / str(fused), fused_loss=fused, run_id="r"),
                    on_step=lambda step, row: rows.append(row["loss"]))  # noqa: B023
        losses[fused] = (rows, run["final_val_loss"], weights(run))
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert losses[True][1] == pytest.approx(losses[False][1], rel=1e-5)
    # Adam turns rounding into visible (but < lr) steps where gradients are ~0 (key biases).
    a, b = losses[True][2], losses[False][2]
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < tiny(warehouse, tmp_path).lr


@pytest.mark.parametrize("packing", [False, True])
def test_same_losses_as_tokenizing_the_text(warehouse, tmp_path, monkeypatch, packing):
    """Ids from document_tokens train exactly as the old trainer, which tokenized the text."""
    def run(run_id: str) -> tuple[list[tuple], dict]:
        losses: list[tuple] = []
        cfg = tiny(warehouse, tmp_path, packing=packing, run_id=run_id, steps=4, eval_every=2,
                   eval_batches=2, checkpoint_every=0)
        summary = train(cfg, on_step=lambda step, row: losses.append((row["loss"], row["val_loss"])))
        return losses, summary

    ids, ids_run = run("ids")
    assert (tmp_path / "ids" / "data" / "train.bin").exists()
    with monkeypatch.context() as patch:  # the text path, kept in the tests as the reference
        patch.setattr(data, "export_snapshot", text_reference.export_snapshot)
        patch.setattr(data, "iter_sequences", text_reference.iter_sequences)
        text, text_run = run("text")
    assert (tmp_path / "text" / "data" / "train.parquet").exists()
    assert len(ids) == 4 and sum(v is not None for _, v in ids) == 2
    assert ids == text  # the same floats, step for step, training and validation
    a, b = weights(ids_run), weights(text_run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rows_land_in_the_warehouse_and_the_model_loads(warehouse, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = train(tiny(warehouse, tmp_path, steps=4, eval_every=2, run_id=None))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.sql("select * from training_runs")
        run_cols = [d[0] for d in runs.description]
        run_rows = runs.fetchall()
        steps = con.sql("select * from training_steps order by step")
        step_cols = [d[0] for d in steps.description]
        step_rows = [dict(zip(step_cols, r)) for r in steps.fetchall()]
    assert set(CONTRACT_RUNS) <= set(run_cols) and set(CONTRACT_STEPS) <= set(step_cols)
    assert len(run_rows) == 1
    row = dict(zip(run_cols, run_rows[0]))
    assert row["run_id"] == run["run_id"] and row["run_id"].startswith("tiny-minipile-")
    assert row["dataset"] == "minipile" and row["preset"] == "tiny"
    assert row["params"] == 6_539_008 and row["tokens_seen"] == 4 * 4 * 32
    assert row["started_at"] <= row["finished_at"] and row["status"] == "finished"
    assert json.loads(row["model_config"])["hidden_size"] == 64
    assert [r["step"] for r in step_rows] == [1, 2, 3, 4]
    assert all(r["run_id"] == run["run_id"] and r["loss"] > 0 and r["lr"] > 0
               and r["tokens_per_s"] > 0 for r in step_rows)
    assert [r["val_loss"] is not None for r in step_rows] == [False, True, False, True]

    # The final model is a plain save_pretrained folder with Pythia's tokenizer next to it.
    path = row["checkpoint_path"]
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer("Hello world")["input_ids"] == [12092, 1533]
    assert tokenizer.eos_token_id == 0
    with torch.no_grad():
        logits = model(**tokenizer("Hello world", return_tensors="pt")).logits
    assert logits.shape == (1, 2, 50_304)


def test_init_from_a_checkpoint(warehouse, tmp_path):
    first_losses, second_losses = [], []
    first = train(tiny(warehouse, tmp_path, steps=3, run_id="first"),
                  on_step=lambda step, row: first_losses.append(row["loss"]))
    second = train(tiny(warehouse, tmp_path, steps=1, run_id="second",
                        init_from=first["checkpoint_path"]),
                   on_step=lambda step, row: second_losses.append(row["loss"]))
    assert second["params"] == first["params"]
    assert json.loads(second["train_config"])["init_from"] == first["checkpoint_path"]
    # Same data order, so both runs' first step sees the same batch: the second starts trained.
    assert second_losses[0] < first_losses[0] - 0.1


def test_cli_end_to_end(warehouse, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PILEHOUSE_DB": str(warehouse)}
    cmd = [sys.executable, "-m", "trainers.train", "--preset", "tiny", "--dataset", "minipile",
           "--steps", "2", "--seq-len", "32", "--batch-size", "4", "--micro-batch-size", "2",
           "--eval-every", "2", "--eval-batches", "1", "--out-dir", str(tmp_path / "runs"),
           "--run-id", "cli", "--no-progress"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["run_id"] == "cli" and summary["step"] == 2 and summary["batch_size"] == 4
    assert (tmp_path / "runs" / "cli" / "final" / "model.safetensors").exists()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        steps = con.execute("select step from training_steps where run_id = 'cli'").fetchall()
        tokens = con.execute("select tokens_seen from training_runs where run_id = 'cli'").fetchall()
    assert sorted(steps) == [(1,), (2,)] and tokens == [(2 * 4 * 32,)]


@pytest.mark.slow
def test_torchrun_ddp_matches_one_process(warehouse, tmp_path):
    """WORLD_SIZE=2 on CPU (gloo): same global batch, so the same losses as one process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    common = ["--preset", "tiny", "--dataset", "minipile", "--steps", "2", "--seq-len", "32",
              "--batch-size", "4", "--micro-batch-size", "2", "--warmup", "2", "--eval-every", "2",
              "--eval-batches", "2", "--db", str(warehouse), "--out-dir", str(tmp_path),
              "--no-progress"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-port", "29533", "-m", "trainers.train"]
    done = subprocess.run(torchrun + common + ["--run-id", "ddp"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # DDP runs the plain LM head + loss (train_fused_loss is one process only): compare like with like
    single = train(tiny(warehouse, tmp_path, steps=2, eval_every=2, eval_batches=2, run_id="one", fused_loss=False))
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("select run_id, step, loss, val_loss from training_steps "
                           "order by run_id, step").fetchall()
        world = con.execute("select world_size from training_runs where run_id = 'ddp'").fetchone()
    ddp = [r[1:] for r in rows if r[0] == "ddp"]
    one = [r[1:] for r in rows if r[0] == "one"]
    assert world == (2,) and len(ddp) == len(one) == 2
    for (s1, l1, _v1), (s2, l2, _v2) in zip(ddp, one):
        assert s1 == s2 and l1 == pytest.approx(l2, rel=1e-5)
    assert ddp[-1][2] == pytest.approx(single["final_val_loss"], rel=1e-5)
    a, b = weights({"checkpoint_path": tmp_path / "ddp" / "final"}), weights(single)
    # Not bitwise: the gradient all-reduce sums in another order. Adam turns that rounding
    # into visible (but < lr) differences only where gradients are ~0 (the key biases).
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)
    assert torch.allclose(a["embed_out.weight"], b["embed_out.weight"], atol=1e-5)

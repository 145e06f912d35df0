"""The trainer's CUDA paths: fp16/bf16 autocast, SDPA attention, fused AdamW, the fused loss
under autocast. Marked gpu: skipped without CUDA (tests/conftest.py); `make test-gpu` runs them."""

from __future__ import annotations

import math

import pytest
import torch
from test_trainer_train import tiny

from trainers.train import build_model, build_optimizer, train


def test_attention_is_sdpa(tmp_path):
    """The model the trainer builds (CPU too) uses torch's scaled_dot_product_attention."""
    model = build_model(tiny(tmp_path / "db", tmp_path), None)
    assert model.config._attn_implementation == "sdpa"


@pytest.mark.gpu
def test_fused_adamw_on_cuda(tmp_path):
    cfg = tiny(tmp_path / "db", tmp_path, recipe="pilehouse")
    model = build_model(cfg, None).cuda()
    optimizer = build_optimizer(model, cfg, fused=True)
    assert optimizer.defaults["fused"] is True and isinstance(optimizer, torch.optim.AdamW)


@pytest.mark.gpu
@pytest.mark.parametrize(("recipe", "dtype"), [("seed", "fp16"), ("pilehouse", "bf16")])
@pytest.mark.parametrize("fused_loss", [True, False])
def test_cuda_autocast_trains(warehouse, tmp_path, recipe, dtype, fused_loss):
    """The recipe's GPU autocast (seed fp16 with a loss scaler, pilehouse bf16) trains: finite,
    falling losses, close to an fp32 run of the same steps."""
    losses = {}
    for run_dtype in (dtype, "fp32"):
        rows = []
        train(tiny(warehouse, tmp_path / run_dtype, recipe=recipe, dtype=run_dtype, device="cuda",
                   fused_loss=fused_loss, steps=8, run_id="gpu"),
              on_step=lambda step, row: rows.append(row["loss"]))  # noqa: B023
        losses[run_dtype] = rows
    assert all(math.isfinite(x) for x in losses[dtype])
    assert losses[dtype][-1] < losses[dtype][0]
    assert losses[dtype] == pytest.approx(losses["fp32"], rel=2e-2)

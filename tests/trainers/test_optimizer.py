"""The two optimizer recipes: the seed's Adam + L2 with transformers' clamped cosine, and
pilehouse's AdamW with a cosine to min_lr; checked against transformers and by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trainers import train as tr
from trainers.presets import TrainConfig


def test_seed_recipe_is_the_default():
    cfg = TrainConfig()
    assert cfg.recipe == "seed"
    assert cfg.resolved() == {"optimizer": "adam_l2", "schedule": "cosine_clamped", "gpu_dtype": "float16"}
    assert TrainConfig.from_preset("pythia-160m").resolved()["optimizer"] == "adam_l2"
    other = TrainConfig(recipe="pilehouse")
    assert other.resolved() == {"optimizer": "adamw", "schedule": "cosine_to_min", "gpu_dtype": "bfloat16"}
    mixed = TrainConfig(recipe="pilehouse", schedule="cosine_clamped")
    assert mixed.resolved()["optimizer"] == "adamw" and mixed.resolved()["schedule"] == "cosine_clamped"


@pytest.mark.parametrize("bad", [dict(recipe="nope"), dict(optimizer="sgd"), dict(schedule="linear")])
def test_unknown_choices_are_errors(bad):
    with pytest.raises(ValueError, match="choose from"):
        TrainConfig(**bad).resolved()


@pytest.mark.parametrize("steps,warmup", [(1024, 10), (50, 5), (7, 0)])
def test_cosine_clamped_is_transformers_schedule_with_a_floor(steps, warmup):
    from transformers import get_cosine_schedule_with_warmup

    cfg = TrainConfig(steps=steps, warmup=warmup, lr=6e-4, min_lr=6e-5)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    reference = get_cosine_schedule_with_warmup(opt, warmup, steps)
    clamped_somewhere = False
    for step in range(steps):
        expected = reference.get_last_lr()[0]
        assert tr.lr_at(step, cfg) == pytest.approx(max(expected, cfg.min_lr), rel=1e-12, abs=1e-15)
        clamped_somewhere |= expected < cfg.min_lr
        opt.step()
        reference.step()
    assert clamped_somewhere  # the floor matters: transformers' own schedule goes below it
    assert tr.lr_at(steps - 1, cfg) == cfg.min_lr
    if warmup:
        assert tr.lr_at(0, cfg) == cfg.min_lr  # transformers starts from 0; the clamp lifts it


def test_cosine_to_min_ends_on_min_lr():
    cfg = TrainConfig(recipe="pilehouse", steps=100, warmup=10, lr=6e-4, min_lr=6e-5)
    assert tr.lr_at(0, cfg) == pytest.approx(6e-5)  # lr * 1 / warmup
    assert tr.lr_at(9, cfg) == pytest.approx(6e-4)
    assert tr.lr_at(99, cfg) == pytest.approx(6e-5)
    mid = 10 + (99 - 10) / 2
    assert tr.lr_at(int(mid), cfg) == pytest.approx(
        6e-5 + 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89)) * (6e-4 - 6e-5))


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))


def test_param_groups():
    model = _model()
    seed = tr.param_groups(model, TrainConfig(weight_decay=0.01), "adam_l2")
    assert len(seed) == 1 and seed[0]["weight_decay"] == 0.01
    assert len(seed[0]["params"]) == 4  # weight, bias, LayerNorm gain and bias: all decayed
    adamw = tr.param_groups(model, TrainConfig(weight_decay=0.01), "adamw")
    assert [len(g["params"]) for g in adamw] == [1, 3]
    assert [g["weight_decay"] for g in adamw] == [0.01, 0.0]
    assert all(p.dim() >= 2 for p in adamw[0]["params"]) and all(p.dim() < 2 for p in adamw[1]["params"])


def _hand_adam(p, g, lr, wd, betas, eps, steps, decoupled, decay):
    """Adam by hand for `steps` steps of the same gradient: L2 adds wd * p to the gradient,
    decoupled (AdamW) shrinks p by lr * wd * p before the Adam update."""
    m = torch.zeros_like(p, dtype=torch.float64)
    v = torch.zeros_like(p, dtype=torch.float64)
    p = p.double().clone()
    for t in range(1, steps + 1):
        grad = g.double().clone()
        if decay and not decoupled:
            grad = grad + wd * p
        if decay and decoupled:
            p = p - lr * wd * p
        m = betas[0] * m + (1 - betas[0]) * grad
        v = betas[1] * v + (1 - betas[1]) * grad * grad
        m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p


@pytest.mark.parametrize("recipe", ["seed", "pilehouse"])
def test_optimizer_update_matches_a_hand_computation(recipe):
    # a large decay and a small gradient, so L2 and decoupled decay differ visibly
    cfg = TrainConfig(recipe=recipe, lr=0.1, weight_decay=0.5, betas=(0.9, 0.95), eps=1e-8)
    model = _model()
    start = [p.detach().clone() for p in model.parameters()]
    grads = [torch.full_like(p, 1e-3) for p in model.parameters()]
    opt = tr.build_optimizer(model, cfg, fused=False)
    expected_kind = torch.optim.Adam if recipe == "seed" else torch.optim.AdamW
    assert type(opt) is expected_kind
    for _ in range(3):
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        opt.step()
    for p0, g, p in zip(start, grads, model.parameters(), strict=True):
        decay = recipe == "seed" or p.dim() >= 2
        hand = _hand_adam(p0, g, 0.1, 0.5, (0.9, 0.95), 1e-8, 3, decoupled=recipe == "pilehouse", decay=decay)
        torch.testing.assert_close(p.detach().double(), hand, rtol=1e-5, atol=1e-6)
        other = _hand_adam(p0, g, 0.1, 0.5, (0.9, 0.95), 1e-8, 3, decoupled=recipe != "pilehouse", decay=decay)
        if decay:  # the other decay rule would give other weights: the test tells them apart
            assert not torch.allclose(p.detach().double(), other, rtol=1e-4, atol=1e-5)


def test_fp16_is_cuda_only():
    with pytest.raises(ValueError, match="CUDA only"):
        tr.setup_env(TrainConfig(device="cpu", dtype="fp16"))
    assert tr.setup_env(TrainConfig(device="cpu")).dtype == torch.float32
    assert tr.setup_env(TrainConfig(device="cpu", dtype="bf16")).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        tr.setup_env(TrainConfig(device="cpu", dtype="fp8"))


def test_resuming_a_run_saved_before_recipes_is_refused_under_the_seed_recipe():
    old = {k: v for k, v in TrainConfig(run_id="r").to_dict().items()
           if k not in ("recipe", "optimizer", "schedule")}
    with pytest.raises(ValueError, match="recipe"):
        tr.check_resumable(old, TrainConfig(run_id="r"))
    tr.check_resumable(old, TrainConfig(run_id="r", recipe="pilehouse"))

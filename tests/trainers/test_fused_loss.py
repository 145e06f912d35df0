"""trainers/fused_loss.py: the chunked projection + cross-entropy against the plain logits path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainers.fused_loss import linear_cross_entropy_sum


def case(device: str = "cpu", rows: int = 300, d: int = 32, vocab: int = 1000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, d, generator=g).to(device).requires_grad_()
    weight = (0.1 * torch.randn(vocab, d, generator=g)).to(device).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=g)
    targets[::3] = -100  # rows without a target: no loss, no gradient
    return hidden, weight, targets.to(device)


def plain(hidden, weight, targets):
    loss = F.cross_entropy(hidden @ weight.T, targets, ignore_index=-100, reduction="sum")
    return loss, *torch.autograd.grad(loss, (hidden, weight))


@pytest.mark.parametrize("chunk", [7, 64, 1024])
def test_same_loss_and_gradients_as_the_plain_path(chunk):
    hidden, weight, targets = case()
    want, want_h, want_w = plain(hidden, weight, targets)
    got = linear_cross_entropy_sum(hidden, weight, targets, chunk=chunk)
    got_h, got_w = torch.autograd.grad(3.0 * got, (hidden, weight))  # the upstream scale is applied
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    assert torch.allclose(got_h, 3.0 * want_h, atol=1e-5)
    assert torch.allclose(got_w, 3.0 * want_w, atol=1e-5)
    assert not got_h[::3].any()  # ignored rows get exactly zero gradient


def test_deterministic_and_no_grad():
    hidden, weight, targets = case(seed=1)
    a = torch.autograd.grad(linear_cross_entropy_sum(hidden, weight, targets), weight)[0]
    b = torch.autograd.grad(linear_cross_entropy_sum(hidden, weight, targets), weight)[0]
    assert torch.equal(a, b)
    want = float(plain(hidden, weight, targets)[0])
    with torch.no_grad():
        assert float(linear_cross_entropy_sum(hidden, weight, targets)) == pytest.approx(want, rel=1e-6)
    all_ignored = torch.full_like(targets, -100)
    assert float(linear_cross_entropy_sum(hidden, weight, all_ignored)) == 0.0


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_dtypes_close_to_fp32(dtype):
    hidden, weight, targets = case("cuda")
    want, want_h, want_w = plain(hidden, weight, targets)
    got = linear_cross_entropy_sum(hidden, weight, targets, mm_dtype=dtype)
    got_h, got_w = torch.autograd.grad(got, (hidden, weight))
    assert got.dtype == torch.float32 and got_h.dtype == got_w.dtype == torch.float32
    assert float(got) == pytest.approx(float(want), rel=2e-2)
    assert torch.allclose(got_w, want_w, atol=5e-2, rtol=5e-2)

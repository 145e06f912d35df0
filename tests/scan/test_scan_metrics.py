"""Tests for the scan's metrics and batched forward passes (python_udfs.scan.metrics).

The batched scan shares one forward pass between a window's long prompt and the previous
window's short prompt; every reported number must equal the definition computed with two
separate unbatched forward passes per window, for a tiny random GPT-NeoX and for the real
SmolLM2-135M (its own tokenizer), across batch boundaries and sequence ends.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs.scan.metrics import METRICS, naive_window_metrics, scan_windows, window_metrics  # noqa: E402

TOL = 1e-5

from python_udfs import hardware  # noqa: E402

# On CPUs with AMX tiles (Sapphire Rapids), SmolLM2's float32 scan differs in the 6th digit
# between batch sizes and thread counts (the matmul kernels differ per shape); AVX-512 and AVX2
# machines give identical numbers. Known, not yet fixed: docs/reliability.md.
AMX_FP32_DRIFT = pytest.mark.xfail(
    "amx_tile" in hardware.cpu_flags(), strict=False,
    reason="float32 SmolLM2 scan is not batch/thread invariant on AMX CPUs (matmul kernels per shape)")


def check_against_naive(scan_model, texts, batch_size):
    sequences = [a[:40] for a in scan_model.encode_batch(texts)]
    got = scan_windows(scan_model.lm, sequences, seq_len=4, batch_size=batch_size)
    expected_windows = sum(max(0, len(s) - 4) for s in sequences)
    assert len(got["p_long"]) == expected_windows
    rng = np.random.default_rng(0)
    picks = set(rng.choice(expected_windows, size=min(12, expected_windows), replace=False).tolist())
    # always the edges: first window, the last window of each sequence (filler row), batch seams
    ends = np.nonzero(np.diff(got["seq_index"]))[0]
    picks |= {0, expected_windows - 1, *ends.tolist(), *(ends + 1).tolist()}
    picks |= {i for i in range(expected_windows) if i % batch_size in (0, batch_size - 1)}
    for i in sorted(picks):
        s, pos = int(got["seq_index"][i]), int(got["position"][i])
        want = naive_window_metrics(scan_model.lm, sequences[s], pos)
        for k in METRICS:
            if k.endswith("_id"):
                assert int(got[k][i]) == int(want[k]), (k, i)
            else:
                assert abs(float(got[k][i]) - float(want[k])) <= TOL, (k, i, float(got[k][i]), float(want[k]))
    return got, sequences


def test_windows_positions_and_counts(tiny):
    sequences = [np.arange(10, 19), np.arange(5, 9), np.arange(100, 105), np.arange(3)]  # 9, 4, 5, 3 tokens
    got = scan_windows(tiny.lm, sequences, seq_len=4, batch_size=3)
    assert got["seq_index"].tolist() == [0] * 5 + [2]
    assert got["position"].tolist() == [0, 1, 2, 3, 4, 0]
    empty = scan_windows(tiny.lm, [np.arange(4)], seq_len=4)
    assert all(len(v) == 0 for v in empty.values())


@pytest.mark.parametrize("batch_size", [1, 5, 256])
def test_batched_equals_two_unbatched_passes_tiny(tiny, texts, batch_size):
    check_against_naive(tiny, texts, batch_size)


@AMX_FP32_DRIFT
def test_batched_equals_two_unbatched_passes_smollm2(smollm2, texts):
    got, sequences = check_against_naive(smollm2, texts, batch_size=7)
    assert float(np.max(got["p_long"])) > 0.5  # real text gives confident predictions


def test_metric_definitions_by_hand():
    short = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    long = torch.tensor([[0.0, 3.0, -1.0, 0.5]])
    got = {k: v.item() for k, v in window_metrics(short, long).items()}
    ps = np.exp(short[0].numpy()) / np.exp(short[0].numpy()).sum()
    pl = np.exp(long[0].numpy()) / np.exp(long[0].numpy()).sum()
    kl_sl, kl_ls = (ps * np.log(ps / pl)).sum(), (pl * np.log(pl / ps)).sum()
    m = (ps + pl) / 2
    jsd = 0.5 * (ps * np.log(ps / m)).sum() + 0.5 * (pl * np.log(pl / m)).sum()
    assert got["js"] == pytest.approx((kl_sl + kl_ls) / 2, rel=1e-5)  # the catalog's "js": symmetric KL
    assert got["jensen_shannon"] == pytest.approx(jsd, rel=1e-5)
    assert 0 <= got["jensen_shannon"] <= math.log(2)
    assert got["p_short"] == pytest.approx(ps.max(), rel=1e-6) and got["short_max_id"] == 0
    assert got["p_long"] == pytest.approx(pl.max(), rel=1e-6) and got["long_max_id"] == 1
    assert got["p_delta_max"] == pytest.approx(np.abs(ps - pl).max(), rel=1e-6)
    assert got["logit_excite_max"] == pytest.approx(3.0) and got["logit_inhibit_max"] == pytest.approx(2.0)
    same = window_metrics(short, short)
    assert same["js"].item() == pytest.approx(0, abs=1e-7)
    assert same["jensen_shannon"].item() == pytest.approx(0, abs=1e-7)


@AMX_FP32_DRIFT
def test_same_numbers_whatever_the_threads_or_batch_size(smollm2, texts):
    """Determinism: the scan's table must not depend on torch's thread count or the batch size."""
    sequences = [a[:48] for a in smollm2.encode_batch(texts)]
    threads = torch.get_num_threads()
    try:
        results = []
        for n_threads, batch_size in ((1, 7), (2, 256)):
            torch.set_num_threads(n_threads)
            results.append(scan_windows(smollm2.lm, sequences, batch_size=batch_size))
    finally:
        torch.set_num_threads(threads)
    for k in METRICS:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)

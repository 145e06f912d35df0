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


@pytest.mark.parametrize("model", ["tiny", "smollm2"])
def test_first_token_cache_is_used_and_equals_the_plain_pass(model, request, texts, monkeypatch):
    """Each chunk's distinct first tokens run once; the cached rows give the plain pass's numbers,
    in one chunk or many (chunks of 3 rows, batches of 2: a chunk ends inside no batch)."""
    from python_udfs.scan import metrics

    scan_model = request.getfixturevalue(model)
    sequences = [a[:40] for a in scan_model.encode_batch(texts)]
    n_rows = sum(len(s) - 3 for s in sequences if len(s) >= 5)  # a row per window, and a filler row at each end
    seen = {"prefix_tokens": 0, "cached_rows": 0}
    real_states, real_cached = metrics._first_token_states, metrics._cached_last_logits

    def states(lm, tokens, batch_tokens):
        seen["prefix_tokens"] += len(tokens)
        return real_states(lm, tokens, batch_tokens)

    def cached(lm, rows, *args):
        seen["cached_rows"] += len(rows)
        return real_cached(lm, rows, *args)

    monkeypatch.setattr(metrics, "_first_token_states", states)
    monkeypatch.setattr(metrics, "_cached_last_logits", cached)
    plain = scan_windows(scan_model.lm, sequences, batch_size=8, prefix_cache=False)
    assert seen == {"prefix_tokens": 0, "cached_rows": 0}
    one_chunk = scan_windows(scan_model.lm, sequences, batch_size=8)
    distinct = len({int(s[j]) for s in sequences if len(s) >= 5 for j in range(len(s) - 3)})
    assert seen["prefix_tokens"] == distinct < n_rows  # real text repeats first tokens
    assert seen["cached_rows"] >= n_rows  # every row (and the probe's) through the cache
    assert metrics.model_tokens(scan_model.lm, sequences, batch_size=8) == n_rows * 4 + distinct
    assert metrics.model_tokens(scan_model.lm, sequences, prefix_cache=False) == n_rows * 5
    many = scan_windows(scan_model.lm, sequences, batch_size=2, prefix_rows=3)
    for k in METRICS:
        np.testing.assert_allclose(one_chunk[k], plain[k], rtol=1e-5, atol=TOL, err_msg=k)
        np.testing.assert_allclose(many[k], plain[k], rtol=1e-5, atol=TOL, err_msg=k)
    for k in ("seq_index", "position", "short_max_id", "long_max_id"):
        assert np.array_equal(one_chunk[k], plain[k]) and np.array_equal(many[k], plain[k]), k


def test_a_model_whose_cache_disagrees_is_scanned_the_plain_way(tiny, texts, monkeypatch):
    """The probe compares the cached and plain passes on a call's first rows: a model whose cache
    gives other logits (here: the cached pass made wrong on purpose) is scanned without it."""
    from python_udfs.scan import metrics

    sequences = [a[:40] for a in tiny.encode_batch(texts)]
    plain = scan_windows(tiny.lm, sequences, batch_size=8, prefix_cache=False)
    real_cached, used = metrics._cached_last_logits, []

    def off_by_one(lm, rows, *args):
        used.append(len(rows))
        return real_cached(lm, rows, *args) + 1.0

    monkeypatch.setattr(metrics, "_cached_last_logits", off_by_one)
    got = scan_windows(tiny.lm, sequences, batch_size=8)
    assert used == [4]  # the probe only
    for k in METRICS:
        np.testing.assert_array_equal(got[k], plain[k], err_msg=k)


def test_a_model_without_a_usable_cache_is_scanned_the_plain_way(tiny, texts, monkeypatch):
    """A model whose first-token pass fails (no base model, another cache class) is scanned without it."""
    from python_udfs.scan import metrics

    sequences = [a[:40] for a in tiny.encode_batch(texts)]
    plain = scan_windows(tiny.lm, sequences, batch_size=8, prefix_cache=False)

    def no_cache(*args):
        raise AttributeError("this model has no key-value cache")

    monkeypatch.setattr(metrics, "_first_token_states", no_cache)
    got = scan_windows(tiny.lm, sequences, batch_size=8)
    for k in METRICS:
        np.testing.assert_array_equal(got[k], plain[k], err_msg=k)

"""The scan on a CUDA device (make test-gpu; skipped without CUDA): bfloat16 weights with SDPA attention.

k-means has no torch path (its assignment is numpy/BLAS on the CPU), so it has no GPU test.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs.scan.metrics import METRICS, naive_window_metrics, scan_windows  # noqa: E402
from python_udfs.scan.model import load_scan_model  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def on_gpu():
    return load_scan_model("smollm2", device="cuda")


def test_gpu_default_is_bf16_with_sdpa(on_gpu):
    import torch

    assert on_gpu.dtype == "bfloat16" and on_gpu.device.type == "cuda"
    assert next(on_gpu.lm.parameters()).dtype == torch.bfloat16
    assert on_gpu.lm.config._attn_implementation == "sdpa"


def test_gpu_fp32_equals_cpu_fp32(smollm2, texts):
    gpu32 = load_scan_model("smollm2", device="cuda", dtype="float32")
    sequences = [a[:48] for a in smollm2.encode_batch(texts)]
    cpu = scan_windows(smollm2.lm, sequences, batch_size=16)
    gpu = scan_windows(gpu32.lm, sequences, batch_size=16)
    for k in ("seq_index", "position"):
        np.testing.assert_array_equal(cpu[k], gpu[k])
    for k in ("p_short", "p_long", "p_delta_max"):
        np.testing.assert_allclose(gpu[k], cpu[k], atol=2e-3, err_msg=k)


def test_gpu_bf16_batched_equals_its_unbatched_passes_and_keeps_fp32s_windows(on_gpu, smollm2, texts):
    sequences = [a[:64] for a in on_gpu.encode_batch(texts)]
    got = scan_windows(on_gpu.lm, sequences, batch_size=32)
    for i in range(0, len(got["position"]), 7):  # the definition, on the same device and dtype
        want = naive_window_metrics(on_gpu.lm, sequences[got["seq_index"][i]], int(got["position"][i]))
        assert abs(float(got["p_long"][i]) - float(want["p_long"])) < 0.05
    exact = scan_windows(smollm2.lm, sequences, batch_size=32)
    assert all(len(got[k]) == len(exact[k]) for k in METRICS)
    assert float(np.abs(got["p_long"] - exact["p_long"]).max()) < 0.1
    keep16 = (got["p_long"] > 0.5) & (got["js"] > 0.5)
    keep32 = (exact["p_long"] > 0.5) & (exact["js"] > 0.5)
    either = int((keep16 | keep32).sum())
    assert either == 0 or (keep16 & keep32).sum() / either >= 0.8

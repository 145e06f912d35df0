"""The scan's dtype when scan_dtype is null: bfloat16 only where it is native (GPU, AMX/AVX-512 BF16 CPUs)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs import hardware  # noqa: E402
from python_udfs.scan import model as scan_model  # noqa: E402

AVX2_EPYC = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})
SAPPHIRE_RAPIDS = AVX2_EPYC | {"avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"}


@pytest.fixture
def flags(monkeypatch):
    def use(values):
        monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset(values))

    return use


@pytest.mark.parametrize(("cpu", "want"), [
    (AVX2_EPYC, "float32"),
    (AVX2_EPYC | {"avx512f", "avx512_vnni"}, "float32"),  # AVX-512 without BF16 converts: no gain
    (AVX2_EPYC | {"avx512f", "avx512_bf16"}, "bfloat16"),
    (AVX2_EPYC | {"amx_tile", "amx_bf16"}, "bfloat16"),
    (SAPPHIRE_RAPIDS, "bfloat16"),
    (frozenset(), "float32"),  # no /proc/cpuinfo: the exact path
])
def test_cpu_picks_bf16_only_with_native_support(flags, cpu, want):
    flags(cpu)
    assert scan_model.default_dtype("cpu") == want


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_gpu_picks_bf16_whatever_the_cpu(flags, device):
    flags(AVX2_EPYC)
    assert scan_model.default_dtype(device) == "bfloat16"


def test_cpu_flags_read_this_machine():
    found = hardware.cpu_flags()
    assert isinstance(found, frozenset)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            line = next(line for line in fh if line.startswith("flags"))
    except (OSError, StopIteration):
        return
    assert found == frozenset(line.split(":", 1)[1].split())


def test_load_follows_the_selection_and_an_explicit_dtype_wins(flags, tiny):
    import torch

    flags(AVX2_EPYC)
    plain = scan_model.load_scan_model(tiny.source, device="cpu")
    assert plain.dtype == "float32" and next(plain.lm.parameters()).dtype == torch.float32
    flags(SAPPHIRE_RAPIDS)
    fast = scan_model.load_scan_model(tiny.source, device="cpu")
    assert fast.dtype == "bfloat16" and next(fast.lm.parameters()).dtype == torch.bfloat16
    assert fast.load_args["dtype"] == "bfloat16"  # a worker rebuilds the same model
    exact = scan_model.load_scan_model(tiny.source, device="cpu", dtype="float32")
    assert exact.dtype == "float32"

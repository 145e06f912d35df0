"""python_udfs.hardware: one answer to "what does this CPU offer" for every fast path."""

from __future__ import annotations

import pytest

from python_udfs import hardware

EPYC_AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})


@pytest.mark.parametrize(("flags", "native"), [
    (EPYC_AVX2, False),
    (EPYC_AVX2 | {"avx512f", "avx512_vnni"}, False),
    (EPYC_AVX2 | {"avx512f", "avx512_bf16"}, True),
    (EPYC_AVX2 | {"amx_tile", "amx_bf16"}, True),
    (frozenset(), False),
])
def test_native_bf16_from_flags(flags, native):
    assert hardware.native_bf16(flags) is native
    assert hardware.default_float_dtype("cpu", flags) == ("bfloat16" if native else "float32")
    assert hardware.default_float_dtype("cuda:0", flags) == "bfloat16"


def test_cpu_info_reads_the_first_processor():
    model, flags = hardware.cpu_info()
    assert isinstance(model, str) and model
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        assert flags == frozenset()
        return
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    if names:
        assert model == names[0]
    first = next((line for line in lines if line.startswith("flags")), None)
    assert flags == (frozenset(first.split(":", 1)[1].split()) if first else frozenset())


def test_every_consumer_asks_the_same_helper(monkeypatch):
    pytest.importorskip("torch")
    from bench import machine
    from python_udfs.scan import model as scan_model
    from trainers import train

    for flags, want in ((EPYC_AVX2, False), (EPYC_AVX2 | {"amx_bf16"}, True)):
        monkeypatch.setattr(hardware, "cpu_flags", lambda flags=flags: flags)
        assert train.cpu_has_bf16() is want
        assert scan_model.default_dtype("cpu") == ("bfloat16" if want else "float32")
    assert machine.machine()["cpu_model"] == hardware.cpu_info()[0]

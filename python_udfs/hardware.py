"""What this machine's CPU offers, read once: every fast path that depends on it asks here.

One place for the question "does this CPU multiply bf16 natively?" (the scan's dtype, the
trainer's warning, the benchmarks' machine record), so the answer cannot differ between steps.
Machines of the same kind differ: some have AMX and AVX-512 BF16, others (AMD EPYC, AVX2 only)
run bf16 through conversions, about 2x slower than float32.
"""

from __future__ import annotations

import platform
from functools import lru_cache

#: CPU flags of native bfloat16 matmuls (AMX tiles, AVX-512 BF16).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

#: CPU flags of int8 dot-product instructions (VNNI, AMX): where int8 matmuls run about twice
#: as fast as float32 FMAs. AVX2 alone multiplies int8 through 16-bit pairs that saturate
#: (``vpmaddubsw``): measured on a 2-core AVX2 EPYC, ONNX Runtime's int8 model was 1.29-1.78x
#: ``SentenceTransformer.encode`` fp32 with a min cosine of 0.990-0.992 (the line is 0.99), against
#: 1.18-1.39x and 1.0000 for its fp32 graph.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")

#: CPU flags that change what a benchmark measures (vector width, bf16, VNNI int8 and AMX matmuls).
PERFORMANCE_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16",
                     "amx_int8")


@lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and flags from /proc/cpuinfo (the platform's name and no flags
    where there is none, e.g. macOS: every fast path then takes its exact fallback)."""
    model, flags, named = platform.processor() or platform.machine(), frozenset(), False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip() and not named:
                    model, named = value.strip(), True
                elif key.strip() == "flags" and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_flags() -> frozenset[str]:
    """The CPU's flags (empty where /proc/cpuinfo is missing)."""
    return cpu_info()[1]


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU multiplies bfloat16 natively (``NATIVE_BF16_FLAGS``)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def fast_int8(flags: frozenset[str] | None = None) -> bool:
    """True where the CPU has int8 dot-product instructions (``INT8_DOT_FLAGS``)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in INT8_DOT_FLAGS)


def default_float_dtype(device: str, flags: frozenset[str] | None = None) -> str:
    """``bfloat16`` on a GPU or a CPU with native bf16 matmuls, ``float32`` everywhere else."""
    if not str(device).startswith("cpu"):
        return "bfloat16"
    return "bfloat16" if native_bf16(flags) else "float32"

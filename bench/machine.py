"""The machine a benchmark ran on, recorded with its results (numbers mean little without it)."""

from __future__ import annotations

import os
import platform
from importlib import metadata

from python_udfs.hardware import PERFORMANCE_FLAGS as FLAGS
from python_udfs.hardware import cpu_info

PACKAGES = ("torch", "ray", "duckdb", "pyarrow", "numpy", "scikit-learn", "sentence-transformers", "tokenizers")


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None
    return None


def machine(torch_threads: int | None = None) -> dict:
    """CPU model and flags, cores, memory, load, package versions (no heavy imports: torch's
    thread count is passed in by whoever imported torch)."""
    model, flags = cpu_info()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": model,
        "cpu_flags": [flag for flag in FLAGS if flag in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "memory_gib": _memory_gib(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }

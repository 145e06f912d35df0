"""What every benchmark writes, and the one table ``make bench`` prints.

Each benchmark measures its contestant and a named baseline in the same run and records one
or more :class:`Ratio` rows with :func:`write`: ``bench/results/NAME.json`` holds the
machine (``bench.machine.machine``), the rows and the time. ``python -m bench.results``
(the last step of ``make bench``) reads every file there and prints one summary table:
step, metric, contestant, baseline, ratio, target, fidelity check, and the distance to
the machine's measured peak where the benchmark measured one (:func:`matmul_peak`,
:func:`memory_bandwidth`).

Ratios compare two numbers from one run on one machine; absolute times are printed for
reading, never compared across runs or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.machine import machine

RESULTS_DIR = Path(os.environ.get("PILEHOUSE_BENCH_RESULTS", "bench/results"))


@dataclass
class Ratio:
    """One row of the summary: a contestant against its baseline, measured in the same run.

    step: the pipeline step (``embedding``, ``tokenization``, ``counting``, ...).
    metric: what is measured, with its unit (``docs/s``, ``MB/s``, ``tokens/s/core``).
    contestant / baseline: names of what ran (the baseline is named, e.g.
        ``SentenceTransformer.encode fp32``).
    value / baseline_value: the two measurements, in ``metric``'s unit.
    target: the ratio the issue asks for (``value / baseline_value >= target``), or None.
    fidelity: what was checked that the contestant computes the same thing (e.g.
        ``{"min_cosine": 0.993, "mean_cosine": 0.998, "kmeans_agreement": 0.985}``).
    fidelity_ok: whether those checks passed their thresholds.
    achieved / peak / peak_unit: the work rate reached and the machine's measured peak
        for it (GFLOP/s against a matmul of the same shapes, GB/s against memory
        bandwidth), where it applies.
    higher_is_better: False for metrics such as seconds or bytes.
    """

    step: str
    metric: str
    contestant: str
    baseline: str
    value: float
    baseline_value: float
    target: float | None = None
    fidelity: dict = field(default_factory=dict)
    fidelity_ok: bool = True
    achieved: float | None = None
    peak: float | None = None
    peak_unit: str | None = None
    higher_is_better: bool = True
    note: str = ""

    @property
    def ratio(self) -> float:
        if not self.baseline_value or not self.value:
            return float("nan")
        return self.value / self.baseline_value if self.higher_is_better else self.baseline_value / self.value

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return bool(self.ratio >= self.target and self.fidelity_ok)

    def as_dict(self) -> dict:
        row = asdict(self)
        row["ratio"] = round(self.ratio, 4)
        row["met"] = self.met
        return row


def write(name: str, rows: list[Ratio], extra: dict | None = None, torch_threads: int | None = None) -> Path:
    """Write ``RESULTS_DIR/name.json`` (machine, rows, time) and print the rows."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    if torch_threads is None:
        try:
            import sys

            if "torch" in sys.modules:
                torch_threads = sys.modules["torch"].get_num_threads()
        except Exception:  # noqa: BLE001 - the machine record is best effort
            torch_threads = None
    payload = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "machine": machine(torch_threads), "rows": [r.as_dict() for r in rows],
               **({"extra": extra} if extra else {})}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(format_table([payload]))
    print(f"wrote {path}")
    return path


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def _fidelity(row: dict) -> str:
    parts = []
    for key, value in row.get("fidelity", {}).items():
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    text = ", ".join(parts) or "-"
    return ("ok: " if row.get("fidelity_ok", True) else "FAILED: ") + text if parts else text


def format_table(payloads: list[dict]) -> str:
    """One Markdown table of every row of every payload (the README's performance table)."""
    header = ("| step | metric | contestant | baseline | value | baseline value | ratio | target | met "
              "| % of peak | fidelity |")
    lines = [header, "|" + "---|" * 11]
    for payload in payloads:
        for row in payload["rows"]:
            peak = ""
            if row.get("achieved") is not None and row.get("peak"):
                peak = f"{100 * row['achieved'] / row['peak']:.0f}% of {_fmt(row['peak'])} {row.get('peak_unit') or ''}"
            target = f">= {row['target']:g}x" if row.get("target") is not None else "-"
            met = {True: "yes", False: "**no**", None: "-"}[row.get("met")]
            lines.append(
                f"| {row['step']} | {row['metric']} | {row['contestant']} | {row['baseline']} "
                f"| {_fmt(row['value'])} | {_fmt(row['baseline_value'])} | {row['ratio']:.2f}x | {target} "
                f"| {met} | {peak.strip() or '-'} | {_fidelity(row)} |"
            )
    return "\n".join(lines)


def load_all(directory: Path = RESULTS_DIR) -> list[dict]:
    if not directory.is_dir():
        return []
    payloads = []
    for path in sorted(directory.glob("*.json")):
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            print(f"skipping {path}: {err}")
            continue
        if isinstance(payload, dict) and isinstance(payload.get("rows"), list) and payload.get("benchmark") \
                and all(isinstance(row, dict) and "ratio" in row for row in payload["rows"]):
            payloads.append(payload)  # ratio rows only: bench-scale's timings (scale.json) have their own tables
    return payloads


# --- the machine's peaks, measured in the run that uses them --------------------------

def matmul_peak(m: int, k: int, n: int, dtype: str = "float32", repeats: int = 5) -> float:
    """GFLOP/s of numpy's ``(m, k) @ (k, n)`` on this machine now: the best of ``repeats``."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32).astype(dtype)
    b = rng.standard_normal((k, n), dtype=np.float32).astype(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best / 1e9


def torch_matmul_peak(m: int, k: int, n: int, dtype: str = "float32", repeats: int = 5,
                      device: str = "cpu") -> float:
    """GFLOP/s of ``torch.mm`` of the given shapes and dtype on ``device``: the best of ``repeats``."""
    import torch

    a = torch.randn(m, k, device=device).to(getattr(torch, dtype))
    b = torch.randn(k, n, device=device).to(getattr(torch, dtype))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n / best / 1e9


def memory_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """GB/s of a numpy copy of ``mib`` MiB (read + write bytes): the best of ``repeats``."""
    import numpy as np

    src = np.ones(mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.nbytes / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description="the summary table of every benchmark result in bench/results/")
    parser.add_argument("--dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    payloads = load_all(args.dir)
    if not payloads:
        raise SystemExit(f"no benchmark results in {args.dir}: run make bench (or pilehouse bench NAME) first")
    machines = {json.dumps(p["machine"].get("cpu_model")) + str(p["machine"].get("cpu_flags")) for p in payloads}
    for payload in payloads:
        m = payload["machine"]
        print(f"{payload['benchmark']}: {payload.get('time', 'time not recorded')} on {m.get('cpu_model')} "
              f"({m.get('cores')} cores, flags {' '.join(m.get('cpu_flags') or []) or 'none'})")
    if len(machines) > 1:
        print("note: these results come from more than one machine; compare ratios within a row only")
    print()
    print(format_table(payloads))


if __name__ == "__main__":
    main()

"""The one part runner: every resumable step goes through ``run_step``.

It owns, for every step alike:
- the fingerprint check: a part whose file carries the same fingerprint (its input's
  content digest plus the step's settings) is reused, never recomputed;
- handing the other parts to an executor (``local`` here; ``ray`` for clusters), which
  computes and writes each atomically (``runner.parts.write_atomic``);
- stale-part cleanup: parts past the end of a shorter input and torn temporaries go;
- one progress bar per step: rows, parts computed and reused, throughput;
- the error: a failing part raises ``PartFailed`` naming the step, the part and its file,
  and every part finished before it stays on disk for the next run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from python_udfs.runner.executors import Executor, PartFailed, PartResult, get_executor
from python_udfs.runner.parts import existing_fingerprint, part_info, remove_stale
from python_udfs.runner.step import Part, Step


@dataclass
class RunStats:
    """What a step did: parts and rows computed now and reused from the lake."""

    step: str
    parts: int = 0
    computed_parts: int = 0
    reused_parts: int = 0
    computed: int = 0  # rows (units) computed now
    reused: int = 0  # rows (units) of reused parts
    seconds: float = 0.0
    executor: str = "local"
    indices: list[int] = field(default_factory=list)  # every part's index, in part order
    paths: list[Path] = field(default_factory=list)  # every part file, in part order
    fingerprints: list[str] = field(default_factory=list)  # every part's fingerprint, in part order

    def __getitem__(self, key: str):  # the older dict-style stats, e.g. stats["computed"]
        return getattr(self, key)

    def manifest(self) -> pa.Table:
        """One row per part (part_index, path, n_rows, fingerprint): what a dbt model keeps in
        the DuckDB file instead of the rows, which stay in the lake. Rows come from the footers."""
        rows = [part_info(path)[0] for path in self.paths]
        return pa.table({
            "part_index": pa.array(self.indices, pa.int64()),
            "path": pa.array([str(path) for path in self.paths], pa.string()),
            "n_rows": pa.array(rows, pa.int64()),
            "fingerprint": pa.array(self.fingerprints, pa.string()),
        })

    def summary(self) -> str:
        return (f"{self.step}: {self.parts} parts ({self.computed_parts} computed, {self.reused_parts} reused), "
                f"{self.computed} computed / {self.reused} reused rows in {self.seconds:.1f} s "
                f"[{self.executor}]")


class _Progress:
    def __init__(self, step: Step, total: int | None, enabled: bool, executor: str) -> None:
        self.bar = None
        self.started = time.perf_counter()
        self.computed = self.reused = self.parts_computed = self.parts_reused = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"{step.name} [{executor}]", unit=step.unit,
                            file=sys.stderr, mininterval=1.0, dynamic_ncols=True)

    def advance(self, n: int, reused: bool) -> None:
        if reused:
            self.reused += n
            self.parts_reused += 1
        else:
            self.computed += n
            self.parts_computed += 1
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix(computed=self.parts_computed, reused=self.parts_reused,
                                 rate=f"{self.computed / elapsed:.1f}/s", refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_step(
    step: Step,
    parts: Iterable[Part],
    executor: str | Executor | None = None,
    total: int | None = None,
    progress: bool = True,
) -> RunStats:
    """Bring ``step.out_dir`` up to date with ``parts``; returns what was computed and reused.

    ``parts`` is consumed lazily (a Pile-sized input never sits in memory); an executor may
    finish parts out of order. A part that fails raises ``PartFailed``; parts that finished
    stay, so the next run resumes. ``executor`` is a name (``local``, the default) or an
    ``Executor``; one given by name is closed at the end.
    """
    out_dir = Path(step.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = get_executor(executor)
    stats = RunStats(step=step.name, executor=runner.name)
    bar = _Progress(step, total, progress, runner.name)
    pending: dict[int, int] = {}  # handed to the executor, no result yet: index -> size
    fingerprints: dict[int, str] = {}
    indices: list[int] = []
    started = time.perf_counter()

    def todo() -> Iterator[tuple[Part, str]]:
        for part in parts:
            if indices and part.index <= indices[-1]:
                raise ValueError(f"step {step.name!r}: part indices must increase ({part.index} after {indices[-1]})")
            indices.append(part.index)
            fingerprint = fingerprints[part.index] = part.fingerprint(step)
            path = step.part_path(part.index)
            if path.exists() and existing_fingerprint(path) == fingerprint:
                bar.advance(part.size, reused=True)
                continue
            pending[part.index] = part.size
            yield part, fingerprint

    try:
        result: PartResult
        for result in runner.run(step, todo()):
            if result.index not in pending:
                raise RuntimeError(f"step {step.name!r}: executor {runner.name!r} returned part {result.index}, "
                                   "which it was not given or returned twice")
            bar.advance(pending.pop(result.index) or result.rows_in, reused=False)
    finally:
        bar.close()
        if isinstance(executor, str) or executor is None:
            runner.close()
    if pending:  # an executor that lost parts must not pass for a finished step
        index = min(pending)
        raise PartFailed(step.name, index, step.part_path(index),
                         f"executor {runner.name!r} returned no result for parts {sorted(pending)}")
    if not step.keep_stale:
        remove_stale(out_dir, (indices[-1] + 1) if indices else 0)
    stats.parts = len(indices)
    stats.computed_parts, stats.reused_parts = bar.parts_computed, bar.parts_reused
    stats.computed, stats.reused = bar.computed, bar.reused
    stats.seconds = time.perf_counter() - started
    stats.indices = list(indices)
    stats.paths = [step.part_path(i) for i in indices]
    stats.fingerprints = [fingerprints[i] for i in indices]
    return stats

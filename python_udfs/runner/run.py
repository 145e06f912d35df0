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

from python_udfs.runner.executors import Executor, PartResult, get_executor
from python_udfs.runner.parts import existing_fingerprint, remove_stale
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
    paths: list[Path] = field(default_factory=list)  # every part file, in part order

    def __getitem__(self, key: str):  # the older dict-style stats, e.g. stats["computed"]
        return getattr(self, key)

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
    stay, so the next run resumes.
    """
    out_dir = Path(step.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runner = get_executor(executor)
    stats = RunStats(step=step.name, executor=runner.name)
    bar = _Progress(step, total, progress, runner.name)
    sizes: dict[int, int] = {}
    indices: list[int] = []
    started = time.perf_counter()

    def todo() -> Iterator[tuple[Part, str]]:
        for part in parts:
            if indices and part.index <= indices[-1]:
                raise ValueError(f"step {step.name!r}: part indices must increase ({part.index} after {indices[-1]})")
            indices.append(part.index)
            fingerprint = part.fingerprint(step)
            path = step.part_path(part.index)
            if path.exists() and existing_fingerprint(path) == fingerprint:
                bar.advance(part.size, reused=True)
                continue
            sizes[part.index] = part.size
            yield part, fingerprint

    try:
        result: PartResult
        for result in runner.run(step, todo()):
            bar.advance(sizes.pop(result.index, result.rows_in), reused=False)
    finally:
        bar.close()
        if isinstance(executor, str) or executor is None:
            runner.close()
    if not step.keep_stale:
        remove_stale(out_dir, (indices[-1] + 1) if indices else 0)
    stats.parts = len(indices)
    stats.computed_parts, stats.reused_parts = bar.parts_computed, bar.parts_reused
    stats.computed, stats.reused = bar.computed, bar.reused
    stats.seconds = time.perf_counter() - started
    stats.paths = [step.part_path(i) for i in indices]
    return stats

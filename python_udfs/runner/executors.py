"""Executors: where a step's parts are computed.

An executor gets the parts that still need computing and returns one ``PartResult`` per
part, in any order. Each part is computed *and written* where the executor runs it, by
``compute_part`` (the same atomic, fingerprinted writer everywhere), so only small results
travel back and a part written by one executor is reused by any other.

``local`` (the default; what CI and the README's commands use) computes the parts in this
process, in order, with one worker built once. The ``ray`` executor (issue 11) registers
itself in ``EXECUTORS`` the same way: one actor per GPU or CPU worker, each building its
worker once and computing many parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from python_udfs.runner.parts import write_atomic
from python_udfs.runner.step import Part, Step, Worker


@dataclass
class PartResult:
    """What travels back from a computed part (small: the part itself stays where it was written)."""

    index: int
    path: Path
    rows_in: int
    rows_out: int
    seconds: float


class PartFailed(RuntimeError):
    """A part could not be computed; the message names the step, the part and its output file.

    The fields travel with the error (``__reduce__``), so an executor that computes parts
    in another process can raise it on the driver unchanged.
    """

    def __init__(self, step: str, index: int, path: Path | str, reason: str) -> None:
        self.step, self.index, self.path, self.reason = step, index, Path(path), reason
        super().__init__(f"step {step!r}: part {index} -> {path} failed: {reason}")

    def __reduce__(self):
        return (PartFailed, (self.step, self.index, self.path, self.reason))


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def build_worker(step: Step, part: Part) -> Worker:
    """``step.make_worker()``; a failure (a model that will not load) names the part that needed it."""
    try:
        return step.make_worker()
    except Exception as err:
        raise PartFailed(step.name, part.index, step.part_path(part.index),
                         f"building the worker: {_reason(err)}") from err


def compute_part(worker: Worker, step: Step, part: Part, fingerprint: str) -> PartResult:
    """Compute one part and write it atomically, stamped with ``fingerprint``."""
    started = time.perf_counter()
    path = step.part_path(part.index)
    try:
        rows = part.input_rows()
        output = worker(rows)
        data, metadata = (output if isinstance(output, tuple) else (output, {}))
        if isinstance(data, pa.RecordBatch):
            data = pa.Table.from_batches([data])
        if not isinstance(data, pa.Table | pa.RecordBatchReader):
            raise TypeError(f"the worker returned {type(data).__name__}, not a pyarrow.Table or RecordBatchReader")
        Path(step.out_dir).mkdir(parents=True, exist_ok=True)
        rows_out = write_atomic(data, path, fingerprint, metadata, **step.parquet)
    except Exception as err:
        raise PartFailed(step.name, part.index, path, _reason(err)) from err
    return PartResult(part.index, path, rows.num_rows, rows_out, time.perf_counter() - started)


class Executor(Protocol):
    """Computes parts, possibly elsewhere and out of order.

    ``run`` pulls (part, fingerprint) pairs from ``todo`` lazily (a Pile-sized input never
    sits in memory; a remote executor keeps a bounded number in flight), computes each with
    a worker built once per worker process (``build_worker``) and ``compute_part``, and
    yields one ``PartResult`` per part as it finishes. A part that fails raises
    ``PartFailed``; results already yielded stay on disk.
    """

    name: str

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        """Compute every (part, fingerprint) of ``todo``; yield results as parts finish."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """In this process, in part order; the worker is built once, on the first part to compute
    (a step whose parts are all on disk never loads its model)."""

    name = "local"

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        worker = None
        for part, fingerprint in todo:
            if worker is None:
                worker = build_worker(step, part)
            yield compute_part(worker, step, part, fingerprint)

    def close(self) -> None:
        pass


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}


def get_executor(executor: str | Executor | None = None, **options) -> Executor:
    """An executor by name (the ``executor`` dbt var / ``--executor`` flag), or one given as is."""
    if executor is None or executor == "":
        executor = "local"
    if not isinstance(executor, str):
        return executor
    if executor not in EXECUTORS:
        if executor == "ray":
            try:
                import python_udfs.runner.ray_executor  # noqa: F401  (registers "ray")
            except ImportError as err:
                raise ValueError(f"executor 'ray' is not available here: {err}") from err
        if executor not in EXECUTORS:
            raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(sorted(EXECUTORS))}")
    return EXECUTORS[executor](**options)


def _blank(value) -> bool:
    return value is None or str(value).strip() in ("", "None", "none", "null")


def make_executor(executor: str | None = None, ray_address: str | None = None,
                  ray_workers: int | str | None = None) -> Executor:
    """The executor the vars name (``executor``, ``ray_address``, ``ray_workers``).

    Python models and CLIs use this, so every step of one build runs on the executor the vars
    say: ``local`` ignores the Ray settings; ``ray`` joins ``ray_address`` or starts a local
    Ray with ``ray_workers`` CPUs (``python_udfs.runner.ray_executor``). An executor releases
    its workers at the end of each step it runs, so it needs no closing between steps.
    """
    name = "local" if _blank(executor) else str(executor).strip()
    options = {}
    if name == "ray":
        options = {"address": None if _blank(ray_address) else str(ray_address).strip(),
                   "workers": None if _blank(ray_workers) else int(float(str(ray_workers)))}
    return get_executor(name, **options)


@contextmanager
def open_executor(executor: str | None = None, ray_address: str | None = None,
                  ray_workers: int | str | None = None) -> Iterator[Executor]:
    """``make_executor``, closed afterwards (for CLIs)."""
    runner = make_executor(executor, ray_address, ray_workers)
    try:
        yield runner
    finally:
        runner.close()

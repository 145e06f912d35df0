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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from python_udfs.runner.parts import write_atomic
from python_udfs.runner.step import Part, Step, Worker


@dataclass
class PartResult:
    """What travels back from a computed part."""

    index: int
    path: Path
    rows_in: int
    rows_out: int
    seconds: float


class PartFailed(RuntimeError):
    """A part could not be computed; the message names the step, the part and its output file."""


def compute_part(worker: Worker, step: Step, part: Part, fingerprint: str) -> PartResult:
    """Compute one part and write it atomically, stamped with ``fingerprint``."""
    started = time.perf_counter()
    path = step.part_path(part.index)
    try:
        rows = part.input_rows()
        output = worker(rows)
        table, metadata = (output if isinstance(output, tuple) else (output, {}))
        if not isinstance(table, pa.Table):
            raise TypeError(f"the worker returned {type(table).__name__}, not a pyarrow.Table")
        Path(step.out_dir).mkdir(parents=True, exist_ok=True)
        write_atomic(table, path, fingerprint, metadata)
    except Exception as err:
        raise PartFailed(
            f"step {step.name!r}: part {part.index} -> {path} failed: {type(err).__name__}: {err}"
        ) from err
    return PartResult(part.index, path, rows.num_rows, table.num_rows, time.perf_counter() - started)


class Executor(Protocol):
    """Computes parts, possibly elsewhere and out of order."""

    name: str

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        """Compute every (part, fingerprint) of ``todo``; yield results as parts finish."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """In this process, in part order; the worker is built once, on the first part to compute."""

    name = "local"

    def __init__(self) -> None:
        self._workers: dict[int, Worker] = {}

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        worker = None
        for part, fingerprint in todo:
            if worker is None:
                worker = step.make_worker()
            yield compute_part(worker, step, part, fingerprint)

    def close(self) -> None:
        self._workers.clear()


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

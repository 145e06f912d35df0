"""A resumable step: a pure function over one part, plus the settings in its fingerprint.

A step never loops over parts itself: it says what one part is (``Part``: an index, the
rows or a way to load them, a fingerprint of its content) and how to compute it
(``Step.make_worker`` returns the function; it is called once per worker, so a model is
loaded once and then computes many parts). ``python_udfs.runner.run.run_step`` owns the
rest: which parts are already on disk, atomic writes, stale-part cleanup, the progress bar
and the error that names the failing part; an executor (``python_udfs.runner.executors``)
decides where the parts are computed.

Everything in a ``Step`` and a ``Part`` must pickle (module-level functions,
``functools.partial`` of them, plain data), so that another process or a Ray worker can
compute a part: no lambdas or closures over open connections.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

#: What a worker returns for one part: its output table (or a ``RecordBatchReader`` streaming
#: it, for a part larger than memory), optionally with extra parquet metadata: (table, {...}).
PartOutput = pa.Table | pa.RecordBatchReader | tuple[pa.Table | pa.RecordBatchReader, dict[str, str]]
#: A worker: rows of one part in, one Arrow table out (pure: same rows, same output).
Worker = Callable[[pa.Table], PartOutput]


@dataclass(frozen=True)
class Step:
    """One resumable step.

    name: shown in the progress bar and in errors (``embed``, ``tokenize`` ...).
    out_dir: where ``part-{index:06d}.parquet`` files go.
    settings: JSON-serialisable settings that change the output (model, max_tokens ...);
        they go into every part's fingerprint, so changing one recomputes every part.
    make_worker: builds the per-part function; called once per worker process.
    unit: what the progress bar counts (``doc``, ``seq``, ``shard`` ...).
    keep_stale: leave parts numbered past the last part alone (a step whose parts are
        not a prefix-numbered sequence of one input).
    accelerator: the worker runs a model that a GPU speeds up (embedding, the scan); the
        ``ray`` executor then puts one actor on each GPU when the cluster has GPUs.
    parquet: options for the part files' parquet writer (``compression``,
        ``use_dictionary`` ...); not in the fingerprint: they change bytes, not values.
    """

    name: str
    out_dir: Path
    settings: dict[str, Any]
    make_worker: Callable[[], Worker]
    unit: str = "row"
    keep_stale: bool = False
    accelerator: bool = False
    parquet: dict[str, Any] = field(default_factory=dict)

    def salt(self) -> str:
        return json.dumps({"step": self.name, **self.settings}, sort_keys=True, default=str)

    def part_path(self, index: int) -> Path:
        return Path(self.out_dir) / f"part-{index:06d}.parquet"


@dataclass
class Part:
    """One part of a step's input.

    index: its number (the output file is ``part-{index:06d}.parquet``).
    content: a digest of its input (``digest_rows`` / ``digest_bytes``); with the step's
        settings it makes the part's fingerprint.
    rows: the input rows, or None when ``load`` reads them where the part is computed
        (a file path travels better to a remote worker than its contents).
    load: a picklable zero-argument function returning the rows.
    size: rows (or other units) the progress bar advances by.
    """

    index: int
    content: str
    rows: pa.Table | None = None
    load: Callable[[], pa.Table] | None = None
    size: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def input_rows(self) -> pa.Table:
        if self.rows is not None:
            return self.rows
        if self.load is None:
            raise ValueError(f"part {self.index} has neither rows nor a loader")
        return self.load()

    def fingerprint(self, step: Step) -> str:
        return hashlib.sha1(f"{step.salt()}|{self.content}".encode()).hexdigest()


def digest_rows(table: pa.Table | pa.RecordBatch, columns: Iterable[str] | None = None) -> str:
    """A digest of a part's input values (not of its buffers, so slices and chunking don't matter).

    Changes when any value of the named columns (all by default) changes.
    """
    digest = hashlib.sha1()
    names = list(columns) if columns is not None else table.schema.names
    for name in names:
        column = table.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        digest.update(f"{name}:{column.type}:{len(column)}|".encode())
        _digest_array(column, digest)
    return digest.hexdigest()


def _digest_array(array: pa.Array, digest) -> None:
    import numpy as np
    import pyarrow.compute as pc

    if array.null_count:
        digest.update(np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=np.uint8).tobytes())
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) \
            or pa.types.is_large_binary(kind):
        width = np.int64 if (pa.types.is_large_string(kind) or pa.types.is_large_binary(kind)) else np.int32
        buffers = array.buffers()
        offsets = np.frombuffer(buffers[1], dtype=width)[array.offset: array.offset + len(array) + 1]
        digest.update((offsets - offsets[0]).astype(np.int64).tobytes())
        if buffers[2] is not None and len(offsets):
            digest.update(memoryview(buffers[2])[int(offsets[0]): int(offsets[-1])])
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        lengths = pc.fill_null(pc.list_value_length(array), -1)
        digest.update(lengths.to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
        _digest_array(array.flatten(), digest)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = array.fill_null(0) if array.null_count else array
        digest.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).tobytes())
    else:
        digest.update(json.dumps(array.to_pylist(), default=str).encode())


def digest_bytes(*items: bytes | str) -> str:
    digest = hashlib.sha1()
    for item in items:
        digest.update(item.encode() if isinstance(item, str) else item)
        digest.update(b"\0")
    return digest.hexdigest()


def split_rows(
    batches: Iterable[pa.RecordBatch], part_size: int, columns: Iterable[str] | None = None,
) -> Iterator[Part]:
    """Cut a stream of record batches into parts of exactly ``part_size`` rows (the last may be short).

    The digest covers the named columns (all by default), so a part is recomputed exactly
    when its rows change.
    """
    if part_size <= 0:
        raise ValueError(f"part_size must be positive, not {part_size}")
    names = list(columns) if columns is not None else None
    pending: list[pa.RecordBatch] = []
    held = index = 0

    def emit(table: pa.Table) -> Part:
        nonlocal index
        table = table.combine_chunks()
        part = Part(index=index, content=digest_rows(table, names), rows=table, size=table.num_rows)
        index += 1
        return part

    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        held += batch.num_rows
        while held >= part_size:
            table = pa.Table.from_batches(pending)
            yield emit(table.slice(0, part_size))
            rest = table.slice(part_size)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield emit(pa.Table.from_batches(pending))


"""Resumable, atomic parquet parts: the unit of restart for every expensive step.

Part ``i`` of a step is written once, atomically (temporary file, then rename), as
``part-{i:06d}.parquet`` with a fingerprint of its input and settings in its parquet
metadata. ``python_udfs.runner.run.run_step`` skips every part whose fingerprint still
matches and computes only the rest, so a killed step resumes without a missing or
duplicated row; parts past the end of a shorter input are deleted.

``build_parts``, ``iter_parts`` and ``part_fingerprint`` are the older (doc_id, text) loop
that the tokenizer (``ngrams.counts``) and the scanner still use until they move to
``run_step``; new steps use ``run_step``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FINGERPRINT_KEY = b"pilehouse.fingerprint"
#: what a write raises when the disk (or a quota, or RLIMIT_FSIZE) has no room for it
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def iter_parts(batches: Iterable[pa.RecordBatch], part_size: int) -> Iterator[tuple[list[int], list[str]]]:
    """Re-chunk (doc_id, text) record batches into parts of exactly ``part_size`` rows."""
    ids: list[int] = []
    texts: list[str] = []
    for batch in batches:
        ids.extend(batch.column("doc_id").to_pylist())
        texts.extend(batch.column("text").to_pylist())
        while len(ids) >= part_size:
            yield ids[:part_size], texts[:part_size]
            ids, texts = ids[part_size:], texts[part_size:]
    if ids:
        yield ids, texts


def part_fingerprint(doc_ids: list[int], texts: list[str], salt: str) -> str:
    """Changes when any id or text of the part, or the step's settings (``salt``), change."""
    digest = hashlib.sha1(salt.encode())
    for doc_id, text in zip(doc_ids, texts):
        digest.update(f"{doc_id}:{len(text)}:".encode())
        digest.update(text.encode("utf-8", "replace"))
    return digest.hexdigest()


def existing_fingerprint(path: Path, verify: bool = True) -> str | None:
    """The fingerprint a part file was written with; None for a missing, torn, corrupt or foreign file.

    ``verify`` (the default) also reads every page back with its CRC checked (``write_atomic``
    stores one per page): a byte flipped inside the data, which the footer alone cannot show
    and which would otherwise be read as different data, makes the part count as absent, so it
    is computed again. Batches are streamed, so memory stays at one row group."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None  # a torn or foreign file: compute this part again
    value = metadata.get(FINGERPRINT_KEY)
    if not value:
        return None
    if verify:
        try:
            for _batch in pq.ParquetFile(path, page_checksum_verification=True).iter_batches(batch_size=65_536):
                pass
        except (OSError, pa.ArrowException, ValueError, EOFError):
            return None  # flipped bytes inside a page: never read as data
    return value.decode()


def part_info(path: Path) -> tuple[int, str | None]:
    """(rows, fingerprint) of a part from its parquet footer alone: a manifest never reads the data."""
    footer = pq.ParquetFile(path).metadata
    value = (footer.metadata or {}).get(FINGERPRINT_KEY)
    return footer.num_rows, value.decode() if value else None


def write_atomic(
    data: pa.Table | pa.RecordBatchReader,
    path: Path,
    fingerprint: str,
    extra_metadata: dict | None = None,
    **parquet_options,
) -> int:
    """Write a parquet file that is either whole or absent, stamped with ``fingerprint``; returns its rows.

    ``data`` is a table, or a ``RecordBatchReader`` written batch by batch (one row group
    each), so a part larger than memory (a whole Pile file) streams through.
    ``extra_metadata`` (str or bytes values) is stored in the file's schema metadata too;
    ``parquet_options`` go to the parquet writer (``compression``, ``use_dictionary`` ...).
    """
    path = Path(path)
    metadata = dict(data.schema.metadata or {})
    for key, value in (extra_metadata or {}).items():
        metadata[key.encode() if isinstance(key, str) else key] = value.encode() if isinstance(value, str) else value
    metadata[FINGERPRINT_KEY] = fingerprint.encode()
    # unique per writer: two threads or processes computing the same part never share a temporary
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(data, pa.Table):
            rows = data.num_rows
            pq.write_table(data.replace_schema_metadata(metadata), tmp, write_page_checksum=True, **parquet_options)
        else:
            rows = 0
            with pq.ParquetWriter(tmp, data.schema.with_metadata(metadata), write_page_checksum=True,
                                  **parquet_options) as writer:
                for batch in data:
                    writer.write_batch(batch)
                    rows += batch.num_rows
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)  # nothing partial is kept, whatever went wrong
        if isinstance(exc, OSError) and (exc.errno in FULL_ERRNOS or "No space left" in str(exc)):
            raise OSError(exc.errno or errno.ENOSPC,
                          f"{path}: the disk is full (or the file size limit is reached) while writing it: "
                          f"{exc}. Nothing partial was kept; free space and run again: every part already "
                          "written is reused") from exc
        raise
    return rows


_PART_NAME = re.compile(r"part-(\d+)\.parquet")


def remove_stale(out_dir: Path, n_parts: int) -> None:
    """Delete parts numbered ``n_parts`` and up (an older, longer input) and torn temporaries."""
    for stale in Path(out_dir).glob("part-*.parquet*"):
        match = _PART_NAME.match(stale.name)
        if stale.name.endswith(".tmp") or (match is not None and int(match[1]) >= n_parts):
            stale.unlink(missing_ok=True)


def build_parts(
    batches: Iterable[pa.RecordBatch],
    out_dir: Path,
    part_size: int,
    salt: str,
    compute: Callable[[list[int], list[str]], pa.Table],
    desc: str,
    total: int | None = None,
    progress: bool = True,
) -> dict:
    """Run ``compute(doc_ids, texts) -> table`` for every part not already on disk.

    Returns counts: ``parts``, ``computed`` and ``reused`` documents.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="doc", file=sys.stderr, mininterval=1.0)
    n_parts = n_computed = n_reused = 0
    for index, (ids, texts) in enumerate(iter_parts(batches, part_size)):
        path = out_dir / f"part-{index:06d}.parquet"
        stamp = part_fingerprint(ids, texts, salt)
        if path.exists() and existing_fingerprint(path) == stamp:
            n_reused += len(ids)
        else:
            write_atomic(compute(ids, texts), path, stamp)
            n_computed += len(ids)
        n_parts += 1
        if bar is not None:
            bar.update(len(ids))
    if bar is not None:
        bar.close()
    remove_stale(out_dir, n_parts)
    return {"parts": n_parts, "computed": n_computed, "reused": n_reused}

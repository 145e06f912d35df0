"""Resumable, atomic parquet parts: the unit of restart for every expensive per-document step.

Rows arrive ordered by ``doc_id`` and are cut into parts of ``part_size`` rows. Part ``i``
is written once, atomically (temporary file, then rename), as ``part-{i:06d}.parquet``
with a fingerprint of the rows it covers in its parquet metadata. A rerun skips every
part whose fingerprint still matches and computes only the rest, so a killed step
resumes without a missing or duplicated ``doc_id``; parts past the end of a shorter
input are deleted.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FINGERPRINT_KEY = b"pilehouse.fingerprint"


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


def existing_fingerprint(path: Path) -> str | None:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None  # a torn or foreign file: compute this part again
    value = metadata.get(FINGERPRINT_KEY)
    return value.decode() if value else None


def write_atomic(table: pa.Table, path: Path, fingerprint: str, extra_metadata: dict | None = None) -> None:
    """Write a parquet file that is either whole or absent, stamped with ``fingerprint``.

    ``extra_metadata`` (str or bytes values) is stored in the file's schema metadata too.
    """
    path = Path(path)
    metadata = dict(table.schema.metadata or {})
    for key, value in (extra_metadata or {}).items():
        metadata[key.encode() if isinstance(key, str) else key] = value.encode() if isinstance(value, str) else value
    metadata[FINGERPRINT_KEY] = fingerprint.encode()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table.replace_schema_metadata(metadata), tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # nothing partial is kept, whatever went wrong
        raise


def remove_stale(out_dir: Path, n_parts: int) -> None:
    """Delete parts numbered ``n_parts`` and up (an older, longer input) and torn temporaries."""
    for stale in Path(out_dir).glob("part-*.parquet*"):
        number = int(re.findall(r"\d+", stale.name)[0])
        if number >= n_parts or stale.name.endswith(".tmp"):
            stale.unlink()


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

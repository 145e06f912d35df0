"""Bigram and trigram counts over GPT-NeoX token sequences, out of core (Confirm Labs' catalog).

Steps, each resumable:
1. ``tokenize_to_parts``: documents -> per-document uint16 token ids, in fingerprinted
   parquet parts (``python_udfs.runner.parts``): a kill loses at most one part.
2. ``pack_sequences``: the documents' tokens, in ``doc_id`` order, each followed by the
   end-of-text token, concatenated and cut into sequences of ``seq_len`` tokens (the last
   one may be shorter). Sequence parts are rewritten only when their content changes.
3. ``count_partials``: per sequence part, exact n-gram counts inside each sequence (never
   across a sequence boundary; across a document boundary only through the EOS token),
   pre-aggregated with numpy and written partitioned by ``id0 % n_shards``. Parts already
   counted (same content) are skipped.
4. ``reduce_shards``: per shard, one DuckDB ``group by`` over that shard's partial counts,
   so memory is bounded by DuckDB's ``memory_limit`` instead of by the corpus.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.ngrams import tokenizer as neox
from python_udfs.runner.parts import build_parts, existing_fingerprint, remove_stale, write_atomic

NGRAM_COLUMNS = {2: ["id0", "id1"], 3: ["id0", "id1", "id2"]}


def _tqdm(iterable=None, **kwargs):
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, mininterval=1.0, **kwargs)


# --- 1. tokenize ----------------------------------------------------------------------

def tokenize_to_parts(
    batches: Iterable[pa.RecordBatch], out_dir: Path, part_size: int = 4096,
    total: int | None = None, progress: bool = True,
) -> dict:
    """Per-document token ids (no EOS) into ``out_dir/part-*.parquet``: doc_id, n_tokens, tokens."""

    def compute(ids: list[int], texts: list[str]) -> pa.Table:
        arrays = neox.encode_batch(texts)
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
        return pa.table({
            "doc_id": pa.array(ids, pa.int64()),
            "n_tokens": pa.array(lengths, pa.int32()),
            "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint16())),
        })

    stats = build_parts(batches, out_dir, part_size, salt=f"neox-{neox.VOCAB_SIZE}",
                        compute=compute, desc="tokenize (GPT-NeoX)", total=total, progress=progress)
    return stats


def _flat_tokens(table: pa.Table) -> np.ndarray:
    column = table.column("tokens").combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.uint16, copy=False)


def iter_document_streams(doc_parts: list[Path]) -> Iterator[np.ndarray]:
    """Each doc part's tokens with EOS after every document, as one uint16 array."""
    for path in doc_parts:
        table = pq.read_table(path, columns=["n_tokens", "tokens"])
        lengths = table.column("n_tokens").to_numpy().astype(np.int64)
        flat = _flat_tokens(table)
        out = np.empty(len(flat) + len(lengths), dtype=np.uint16)
        # position of each document's EOS in the output: its end plus the EOS before it
        eos_at = np.cumsum(lengths) + np.arange(len(lengths))
        mask = np.ones(len(out), dtype=bool)
        mask[eos_at] = False
        out[mask] = flat
        out[eos_at] = neox.EOS_ID
        yield out


# --- 2. pack --------------------------------------------------------------------------

def pack_sequences(
    doc_parts: list[Path], out_dir: Path, seq_len: int = 2048, seqs_per_part: int = 512,
    progress: bool = True,
) -> dict:
    """Concatenate and cut into sequences; write parts of ``seqs_per_part`` sequences.

    A part whose content is unchanged keeps its file (and fingerprint), so the counts
    built from it are reused.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunk = seq_len * seqs_per_part
    buffer = np.zeros(0, dtype=np.uint16)
    n_parts = n_tokens = n_written = 0
    streams = iter_document_streams(doc_parts)
    if progress:
        streams = _tqdm(streams, total=len(doc_parts), desc="pack sequences", unit="part")

    def flush(tokens: np.ndarray) -> None:
        nonlocal n_parts, n_written
        first_seq = n_parts * seqs_per_part
        starts = np.arange(0, len(tokens), seq_len, dtype=np.int64)
        offsets = np.append(starts, len(tokens))
        table = pa.table({
            "seq_id": pa.array(first_seq + np.arange(len(starts)), pa.int64()),
            "tokens": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                              pa.array(tokens, pa.uint16())),
        })
        stamp = hashlib.sha1(f"{seq_len}:{first_seq}:".encode() + tokens.tobytes()).hexdigest()
        path = out_dir / f"part-{n_parts:06d}.parquet"
        if not (path.exists() and existing_fingerprint(path) == stamp):
            write_atomic(table, path, stamp)
            n_written += 1
        n_parts += 1

    for stream in streams:
        n_tokens += len(stream)
        buffer = np.concatenate([buffer, stream])
        while len(buffer) >= chunk:
            flush(buffer[:chunk])
            buffer = buffer[chunk:]
    if len(buffer):
        flush(buffer)
    remove_stale(out_dir, n_parts)
    return {"parts": n_parts, "written": n_written, "tokens": n_tokens,
            "sequences": -(-n_tokens // seq_len)}


# --- 3. count -------------------------------------------------------------------------

def ngram_keys(tokens: np.ndarray, offsets: np.ndarray, n: int) -> np.ndarray:
    """All n-grams inside each sequence as packed integer keys (16 bits per token id).

    ``tokens`` is the sequences' tokens back to back, ``offsets`` their starts plus the end.
    A window is kept only if it lies inside one sequence.
    """
    if len(tokens) < n:
        return np.zeros(0, dtype=np.uint64)
    t = tokens.astype(np.uint64)
    keys = t[: len(t) - n + 1].copy()
    for k in range(1, n):
        keys = (keys << np.uint64(16)) | t[k: len(t) - n + 1 + k]
    starts = np.arange(len(keys))
    seq_of_start = np.searchsorted(offsets, starts, side="right") - 1
    inside = starts + n <= offsets[seq_of_start + 1]
    return keys[inside]


def count_keys(keys: np.ndarray, n: int) -> pa.Table:
    """Exact counts of packed keys, unpacked into id columns (uint16) and a count."""
    unique, counts = np.unique(keys, return_counts=True)
    columns = {}
    for k, name in enumerate(NGRAM_COLUMNS[n]):
        shift = np.uint64(16 * (n - 1 - k))
        columns[name] = pa.array(((unique >> shift) & np.uint64(0xFFFF)).astype(np.uint16))
    columns["count"] = pa.array(counts.astype(np.int64))
    return pa.table(columns)


def count_partials(
    seq_parts: list[Path], out_dir: Path, n_shards: int, progress: bool = True,
) -> dict:
    """Per sequence part: bigram and trigram counts, split into ``n={n}/shard={j}`` files.

    Each part's output folder is stamped with the part's fingerprint; unchanged parts are
    skipped. A part is committed by renaming its finished folder into place.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_counted = n_windows = 0
    parts = _tqdm(seq_parts, desc="count n-grams", unit="part") if progress else seq_parts
    keep = set()
    for path in parts:
        stamp = f"{existing_fingerprint(path)}:{n_shards}"
        target = out_dir / path.stem
        keep.add(target.name)
        stamp_file = target / "FINGERPRINT"
        if stamp_file.exists() and stamp_file.read_text() == stamp:
            continue
        table = pq.read_table(path)
        column = table.column("tokens").combine_chunks()
        tokens = column.flatten().to_numpy(zero_copy_only=False).astype(np.uint16, copy=False)
        offsets = column.offsets.to_numpy().astype(np.int64) - int(column.offsets[0].as_py())
        staging = out_dir / f".{path.stem}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        for n in (2, 3):
            counts = count_keys(ngram_keys(tokens, offsets, n), n)
            n_windows += int(np.sum(counts.column("count").to_numpy()))
            shard = (counts.column("id0").to_numpy().astype(np.int64) % n_shards)
            order = np.argsort(shard, kind="stable")
            counts, shard = counts.take(order), shard[order]
            bounds = np.searchsorted(shard, np.arange(n_shards + 1))
            for j in range(n_shards):
                if bounds[j] == bounds[j + 1]:
                    continue
                folder = staging / f"n={n}" / f"shard={j}"
                folder.mkdir(parents=True, exist_ok=True)
                pq.write_table(counts.slice(bounds[j], bounds[j + 1] - bounds[j]),
                               folder / "data.parquet")
        (staging / "FINGERPRINT").write_text(stamp)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        n_counted += 1
    for stale in out_dir.iterdir():  # partials of sequence parts that no longer exist
        if stale.name not in keep:
            shutil.rmtree(stale, ignore_errors=True)
    return {"parts": len(seq_parts), "counted": n_counted, "windows": n_windows}


# --- 4. reduce ------------------------------------------------------------------------

def reduce_shards(
    con, partial_dir: Path, out_dir: Path, n_shards: int, memory_limit: str | None = None,
    progress: bool = True,
) -> dict:
    """Per shard and n: ``sum(count) group by ids`` over the partials, one parquet per shard.

    Each shard's group-by sees only ``1 / n_shards`` of the distinct n-grams, which is
    what keeps it under ``memory_limit``.
    """
    partial_dir, out_dir = Path(partial_dir), Path(out_dir)
    previous = None
    if memory_limit:
        previous = con.sql("select current_setting('memory_limit')").fetchall()[0][0]
        con.execute(f"set memory_limit = '{memory_limit}'")
    try:
        rows = _reduce(con, partial_dir, out_dir, n_shards, progress)
    finally:
        if previous is not None:
            # current_setting() shows "no limit" (-1) as ~16384 PiB, a unit SET rejects
            restore = "-1" if previous.endswith("PiB") else previous
            con.execute(f"set memory_limit = '{restore}'")
    return {"bigrams": rows[2], "trigrams": rows[3]}


def _reduce(con, partial_dir: Path, out_dir: Path, n_shards: int, progress: bool) -> dict:
    rows = {}
    for n in (2, 3):
        folder = out_dir / f"n={n}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        ids = ", ".join(NGRAM_COLUMNS[n])
        shards = range(n_shards)
        if progress:
            shards = _tqdm(shards, desc=f"reduce {n}-gram shards", unit="shard")
        for j in shards:
            files = sorted(partial_dir.glob(f"*/n={n}/shard={j}/data.parquet"))
            if not files:
                continue
            listing = ", ".join(f"'{f}'" for f in files)
            con.execute(f"""
                copy (
                    select {ids}, sum(count)::bigint as count
                    from read_parquet([{listing}])
                    group by {ids}
                    order by {ids}
                ) to '{folder / f"shard-{j:04d}.parquet"}' (format parquet)
            """)
        rows[n] = con.sql(f"select count(*) from read_parquet('{folder}/*.parquet')").fetchall()[0][0]
    return rows

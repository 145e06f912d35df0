"""Bigram and trigram counts over GPT-NeoX token sequences, out of core (Confirm Labs' catalog).

Four steps, each a step of the one part runner (``python_udfs.runner.run.run_step``), which
reuses every part whose fingerprint (input content + step settings) is unchanged, writes
parts atomically, removes stale ones and names the part that failed:

1. ``tokenize_to_parts``: a part = ``part_size`` documents -> their uint16 token ids.
2. ``pack_sequences``: the documents' tokens, in ``doc_id`` order, each followed by the
   end-of-text token, concatenated and cut into sequences of ``seq_len`` tokens (the last
   one may be shorter). Cutting is sequential (a part starts where the previous one
   ended), so the driver cuts and each part's content digest is its tokens: a part is
   rewritten only when its tokens change.
3. ``count_partials``: a part = one sequence part -> its exact n-gram counts inside each
   sequence (never across a sequence boundary; across a document boundary only through
   the EOS token). Each window is one uint64 key, ``shard << 16n | id0 << 16(n-1) | ...``
   (``shard = id0 % n_shards``), so one numpy sort (its SIMD kernel, picked from the CPU)
   puts them in (shard, ids) order and counting is a diff of the sorted keys; when the keys
   would outgrow ``ngram_memory_mb`` the part is counted in passes over (shard, id0) ranges.
   One file per sequence part, sorted by (n, shard, ids), one row group per (n, shard)
   slab, the ids packed in one delta-encoded ``key`` column (``PARTIAL_SCHEMA``); its
   metadata lists a digest of each slab.
4. ``reduce_shards``: a part = one shard of one n -> ``sum(count) group by ids`` over that
   shard's slabs: in numpy on the same packed keys (reading only the shard's row groups)
   when its slab rows fit ``ngram_memory_mb`` (and ``memory_limit``), else one DuckDB
   ``group by`` on the worker's own connection under ``memory_limit``, spilling. Memory
   follows one shard, not the corpus; both paths write the same rows. A shard's content
   digest is the digest of the slabs that feed it, so it is recomputed exactly when one of
   them changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.ngrams import tokenizer as neox
from python_udfs.runner.executors import Executor
from python_udfs.runner.parts import existing_fingerprint
from python_udfs.runner.run import run_step
from python_udfs.runner.step import Part, Step, Worker, digest_bytes, split_rows

NGRAM_COLUMNS = {2: ["id0", "id1"], 3: ["id0", "id1", "id2"]}
ORDERS = (2, 3)
#: Partial-count file metadata: windows per n and, per (n, shard), [rows, digest] of its slab.
SLABS_KEY = "pilehouse.ngram_slabs"

TOKENS_SCHEMA = pa.schema([("doc_id", pa.int64()), ("n_tokens", pa.int32()),
                           ("tokens", pa.large_list(pa.uint16()))])
#: Partial-count files: one row per distinct n-gram of a sequence part, its ids packed in one
#: uint64 ``key`` (``id0 << 16(n-1) | ... | id(n-1)``, the shard not included), sorted within
#: each (n, shard) slab. Sorted keys differ by little, so DELTA_BINARY_PACKED stores them in ~3
#: bytes a row with no codec; n and shard are constant in a row group and count is small, and
#: delta-packing stores them in a few bits a row too, with no dictionary to build (writes of a
#: 65 k-token part's 16 row groups: 4.6 ms instead of 7.9 ms with dictionaries; 2-5% larger).
#: Statistics only for n and shard, which pick a slab's row groups. Writing and reading back
#: this layout took half the time of three uint16 id columns with LZ4 (bench.ngrams).
PARTIAL_SCHEMA = pa.schema([("n", pa.uint8()), ("shard", pa.uint16()), ("key", pa.uint64()), ("count", pa.int64())])
PARTIAL_PARQUET = {"use_dictionary": False, "compression": "none",
                   "column_encoding": {name: "DELTA_BINARY_PACKED" for name in PARTIAL_SCHEMA.names},
                   "write_statistics": ["n", "shard"]}
#: The partial files' layout, in the count step's settings: a new layout recounts old partials.
#: (The encodings above are not part of it: they change the bytes, not the columns or values.)
PARTIAL_LAYOUT = "packed-key-delta"


def counts_parquet(n: int) -> dict:
    """Writer options of the reduced count files of order ``n``: rows are sorted by ids, so each
    id column is a run of small steps (DELTA_BINARY_PACKED, no codec: smaller than LZ4 over
    plain ids and faster to write); counts repeat (dictionary)."""
    return {"use_dictionary": ["count"], "compression": "none",
            "column_encoding": {name: "DELTA_BINARY_PACKED" for name in NGRAM_COLUMNS[n]}}


# --- 1. tokenize ----------------------------------------------------------------------

def tokenize_part(rows: pa.Table) -> pa.Table:
    """One part's (doc_id, text) rows -> doc_id, n_tokens, tokens (GPT-NeoX ids, no EOS)."""
    texts = rows.column("text").to_pylist()
    arrays = neox.encode_batch(texts)
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.uint16)
    return pa.table({
        "doc_id": rows.column("doc_id").cast(pa.int64()),
        "n_tokens": pa.array(lengths, pa.int32()),
        "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint16())),
    }, schema=TOKENS_SCHEMA)


def tokenizer_worker() -> Worker:
    neox.load_tokenizer()  # parse the tokenizer file once per worker, not per part
    return tokenize_part


def tokenize_step(out_dir: Path) -> Step:
    """The tokenize step: its fingerprint changes with the tokenizer (name, vocabulary, file)."""
    settings = {"tokenizer": neox.TOKENIZER_NAME, "vocab": neox.VOCAB_SIZE, "file": neox.tokenizer_digest()}
    return Step(name="tokenize", out_dir=Path(out_dir), settings=settings, make_worker=tokenizer_worker, unit="doc")


def tokenize_to_parts(
    batches: Iterable[pa.RecordBatch], out_dir: Path, part_size: int = 4096,
    total: int | None = None, progress: bool = True, executor: str | Executor | None = None,
):
    """Per-document token ids into ``out_dir/part-*.parquet``: doc_id, n_tokens, tokens.

    ``batches`` hold doc_id and text, in doc_id order. Returns the runner's ``RunStats``
    (``parts``, ``computed`` and ``reused`` documents ...).
    """
    parts = split_rows(batches, part_size, columns=["doc_id", "text"])
    return run_step(tokenize_step(out_dir), parts, executor=executor, total=total, progress=progress)


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

def packed_part(rows: pa.Table) -> pa.Table:
    """The driver already cut this part (cutting is sequential); the runner writes it as is."""
    return rows


def packer_worker() -> Worker:
    return packed_part


def pack_step(out_dir: Path, seq_len: int, seqs_per_part: int) -> Step:
    return Step(name="pack", out_dir=Path(out_dir), settings={"seq_len": seq_len, "seqs_per_part": seqs_per_part},
                make_worker=packer_worker, unit="seq")


def _sequence_parts(doc_parts: list[Path], seq_len: int, seqs_per_part: int, seen: dict) -> Iterator[Part]:
    chunk = seq_len * seqs_per_part
    buffer = np.zeros(0, dtype=np.uint16)
    index = 0

    def part(tokens: np.ndarray) -> Part:
        nonlocal index
        first_seq = index * seqs_per_part
        starts = np.arange(0, len(tokens), seq_len, dtype=np.int64)
        table = pa.table({
            "seq_id": pa.array(first_seq + np.arange(len(starts)), pa.int64()),
            "tokens": pa.ListArray.from_arrays(pa.array(np.append(starts, len(tokens)).astype(np.int32)),
                                               pa.array(tokens, pa.uint16())),
        })
        made = Part(index=index, content=digest_bytes(f"first_seq={first_seq}", tokens.tobytes()), rows=table,
                    size=len(starts))
        index += 1
        return made

    for stream in iter_document_streams(doc_parts):
        seen["tokens"] += len(stream)
        buffer = np.concatenate([buffer, stream])
        while len(buffer) >= chunk:
            yield part(buffer[:chunk])
            buffer = buffer[chunk:]
    if len(buffer):
        yield part(buffer)


def pack_sequences(
    doc_parts: list[Path], out_dir: Path, seq_len: int = 2048, seqs_per_part: int = 512,
    progress: bool = True, executor: str | Executor | None = None,
) -> dict:
    """Concatenate and cut into sequences; write parts of ``seqs_per_part`` sequences.

    A part whose tokens are unchanged keeps its file (and fingerprint), so the counts
    built from it are reused. Returns parts, written (rewritten now), tokens, sequences.
    """
    seen = {"tokens": 0}
    parts = _sequence_parts(list(doc_parts), seq_len, seqs_per_part, seen)
    stats = run_step(pack_step(out_dir, seq_len, seqs_per_part), parts, executor=executor, progress=progress)
    return {"parts": stats.parts, "written": stats.computed_parts, "reused": stats.reused_parts,
            "tokens": seen["tokens"], "sequences": -(-seen["tokens"] // seq_len)}


# --- 3. count -------------------------------------------------------------------------

#: Peak working bytes per token while one order's windows are keyed, sorted and counted
#: (tokens as uint64, the keys, the unique flags and indices, the counts); a part is counted
#: in passes over (shard, id0) ranges whose windows times this fit ``ngram_memory_mb``.
COUNT_BYTES_PER_TOKEN = 48
#: Peak working bytes per partial row while a shard is reduced in numpy (the packed key,
#: its count, the sort order, the sorted copies and the Arrow columns read).
REDUCE_BYTES_PER_ROW = 80


def memory_budget(memory_mb: float | None = None) -> int:
    """Bytes one count or reduce worker may use for its working arrays (``ngram_memory_mb``)."""
    from python_udfs.settings import default

    value = default("ngram_memory_mb") if memory_mb is None else memory_mb
    if float(value) <= 0:
        raise ValueError(f"ngram_memory_mb must be positive, not {value!r}")
    return int(float(value) * 2**20)


def _window_starts_across(n_windows: int, offsets: np.ndarray, n: int) -> np.ndarray:
    """The window starts (sorted, unique) whose n tokens cross a sequence boundary."""
    starts, ends = offsets[:-1], offsets[1:]
    bad = [ends[ends - k >= starts] - k for k in range(1, n)]
    bad = np.concatenate(bad) if bad else np.zeros(0, np.int64)
    return np.unique(bad[bad < n_windows])


@functools.lru_cache(maxsize=16)
def _shard_bits(n_shards: int, n: int) -> np.ndarray:
    """``(id % n_shards) << 16 n`` for every uint16 id: the shard as the key's top bits (read-only, cached)."""
    bits = (np.arange(65536, dtype=np.uint64) % np.uint64(n_shards)) << np.uint64(16 * n)
    bits.setflags(write=False)
    return bits


#: Never a real key (ids < 2**16 - 1 and shards < 2**16 - 1): marks a window that crosses a sequence.
_ACROSS = np.uint64(2**64 - 1)


def _window_keys(tokens: np.ndarray, offsets: np.ndarray, n: int, n_shards: int) -> tuple[np.ndarray, int]:
    """Every window's packed key, those across a sequence boundary set to ``_ACROSS``; and how many those are."""
    tokens = np.asarray(tokens, dtype=np.uint16)
    n_windows = len(tokens) - n + 1
    if n_windows <= 0:
        return np.zeros(0, dtype=np.uint64), 0
    keys = _shard_bits(n_shards, n)[tokens[:n_windows]]
    wide = tokens.astype(np.uint64)
    shifted = np.empty(n_windows, dtype=np.uint64)
    for k in range(n):
        np.left_shift(wide[k: k + n_windows], np.uint64(16 * (n - 1 - k)), out=shifted)
        keys |= shifted
    across = _window_starts_across(n_windows, np.asarray(offsets, dtype=np.int64), n)
    keys[across] = _ACROSS
    return keys, len(across)


#: The narrow bigram keys' marker of a window across a sequence (id1 = 2**16 - 1 is never a real id).
_ACROSS_NARROW = np.uint32(2**32 - 1)


def _narrow_bigram_keys(tokens: np.ndarray, offsets: np.ndarray, n_shards: int) -> tuple[np.ndarray, int]:
    """Bigram windows as uint32 keys ``rank(id0) << 16 | id1`` (``_id_ranks``: (shard, id0) order).

    They sort in the same order as the uint64 keys, at half the width (numpy's sort is about
    twice as fast); ``_widen_bigrams`` turns the distinct ones back into the uint64 layout.
    """
    n_windows = len(tokens) - 1
    if n_windows <= 0:
        return np.zeros(0, dtype=np.uint32), 0
    keys = _rank_bits(n_shards)[tokens[:n_windows]]
    keys |= tokens[1:]
    across = _window_starts_across(n_windows, np.asarray(offsets, dtype=np.int64), 2)
    keys[across] = _ACROSS_NARROW
    return keys, len(across)


def _widen_bigrams(narrow: np.ndarray, n_shards: int) -> np.ndarray:
    """Narrow bigram keys (``_narrow_bigram_keys``) in ``ngram_keys``' uint64 layout, order kept."""
    id0 = _ids_by_rank(n_shards)[narrow >> np.uint32(16)]
    wide = _shard_bits(n_shards, 2)[id0]
    wide |= id0.astype(np.uint64) << np.uint64(16)
    wide |= narrow & np.uint32(0xFFFF)
    return wide


def ngram_keys(tokens: np.ndarray, offsets: np.ndarray, n: int, n_shards: int = 1) -> np.ndarray:
    """All n-grams inside each sequence as packed uint64 keys: ``shard << 16n | id0 << 16(n-1) | ...``.

    ``tokens`` is the sequences' tokens back to back (uint16), ``offsets`` their starts plus
    the end. A window is kept only if it lies inside one sequence. With the shard
    (``id0 % n_shards``) in the top bits, sorted keys are in (shard, ids) order.
    """
    keys, across = _window_keys(tokens, offsets, n, n_shards)
    return keys[keys != _ACROSS] if across else keys


def unique_counts(keys: np.ndarray, counts: np.ndarray | None = None, drop_last: int = 0,
                  key_bits: int = 64, runs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and how often each occurs (or the sum of ``counts`` per key), exactly.

    Sort-based: numpy's sort picks its SIMD kernel from the CPU (AVX-512 or AVX2 quicksort,
    else its scalar introsort); sums are int64 (no float rounding). ``drop_last``: ignore
    that many of the largest keys (the windows marked ``_ACROSS``). ``keys`` may be sorted
    in place. With ``counts`` and keys of ``key_bits`` < 64 bits, each count small enough
    rides in the spare low bits, so one plain sort replaces an argsort and two gathers.
    ``runs``: ``keys`` are a few sorted runs back to back (a shard's slabs), so a merging sort
    (numpy's stable timsort, about twice the SIMD quicksort's speed on such input) is used.
    """
    if counts is not None:
        return _sum_by_key(keys, counts, key_bits, "stable" if runs else None)
    keys.sort()
    ordered = keys[: len(keys) - drop_last]
    if not len(ordered):
        return ordered, np.zeros(0, np.int64)
    starts = _run_starts(ordered)
    return ordered[starts], np.diff(starts, append=len(ordered)).astype(np.int64)


def _run_starts(ordered: np.ndarray) -> np.ndarray:
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return np.flatnonzero(first)


def _sum_by_key(keys: np.ndarray, counts: np.ndarray, key_bits: int,
                kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    counts = counts.astype(np.int64, copy=False)
    if not len(keys):
        return keys, np.zeros(0, np.int64)
    spare = 64 - key_bits
    small = counts < (1 << spare) - 1 if spare else np.zeros(len(counts), dtype=bool)
    if spare and small.any():
        packed = keys[small] << np.uint64(spare)
        packed |= counts[small].astype(np.uint64)
        packed.sort(kind=kind)  # keys within a run are distinct: the count bits keep runs sorted
        ordered = packed >> np.uint64(spare)
        starts = _run_starts(ordered)
        low = (packed & np.uint64((1 << spare) - 1)).astype(np.int64)
        unique, sums = ordered[starts], np.add.reduceat(low, starts)
        if small.all():
            return unique, sums
        # the few counts too large for the spare bits: summed on their own, then merged in
        big_keys, big_sums = _sum_by_key(keys[~small], counts[~small], 64)
        return _sum_by_key(np.concatenate([unique, big_keys]), np.concatenate([sums, big_sums]), 64)
    order = np.argsort(keys, kind=kind)
    ordered, counts = keys[order], counts[order]
    starts = _run_starts(ordered)
    return ordered[starts], np.add.reduceat(counts, starts)


def count_keys(keys: np.ndarray, n: int, drop_last: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact counts of packed keys (``ngram_keys``): the sorted distinct keys and their counts (int64).

    ``n`` is the keys' order (``key_table`` unpacks them). ``drop_last``: that many keys are
    ``_ACROSS`` (windows across a sequence boundary), not counted.
    """
    return unique_counts(keys, drop_last=drop_last)


def key_table(unique: np.ndarray, counts: np.ndarray, n: int, with_shard: bool = True) -> pa.Table:
    """Packed keys and their counts as columns: shard (if the keys carry it), the uint16 ids, count."""
    columns = {"shard": pa.array((unique >> np.uint64(16 * n)).astype(np.uint16))} if with_shard else {}
    for k, name in enumerate(NGRAM_COLUMNS[n]):
        shift = np.uint64(16 * (n - 1 - k))
        columns[name] = pa.array(((unique >> shift) & np.uint64(0xFFFF)).astype(np.uint16))
    columns["count"] = pa.array(counts.astype(np.int64, copy=False))
    return pa.table(columns)


@functools.lru_cache(maxsize=8)
def _ids_by_rank(n_shards: int) -> np.ndarray:
    """The uint16 ids in (id % n_shards, id) order: the order of keys' top bits."""
    ids = np.arange(65536, dtype=np.int64)
    return np.lexsort((ids, ids % n_shards)).astype(np.uint16)


@functools.lru_cache(maxsize=8)
def _id_ranks(n_shards: int) -> np.ndarray:
    """Each uint16 id's position in (id % n_shards, id) order (``_ids_by_rank`` inverted)."""
    ranks = np.empty(65536, dtype=np.uint16)
    ranks[_ids_by_rank(n_shards)] = np.arange(65536, dtype=np.uint16)
    return ranks


@functools.lru_cache(maxsize=8)
def _rank_bits(n_shards: int) -> np.ndarray:
    """``rank(id) << 16`` as uint32 for every id: the narrow bigram key's top half."""
    return _id_ranks(n_shards).astype(np.uint32) << np.uint32(16)


def count_sequences(tokens: np.ndarray, offsets: np.ndarray, n: int, n_shards: int,
                    memory_bytes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """One order's counts over sequences, its working arrays within ``memory_bytes``.

    Returns pieces of ``count_keys``' sorted distinct keys and counts, in key order (one
    piece when the windows' keys fit at once). Else they are counted in passes over ranges
    of (shard, id0): each pass keys, sorts and counts only the windows whose first token
    falls in its range (ranges cut at the windows' quantiles), a piece each. No merge, and
    the keys and counts, pieces put together, do not depend on the passes.
    """
    tokens = np.asarray(tokens, dtype=np.uint16)
    n_windows = len(tokens) - n + 1
    passes = -(-max(n_windows, 0) * COUNT_BYTES_PER_TOKEN // memory_bytes)
    if passes <= 1 and n == 2:
        narrow, across = _narrow_bigram_keys(tokens, offsets, n_shards)
        unique, counts = count_keys(narrow, n, across)
        return [(_widen_bigrams(unique, n_shards), counts)]
    if passes <= 1:
        keys, across = _window_keys(tokens, offsets, n, n_shards)
        return [count_keys(keys, n, across)]
    rank = _id_ranks(n_shards)[tokens[:n_windows]]  # 2 bytes per window
    inside = np.ones(n_windows, dtype=bool)
    inside[_window_starts_across(n_windows, np.asarray(offsets, dtype=np.int64), n)] = False
    windows_by_rank = np.cumsum(np.bincount(rank[inside], minlength=65536))
    cuts = np.searchsorted(windows_by_rank, np.arange(1, passes) * (windows_by_rank[-1] / passes), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [65536]]))
    shard_bits = _shard_bits(n_shards, n)
    pieces = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        at = np.flatnonzero(inside & (rank >= lo) & (rank < hi))
        keys = shard_bits[tokens[at]]
        for k in range(n):
            keys |= tokens[at + k].astype(np.uint64) << np.uint64(16 * (n - 1 - k))
        del at
        pieces.append(count_keys(keys, n))
        del keys
    return pieces


def count_part(rows: pa.Table, n_shards: int, memory_mb: float | None = None
               ) -> tuple[pa.RecordBatchReader, dict[str, str]]:
    """One sequence part's bigram and trigram counts (``PARTIAL_SCHEMA``), sorted by (n, shard, key).

    Written in row groups that each hold one (n, shard) slab or a piece of one (a part
    counted in passes), so a shard's reduce reads its row groups only; the metadata lists
    each slab's rows and digest (the same whatever the passes), and the windows per n.
    """
    budget = memory_budget(memory_mb)
    column = rows.column("tokens").combine_chunks()
    tokens = column.flatten().to_numpy(zero_copy_only=False).astype(np.uint16, copy=False)
    offsets = column.offsets.to_numpy().astype(np.int64) - int(column.offsets[0].as_py())
    batches, windows, slabs = [], {}, {}
    for n in ORDERS:
        # keys are sorted with the shard on top: each shard's slab is one contiguous run
        shard_starts = np.arange(1, n_shards, dtype=np.uint64) << np.uint64(16 * n)
        id_mask = np.uint64((1 << (16 * n)) - 1)
        listing: dict[int, list] = {}  # shard -> [rows, key digest, count digest]
        windows[str(n)] = 0
        for unique, counts in count_sequences(tokens, offsets, n, n_shards, budget):
            windows[str(n)] += int(counts.sum())
            bounds = np.concatenate([[0], np.searchsorted(unique, shard_starts), [len(unique)]])
            ids = unique & id_mask
            del unique
            for j in np.flatnonzero(np.diff(bounds)).tolist():
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                slab_keys, slab_counts = ids[lo:hi], counts[lo:hi]
                entry = listing.setdefault(j, [0, hashlib.sha1(), hashlib.sha1()])
                entry[0] += hi - lo
                entry[1].update(slab_keys.tobytes())
                entry[2].update(slab_counts.tobytes())
                batches.append(pa.record_batch({
                    "n": pa.array(np.full(hi - lo, n, np.uint8)), "shard": pa.array(np.full(hi - lo, j, np.uint16)),
                    "key": pa.array(slab_keys), "count": pa.array(slab_counts),
                }, schema=PARTIAL_SCHEMA))
        slabs[str(n)] = {str(j): [size, digest_bytes(f"n={n}", keys.hexdigest(), sums.hexdigest())]
                         for j, (size, keys, sums) in listing.items()}
    meta = {"n_shards": n_shards, "windows": windows, "slabs": slabs}
    return pa.RecordBatchReader.from_batches(PARTIAL_SCHEMA, batches), {SLABS_KEY: json.dumps(meta, sort_keys=True)}


def counter_worker(n_shards: int, memory_mb: float | None = None) -> Worker:
    return functools.partial(count_part, n_shards=n_shards, memory_mb=memory_mb)


def read_sequence_tokens(path: str) -> pa.Table:
    return pq.read_table(path, columns=["tokens"])


def _sequence_content(path: Path) -> str:
    """A sequence part's content digest: the fingerprint it was written with (else its bytes).

    Its pages are not read back here: the pack step of the same build already verified (or
    rewrote) every sequence part."""
    return existing_fingerprint(path, verify=False) or hashlib.sha1(Path(path).read_bytes()).hexdigest()


def count_step(out_dir: Path, n_shards: int, memory_mb: float | None = None) -> Step:
    """The count step. ``memory_mb`` (``ngram_memory_mb``) is not in its settings: the counts do not depend on it."""
    if not 1 <= n_shards <= 65535:
        raise ValueError(f"ngram_shards must be between 1 and 65535, not {n_shards}")
    memory_budget(memory_mb)  # a bad value fails here, before any part
    return Step(name="count", out_dir=Path(out_dir), settings={"n_shards": n_shards, "orders": list(ORDERS),
                                                              "layout": PARTIAL_LAYOUT},
                make_worker=functools.partial(counter_worker, n_shards, memory_mb), unit="seq",
                parquet=PARTIAL_PARQUET)


def partial_count_parts(seq_parts: Iterable[Path]) -> Iterator[Part]:
    """A part per sequence part, loaded where it is counted; its content digest is the sequence part's."""
    for i, path in enumerate(seq_parts):
        yield Part(index=i, content=_sequence_content(path), load=functools.partial(read_sequence_tokens, str(path)),
                   size=pq.read_metadata(path).num_rows)


def count_partials(
    seq_parts: list[Path], out_dir: Path, n_shards: int, progress: bool = True,
    executor: str | Executor | None = None, memory_mb: float | None = None,
) -> dict:
    """Per sequence part: its bigram and trigram counts in ``out_dir/part-{same index}.parquet``.

    ``memory_mb`` bounds a worker's working arrays (default: the ``ngram_memory_mb`` var): a
    part is counted in chunks of sequences that fit, then the chunks' counts are summed.
    Returns parts, counted (now), reused, windows (n-gram windows in all partials) and the
    partial files in order.
    """
    stats = run_step(count_step(out_dir, n_shards, memory_mb), partial_count_parts(seq_parts), executor=executor,
                     progress=progress)
    windows = sum(sum(partial_metadata(p)["windows"].values()) for p in stats.paths)
    return {"parts": stats.parts, "counted": stats.computed_parts, "reused": stats.reused_parts,
            "windows": windows, "paths": stats.paths}


def partial_metadata(path: Path) -> dict:
    """The slab listing a partial-count file was written with."""
    meta = (pq.read_schema(path).metadata or {}).get(SLABS_KEY.encode())
    if not meta:
        raise ValueError(f"{path} is not a partial-count part (no {SLABS_KEY} metadata): count it again")
    return json.loads(meta)


# --- 4. reduce ------------------------------------------------------------------------

def _result_schema(n: int) -> pa.Schema:
    return pa.schema([(name, pa.uint16()) for name in NGRAM_COLUMNS[n]] + [("count", pa.int64())])


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _slab_row_groups(metadata: pq.FileMetaData) -> dict[tuple[int, int], list[int]] | None:
    """Every (n, shard) slab's row groups, from their statistics (None: unknown, e.g. a row group mixing slabs)."""
    names = metadata.schema.to_arrow_schema().names
    i_n, i_shard = names.index("n"), names.index("shard")
    groups: dict[tuple[int, int], list[int]] = {}
    for g in range(metadata.num_row_groups):
        meta = metadata.row_group(g)
        stats_n, stats_shard = meta.column(i_n).statistics, meta.column(i_shard).statistics
        if not (stats_n and stats_shard and stats_n.has_min_max and stats_shard.has_min_max):
            return None
        if stats_n.min != stats_n.max or stats_shard.min != stats_shard.max:
            return None  # a row group that mixes slabs (a partial written before one row group per slab)
        groups.setdefault((int(stats_n.min), int(stats_shard.min)), []).append(g)
    return groups


@functools.lru_cache(maxsize=4096)
def _partial_footer(path: str, inode: int, size: int, mtime_ns: int
                    ) -> tuple[pq.FileMetaData, dict[tuple[int, int], list[int]] | None]:
    """A partial file's footer and slab row groups, read once per worker process.

    A reduce worker reads every partial file once per shard and n; keyed by the file's
    inode, size and mtime, a rewritten partial (``write_atomic`` replaces the file) is read again."""
    metadata = pq.read_metadata(path)
    if "key" not in metadata.schema.to_arrow_schema().names:
        raise ValueError(f"{path} is a partial-count part of an older layout (no packed key column): count it again")
    return metadata, _slab_row_groups(metadata)


def read_slab(path: str, n: int, shard: int) -> pa.Table:
    """One partial file's rows of the (n, shard) slab: its packed ``key`` (ids, no shard) and ``count``.

    Only the slab's row groups are read, single-threaded: the reduce runs shards in parallel,
    and a slab of a small part is a few kB, where a thread pool costs more than the decoding."""
    columns = ["key", "count"]
    st = os.stat(path)
    metadata, groups = _partial_footer(str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if groups is None:
        return pq.read_table(path, columns=columns, filters=[("n", "=", n), ("shard", "=", shard)])
    return pq.ParquetFile(path, metadata=metadata).read_row_groups(groups.get((n, shard), []), columns=columns,
                                                                   use_threads=False)


def reduce_slabs(slabs: list[pa.Table], n: int) -> pa.Table:
    """``sum(count) group by ids order by ids`` over slabs of one shard (packed ``key`` and ``count``), in numpy."""
    if not slabs:
        return _result_schema(n).empty_table()
    keys = np.concatenate([slab.column("key").to_numpy() for slab in slabs])
    counts = np.concatenate([slab.column("count").to_numpy() for slab in slabs])
    table = key_table(*unique_counts(keys, counts, key_bits=16 * n, runs=True), n, with_shard=False)
    return table.cast(_result_schema(n))


def reduce_shard_numpy(paths: list[str], n: int, shard: int) -> pa.Table:
    """One shard's reduce on packed uint64 keys in numpy, reading only its slabs' row groups."""
    return reduce_slabs([read_slab(path, n, shard) for path in paths], n)


def reduce_shard(rows: pa.Table, n: int, duckdb_settings: dict[str, str], memory_mb: float | None = None) -> pa.Table:
    """``sum(count) group by ids`` over one shard's slabs (rows: path, shard, slab_rows).

    In numpy on packed keys when the slabs' rows fit ``memory_mb`` (``ngram_memory_mb``),
    else one DuckDB ``group by`` on a connection of its own, which spills to disk under
    ``memory_limit``. Both give the same rows, in id order.
    """
    paths = rows.column("path").to_pylist()
    if not paths:
        return _result_schema(n).empty_table()
    shard = int(rows.column("shard")[0].as_py())
    total = sum(rows.column("slab_rows").to_pylist()) if "slab_rows" in rows.column_names else None
    if total is not None and total * REDUCE_BYTES_PER_ROW <= memory_budget(memory_mb):
        return reduce_shard_numpy(paths, n, shard)
    return reduce_shard_duckdb(paths, n, shard, duckdb_settings)


def reduce_shard_duckdb(paths: list[str], n: int, shard: int, duckdb_settings: dict[str, str]) -> pa.Table:
    """The spilling path: one DuckDB ``group by`` over the shard's slabs under its settings."""
    import duckdb

    ids = ", ".join(f"((key >> {16 * (n - 1 - k)}) & 65535)::usmallint as {name}"
                    for k, name in enumerate(NGRAM_COLUMNS[n]))
    con = duckdb.connect(":memory:")
    try:
        for key, value in duckdb_settings.items():
            con.execute(f"set {key} = '{value}'")
        table = con.sql(f"""
            select {ids}, count
            from (
                select key, sum(count)::bigint as count
                from read_parquet({_sql_list(paths)})
                where n = {n} and shard = {shard}
                group by key
            )
            order by key
        """).to_arrow_table()
    finally:
        con.close()
    return table.cast(_result_schema(n))


def reducer_worker(n: int, duckdb_settings: dict[str, str], memory_mb: float | None = None) -> Worker:
    return functools.partial(reduce_shard, n=n, duckdb_settings=duckdb_settings, memory_mb=memory_mb)


_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _size_bytes(size: str | None) -> int | None:
    """Bytes of a DuckDB size ('4GB', '500 MiB'); None when blank or not a plain size."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(size or ""))
    if not match or not size:
        return None
    unit = match.group(2).lower() or "b"
    unit = {"k": "kb", "m": "mb", "g": "gb", "t": "tb"}.get(unit, unit)
    return int(float(match.group(1)) * _SIZE_UNITS[unit]) if unit in _SIZE_UNITS else None


def _duckdb_settings(memory_limit: str | None, threads: int | None, temp_directory: str | None) -> dict[str, str]:
    """The reduce connection's settings, checked here so a bad value fails with its name, before any shard."""
    import duckdb

    settings = {"temp_directory": str(temp_directory)}
    if memory_limit:
        settings["memory_limit"] = str(memory_limit)
    if threads:
        settings["threads"] = str(int(threads))
    if not memory_limit and not threads:
        return settings  # nothing that could be invalid: no connection needed to check it
    with duckdb.connect(":memory:") as con:
        for key, value in settings.items():
            try:
                con.execute(f"set {key} = '{value}'")
            except duckdb.Error as err:
                name = {"memory_limit": "ngram_memory_limit"}.get(key, key)
                raise ValueError(f"{name} {value!r} is not a valid DuckDB {key}: {err}") from err
    return settings


def reduce_shards(
    partials: Path | Iterable[Path], out_dir: Path, n_shards: int, memory_limit: str | None = None,
    threads: int | None = None, temp_directory: str | Path | None = None, progress: bool = True,
    executor: str | Executor | None = None, memory_mb: float | None = None,
) -> dict:
    """Per n and shard: ``sum(count) group by ids`` over the partials into ``out_dir/n={n}/part-{shard}.parquet``.

    ``partials``: the partial-count files, or their folder. Each shard's group-by sees only
    ``1 / n_shards`` of the distinct n-grams. A shard whose slab rows fit the smaller of
    ``memory_mb`` (``ngram_memory_mb``) and ``memory_limit`` is reduced in numpy on packed
    keys; a larger one by DuckDB under ``memory_limit`` (DuckDB's, e.g. '4GB'), spilling to
    ``temp_directory`` (default ``out_dir/.spill``; '' = never spill). Returns distinct
    bigrams and trigrams and the shards computed and reused.
    """
    out_dir = Path(out_dir)
    if isinstance(partials, (str, Path)):
        partials = sorted(Path(partials).glob("part-*.parquet"))
    files = [Path(p) for p in partials]
    listings = [partial_metadata(p) for p in files]
    for path, meta in zip(files, listings):
        if meta["n_shards"] != n_shards:
            raise ValueError(f"{path} was counted into {meta['n_shards']} shards, not {n_shards}: count it again")
    spill = str(out_dir / ".spill") if temp_directory is None else str(temp_directory)
    settings = _duckdb_settings(memory_limit, threads, spill)
    budget_mb = memory_budget(memory_mb) / 2**20
    limit = _size_bytes(memory_limit)
    if limit is not None:
        budget_mb = min(budget_mb, limit / 2**20)
    result = {"computed": 0, "reused": 0}
    for n in ORDERS:
        stats = run_step(reduce_step(out_dir, n, n_shards, settings, budget_mb),
                         shard_parts(files, listings, n, n_shards),
                         executor=executor, progress=progress)
        result["computed"] += stats.computed_parts
        result["reused"] += stats.reused_parts
        result["bigrams" if n == 2 else "trigrams"] = sum(pq.read_metadata(p).num_rows for p in stats.paths)
    return result


def reduce_step(out_dir: Path, n: int, n_shards: int, duckdb_settings: dict[str, str],
                memory_mb: float | None = None) -> Step:
    """The reduce of one n: parts are shards, written to ``out_dir/n={n}/part-{shard}.parquet``.

    Which path reduces a shard (numpy or DuckDB, by ``memory_mb``) is not in the settings:
    both write the same rows."""
    return Step(name=f"reduce {n}-grams", out_dir=Path(out_dir) / f"n={n}", settings={"n": n, "n_shards": n_shards},
                make_worker=functools.partial(reducer_worker, n, duckdb_settings, memory_mb), unit="shard",
                parquet=counts_parquet(n))


def shard_parts(files: list[Path], listings: list[dict], n: int, n_shards: int) -> Iterator[Part]:
    """A part per shard: the partial files with rows in it, digested by those rows' slab digests."""
    for j in range(n_shards):
        feeding = [(str(path), *meta["slabs"][str(n)][str(j)])
                   for path, meta in zip(files, listings) if str(j) in meta["slabs"][str(n)]]
        rows = pa.table({"path": pa.array([p for p, _, _ in feeding], pa.string()),
                         "shard": pa.array([j] * len(feeding), pa.int64()),
                         "slab_rows": pa.array([r for _, r, _ in feeding], pa.int64())})
        yield Part(index=j, content=digest_bytes(f"n={n}", f"shard={j}", *(d for _, _, d in feeding)), rows=rows,
                   size=1)

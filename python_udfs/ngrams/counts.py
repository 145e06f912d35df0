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
   the EOS token), pre-aggregated with numpy. One file per sequence part, sorted by
   (n, shard, ids) with ``shard = id0 % n_shards``; its metadata lists a digest of each
   (n, shard) slab.
4. ``reduce_shards``: a part = one shard of one n -> one DuckDB ``group by`` over that
   shard's slabs, on the worker's own connection under ``memory_limit``: memory follows
   one shard, not the corpus. A shard's content digest is the digest of the slabs that
   feed it, so it is recomputed exactly when one of them changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.ngrams import tokenizer as neox
from python_udfs.runner.executors import Executor
from python_udfs.runner.parts import existing_fingerprint
from python_udfs.runner.run import run_step
from python_udfs.runner.step import Part, Step, Worker, digest_bytes, digest_rows, split_rows

NGRAM_COLUMNS = {2: ["id0", "id1"], 3: ["id0", "id1", "id2"]}
ORDERS = (2, 3)
#: Partial-count file metadata: windows per n and, per (n, shard), [rows, digest] of its slab.
SLABS_KEY = "pilehouse.ngram_slabs"

TOKENS_SCHEMA = pa.schema([("doc_id", pa.int64()), ("n_tokens", pa.int32()),
                           ("tokens", pa.large_list(pa.uint16()))])
PARTIAL_SCHEMA = pa.schema([("n", pa.uint8()), ("shard", pa.uint16()), ("id0", pa.uint16()),
                            ("id1", pa.uint16()), ("id2", pa.uint16()), ("count", pa.int64())])


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
    """Exact counts of packed keys, unpacked into id columns (uint16) and a count, sorted by ids."""
    unique, counts = np.unique(keys, return_counts=True)
    columns = {}
    for k, name in enumerate(NGRAM_COLUMNS[n]):
        shift = np.uint64(16 * (n - 1 - k))
        columns[name] = pa.array(((unique >> shift) & np.uint64(0xFFFF)).astype(np.uint16))
    columns["count"] = pa.array(counts.astype(np.int64))
    return pa.table(columns)


def count_part(rows: pa.Table, n_shards: int) -> tuple[pa.Table, dict[str, str]]:
    """One sequence part's bigram and trigram counts, sorted by (n, shard, ids); id2 is null for bigrams."""
    column = rows.column("tokens").combine_chunks()
    tokens = column.flatten().to_numpy(zero_copy_only=False).astype(np.uint16, copy=False)
    offsets = column.offsets.to_numpy().astype(np.int64) - int(column.offsets[0].as_py())
    pieces, windows, slabs = [], {}, {}
    for n in ORDERS:
        counts = count_keys(ngram_keys(tokens, offsets, n), n)
        windows[str(n)] = int(np.sum(counts.column("count").to_numpy()))
        shard = counts.column("id0").to_numpy().astype(np.int64) % n_shards
        order = np.argsort(shard, kind="stable")  # inside a shard the ids stay sorted
        counts, shard = counts.take(order), shard[order]
        bounds = np.searchsorted(shard, np.arange(n_shards + 1))
        slabs[str(n)] = {
            str(j): [int(bounds[j + 1] - bounds[j]),
                     digest_rows(counts.slice(bounds[j], bounds[j + 1] - bounds[j]))]
            for j in range(n_shards) if bounds[j + 1] > bounds[j]
        }
        table = pa.table({
            "n": pa.array(np.full(len(shard), n, np.uint8)),
            "shard": pa.array(shard.astype(np.uint16)),
            "id0": counts.column("id0"), "id1": counts.column("id1"),
            "id2": counts.column("id2") if n == 3 else pa.nulls(len(shard), pa.uint16()),
            "count": counts.column("count"),
        }, schema=PARTIAL_SCHEMA)
        # one chunk per slab: a writer that makes a row group of each chunk lets a shard's
        # reader skip the others (today's single row group is read with a filter instead)
        pieces += [table.slice(bounds[j], bounds[j + 1] - bounds[j]) for j in range(n_shards)
                   if bounds[j + 1] > bounds[j]]
    meta = {"n_shards": n_shards, "windows": windows, "slabs": slabs}
    combined = pa.concat_tables(pieces) if pieces else PARTIAL_SCHEMA.empty_table()
    return combined, {SLABS_KEY: json.dumps(meta, sort_keys=True)}


def counter_worker(n_shards: int) -> Worker:
    return functools.partial(count_part, n_shards=n_shards)


def read_sequence_tokens(path: str) -> pa.Table:
    return pq.read_table(path, columns=["tokens"])


def _sequence_content(path: Path) -> str:
    """A sequence part's content digest: the fingerprint it was written with (else its bytes)."""
    return existing_fingerprint(path) or hashlib.sha1(Path(path).read_bytes()).hexdigest()


def count_step(out_dir: Path, n_shards: int) -> Step:
    if not 1 <= n_shards <= 65535:
        raise ValueError(f"ngram_shards must be between 1 and 65535, not {n_shards}")
    return Step(name="count", out_dir=Path(out_dir), settings={"n_shards": n_shards, "orders": list(ORDERS)},
                make_worker=functools.partial(counter_worker, n_shards), unit="seq")


def partial_count_parts(seq_parts: Iterable[Path]) -> Iterator[Part]:
    """A part per sequence part, loaded where it is counted; its content digest is the sequence part's."""
    for i, path in enumerate(seq_parts):
        yield Part(index=i, content=_sequence_content(path), load=functools.partial(read_sequence_tokens, str(path)),
                   size=pq.read_metadata(path).num_rows)


def count_partials(
    seq_parts: list[Path], out_dir: Path, n_shards: int, progress: bool = True,
    executor: str | Executor | None = None,
) -> dict:
    """Per sequence part: its bigram and trigram counts in ``out_dir/part-{same index}.parquet``.

    Returns parts, counted (now), reused, windows (n-gram windows in all partials) and the
    partial files in order.
    """
    stats = run_step(count_step(out_dir, n_shards), partial_count_parts(seq_parts), executor=executor,
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


def reduce_shard(rows: pa.Table, n: int, duckdb_settings: dict[str, str]) -> pa.Table:
    """``sum(count) group by ids`` over one shard's slabs (rows: path, shard), on a connection of its own."""
    import duckdb

    paths = rows.column("path").to_pylist()
    if not paths:
        return _result_schema(n).empty_table()
    shard = int(rows.column("shard")[0].as_py())
    ids = ", ".join(NGRAM_COLUMNS[n])
    con = duckdb.connect(":memory:")
    try:
        for key, value in duckdb_settings.items():
            con.execute(f"set {key} = '{value}'")
        table = con.sql(f"""
            select {ids}, sum(count)::bigint as count
            from read_parquet({_sql_list(paths)})
            where n = {n} and shard = {shard}
            group by {ids}
            order by {ids}
        """).to_arrow_table()
    finally:
        con.close()
    return table.cast(_result_schema(n))


def reducer_worker(n: int, duckdb_settings: dict[str, str]) -> Worker:
    return functools.partial(reduce_shard, n=n, duckdb_settings=duckdb_settings)


def _duckdb_settings(memory_limit: str | None, threads: int | None, temp_directory: str | None) -> dict[str, str]:
    """The reduce connection's settings, checked here so a bad value fails with its name, before any shard."""
    import duckdb

    settings = {"temp_directory": str(temp_directory)}
    if memory_limit:
        settings["memory_limit"] = str(memory_limit)
    if threads:
        settings["threads"] = str(int(threads))
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
    executor: str | Executor | None = None,
) -> dict:
    """Per n and shard: ``sum(count) group by ids`` over the partials into ``out_dir/n={n}/part-{shard}.parquet``.

    ``partials``: the partial-count files, or their folder. Each shard's group-by sees only
    ``1 / n_shards`` of the distinct n-grams, which is what keeps it under ``memory_limit``
    (DuckDB's, e.g. '4GB'). ``temp_directory``: where DuckDB may spill (default
    ``out_dir/.spill``; '' = never spill). Returns distinct bigrams and trigrams and the
    shards computed and reused.
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
    result = {"computed": 0, "reused": 0}
    for n in ORDERS:
        stats = run_step(reduce_step(out_dir, n, n_shards, settings), shard_parts(files, listings, n, n_shards),
                         executor=executor, progress=progress)
        result["computed"] += stats.computed_parts
        result["reused"] += stats.reused_parts
        result["bigrams" if n == 2 else "trigrams"] = sum(pq.read_metadata(p).num_rows for p in stats.paths)
    return result


def reduce_step(out_dir: Path, n: int, n_shards: int, duckdb_settings: dict[str, str]) -> Step:
    """The reduce of one n: parts are shards, written to ``out_dir/n={n}/part-{shard}.parquet``."""
    return Step(name=f"reduce {n}-grams", out_dir=Path(out_dir) / f"n={n}", settings={"n": n, "n_shards": n_shards},
                make_worker=functools.partial(reducer_worker, n, duckdb_settings), unit="shard")


def shard_parts(files: list[Path], listings: list[dict], n: int, n_shards: int) -> Iterator[Part]:
    """A part per shard: the partial files with rows in it, digested by those rows' slab digests."""
    for j in range(n_shards):
        feeding = [(str(path), meta["slabs"][str(n)][str(j)][1])
                   for path, meta in zip(files, listings) if str(j) in meta["slabs"][str(n)]]
        rows = pa.table({"path": pa.array([p for p, _ in feeding], pa.string()),
                         "shard": pa.array([j] * len(feeding), pa.int64())})
        yield Part(index=j, content=digest_bytes(f"n={n}", f"shard={j}", *(d for _, d in feeding)), rows=rows,
                   size=1)

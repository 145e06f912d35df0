"""Training data from the warehouse: a parquet snapshot, streamed and tokenized on the fly.

Why a snapshot: DuckDB lets one process write a database file while nobody else has it
open, and a read-only connection also holds the file lock. Streaming from a connection
held open for a whole training run would block every `dbt build` for hours. So a run
starts by opening the warehouse read-only for the few seconds a `COPY ... TO parquet`
takes, writes the source rows in their final training order to `out_dir/run_id/data/`,
and closes the connection. Everything after that reads the parquet file, which also makes
a resumed run see exactly the rows the original run saw, even if the warehouse has been
rebuilt in between.

The order is fixed by SQL (md5 of the seed and the document key, or the key alone), so the
same config gives the same sequence of batches. A stream position is three integers
(epoch, row, token offset into that row), saved in every checkpoint; resuming seeks to the
row's parquet row group and goes on from there, without re-reading what came before.

Sequences (always `seq_len` tokens; labels are -100 where no loss is taken):
- default, as the seed did: one document per sequence, truncated to `seq_len` tokens;
  a shorter document gets one EOS (which the model learns to predict) and is padded with
  more EOS tokens that carry no loss;
- `packing=True`: documents joined with an EOS after each, cut into full sequences, every
  token trained on (GPT-NeoX/Pythia style).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import torch

from python_udfs.ngrams import tokenizer as neox

IGNORE = -100  # label value that torch's cross-entropy (and HF models) skip
TOKENIZE_CHUNK = 256  # documents per tokenizer call (encode_batch runs them in parallel)
# Truncation only needs a document's first seq_len tokens. English averages ~4 characters a
# token and code ~3, so the first 16 * seq_len characters hold them with a wide margin;
# a document cut there and still too short is tokenized again in full.
CHARS_PER_TOKEN_CAP = 16


# --------------------------------------------------------------------------- source SQL


def sql_string(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class SourceQueries:
    train: str  # select doc_id, text ... order by <training order>
    val: str  # select doc_id, text ... order by doc key
    description: str  # how rows were picked, for logs


def source_queries(
    con: duckdb.DuckDBPyConnection,
    dataset: str,
    split: str | None,
    val_split: str | None,
    val_fraction: float,
    seed: int,
    shuffle: bool,
) -> SourceQueries:
    """SQL for the training and validation rows of `dataset` (a table name or `sql:...`).

    Sources with a `split` column (minipile) are split by it; others hold out the rows whose
    md5(key) falls in the first `val_fraction` of the hash range, independent of the seed,
    so every run on that source validates on the same rows. The key is `doc_id` when the
    source has one, else md5(text).
    """
    if dataset.startswith("sql:"):
        source = f"({dataset[4:].strip().rstrip(';')})"
    elif dataset.replace("_", "").replace(".", "").isalnum():
        source = dataset
    else:
        raise ValueError(f"dataset must be a table name or 'sql:select ...', got {dataset!r}")
    columns = [d[0] for d in con.sql(f"select * from {source} as s limit 0").description]
    if "text" not in columns:
        raise ValueError(f"{dataset!r} has no `text` column (columns: {columns})")
    has_id = "doc_id" in columns
    doc_id = "doc_id::bigint" if has_id else "null::bigint"
    key = "doc_id::varchar" if has_id else "md5(text)"
    if "split" in columns and split is not None:
        train_where = f"split = {sql_string(split)}"
        val_where = f"split = {sql_string(val_split)}" if val_split else "false"
        how = f"split column: train={split!r}, validation={val_split!r}"
    else:
        bucket = f"md5_number('heldout:' || {key}) % 1000000"
        cut = int(round(val_fraction * 1_000_000))
        train_where, val_where = f"{bucket} >= {cut}", f"{bucket} < {cut}"
        how = f"held out {val_fraction:.2%} by md5 of {'doc_id' if has_id else 'text'}"

    def rows(where: str) -> str:
        return (f"select {doc_id} as doc_id, {key} as doc_key, text from {source} as s "
                f"where text is not null and length(text) > 0 and {where}")

    tie = "doc_id, doc_key" if has_id else "doc_key"
    order = f"md5('shuffle:{int(seed)}:' || doc_key), {tie}" if shuffle else tie
    train = f"select doc_id, text from ({rows(train_where)}) order by {order}"
    val = f"select doc_id, text from ({rows(val_where)}) order by {tie}"
    return SourceQueries(train, val, how)


def connect_read_only(db: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection; inside a process that already has the file open read-write
    (a dbt Python model calling train()), DuckDB refuses a second configuration, so share
    that process's database instead."""
    try:
        return duckdb.connect(str(db), read_only=True)
    except duckdb.ConnectionException as error:
        if "different configuration" not in str(error):
            raise
        return duckdb.connect(str(db))


def export_snapshot(db: str | Path, dataset: str, out_dir: Path, *, split: str | None,
                    val_split: str | None, val_fraction: float, seed: int,
                    shuffle: bool) -> dict:
    """Write train.parquet and val.parquet under out_dir (atomically) unless both exist.

    The warehouse is opened read-only, for the duration of the two COPY statements only.
    """
    out_dir = Path(out_dir)
    paths = {"train": out_dir / "train.parquet", "val": out_dir / "val.parquet"}
    if not all(p.exists() for p in paths.values()):
        out_dir.mkdir(parents=True, exist_ok=True)
        if not Path(db).exists():
            raise FileNotFoundError(f"warehouse {db} not found (set --db or PILEHOUSE_DB)")
        with connect_read_only(db) as con:
            queries = source_queries(con, dataset, split, val_split, val_fraction, seed, shuffle)
            for name, sql in (("train", queries.train), ("val", queries.val)):
                tmp = paths[name].with_suffix(".parquet.tmp")
                # Row groups of 2,048 rows: resuming seeks to a row group, then skips < 2,048 rows.
                con.execute(f"copy ({sql}) to {sql_string(tmp)} "
                            "(format parquet, compression zstd, row_group_size 2048)")
                os.replace(tmp, paths[name])
        (out_dir / "source.txt").write_text(f"{dataset}\n{queries.description}\n")
    rows = {k: pq.ParquetFile(p).metadata.num_rows for k, p in paths.items()}
    if rows["train"] == 0:
        raise ValueError(f"{dataset!r} gave no training rows (split={split!r})")
    return {"paths": paths, "rows": rows}


# --------------------------------------------------------------------------- token stream


def start_state() -> dict[str, int]:
    return {"epoch": 0, "row": 0, "offset": 0}


def iter_texts(path: Path, row: int, chunk: int = TOKENIZE_CHUNK) -> Iterator[list[str]]:
    """Lists of texts from parquet row `row` on, seeking to its row group first."""
    pf = pq.ParquetFile(path)
    start = 0
    for group in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(group).num_rows
        if start + n > row:
            break
        start += n
    else:
        return
    skip = row - start
    for batch in pf.iter_batches(batch_size=chunk, row_groups=range(group, pf.num_row_groups),
                                 columns=["text"]):
        texts = batch.column("text").to_pylist()
        if skip:
            texts, skip = texts[skip:], max(0, skip - len(texts))
        if texts:
            yield texts


def tokenize(texts: list[str], seq_len: int | None) -> list[np.ndarray]:
    """neox ids per text; with seq_len, only the first seq_len ids are needed."""
    if seq_len is None:
        return neox.encode_batch(texts)
    cap = CHARS_PER_TOKEN_CAP * seq_len
    ids = neox.encode_batch([t[:cap] for t in texts])
    for i, text in enumerate(texts):
        if len(ids[i]) < seq_len and len(text) > cap:  # pathological text: do it in full
            ids[i] = neox.encode_batch([text])[0]
    return [a[:seq_len] for a in ids]


def iter_sequences(path: Path, seq_len: int, packing: bool, state: dict | None = None,
                   loop: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """(input_ids, labels, state after this sequence), forever when `loop` (epochs repeat)."""
    state = dict(state or start_state())
    epoch, row, offset = state["epoch"], state["row"], state["offset"]
    buf: list[np.ndarray] = []
    filled = 0
    while True:
        for texts in iter_texts(path, row):
            for ids in tokenize(texts, None if packing else seq_len):
                if not packing:  # one document, truncated; EOS, then EOS padding without loss
                    x = np.full(seq_len, neox.EOS_ID, dtype=np.int64)
                    y = np.full(seq_len, IGNORE, dtype=np.int64)
                    x[: len(ids)] = ids
                    y[: len(ids)] = ids
                    if len(ids) < seq_len:
                        y[len(ids)] = neox.EOS_ID
                    row += 1
                    yield x, y, {"epoch": epoch, "row": row, "offset": 0}
                    continue
                doc = np.append(ids, neox.EOS_ID).astype(np.int64)
                pos, offset = offset, 0  # only the first document after a resume is partial
                while pos < len(doc):
                    take = min(seq_len - filled, len(doc) - pos)
                    buf.append(doc[pos: pos + take])
                    filled += take
                    pos += take
                    if filled == seq_len:
                        x = np.concatenate(buf)
                        buf, filled = [], 0
                        yield x, x.copy(), {"epoch": epoch, "row": row, "offset": pos}
                row += 1
        if not loop:
            return
        if row == 0:
            raise ValueError(f"{path} has no rows")
        epoch, row, offset = epoch + 1, 0, 0


def iter_batches(path: Path, seq_len: int, packing: bool, micro_batch: int,
                 state: dict | None = None, rank: int = 0, world: int = 1, loop: bool = True,
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict]]:
    """[micro_batch, seq_len] (input_ids, labels, state) for this rank.

    Every rank reads the same global stream and keeps its own slice of each group of
    micro_batch * world sequences, so the data order does not depend on the world size.
    Without `loop` the last batch may be smaller (validation).
    """
    sequences = iter_sequences(path, seq_len, packing, state, loop)
    group = micro_batch * world
    while True:
        chunk = [s for _, s in zip(range(group), sequences)]
        if not chunk:
            return
        mine = chunk[rank * micro_batch: (rank + 1) * micro_batch]
        if mine:
            x = torch.from_numpy(np.stack([c[0] for c in mine]))
            y = torch.from_numpy(np.stack([c[1] for c in mine]))
        else:  # validation ran out before this rank's slice
            x = y = torch.empty(0, seq_len, dtype=torch.long)
        yield x, y, chunk[-1][2]
        if len(chunk) < group:
            return


def validation_batches(path: Path, seq_len: int, packing: bool, micro_batch: int,
                       max_batches: int | None, rank: int = 0, world: int = 1,
                       ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's share of the first `max_batches * micro_batch` validation sequences (all
    when None), as micro-batches kept in memory. The set of sequences does not depend on
    the world size, so neither does the validation loss."""
    limit = None if max_batches is None else max_batches * micro_batch
    sequences = list(islice(iter_sequences(path, seq_len, packing, loop=False), limit))
    mine = sequences[rank::world]
    return [(torch.from_numpy(np.stack([s[0] for s in mine[i: i + micro_batch]])),
             torch.from_numpy(np.stack([s[1] for s in mine[i: i + micro_batch]])))
            for i in range(0, len(mine), micro_batch)]


def prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Produce `items` in a background thread, `depth` ahead, in the same order.

    On a GPU the next step's documents are read and tokenized (tokenizers releases the GIL)
    while the current step computes. Order, and so determinism, are unchanged. Closing the
    returned generator stops the thread.
    """
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as error:  # re-raised in the consumer
            put(("error", error))
            return
        put(("end", end))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = out.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()

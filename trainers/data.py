"""Training data from the warehouse: a snapshot of GPT-NeoX ids, memory-mapped while training.

Tokenize once: the n-gram catalog already holds every document's NeoX ids in
`document_tokens` (doc_id, n_tokens, tokens without EOS). A run picks its documents in SQL,
joins them to `document_tokens` and writes the ids, in their final training order, to
`out_dir/run_id/data/` as nanoGPT's `prepare.py` does: `train.bin` (uint16 ids of every
document back to back), `train.offsets.npy` (where each document starts, plus the end) and
`train.doc_ids.npy`, the same for `val`, and `meta.json` last (a snapshot without it is
unfinished and made again). The trainer memory-maps the ids and never sees text.

Why a snapshot: DuckDB lets one process write a database file while nobody else has it
open, and a read-only connection also holds the file lock. Reading from a connection held
open for a whole training run would block every `dbt build` for hours. So a run opens the
warehouse read-only for the seconds the export takes and closes it. A resumed run then sees
exactly the ids the original run saw, even if the warehouse has been rebuilt in between.

The order is fixed by SQL (md5 of the seed and doc_id, or doc_id alone), so the same config
gives the same sequence of batches. A stream position is three integers (epoch, row, token
offset into that row), saved in every checkpoint; resuming reads the row's offset and goes on
from there, without touching what came before.

Sequences (always `seq_len` tokens; labels are -100 where no loss is taken):
- default, as the seed did: one document per sequence, truncated to `seq_len` tokens;
  a shorter document gets one EOS (which the model learns to predict) and is padded with
  more EOS tokens that carry no loss (the snapshot keeps only each document's first
  `seq_len` ids);
- `packing=True`: documents joined with an EOS after each, cut into full sequences, every
  token trained on (GPT-NeoX/Pythia style). The catalog's `token_sequences` packs the same
  way but in doc_id order, without a held-out split and at `ngram_seq_len`; the trainer
  packs its own order from the per-document ids, which gives those very sequences when
  the order and length agree (tested).
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.compute as pc
import torch

from python_udfs.ngrams import tokenizer as neox

IGNORE = -100  # label value that torch's cross-entropy (and HF models) skip
TOKEN_DTYPE = np.dtype("<u2")  # NeoX ids fit 16 bits (nanoGPT's train.bin is np.uint16 too)
SNAPSHOT_FORMAT = "neox-uint16-v1"  # what meta.json's `format` says; older snapshots held text
EXPORT_BATCH = 2048  # documents per Arrow batch while writing a snapshot
TOKENS_TABLE = "document_tokens"
VARIANTS_TABLE = "minipile_variant_documents"  # (variant, doc_id, split, cluster_id): the sampling variants
# Datasets known to carry documents.text unchanged: their text need not be compared.
DOCUMENT_TEXT_TABLES = frozenset({"documents", "minipile"})
BUILD_TOKENS = ("build it with `dbt build --select tag:ngrams` (it tokenizes every document by default; a "
                "warehouse built with ngram_source: minipile has only minipile's train split tokenized: "
                "add --vars '{ngram_source: documents}')")


class MissingTokensError(ValueError):
    """A training document has no ids in document_tokens (the catalog was not built for it)."""


# --------------------------------------------------------------------------- source SQL


def sql_string(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class SourceQueries:
    train: str  # select doc_id ... (the training rows, not yet ordered)
    val: str  # select doc_id ... (the validation rows)
    train_order: str  # order by clause over doc_id, doc_key: the training order
    val_order: str  # order by clause for validation (doc_id)
    source: str  # the FROM expression of the dataset
    columns: list[str]  # the dataset's columns
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
    """SQL for the training and validation documents of `dataset`: a table or view name,
    `sql:...`, or a sampling variant's name (`variant:NAME`, or NAME alone when no table has
    that name): its `train` split of minipile_variant_documents trains, `validation` validates.

    The rows name documents by `doc_id` (their ids are looked up in document_tokens). Sources
    with a `split` column (minipile) are split by it; others hold out the rows whose
    md5(doc_id) falls in the first `val_fraction` of the hash range, independent of the seed,
    so every run on that source validates on the same rows. A `text` column is optional;
    when there is one, rows with empty text are left out, as they always were.
    """
    if dataset.startswith("sql:"):
        source = f"({dataset[4:].strip().rstrip(';')})"
    elif dataset.startswith("variant:") or (
            dataset.replace("_", "").replace(".", "").replace("-", "").isalnum()
            and not relation_exists(con, dataset)):
        source = variant_source(con, dataset.removeprefix("variant:"))
    elif dataset.replace("_", "").replace(".", "").isalnum():
        source = dataset
    else:
        raise ValueError(f"dataset must be a table name, a variant name or 'sql:select ...', got {dataset!r}")
    columns = [d[0] for d in con.sql(f"select * from {source} as s limit 0").description]
    if "doc_id" not in columns:
        raise ValueError(
            f"{dataset!r} has no `doc_id` column (columns: {columns}): the trainer reads each "
            f"document's GPT-NeoX ids from {TOKENS_TABLE} by doc_id and does not tokenize text, so "
            "select the documents' doc_id (e.g. 'sql:select doc_id from documents where ...')")
    key = "doc_id::varchar"
    if "split" in columns and split is not None:
        train_where = f"split = {sql_string(split)}"
        val_where = f"split = {sql_string(val_split)}" if val_split else "false"
        how = f"split column: train={split!r}, validation={val_split!r}"
    else:
        bucket = f"md5_number('heldout:' || {key}) % 1000000"
        cut = int(round(val_fraction * 1_000_000))
        train_where, val_where = f"{bucket} >= {cut}", f"{bucket} < {cut}"
        how = f"held out {val_fraction:.2%} by md5 of doc_id"
    non_empty = "text is not null and length(text) > 0 and " if "text" in columns else ""

    def rows(where: str) -> str:
        return (f"select doc_id::bigint as doc_id, {key} as doc_key from {source} as s "
                f"where {non_empty}{where}")

    order = f"md5('shuffle:{int(seed)}:' || doc_key), doc_id" if shuffle else "doc_id"
    return SourceQueries(rows(train_where), rows(val_where), order, "doc_id", source, columns, how)


def relation_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """A table or view called `name` (schema.name allowed) in the warehouse."""
    schema, _, table = name.rpartition(".")
    sql = "select count(*) from information_schema.tables where table_name = ?"
    params = [table]
    if schema:
        sql += " and table_schema = ?"
        params.append(schema)
    return con.execute(sql, params).fetchall()[0][0] > 0


def known_variants(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The variant names of `minipile_variant_documents` (empty when the mart is missing)."""
    if not relation_exists(con, VARIANTS_TABLE):
        return []
    return [r[0] for r in con.execute(
        f"select distinct variant from {VARIANTS_TABLE} order by variant").fetchall()]


def variant_source(con: duckdb.DuckDBPyConnection, variant: str) -> str:
    """The FROM expression of one sampling variant: its documents with their split.

    `minipile_variant_documents` (variant, doc_id, split, cluster_id) names the documents;
    text is not needed (the ids come from document_tokens, which is documents.text
    tokenized). `minipile` as a variant name is the minipile table itself.
    """
    if variant == "minipile":
        return "minipile"
    variants = known_variants(con)
    if variant not in variants:
        known = ", ".join(variants) if variants else f"none: the warehouse has no {VARIANTS_TABLE}"
        raise ValueError(
            f"unknown dataset {variant!r}: not a table or view of the warehouse and not a "
            f"variant of {VARIANTS_TABLE} (known variants: {known}); a dataset is "
            "minipile, documents, a table, a variant name or 'sql:select ...'")
    return (f"(select doc_id, split, cluster_id from {VARIANTS_TABLE} "
            f"where variant = {sql_string(variant)})")


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


def check_text(con: duckdb.DuckDBPyConnection, queries: SourceQueries, dataset: str) -> None:
    """A dataset picks documents; it may not change their text, since the ids come from
    document_tokens (documents.text tokenized). Fail rather than train on other text."""
    if "text" not in queries.columns or dataset in DOCUMENT_TEXT_TABLES:
        return
    n, example = con.execute(
        f"select count(*), min(s.doc_id::bigint) from {queries.source} as s "
        "join documents as d on d.doc_id = s.doc_id::bigint "
        "where s.text is not null and length(s.text) > 0 and s.text is distinct from d.text").fetchall()[0]
    if n:
        raise ValueError(
            f"{dataset!r}: the text of {n:,} of its documents (e.g. doc_id {example}) differs from "
            f"documents.text. The trainer trains on each document's ids in {TOKENS_TABLE}, which are "
            "documents.text tokenized, so a dataset chooses documents by doc_id but cannot change "
            "their text; select doc_id (and, if you like, the documents' own text)")


def check_tokens(con: duckdb.DuckDBPyConnection, queries: SourceQueries, dataset: str) -> None:
    """Every training and validation document must have ids in document_tokens: never drop
    documents silently because the catalog tokenized fewer than the dataset names."""
    (exists,) = con.execute("select count(*) from information_schema.tables where table_name = ?",
                            [TOKENS_TABLE]).fetchall()[0]
    if not exists:
        raise MissingTokensError(
            f"the warehouse has no {TOKENS_TABLE}, which holds the GPT-NeoX ids the trainer reads "
            f"(it does not tokenize text itself): {BUILD_TOKENS}")
    for name, rows in (("training", queries.train), ("validation", queries.val)):
        try:
            wanted, missing, examples = con.execute(f"""
                with wanted as (select doc_id from ({rows})),
                     missing as (select doc_id from wanted anti join {TOKENS_TABLE} using (doc_id))
                select (select count(*) from wanted), (select count(*) from missing),
                       (select list(doc_id) from (select doc_id from missing order by doc_id limit 5))
            """).fetchall()[0]
        except duckdb.IOException as error:
            raise MissingTokensError(
                f"{TOKENS_TABLE} could not be read ({str(error).splitlines()[0]}). It is a view over the lake's token "
                "parts: run from the project root, or with the PILEHOUSE_LAKE the warehouse was built "
                f"with; if the parts are gone, {BUILD_TOKENS}") from error
        if missing:
            raise MissingTokensError(
                f"{missing:,} of the {wanted:,} {name} documents of {dataset!r} have no ids in "
                f"{TOKENS_TABLE} (doc_id {', '.join(map(str, examples))}, ...). {TOKENS_TABLE} holds "
                f"the documents the n-gram catalog tokenized; {BUILD_TOKENS}")


def split_file(path: Path, kind: str) -> Path:
    """train.bin -> train.offsets.npy, train.doc_ids.npy."""
    return path.with_name(f"{path.stem}.{kind}.npy")


def _save_npy(array: np.ndarray, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a path
        np.save(f, array)
    os.replace(tmp, target)


def write_split(con: duckdb.DuckDBPyConnection, rows: str, order: str, max_tokens: int | None,
                path: Path) -> dict[str, int]:
    """The rows' ids, in `order`, as a flat uint16 file plus document offsets and doc_ids."""
    tokens = "t.tokens" if max_tokens is None else f"t.tokens[1:{int(max_tokens)}]"
    sql = (f"select doc_id, {tokens} as tokens from ({rows}) as r join {TOKENS_TABLE} as t using (doc_id) "
           f"where len(t.tokens) > 0 order by {order}")
    lengths, doc_ids = [np.zeros(1, np.int64)], [np.zeros(0, np.int64)]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for batch in con.sql(sql).to_arrow_reader(EXPORT_BATCH):
            column = batch.column("tokens")
            f.write(column.flatten().to_numpy(zero_copy_only=False).astype(TOKEN_DTYPE, copy=False).tobytes())
            lengths.append(pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64))
            doc_ids.append(batch.column("doc_id").to_numpy(zero_copy_only=False).astype(np.int64))
    offsets = np.cumsum(np.concatenate(lengths))
    _save_npy(offsets, split_file(path, "offsets"))
    _save_npy(np.concatenate(doc_ids), split_file(path, "doc_ids"))
    os.replace(tmp, path)
    return {"rows": len(offsets) - 1, "tokens": int(offsets[-1])}


def export_snapshot(db: str | Path, dataset: str, out_dir: Path, *, split: str | None,
                    val_split: str | None, val_fraction: float, seed: int, shuffle: bool,
                    max_tokens: int | None = None) -> dict:
    """Write the train and val ids under out_dir unless its meta.json says they are there.

    `max_tokens` keeps only each document's first ids (the trainer passes seq_len when it
    truncates, None when it packs). The warehouse is opened read-only, for the export only.
    An existing snapshot made with other settings is an error, not silently reused.
    """
    out_dir = Path(out_dir)
    settings = dict(dataset=dataset, split=split, val_split=val_split, val_fraction=val_fraction,
                    seed=seed, shuffle=shuffle, max_tokens=max_tokens)
    meta_path = out_dir / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != SNAPSHOT_FORMAT or meta.get("settings") != settings:
            raise ValueError(f"the data snapshot in {out_dir} was made with other settings "
                             f"({meta.get('format')}, {meta.get('settings')}; now {settings}): "
                             "pass another --run-id, or --no-resume to make it again")
    else:
        if (out_dir / "train.parquet").exists():
            raise ValueError(f"{out_dir} holds a text snapshot of an older trainer, which this one does "
                             "not read: finish that run with the older version, or --no-resume")
        if not Path(db).exists():
            raise FileNotFoundError(f"warehouse {db} not found (set --db or PILEHOUSE_DB)")
        out_dir.mkdir(parents=True, exist_ok=True)
        with connect_read_only(db) as con:
            queries = source_queries(con, dataset, split, val_split, val_fraction, seed, shuffle)
            check_text(con, queries, dataset)
            check_tokens(con, queries, dataset)
            written = {
                "train": write_split(con, queries.train, queries.train_order, max_tokens, out_dir / "train.bin"),
                "val": write_split(con, queries.val, queries.val_order, max_tokens, out_dir / "val.bin"),
            }
        meta = {"format": SNAPSHOT_FORMAT, "settings": settings, "description": queries.description,
                "rows": {k: v["rows"] for k, v in written.items()},
                "tokens": {k: v["tokens"] for k, v in written.items()}}
        tmp = meta_path.with_name("meta.json.tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, meta_path)  # last: the snapshot is complete once meta.json is there
    if meta["rows"]["train"] == 0:
        raise ValueError(f"{dataset!r} gave no training rows (split={split!r})")
    return {"paths": {k: out_dir / f"{k}.bin" for k in ("train", "val")}, "rows": meta["rows"],
            "tokens": meta["tokens"]}


# --------------------------------------------------------------------------- token stream


@dataclass(frozen=True)
class Split:
    """One split of a snapshot: every document's ids back to back, and where each starts."""

    tokens: np.ndarray  # uint16, memory-mapped
    offsets: np.ndarray  # int64, len(documents) + 1
    max_tokens: int | None  # the snapshot kept only this many ids per document (None: all)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def document(self, row: int) -> np.ndarray:
        return self.tokens[self.offsets[row]: self.offsets[row + 1]]


def open_split(path: Path) -> Split:
    path = Path(path)
    offsets = np.load(split_file(path, "offsets"))
    # np.memmap cannot map an empty file (a split with no documents)
    tokens = (np.memmap(path, dtype=TOKEN_DTYPE, mode="r") if path.stat().st_size
              else np.zeros(0, TOKEN_DTYPE))
    if int(offsets[-1]) != len(tokens):
        raise ValueError(f"{path} holds {len(tokens)} ids but its offsets end at {int(offsets[-1])}")
    meta = path.parent / "meta.json"
    max_tokens = json.loads(meta.read_text())["settings"]["max_tokens"] if meta.exists() else None
    return Split(tokens, offsets, max_tokens)


def doc_ids(path: Path) -> np.ndarray:
    """The doc_id of each row of a split, in training order."""
    return np.load(split_file(Path(path), "doc_ids"))


def start_state() -> dict[str, int]:
    return {"epoch": 0, "row": 0, "offset": 0}


def iter_sequences(path: Path, seq_len: int, packing: bool, state: dict | None = None,
                   loop: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """(input_ids, labels, state after this sequence), forever when `loop` (epochs repeat)."""
    state = dict(state or start_state())
    epoch, row, offset = state["epoch"], state["row"], state["offset"]
    buf: list[np.ndarray] = []
    filled = 0
    while True:
        split = open_split(path)  # mapped again every epoch, so pages read long ago can go
        if split.max_tokens is not None and (packing or split.max_tokens < seq_len):
            raise ValueError(f"{path} keeps only the first {split.max_tokens} ids of each document: "
                             f"too few for {'packing' if packing else f'seq_len {seq_len}'}")
        first, row = row, 0  # a resumed epoch starts at its saved row
        for row in range(first, len(split)):
            ids = split.document(row)
            if not packing:  # one document, truncated; EOS, then EOS padding without loss
                ids = ids[:seq_len]
                x = np.full(seq_len, neox.EOS_ID, dtype=np.int64)
                y = np.full(seq_len, IGNORE, dtype=np.int64)
                x[: len(ids)] = ids
                y[: len(ids)] = ids
                if len(ids) < seq_len:
                    y[len(ids)] = neox.EOS_ID
                yield x, y, {"epoch": epoch, "row": row + 1, "offset": 0}
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
        if not loop:
            return
        if len(split) == 0:
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

    On a GPU the next step's sequences are cut from the memory-mapped ids while the
    current step computes. Order, and so determinism, are unchanged. Closing the
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

"""The trainer's old data path, kept only as the reference the id-based path is tested against.

Until issue 10 the trainer snapshotted `doc_id, text` rows to parquet and tokenized the text
while it trained. This is that code, unchanged but for its imports, so a test can show that
reading the ids from `document_tokens` gives the same sequences and the same losses. It is
not part of the package: nothing outside tests/trainers imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq

from python_udfs.ngrams import tokenizer as neox
from trainers.data import IGNORE, connect_read_only, sql_string, start_state

TOKENIZE_CHUNK = 256
CHARS_PER_TOKEN_CAP = 16


def source_queries(con: duckdb.DuckDBPyConnection, dataset: str, split: str | None,
                   val_split: str | None, val_fraction: float, seed: int,
                   shuffle: bool) -> tuple[str, str]:
    """(train, val) SQL over `doc_id, text`, in the training order the trainer always used."""
    if dataset.startswith("sql:"):
        source = f"({dataset[4:].strip().rstrip(';')})"
    else:
        source = dataset
    columns = [d[0] for d in con.sql(f"select * from {source} as s limit 0").description]
    has_id = "doc_id" in columns
    doc_id = "doc_id::bigint" if has_id else "null::bigint"
    key = "doc_id::varchar" if has_id else "md5(text)"
    if "split" in columns and split is not None:
        train_where = f"split = {sql_string(split)}"
        val_where = f"split = {sql_string(val_split)}" if val_split else "false"
    else:
        bucket = f"md5_number('heldout:' || {key}) % 1000000"
        cut = int(round(val_fraction * 1_000_000))
        train_where, val_where = f"{bucket} >= {cut}", f"{bucket} < {cut}"

    def rows(where: str) -> str:
        return (f"select {doc_id} as doc_id, {key} as doc_key, text from {source} as s "
                f"where text is not null and length(text) > 0 and {where}")

    tie = "doc_id, doc_key" if has_id else "doc_key"
    order = f"md5('shuffle:{int(seed)}:' || doc_key), {tie}" if shuffle else tie
    return (f"select doc_id, text from ({rows(train_where)}) order by {order}",
            f"select doc_id, text from ({rows(val_where)}) order by {tie}")


def export_snapshot(db: str | Path, dataset: str, out_dir: Path, *, split: str | None,
                    val_split: str | None, val_fraction: float, seed: int, shuffle: bool,
                    max_tokens: int | None = None) -> dict:
    """train.parquet and val.parquet of `doc_id, text` (max_tokens: accepted, unused)."""
    out_dir = Path(out_dir)
    paths = {"train": out_dir / "train.parquet", "val": out_dir / "val.parquet"}
    if not all(p.exists() for p in paths.values()):
        out_dir.mkdir(parents=True, exist_ok=True)
        with connect_read_only(db) as con:
            queries = source_queries(con, dataset, split, val_split, val_fraction, seed, shuffle)
            for name, sql in zip(("train", "val"), queries):
                tmp = paths[name].with_suffix(".parquet.tmp")
                con.execute(f"copy ({sql}) to {sql_string(tmp)} "
                            "(format parquet, compression zstd, row_group_size 2048)")
                os.replace(tmp, paths[name])
    rows = {k: pq.ParquetFile(p).metadata.num_rows for k, p in paths.items()}
    return {"paths": paths, "rows": rows}


def iter_texts(path: Path, row: int, chunk: int = TOKENIZE_CHUNK) -> Iterator[list[str]]:
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
    if seq_len is None:
        return neox.encode_batch(texts)
    cap = CHARS_PER_TOKEN_CAP * seq_len
    ids = neox.encode_batch([t[:cap] for t in texts])
    for i, text in enumerate(texts):
        if len(ids[i]) < seq_len and len(text) > cap:
            ids[i] = neox.encode_batch([text])[0]
    return [a[:seq_len] for a in ids]


def iter_sequences(path: Path, seq_len: int, packing: bool, state: dict | None = None,
                   loop: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """The old stream: tokenizes each parquet text as it goes (same states as the new one)."""
    state = dict(state or start_state())
    epoch, row, offset = state["epoch"], state["row"], state["offset"]
    buf: list[np.ndarray] = []
    filled = 0
    while True:
        for texts in iter_texts(path, row):
            for ids in tokenize(texts, None if packing else seq_len):
                if not packing:
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
                pos, offset = offset, 0
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

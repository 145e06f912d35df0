"""trainers.data: the warehouse snapshot, sequence building, determinism and resume positions."""

from __future__ import annotations

import threading
import time
from itertools import islice

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from python_udfs.ngrams import tokenizer as neox
from trainers import data

EOS, IGNORE = neox.EOS_ID, data.IGNORE


def snapshot(warehouse, tmp_path, dataset="minipile", **kw):
    args = dict(split="train", val_split="validation", val_fraction=0.2, seed=42, shuffle=True)
    return data.export_snapshot(warehouse, dataset, tmp_path / "snap", **{**args, **kw})


def ids_of(path):
    return pq.read_table(path).column("doc_id").to_pylist()


def texts_of(path):
    return pq.read_table(path).column("text").to_pylist()


def test_minipile_split_column_picks_train_and_validation(warehouse, tmp_path):
    snap = snapshot(warehouse, tmp_path)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        split = con.execute("select doc_id, split from minipile").fetchall()
    train = {doc_id for doc_id, s in split if s == "train"}
    val = {doc_id for doc_id, s in split if s == "validation"}
    assert set(ids_of(snap["paths"]["train"])) == train
    assert set(ids_of(snap["paths"]["val"])) == val
    assert snap["rows"] == {"train": 36, "val": 6}


def test_order_is_seeded_shuffle_and_reproducible(warehouse, tmp_path):
    a = ids_of(snapshot(warehouse, tmp_path / "a")["paths"]["train"])
    b = ids_of(snapshot(warehouse, tmp_path / "b")["paths"]["train"])
    c = ids_of(snapshot(warehouse, tmp_path / "c", seed=7)["paths"]["train"])
    plain = ids_of(snapshot(warehouse, tmp_path / "d", shuffle=False)["paths"]["train"])
    assert a == b  # same seed, same order
    assert sorted(a) == sorted(c) and a != c  # another seed, another order of the same rows
    assert plain == sorted(plain) and a != plain


def test_documents_hold_out_a_stable_fraction(warehouse, tmp_path):
    a = snapshot(warehouse, tmp_path / "a", dataset="documents")
    b = snapshot(warehouse, tmp_path / "b", dataset="documents", seed=1)
    train, val = set(ids_of(a["paths"]["train"])), set(ids_of(a["paths"]["val"]))
    assert not train & val and len(train | val) == 60
    assert 0 < len(val) < 30
    assert set(ids_of(b["paths"]["val"])) == val  # the held-out rows do not depend on the seed


def test_sql_source_without_doc_id(warehouse, tmp_path):
    sql = "sql:select text from documents where source = 'BBC News'"
    snap = snapshot(warehouse, tmp_path, dataset=sql, val_fraction=0.0)
    assert snap["rows"] == {"train": 15, "val": 0}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        bbc = con.execute("select text from documents where source = 'BBC News'").fetchall()
    bbc = {text for (text,) in bbc}
    assert set(texts_of(snap["paths"]["train"])) == bbc


def test_bad_sources_fail_clearly(warehouse, tmp_path):
    with pytest.raises(ValueError, match="table name"):
        snapshot(warehouse, tmp_path / "a", dataset="documents; drop table documents")
    with pytest.raises(ValueError, match="no `text` column"):
        snapshot(warehouse, tmp_path / "b", dataset="sql:select doc_id from documents")
    with pytest.raises(FileNotFoundError):
        data.export_snapshot(tmp_path / "missing.duckdb", "minipile", tmp_path / "c", split="train",
                             val_split="validation", val_fraction=0.1, seed=1, shuffle=True)


def test_snapshot_does_not_hold_the_warehouse(warehouse, tmp_path):
    snapshot(warehouse, tmp_path)
    with duckdb.connect(str(warehouse)) as con:  # read-write open works straight after
        con.execute("create table after_snapshot as select 1 as x")


def test_truncate_and_pad_like_the_seed(warehouse, tmp_path):
    path = snapshot(warehouse, tmp_path)["paths"]["train"]
    texts = texts_of(path)
    seq_len = 64
    seqs = list(islice(data.iter_sequences(path, seq_len, packing=False), len(texts)))
    for text, (x, y, _) in zip(texts, seqs):
        ids = neox.encode(text)
        assert x.shape == y.shape == (seq_len,) and x.dtype == np.int64
        n = min(len(ids), seq_len)
        assert x[:n].tolist() == ids[:n] and y[:n].tolist() == ids[:n]
        if len(ids) < seq_len:  # one EOS with a label, then EOS padding without loss
            assert (x[n:] == EOS).all()
            assert y[n] == EOS and (y[n + 1:] == IGNORE).all()
        else:
            assert (y != IGNORE).all()
    assert any(len(neox.encode(t)) < seq_len for t in texts)  # the padded branch ran
    assert any(len(neox.encode(t)) >= seq_len for t in texts)  # and the truncated one


def test_packing_joins_documents_with_eos(warehouse, tmp_path):
    path = snapshot(warehouse, tmp_path)["paths"]["train"]
    texts = texts_of(path)[:5]
    stream = np.concatenate([np.append(neox.encode(t), EOS) for t in texts])
    seq_len = 64
    n = len(stream) // seq_len
    seqs = list(islice(data.iter_sequences(path, seq_len, packing=True), n))
    for i, (x, y, _) in enumerate(seqs):
        assert x.shape == (seq_len,) and (x == y).all()
        assert x.tolist() == stream[i * seq_len:(i + 1) * seq_len].tolist()


def test_epochs_repeat_the_rows(warehouse, tmp_path):
    path = snapshot(warehouse, tmp_path)["paths"]["train"]
    seqs = list(islice(data.iter_sequences(path, 32, packing=False), 36 + 3))
    assert seqs[36][2]["epoch"] == 1
    for a, b in zip(seqs[:3], seqs[36:]):
        assert (a[0] == b[0]).all()


@pytest.mark.parametrize("packing", [False, True])
def test_resume_from_a_saved_position(warehouse, tmp_path, packing):
    """Restarting at a sequence's saved state gives the rest of the uninterrupted stream."""
    path = snapshot(warehouse, tmp_path)["paths"]["train"]
    full = list(islice(data.iter_sequences(path, 48, packing), 90))  # > 1 epoch when truncating
    for k in (1, 7, 40):
        rest = list(islice(data.iter_sequences(path, 48, packing, state=full[k - 1][2]), 90 - k))
        assert [s[0].tolist() for s in rest] == [s[0].tolist() for s in full[k:]]


def test_seek_across_row_groups(tmp_path):
    path = tmp_path / "groups.parquet"
    texts = [f"document number {i}" for i in range(23)]
    pq.write_table(pa.table({"doc_id": list(range(23)), "text": texts}), path, row_group_size=5)
    for row in (0, 4, 5, 6, 12, 22, 23):
        got = [t for chunk in data.iter_texts(path, row, chunk=3) for t in chunk]
        assert got == texts[row:]


def test_batches_are_deterministic_and_split_over_ranks(warehouse, tmp_path):
    path = snapshot(warehouse, tmp_path)["paths"]["train"]
    a = list(islice(data.iter_batches(path, 32, False, micro_batch=4), 5))
    b = list(islice(data.iter_batches(path, 32, False, micro_batch=4), 5))
    assert all((x1 == x2).all() and (y1 == y2).all() for (x1, y1, _), (x2, y2, _) in zip(a, b))
    assert a[0][0].shape == (4, 32) and str(a[0][0].dtype) == "torch.int64"
    # Two ranks with micro-batch 2 see, together, what one rank with micro-batch 4 sees.
    r0 = next(data.iter_batches(path, 32, False, micro_batch=2, rank=0, world=2))
    r1 = next(data.iter_batches(path, 32, False, micro_batch=2, rank=1, world=2))
    assert (np.concatenate([r0[0], r1[0]]) == a[0][0].numpy()).all()
    assert r0[2] == r1[2] == a[0][2]


def test_validation_batches(warehouse, tmp_path):
    path = snapshot(warehouse, tmp_path)["paths"]["val"]  # 6 rows
    every = data.validation_batches(path, 32, False, micro_batch=4, max_batches=None)
    assert [len(x) for x, _ in every] == [4, 2]  # all rows, the last batch short
    one = data.validation_batches(path, 32, False, micro_batch=4, max_batches=1)
    assert len(one) == 1 and len(one[0][0]) == 4
    # Two ranks share the same 4 sequences (2 each): validation does not depend on the world.
    r0 = data.validation_batches(path, 32, False, micro_batch=2, max_batches=2, rank=0, world=2)
    r1 = data.validation_batches(path, 32, False, micro_batch=2, max_batches=2, rank=1, world=2)
    shared = sorted(map(tuple, np.concatenate([r0[0][0], r1[0][0]]).tolist()))
    assert shared == sorted(map(tuple, one[0][0].tolist()))


def test_prefetch_keeps_order_and_errors():
    assert list(data.prefetch(iter(range(50)), depth=3)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("bad row")

    got = data.prefetch(broken())
    assert next(got) == 1
    with pytest.raises(RuntimeError, match="bad row"):
        next(got)
    endless = data.prefetch(iter(int, 1))  # never ends: closing must stop its thread
    assert next(endless) == 0
    endless.close()
    for _ in range(50):
        if not any(t.name == "prefetch" for t in threading.enumerate()):
            break
        time.sleep(0.05)
    assert not any(t.name == "prefetch" for t in threading.enumerate())

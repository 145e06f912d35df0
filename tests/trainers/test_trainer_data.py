"""trainers.data: the id snapshot, sequence building, determinism and resume positions."""

from __future__ import annotations

import json
import shutil
import threading
import time
from itertools import islice
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import text_reference
from trainer_warehouse import create_tokens_view

from python_udfs.ngrams import tokenizer as neox
from trainers import data

EOS, IGNORE = neox.EOS_ID, data.IGNORE


def snapshot(warehouse, tmp_path, dataset="minipile", **kw):
    args = dict(split="train", val_split="validation", val_fraction=0.2, seed=42, shuffle=True)
    return data.export_snapshot(warehouse, dataset, tmp_path / "snap", **{**args, **kw})


def ids_of(path):
    return data.doc_ids(path).tolist()


def texts_of(warehouse, path):
    """The documents' text, in the snapshot's order (the snapshot itself holds ids only)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        text = dict(con.execute("select doc_id, text from documents").fetchall())
    return [text[i] for i in ids_of(path)]


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
    # the order the text trainer always used: md5 of the seed and doc_id
    with duckdb.connect(str(warehouse), read_only=True) as con:
        expected = [r[0] for r in con.execute(
            "select doc_id from minipile where split = 'train' "
            "order by md5('shuffle:42:' || doc_id::varchar), doc_id").fetchall()]
    assert a == expected


def test_snapshot_holds_each_documents_ids_in_training_order(warehouse, tmp_path):
    whole = snapshot(warehouse, tmp_path / "whole")  # packing: whole documents
    cut = snapshot(warehouse, tmp_path / "cut", max_tokens=40)  # truncating: the first ids only
    texts = texts_of(warehouse, whole["paths"]["train"])
    full, short = data.open_split(whole["paths"]["train"]), data.open_split(cut["paths"]["train"])
    assert len(full) == len(short) == len(texts) == 36 and full.tokens.dtype == np.uint16
    for row, text in enumerate(texts):
        ids = neox.encode(text)
        assert full.document(row).tolist() == ids
        assert short.document(row).tolist() == ids[:40]
    assert whole["tokens"]["train"] == sum(len(neox.encode(t)) for t in texts) == len(full.tokens)
    assert cut["tokens"]["train"] == sum(min(40, len(neox.encode(t))) for t in texts)
    assert json.loads((tmp_path / "cut" / "snap" / "meta.json").read_text())["settings"]["max_tokens"] == 40
    # a truncated snapshot cannot serve packing or a longer seq_len
    with pytest.raises(ValueError, match="first 40 ids"):
        next(data.iter_sequences(cut["paths"]["train"], 32, packing=True))
    with pytest.raises(ValueError, match="seq_len 64"):
        next(data.iter_sequences(cut["paths"]["train"], 64, packing=False))


def test_the_sequences_are_the_text_trainers(warehouse, tmp_path):
    """Ids from document_tokens give, sequence for sequence, what tokenizing the text gave."""
    old = text_reference.export_snapshot(warehouse, "minipile", tmp_path / "old", split="train",
                                         val_split="validation", val_fraction=0.2, seed=42, shuffle=True)
    for packing, seq_len in ((False, 32), (False, 256), (True, 48)):
        new = snapshot(warehouse, tmp_path / f"new-{packing}-{seq_len}", max_tokens=None if packing else seq_len)
        for split in ("train", "val"):
            a = list(islice(text_reference.iter_sequences(old["paths"][split], seq_len, packing), 100))
            b = list(islice(data.iter_sequences(new["paths"][split], seq_len, packing), 100))
            assert len(a) == len(b) == 100
            for (xa, ya, sa), (xb, yb, sb) in zip(a, b):
                assert (xa == xb).all() and (ya == yb).all() and sa == sb


def test_documents_hold_out_a_stable_fraction(warehouse, tmp_path):
    a = snapshot(warehouse, tmp_path / "a", dataset="documents")
    b = snapshot(warehouse, tmp_path / "b", dataset="documents", seed=1)
    train, val = set(ids_of(a["paths"]["train"])), set(ids_of(a["paths"]["val"]))
    assert not train & val and len(train | val) == 60
    assert 0 < len(val) < 30
    assert set(ids_of(b["paths"]["val"])) == val  # the held-out rows do not depend on the seed


def test_sql_source_picks_documents_by_doc_id(warehouse, tmp_path):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        bbc = {i for (i,) in con.execute("select doc_id from documents where source = 'BBC News'").fetchall()}
    for sql in ("sql:select doc_id from documents where source = 'BBC News'",
                "sql:select doc_id, text from documents where source = 'BBC News'"):
        snap = snapshot(warehouse, tmp_path / str(len(sql)), dataset=sql, val_fraction=0.0)
        assert snap["rows"] == {"train": 15, "val": 0}
        assert set(ids_of(snap["paths"]["train"])) == bbc
        assert list(data.iter_sequences(snap["paths"]["val"], 32, False, loop=False)) == []


def test_sql_source_needs_doc_id_and_the_documents_text(warehouse, tmp_path):
    with pytest.raises(ValueError, match="no `doc_id` column.*document_tokens by doc_id"):
        snapshot(warehouse, tmp_path / "a", dataset="sql:select text from documents where source = 'BBC News'")
    changed = "sql:select doc_id, upper(text) as text from documents where doc_id < 10"
    with pytest.raises(ValueError, match=r"text of 10 of its documents \(e.g. doc_id 0\) differs"):
        snapshot(warehouse, tmp_path / "b", dataset=changed)
    assert not (tmp_path / "b" / "snap" / "meta.json").exists()


def test_a_variant_name_trains_on_its_train_split(warehouse, tmp_path):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        want = {split: sorted(r[0] for r in con.execute(
            "select doc_id from minipile_variant_documents where variant = 'density' and split = ?",
            [split]).fetchall()) for split in ("train", "validation")}
    snap = snapshot(warehouse, tmp_path / "a", dataset="density")
    assert sorted(ids_of(snap["paths"]["train"])) == want["train"] and len(want["train"]) == 26
    assert sorted(ids_of(snap["paths"]["val"])) == want["validation"]
    explicit = snapshot(warehouse, tmp_path / "b", dataset="variant:density")
    assert ids_of(explicit["paths"]["train"]) == ids_of(snap["paths"]["train"])
    # `minipile` is the minipile table, also as a variant name
    as_variant = snapshot(warehouse, tmp_path / "c", dataset="variant:minipile")
    table = snapshot(warehouse, tmp_path / "d", dataset="minipile")
    assert ids_of(as_variant["paths"]["train"]) == ids_of(table["paths"]["train"])


def test_an_unknown_variant_lists_the_known_ones(warehouse, tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'dense'.*known variants: density, uniform"):
        snapshot(warehouse, tmp_path / "a", dataset="dense")
    with duckdb.connect(str(warehouse)) as con:
        con.execute("drop table minipile_variant_documents")
    with pytest.raises(ValueError, match="has no minipile_variant_documents"):
        snapshot(warehouse, tmp_path / "b", dataset="uniform")


def test_bad_sources_fail_clearly(warehouse, tmp_path):
    with pytest.raises(ValueError, match="table name"):
        snapshot(warehouse, tmp_path / "a", dataset="documents; drop table documents")
    with pytest.raises(ValueError, match="no training rows"):
        snapshot(warehouse, tmp_path / "b", dataset="sql:select doc_id from documents where false")
    with pytest.raises(FileNotFoundError):
        data.export_snapshot(tmp_path / "missing.duckdb", "minipile", tmp_path / "c", split="train",
                             val_split="validation", val_fraction=0.1, seed=1, shuffle=True)


def test_missing_tokens_fail_clearly(warehouse, tmp_path, token_parts):
    # ngram_source: minipile tokenizes only minipile's train split
    with duckdb.connect(str(warehouse)) as con:
        create_tokens_view(con, token_parts, "doc_id in (select doc_id from minipile where split = 'train')")
    with pytest.raises(data.MissingTokensError) as info:
        snapshot(warehouse, tmp_path / "a")
    message = str(info.value)
    assert "6 of the 6 validation documents of 'minipile' have no ids in document_tokens" in message
    assert "dbt build --select tag:ngrams" in message and "{ngram_source: documents}" in message
    with pytest.raises(data.MissingTokensError, match="24 of the 60 training documents of 'documents'"):
        snapshot(warehouse, tmp_path / "b", dataset="documents", val_fraction=0.0)
    assert not list((tmp_path / "a" / "snap").glob("*"))  # nothing half-written is left to reuse
    ok = snapshot(warehouse, tmp_path / "c", val_split=None)  # train split alone is all there
    assert ok["rows"] == {"train": 36, "val": 0}

    moved = tmp_path / "lake" / "part-000000.parquet"  # the view over parts that are gone
    moved.parent.mkdir()
    shutil.copy(sorted(Path(token_parts).parent.glob("part-*.parquet"))[0], moved)
    with duckdb.connect(str(warehouse)) as con:
        create_tokens_view(con, str(moved.parent / "part-*.parquet"))
    moved.unlink()
    with pytest.raises(data.MissingTokensError, match="could not be read.*PILEHOUSE_LAKE.*tag:ngrams"):
        snapshot(warehouse, tmp_path / "d")
    with duckdb.connect(str(warehouse)) as con:  # the catalog was never built
        con.execute("drop view document_tokens")
    with pytest.raises(data.MissingTokensError, match="no document_tokens.*dbt build --select tag:ngrams"):
        snapshot(warehouse, tmp_path / "e")


def test_a_snapshot_is_reused_only_for_its_settings(warehouse, tmp_path):
    first = snapshot(warehouse, tmp_path)
    with duckdb.connect(str(warehouse)) as con:  # the warehouse changes: the snapshot does not
        con.execute("drop view document_tokens")
    again = snapshot(warehouse, tmp_path)
    assert again == first
    with pytest.raises(ValueError, match="other settings"):
        snapshot(warehouse, tmp_path, seed=7)
    old = tmp_path / "old"  # what the text trainer left in a run's data/
    old.mkdir()
    pq.write_table(pa.table({"doc_id": [1], "text": ["a"]}), old / "train.parquet")
    with pytest.raises(ValueError, match="text snapshot of an older trainer"):
        data.export_snapshot(warehouse, "minipile", old, split="train", val_split="validation",
                             val_fraction=0.2, seed=42, shuffle=True)


def test_snapshot_does_not_hold_the_warehouse(warehouse, tmp_path):
    snapshot(warehouse, tmp_path)
    with duckdb.connect(str(warehouse)) as con:  # read-write open works straight after
        con.execute("create table after_snapshot as select 1 as x")


def test_truncate_and_pad_like_the_seed(warehouse, tmp_path):
    seq_len = 64
    path = snapshot(warehouse, tmp_path, max_tokens=seq_len)["paths"]["train"]
    texts = texts_of(warehouse, path)
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
    texts = texts_of(warehouse, path)[:5]
    stream = np.concatenate([np.append(neox.encode(t), EOS) for t in texts])
    seq_len = 64
    n = len(stream) // seq_len
    seqs = list(islice(data.iter_sequences(path, seq_len, packing=True), n))
    for i, (x, y, _) in enumerate(seqs):
        assert x.shape == (seq_len,) and (x == y).all()
        assert x.tolist() == stream[i * seq_len:(i + 1) * seq_len].tolist()


def test_packing_in_doc_id_order_is_the_catalogs_token_sequences(warehouse_template, tmp_path, token_parts):
    """Unshuffled, nothing held out, the same length: the trainer's packed stream is
    token_sequences, packed by the catalog's own code from the same parts."""
    from python_udfs.ngrams.counts import pack_sequences

    seq_len = 128
    pack_sequences(sorted(Path(token_parts).parent.glob("part-*.parquet")), tmp_path / "sequences",
                   seq_len=seq_len, seqs_per_part=16, progress=False)
    catalog = [s for part in sorted((tmp_path / "sequences").glob("part-*.parquet"))
               for s in pq.read_table(part).column("tokens").to_pylist()]
    snap = snapshot(warehouse_template, tmp_path, dataset="documents", val_fraction=0.0, shuffle=False)
    ours = [x.tolist() for x, _, _ in data.iter_sequences(snap["paths"]["train"], seq_len, True, loop=False)]
    assert len(ours) == len(catalog) - 1 > 100  # the catalog keeps its short last sequence
    assert ours == catalog[:-1]


def test_epochs_repeat_the_rows(warehouse, tmp_path):
    path = snapshot(warehouse, tmp_path)["paths"]["train"]
    seqs = list(islice(data.iter_sequences(path, 32, packing=False), 36 + 3))
    assert seqs[36][2]["epoch"] == 1
    for a, b in zip(seqs[:3], seqs[36:]):
        assert (a[0] == b[0]).all()


@pytest.mark.parametrize("packing", [False, True])
def test_resume_from_a_saved_position(warehouse, tmp_path, packing):
    """Restarting at a sequence's saved state gives the rest of the uninterrupted stream."""
    path = snapshot(warehouse, tmp_path, max_tokens=None if packing else 48)["paths"]["train"]
    full = list(islice(data.iter_sequences(path, 48, packing), 90))  # > 1 epoch when truncating
    for k in (1, 7, 40):
        rest = list(islice(data.iter_sequences(path, 48, packing, state=full[k - 1][2]), 90 - k))
        assert [s[0].tolist() for s in rest] == [s[0].tolist() for s in full[k:]]


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

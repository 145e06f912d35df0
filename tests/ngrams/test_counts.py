"""Tests for the out-of-core n-gram counts (python_udfs.ngrams.counts) and the prefix marts' SQL.

Every count is compared with an independent reference: ``neox.encode`` of each document
plus EOS (0), concatenated, cut every ``seq_len`` tokens, and counted with
``collections.Counter`` inside each sequence.
"""

from __future__ import annotations

import pickle
import re
import shutil
from collections import Counter
from functools import cache
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from python_udfs.corpus.sample import iter_sample_records
from python_udfs.ngrams import counts as ngrams
from python_udfs.ngrams import tokenizer as neox
from python_udfs.ngrams.counts import count_partials, pack_sequences, reduce_shards, tokenize_to_parts
from python_udfs.runner.executors import PartFailed
from python_udfs.runner.parts import existing_fingerprint, write_atomic

ROOT = Path(__file__).resolve().parents[2]
MARTS = ROOT / "models" / "marts" / "ngrams"
DOC_PART_SIZE = 7


# --- corpus and reference ---------------------------------------------------------------

def corpus_texts() -> list[str]:
    texts = [r["text"] for r in iter_sample_records(per_source=15)]
    texts.insert(20, "")  # an empty document: two EOS in a row
    return texts


def doc_ids_for(texts: list[str]) -> list[int]:
    return [3 + 7 * i for i in range(len(texts))]  # increasing, not contiguous


def batches(texts: list[str], size: int = 11) -> list[pa.RecordBatch]:
    ids = doc_ids_for(texts)
    return [
        pa.RecordBatch.from_pydict({"doc_id": pa.array(ids[i: i + size], pa.int64()),
                                    "text": pa.array(texts[i: i + size], pa.string())})
        for i in range(0, len(texts), size)
    ]


@cache
def _encode(text: str) -> tuple[int, ...]:
    return tuple(neox.encode(text))


def reference_stream(texts: list[str]) -> list[int]:
    stream: list[int] = []
    for text in texts:
        stream += [*_encode(text), 0]
    return stream


def reference_sequences(texts: list[str], seq_len: int) -> list[list[int]]:
    stream = reference_stream(texts)
    return [stream[i: i + seq_len] for i in range(0, len(stream), seq_len)]


def reference_counts(sequences: list[list[int]], n: int) -> dict[tuple, int]:
    counter: Counter = Counter()
    for seq in sequences:
        counter.update(zip(*(seq[k:] for k in range(n))))
    return dict(counter)


def read_counts(out_dir: Path, n: int) -> dict[tuple, int]:
    ids = ngrams.NGRAM_COLUMNS[n]
    rows = duckdb.sql(
        f"select {', '.join(ids)}, count from read_parquet('{out_dir}/n={n}/*.parquet')"
    ).fetchall()
    counts = {tuple(int(x) for x in row[:-1]): int(row[-1]) for row in rows}
    assert len(counts) == len(rows), "an n-gram appears in more than one row (shard)"
    return counts


def read_sequences(seq_dir: Path) -> list[tuple[int, list[int]]]:
    out = []
    for path in sorted(seq_dir.glob("part-*.parquet")):
        table = pq.read_table(path)
        out += list(zip(table.column("seq_id").to_pylist(), table.column("tokens").to_pylist()))
    return out


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("part-*.parquet"))}


_TOKENIZED: dict[tuple[str, ...], Path] = {}


def run_all(tmp: Path, texts: list[str], seq_len: int, seqs_per_part: int, n_shards: int) -> dict:
    """The four runner steps, as the dbt models chain them; returns each step's stats.

    A fresh folder starts from a copy of the document parts an earlier test tokenized for
    the same texts (tokenize_to_parts then reuses them): the corpus is tokenized once.
    """
    key = tuple(texts)
    if not (tmp / "tokens").exists() and key in _TOKENIZED:
        shutil.copytree(_TOKENIZED[key], tmp / "tokens")
    stats = {"tokenize": tokenize_to_parts(batches(texts), tmp / "tokens", part_size=DOC_PART_SIZE,
                                           progress=False)}
    if key not in _TOKENIZED:
        _TOKENIZED[key] = tmp / "tokens-cache"
        shutil.copytree(tmp / "tokens", _TOKENIZED[key])
    doc_parts = sorted((tmp / "tokens").glob("part-*.parquet"))
    stats["pack"] = pack_sequences(doc_parts, tmp / "sequences", seq_len=seq_len,
                                   seqs_per_part=seqs_per_part, progress=False)
    seq_parts = sorted((tmp / "sequences").glob("part-*.parquet"))
    stats["count"] = count_partials(seq_parts, tmp / "partials", n_shards, progress=False)
    stats["reduce"] = reduce_shards(stats["count"]["paths"], tmp / "counts", n_shards, progress=False)
    return stats


def assert_counts_equal_reference(tmp: Path, texts: list[str], seq_len: int) -> None:
    sequences = reference_sequences(texts, seq_len)
    for n in (2, 3):
        assert read_counts(tmp / "counts", n) == reference_counts(sequences, n)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus_texts()


# --- end to end against the reference ---------------------------------------------------

@pytest.mark.parametrize(
    ("seq_len", "seqs_per_part", "n_shards", "n_docs"),
    [(64, 100, 1, None), (64, 37, 7, None), (100, 50, 3, None), (100, 1000, 7, None),
     (100, 1, 1, 25), (64, 3, 7, 25)],
)
def test_counts_equal_counter_reference(tmp_path, texts, seq_len, seqs_per_part, n_shards,
                                        n_docs) -> None:
    texts = texts[:n_docs]  # one sequence per part makes many small files: fewer documents
    stats = run_all(tmp_path, texts, seq_len, seqs_per_part, n_shards)
    sequences = reference_sequences(texts, seq_len)
    bigrams, trigrams = reference_counts(sequences, 2), reference_counts(sequences, 3)

    assert read_counts(tmp_path / "counts", 2) == bigrams
    assert read_counts(tmp_path / "counts", 3) == trigrams
    assert (stats["reduce"]["bigrams"], stats["reduce"]["trigrams"]) == (len(bigrams), len(trigrams))
    assert stats["reduce"]["computed"] == 2 * n_shards and stats["reduce"]["reused"] == 0
    assert stats["count"]["windows"] == sum(bigrams.values()) + sum(trigrams.values())
    assert stats["count"]["counted"] == stats["count"]["parts"] == stats["pack"]["parts"]
    assert stats["pack"]["tokens"] == sum(len(s) for s in sequences)
    assert stats["pack"]["sequences"] == len(sequences)
    assert stats["tokenize"]["parts"] == -(-len(texts) // DOC_PART_SIZE)
    assert stats["tokenize"]["computed"] + stats["tokenize"]["reused"] == len(texts)

    # one file per shard (an empty shard too), holding exactly the n-grams with id0 % n_shards
    # == its number, sorted
    for n in (2, 3):
        files = sorted((tmp_path / "counts" / f"n={n}").glob("part-*.parquet"))
        assert [int(re.findall(r"\d+", p.name)[0]) for p in files] == list(range(n_shards))
        for path in files:
            shard = int(re.findall(r"\d+", path.name)[0])
            table = pq.read_table(path)
            id0 = table.column("id0").to_numpy().astype(np.int64)
            assert np.all(id0 % n_shards == shard)
            keys = list(zip(*(table.column(c).to_pylist() for c in ngrams.NGRAM_COLUMNS[n])))
            assert keys == sorted(keys)


def test_token_sequences_parts(tmp_path, texts) -> None:
    seq_len, seqs_per_part = 64, 100
    run_all(tmp_path, texts, seq_len, seqs_per_part, 3)
    rows = read_sequences(tmp_path / "sequences")
    seq_ids = [seq_id for seq_id, _ in rows]
    assert seq_ids == list(range(len(rows)))
    lengths = [len(tokens) for _, tokens in rows]
    assert all(length == seq_len for length in lengths[:-1])
    assert 1 <= lengths[-1] <= seq_len
    stream = [t for _, tokens in rows for t in tokens]
    assert stream == reference_stream(texts)
    assert [tokens for _, tokens in rows] == reference_sequences(texts, seq_len)
    parts = sorted((tmp_path / "sequences").glob("part-*.parquet"))
    sizes = [pq.read_metadata(p).num_rows for p in parts]
    assert all(size == seqs_per_part for size in sizes[:-1]) and 1 <= sizes[-1] <= seqs_per_part
    assert pq.read_schema(parts[0]).field("tokens").type.value_type == pa.uint16()


def test_document_parts(tmp_path, texts) -> None:
    tokenize_to_parts(batches(texts), tmp_path / "tokens", part_size=DOC_PART_SIZE, progress=False)
    table = pq.read_table(sorted((tmp_path / "tokens").glob("part-*.parquet")))
    assert table.column("doc_id").to_pylist() == doc_ids_for(texts)
    tokens = table.column("tokens").to_pylist()
    assert tokens == [neox.encode(t) for t in texts]
    assert table.column("n_tokens").to_pylist() == [len(t) for t in tokens]


# --- sequence and document boundaries, by hand ------------------------------------------

def write_doc_part(path: Path, docs: list[list[int]]) -> None:
    lengths = [len(d) for d in docs]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.array([t for d in docs for t in d], dtype=np.uint16)
    pq.write_table(pa.table({
        "doc_id": pa.array(range(len(docs)), pa.int64()),
        "n_tokens": pa.array(lengths, pa.int32()),
        "tokens": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint16())),
    }), path)


def hand_counts(tmp: Path, docs: list[list[int]], seq_len: int, n_shards: int = 7) -> tuple:
    """Shards 1 and 2 stay empty for ids 10-14 and 0: later shards must still be reduced."""
    (tmp / "docs").mkdir()
    write_doc_part(tmp / "docs" / "part-000000.parquet", docs[:1])
    write_doc_part(tmp / "docs" / "part-000001.parquet", docs[1:])
    pack_sequences(sorted((tmp / "docs").glob("*.parquet")), tmp / "seq", seq_len=seq_len,
                   seqs_per_part=1, progress=False)
    count_partials(sorted((tmp / "seq").glob("part-*.parquet")), tmp / "partials", n_shards,
                   progress=False)
    reduce_shards(tmp / "partials", tmp / "counts", n_shards, progress=False)
    counts = tmp / "counts"
    return read_counts(counts, 2), read_counts(counts, 3), read_sequences(tmp / "seq")


def test_no_ngram_across_a_sequence_boundary(tmp_path) -> None:
    # stream 10 11 12 0 | 13 14 0   (seq_len 4)
    bigrams, trigrams, seqs = hand_counts(tmp_path, [[10, 11, 12], [13, 14]], seq_len=4)
    assert [t for _, t in seqs] == [[10, 11, 12, 0], [13, 14, 0]]
    assert (12, 0, 13) not in trigrams  # only exists across the sequence boundary
    assert (0, 13, 14) not in trigrams
    assert (0, 13) not in bigrams
    assert trigrams == {(10, 11, 12): 1, (11, 12, 0): 1, (13, 14, 0): 1}
    assert bigrams == {(10, 11): 1, (11, 12): 1, (12, 0): 1, (13, 14): 1, (14, 0): 1}


def test_ngrams_cross_a_document_boundary_through_eos(tmp_path) -> None:
    # stream 10 11 12 0 13 | 14 0   (seq_len 5): documents 1 and 2 share a sequence
    bigrams, trigrams, seqs = hand_counts(tmp_path, [[10, 11, 12], [13, 14]], seq_len=5)
    assert [t for _, t in seqs] == [[10, 11, 12, 0, 13], [14, 0]]
    assert trigrams[(12, 0, 13)] == 1  # crosses the document boundary through EOS
    assert bigrams[(0, 13)] == 1
    assert (13, 14) not in bigrams  # crosses the sequence boundary
    assert trigrams == {(10, 11, 12): 1, (11, 12, 0): 1, (12, 0, 13): 1}  # [14, 0]: too short
    assert bigrams == {(10, 11): 1, (11, 12): 1, (12, 0): 1, (0, 13): 1, (14, 0): 1}


def test_empty_document_and_high_ids(tmp_path) -> None:
    top = neox.VOCAB_SIZE - 1
    bigrams, trigrams, seqs = hand_counts(tmp_path, [[top, top], [], [top]], seq_len=100)
    assert [t for _, t in seqs] == [[top, top, 0, 0, top, 0]]
    assert trigrams == {(top, top, 0): 1, (top, 0, 0): 1, (0, 0, top): 1, (0, top, 0): 1}
    assert bigrams == {(top, top): 1, (top, 0): 2, (0, 0): 1, (0, top): 1}


def test_ngram_keys_stay_inside_sequences() -> None:
    tokens = np.array([1, 2, 3, 4, 5, 6, 7], dtype=np.uint16)
    offsets = np.array([0, 3, 4, 7])  # [1 2 3] [4] [5 6 7]
    packed = ngrams.ngram_keys(tokens, offsets, 3)
    assert packed.tolist() == [(1 << 32) | (2 << 16) | 3, (5 << 32) | (6 << 16) | 7]
    table = ngrams.key_table(*ngrams.count_keys(ngrams.ngram_keys(tokens, offsets, 2), 2), 2)
    assert list(zip(table.column("id0").to_pylist(), table.column("id1").to_pylist())) == [
        (1, 2), (2, 3), (5, 6), (6, 7)]
    assert ngrams.ngram_keys(tokens[:2], np.array([0, 2]), 3).size == 0


# --- resumability: every step is a runner step ----------------------------------------

def all_mtimes(tmp: Path) -> dict[str, dict[str, int]]:
    folders = {"tokens": tmp / "tokens", "sequences": tmp / "sequences", "partials": tmp / "partials",
               "bigrams": tmp / "counts" / "n=2", "trigrams": tmp / "counts" / "n=3"}
    return {name: mtimes(folder) for name, folder in folders.items()}


def changed(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return sorted(name for name in after if after[name] != before.get(name))


def test_rerun_reuses_every_part(tmp_path, texts) -> None:
    first = run_all(tmp_path, texts, 64, 100, 7)
    assert first["tokenize"]["computed"] + first["tokenize"]["reused"] == len(texts)
    before = all_mtimes(tmp_path)
    second = run_all(tmp_path, texts, 64, 100, 7)
    assert second["tokenize"]["computed"] == 0 and second["tokenize"]["reused"] == len(texts)
    assert second["tokenize"]["reused_parts"] == second["tokenize"]["parts"] == -(-len(texts) // DOC_PART_SIZE)
    assert second["pack"]["written"] == 0 and second["pack"]["parts"] == first["pack"]["parts"]
    assert second["pack"]["reused"] == second["pack"]["parts"]
    assert second["count"]["counted"] == 0 and second["count"]["reused"] == second["count"]["parts"]
    assert second["count"]["windows"] == first["count"]["windows"]
    assert second["reduce"]["computed"] == 0 and second["reduce"]["reused"] == 2 * 7
    assert all_mtimes(tmp_path) == before  # not one file rewritten
    assert (second["reduce"]["bigrams"], second["reduce"]["trigrams"]) == (
        first["reduce"]["bigrams"], first["reduce"]["trigrams"])
    assert_counts_equal_reference(tmp_path, texts, 64)


def test_changing_one_document_recomputes_only_the_parts_it_touches(tmp_path, texts) -> None:
    seq_len, seqs_per_part, n_shards = 64, 100, 5
    first = run_all(tmp_path, texts, seq_len, seqs_per_part, n_shards)
    before = all_mtimes(tmp_path)

    edited = list(texts)
    index = 50  # in doc part 50 // 7 = 7 of 9
    edited[index] = edited[index] + "\nAnd one more sentence, added later."
    second = run_all(tmp_path, edited, seq_len, seqs_per_part, n_shards)
    after = all_mtimes(tmp_path)

    assert (second["tokenize"]["parts"], second["tokenize"]["computed"], second["tokenize"]["reused"]) == (
        first["tokenize"]["parts"], DOC_PART_SIZE, len(texts) - DOC_PART_SIZE)
    assert second["tokenize"]["computed_parts"] == 1
    assert changed(before["tokens"], after["tokens"]) == [f"part-{index // DOC_PART_SIZE:06d}.parquet"]

    # sequence parts before the first changed token are kept, the rest rewritten and recounted
    old, new = reference_stream(texts), reference_stream(edited)
    first_diff = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    first_part = first_diff // (seq_len * seqs_per_part)
    assert 0 < first_part < second["pack"]["parts"]
    assert second["pack"]["written"] == second["pack"]["parts"] - first_part
    rewritten = [f"part-{i:06d}.parquet" for i in range(first_part, second["pack"]["parts"])]
    assert changed(before["sequences"], after["sequences"]) == rewritten
    assert second["count"]["counted"] == second["pack"]["written"]
    assert second["count"]["reused"] == first_part
    assert changed(before["partials"], after["partials"]) == rewritten
    # every shard a changed partial feeds is reduced again, and only those (here: all)
    recomputed = len(changed(before["bigrams"], after["bigrams"])) + len(changed(before["trigrams"], after["trigrams"]))
    assert recomputed == second["reduce"]["computed"] > 0
    assert second["reduce"]["computed"] + second["reduce"]["reused"] == 2 * n_shards
    assert_counts_equal_reference(tmp_path, edited, seq_len)

    # and back again: the original counts, no stale partials of a longer run left behind
    third = run_all(tmp_path, texts, seq_len, seqs_per_part, n_shards)
    assert third["tokenize"]["computed"] == DOC_PART_SIZE
    assert sorted(p.name for p in (tmp_path / "partials").iterdir()) == [
        p.name for p in sorted((tmp_path / "sequences").glob("part-*.parquet"))]
    assert_counts_equal_reference(tmp_path, texts, seq_len)


def write_sequence_part(path: Path, sequences: list[list[int]], first_seq: int) -> None:
    """A sequence part as pack_sequences writes it (seq_id, tokens list<uint16>), with a fingerprint."""
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int32)
    flat = np.array([t for s in sequences for t in s], dtype=np.uint16)
    table = pa.table({"seq_id": pa.array(range(first_seq, first_seq + len(sequences)), pa.int64()),
                      "tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint16()))})
    write_atomic(table, path, f"hand-{first_seq}-{flat.tobytes().hex()}")


def test_reduce_recomputes_only_the_shards_whose_slabs_changed(tmp_path) -> None:
    n_shards = 7
    seq = tmp_path / "sequences"
    seq.mkdir()
    write_sequence_part(seq / "part-000000.parquet", [[10, 11, 12, 13]], 0)
    write_sequence_part(seq / "part-000001.parquet", [[20, 21, 22, 23, 24]], 1)

    def run() -> dict:
        counted = count_partials(sorted(seq.glob("part-*.parquet")), tmp_path / "partials", n_shards,
                                 progress=False)
        return {"count": counted, "reduce": reduce_shards(counted["paths"], tmp_path / "counts", n_shards,
                                                            progress=False)}

    run()
    before = all_mtimes(tmp_path)
    # 22 -> 29 changes bigrams (21, 22) (22, 23) and trigrams (20, 21, 22) (21, 22, 23) (22, 23, 24):
    # id0 in {21, 22, 29} (shards 0, 1) for bigrams, {20, 21, 22, 29} (shards 6, 0, 1) for trigrams
    write_sequence_part(seq / "part-000001.parquet", [[20, 21, 29, 23, 24]], 1)
    stats = run()
    after = all_mtimes(tmp_path)
    assert stats["count"]["counted"] == 1 and changed(before["partials"], after["partials"]) == ["part-000001.parquet"]
    assert changed(before["bigrams"], after["bigrams"]) == ["part-000000.parquet", "part-000001.parquet"]
    assert changed(before["trigrams"], after["trigrams"]) == [
        "part-000000.parquet", "part-000001.parquet", "part-000006.parquet"]
    assert (stats["reduce"]["computed"], stats["reduce"]["reused"]) == (5, 2 * n_shards - 5)
    bigrams, trigrams = read_counts(tmp_path / "counts", 2), read_counts(tmp_path / "counts", 3)
    assert bigrams == reference_counts([[10, 11, 12, 13], [20, 21, 29, 23, 24]], 2)
    assert trigrams == reference_counts([[10, 11, 12, 13], [20, 21, 29, 23, 24]], 3)


def test_partials_are_sorted_by_n_and_shard_with_a_slab_listing(tmp_path, texts) -> None:
    n_shards = 3
    stats = run_all(tmp_path, texts[:25], 64, 20, n_shards)
    for path in stats["count"]["paths"]:
        table = pq.read_table(path)
        # the packed key: id0 << 16(n-1) | ... | id(n-1); a bigram's id2 is -1 here
        keys = [(n, shard, key >> 16 * (n - 1), (key >> 16 * (n - 2)) & 0xFFFF, key & 0xFFFF if n == 3 else -1)
                for n, shard, key in zip(table.column("n").to_pylist(), table.column("shard").to_pylist(),
                                         table.column("key").to_pylist())]
        assert keys == sorted(keys) and len(set(keys)) == len(keys)
        assert all(shard == id0 % n_shards for _, shard, id0, _, _ in keys)
        assert all(0 <= i < neox.VOCAB_SIZE for key in keys for i in key[2:4])
        listing = ngrams.partial_metadata(path)
        assert listing["n_shards"] == n_shards
        for n in (2, 3):
            rows = {int(j): rows for j, (rows, _) in listing["slabs"][str(n)].items()}
            assert rows == dict(Counter(s for m, s, *_ in keys if m == n))
            windows = sum(c for m, c in zip(table.column("n").to_pylist(), table.column("count").to_pylist())
                          if m == n)
            assert listing["windows"][str(n)] == windows


def test_fewer_documents_remove_stale_parts(tmp_path, texts) -> None:
    run_all(tmp_path, texts, 64, 100, 3)
    shorter = texts[:30]
    stats = run_all(tmp_path, shorter, 64, 100, 3)
    assert len(list((tmp_path / "tokens").glob("part-*"))) == stats["tokenize"]["parts"]
    assert len(list((tmp_path / "sequences").glob("part-*"))) == stats["pack"]["parts"]
    assert len(list((tmp_path / "partials").iterdir())) == stats["pack"]["parts"]
    assert_counts_equal_reference(tmp_path, shorter, 64)


def test_changing_shard_count_recounts(tmp_path, texts) -> None:
    run_all(tmp_path, texts, 100, 50, 3)
    stats = run_all(tmp_path, texts, 100, 50, 7)
    assert stats["count"]["counted"] == stats["pack"]["parts"]
    shards = duckdb.sql(f"select distinct shard from read_parquet('{tmp_path}/partials/part-*.parquet')").fetchall()
    assert {s for (s,) in shards} == set(range(7))
    assert len(list((tmp_path / "counts" / "n=3").glob("part-*.parquet"))) == 7
    assert_counts_equal_reference(tmp_path, texts, 100)
    stats = run_all(tmp_path, texts, 100, 50, 2)  # fewer shards: the shards past the last are removed
    assert len(list((tmp_path / "counts" / "n=2").glob("part-*.parquet"))) == 2
    assert_counts_equal_reference(tmp_path, texts, 100)
    with pytest.raises(ValueError, match="counted into 2 shards, not 3"):
        reduce_shards(stats["count"]["paths"], tmp_path / "counts", 3, progress=False)


@pytest.mark.parametrize("kill_on_call", [3, 4])
def test_killed_count_resumes(tmp_path, texts, monkeypatch, kill_on_call) -> None:
    """count_keys runs twice per part (n=2, n=3): call 3 dies on the second part's bigrams, call 4 on its
    trigrams, after its bigrams were counted. Either way only the first part is on disk, whole."""
    seq_len, seqs_per_part, n_shards = 64, 100, 7
    tokenize_to_parts(batches(texts), tmp_path / "tokens", part_size=DOC_PART_SIZE, progress=False)
    doc_parts = sorted((tmp_path / "tokens").glob("part-*.parquet"))
    pack = pack_sequences(doc_parts, tmp_path / "sequences",
                          seq_len=seq_len, seqs_per_part=seqs_per_part, progress=False)
    seq_parts = sorted((tmp_path / "sequences").glob("part-*.parquet"))
    real = ngrams.count_keys
    calls = {"n": 0}

    def dying(keys, n, *args):
        calls["n"] += 1
        if calls["n"] == kill_on_call:
            raise KeyboardInterrupt("killed")
        return real(keys, n, *args)

    monkeypatch.setattr(ngrams, "count_keys", dying)
    with pytest.raises(KeyboardInterrupt):
        count_partials(seq_parts, tmp_path / "partials", n_shards, progress=False)
    assert sorted(p.name for p in (tmp_path / "partials").iterdir()) == ["part-000000.parquet"]

    monkeypatch.setattr(ngrams, "count_keys", real)
    stats = count_partials(seq_parts, tmp_path / "partials", n_shards, progress=False)
    assert stats["counted"] == pack["parts"] - 1 and stats["reused"] == 1
    assert not [p for p in (tmp_path / "partials").iterdir() if p.name.endswith(".tmp")]
    reduce_shards(tmp_path / "partials", tmp_path / "counts", n_shards, progress=False)
    assert_counts_equal_reference(tmp_path, texts, seq_len)


def test_a_failing_part_is_named_and_earlier_parts_stay(tmp_path, texts, monkeypatch) -> None:
    tokenize_to_parts(batches(texts[:30]), tmp_path / "tokens", part_size=DOC_PART_SIZE, progress=False)
    pack_sequences(sorted((tmp_path / "tokens").glob("part-*.parquet")), tmp_path / "sequences", seq_len=64,
                   seqs_per_part=20, progress=False)
    seq_parts = sorted((tmp_path / "sequences").glob("part-*.parquet"))
    assert len(seq_parts) >= 3
    real = ngrams.count_keys

    def broken_on_part_two(keys, n, *args):
        if len(list((tmp_path / "partials").glob("part-*.parquet"))) == 2:
            raise MemoryError("no room")
        return real(keys, n, *args)

    monkeypatch.setattr(ngrams, "count_keys", broken_on_part_two)
    with pytest.raises(PartFailed, match=r"step 'count': part 2 -> .*part-000002\.parquet failed: MemoryError"):
        count_partials(seq_parts, tmp_path / "partials", 3, progress=False)
    assert sorted(p.name for p in (tmp_path / "partials").iterdir()) == ["part-000000.parquet", "part-000001.parquet"]


def test_reduce_checks_its_settings_before_any_shard(tmp_path, texts) -> None:
    stats = run_all(tmp_path, texts[:25], 64, 20, 3)
    out = tmp_path / "counts-limited"
    with pytest.raises(ValueError, match="ngram_memory_limit 'nonsense' is not a valid DuckDB memory_limit"):
        reduce_shards(stats["count"]["paths"], out, 3, memory_limit="nonsense", progress=False)
    assert not out.exists()
    limited = reduce_shards(stats["count"]["paths"], out, 3, memory_limit="500MB", threads=1, progress=False)
    assert (limited["bigrams"], limited["trigrams"]) == (stats["reduce"]["bigrams"], stats["reduce"]["trigrams"])
    for n in (2, 3):
        assert read_counts(out, n) == read_counts(tmp_path / "counts", n)


def test_steps_and_parts_pickle_and_compute_the_same_elsewhere(tmp_path, texts) -> None:
    """Everything a step hands an executor pickles, so a part can be computed in another process."""
    n_shards = 3
    stats = run_all(tmp_path, texts[:25], 64, 20, n_shards)
    seq_parts = sorted((tmp_path / "sequences").glob("part-*.parquet"))
    listings = [ngrams.partial_metadata(p) for p in stats["count"]["paths"]]
    cases = [
        (ngrams.count_step(tmp_path / "partials", n_shards), next(ngrams.partial_count_parts(seq_parts)),
         stats["count"]["paths"][0]),
        (ngrams.reduce_step(tmp_path / "counts", 3, n_shards, {"temp_directory": ""}),
         next(ngrams.shard_parts(stats["count"]["paths"], listings, 3, n_shards)),
         tmp_path / "counts" / "n=3" / "part-000000.parquet"),
    ]
    for step, part, written in cases:
        step_copy, part_copy = pickle.loads(pickle.dumps(step)), pickle.loads(pickle.dumps(part))
        assert step_copy.salt() == step.salt() and part_copy.fingerprint(step_copy) == part.fingerprint(step)
        assert part.fingerprint(step) == existing_fingerprint(written)  # what run_all wrote: reused as is
        output = step_copy.make_worker()(part_copy.input_rows())
        table = output[0] if isinstance(output, tuple) else output
        if isinstance(table, pa.RecordBatchReader):
            table = table.read_all()
        assert table.equals(pq.read_table(written).replace_schema_metadata(None).cast(table.schema))
    tokenize = pickle.loads(pickle.dumps(ngrams.tokenize_step(tmp_path / "tokens")))
    assert tokenize.settings["vocab"] == neox.VOCAB_SIZE and len(tokenize.settings["file"]) == 40
    assert pickle.loads(pickle.dumps(ngrams.pack_step(tmp_path / "s", 64, 20))).make_worker() is ngrams.packed_part


# --- the prefix marts' SQL ---------------------------------------------------------------

def mart_sql(name: str, source: Path, n: int) -> str:
    sql = (MARTS / f"{name}.sql").read_text()
    table = "bigrams" if n == 2 else "trigrams"
    sql, replaced = re.subn(r"\{\{\s*ref\(\s*['\"]" + table + r"['\"]\s*\)\s*\}\}",
                            f"read_parquet('{source}')", sql)
    assert replaced == 1
    assert "{{" not in sql and "{%" not in sql
    return sql


def reference_prefixes(counts: dict[tuple, int]) -> dict[tuple, tuple]:
    """prefix -> (most common next token (ties: smallest id), sum_count, max_count, frac_max)."""
    by_prefix: dict[tuple, list[tuple[int, int]]] = {}
    for key, count in counts.items():
        by_prefix.setdefault(key[:-1], []).append((key[-1], count))
    out = {}
    for prefix, nexts in by_prefix.items():
        best, max_count = min(nexts, key=lambda item: (-item[1], item[0]))
        total = sum(c for _, c in nexts)
        out[prefix] = (best, total, max_count, max_count / total)
    return out


def sql_prefixes(sql: str, n: int) -> dict[tuple, tuple]:
    rows = duckdb.connect().sql(sql).fetchall()
    out = {tuple(int(x) for x in row[: n - 1]): (int(row[n - 1]), int(row[n]), int(row[n + 1]),
                                                 float(row[n + 2])) for row in rows}
    assert len(out) == len(rows)
    return out


def assert_prefixes_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for prefix, (best, total, max_count, frac) in want.items():
        assert got[prefix][:3] == (best, total, max_count), prefix
        assert got[prefix][3] == pytest.approx(frac, rel=1e-12), prefix


@pytest.mark.parametrize(("name", "n"), [("bigram_prefixes", 2), ("trigram_prefixes", 3)])
def test_prefix_marts_on_real_counts(tmp_path, texts, name, n) -> None:
    run_all(tmp_path, texts, 100, 50, 3)
    counts = reference_counts(reference_sequences(texts, 100), n)
    got = sql_prefixes(mart_sql(name, tmp_path / "counts" / f"n={n}" / "*.parquet", n), n)
    want = reference_prefixes(counts)
    assert_prefixes_equal(got, want)
    # the real data has plenty of ties at the top count: the tie rule is exercised
    top_count: Counter = Counter()
    for key, count in counts.items():
        if count == want[key[:-1]][2]:
            top_count[key[:-1]] += 1
    assert sum(1 for k in top_count.values() if k > 1) > 100


TIE_CASES = {
    # prefix: {next id: count}
    (5,): {7: 3, 2: 3, 9: 1},  # tie at the top: the smaller id wins
    (6,): {50_276: 4, 50_000: 4},  # tie between the largest ids
    (8,): {100: 2, 50_276: 3},  # count first, then id
    (9,): {0: 1},
    (0,): {1: 7, 0: 7, 3: 7},  # EOS as prefix and as a tied next token
    (11,): {40_000: 2**40, 1: 2**40 - 1},  # big counts still order by count first
}


@pytest.mark.parametrize(("name", "n"), [("bigram_prefixes", 2), ("trigram_prefixes", 3)])
def test_prefix_marts_tie_cases(tmp_path, name, n) -> None:
    counts = {}
    for prefix, nexts in TIE_CASES.items():
        full = prefix if n == 2 else (prefix[0], prefix[0] + 1)
        for nxt, count in nexts.items():
            counts[(*full, nxt)] = count
    if n == 3:  # same first id, different second: separate prefixes
        counts[(5, 99, 3)] = 1
        counts[(5, 99, 4)] = 2
    columns = {c: pa.array([k[i] for k in counts], pa.uint16())
               for i, c in enumerate(ngrams.NGRAM_COLUMNS[n])}
    columns["count"] = pa.array(list(counts.values()), pa.int64())
    path = tmp_path / "counts.parquet"
    pq.write_table(pa.table(columns), path)

    got = sql_prefixes(mart_sql(name, path, n), n)
    want = reference_prefixes(counts)
    assert_prefixes_equal(got, want)
    first = (lambda p: p) if n == 2 else (lambda p: (p[0], p[0] + 1))
    assert got[first((5,))][0] == 2
    assert got[first((6,))][0] == 50_000
    assert got[first((8,))][0] == 50_276
    assert got[first((0,))][0] == 0
    assert got[first((11,))][0] == 40_000
    assert got[first((5,))][1:3] == (7, 3)

"""The packed-key counter (python_udfs.ngrams.counts): exact against an independent Counter, whatever
the chunking, the shards or the reduce path, and its working memory bounded by ``ngram_memory_mb``.

The reference here never touches the packed keys: each sequence's n-gram tuples go through
``collections.Counter``. The memory checks use ``tracemalloc``, which numpy reports its array
allocations to, so the peak is measured, not estimated.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from test_counts import write_doc_part

from python_udfs.corpus.sample import iter_sample_records
from python_udfs.ngrams import counts as ngrams
from python_udfs.ngrams import tokenizer as neox
from python_udfs.ngrams.counts import count_partials, pack_sequences, reduce_shards
from python_udfs.settings import default


def reference(sequences: list[list[int]], n: int) -> dict[tuple, int]:
    counter: Counter = Counter()
    for seq in sequences:
        counter.update(zip(*(seq[k:] for k in range(n))))
    return dict(counter)


def as_dict(table: pa.Table, n: int) -> dict[tuple, int]:
    ids = [table.column(c).to_pylist() for c in ngrams.NGRAM_COLUMNS[n]]
    counts = table.column("count").to_pylist()
    out = {key: count for key, count in zip(zip(*ids), counts)}
    assert len(out) == table.num_rows
    return out


def sequence_table(sequences: list[list[int]]) -> pa.Table:
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int32)
    flat = np.array([t for s in sequences for t in s], dtype=np.uint16)
    return pa.table({"tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint16()))})


def part_counts(table: pa.Table, n_shards: int, memory_mb: float) -> dict[int, pa.Table]:
    """count_part's rows per n (id columns and count), checking the (n, shard, ids) order and the slabs."""
    reader, meta = ngrams.count_part(table, n_shards, memory_mb)
    batches = list(reader)
    out = {}
    for n in ngrams.ORDERS:
        mine = [b for b in batches if b.column("n")[0].as_py() == n]
        for batch in mine:  # one batch (row group) per slab, its keys sorted and distinct
            shard = batch.column("shard").to_numpy()
            assert len(set(shard.tolist())) == 1
            keys = batch.column("key").to_numpy()
            assert np.all(keys[1:] > keys[:-1])
            assert np.all((keys >> np.uint64(16 * (n - 1))).astype(np.int64) % n_shards == shard)
        rows = pa.Table.from_batches(mine, ngrams.PARTIAL_SCHEMA) if mine else ngrams.PARTIAL_SCHEMA.empty_table()
        out[n] = ngrams.key_table(rows.column("key").to_numpy(), rows.column("count").to_numpy(), n,
                                  with_shard=False)
    assert '"slabs"' in meta[ngrams.SLABS_KEY]
    return out


@pytest.fixture(scope="module")
def real_sequences() -> list[list[int]]:
    """Real text (the sample corpus), with empty and 1-token documents, cut into uneven sequences."""
    texts = [r["text"] for r in iter_sample_records(per_source=4)]
    texts[3:3] = ["", "", "a", "", "b"]  # empty docs (EOS EOS), 1-token docs
    texts.append("z")
    stream: list[int] = []
    for text in texts:
        stream += [*neox.encode(text), neox.EOS_ID]
    sequences, i, lengths = [], 0, [1, 2, 3, 64, 1, 100, 2, 2048]
    while i < len(stream):
        length = lengths[len(sequences) % len(lengths)]
        sequences.append(stream[i: i + length])
        i += length
    return sequences


@pytest.mark.parametrize("n_shards", [1, 3, 8])
@pytest.mark.parametrize("memory_mb", [0.001, 0.05, 1024])
def test_count_part_equals_counter_whatever_the_chunks(real_sequences, n_shards, memory_mb) -> None:
    # 0.001 MB: a chunk per sequence (21 tokens of budget); 0.05: a few sequences, merged often
    got = part_counts(sequence_table(real_sequences), n_shards, memory_mb)
    for n in ngrams.ORDERS:
        assert as_dict(got[n], n) == reference(real_sequences, n)


@pytest.mark.parametrize("n_shards", [1, 8])
def test_slab_listing_does_not_depend_on_the_passes(real_sequences, n_shards) -> None:
    """Rows and digests of each slab (which decide the reduce's reuse) are the same in one pass or many."""
    table = sequence_table(real_sequences)
    listings = {mb: ngrams.count_part(table, n_shards, mb)[1] for mb in (0.001, 0.05, 1024)}
    assert listings[0.001] == listings[0.05] == listings[1024]
    batches = list(ngrams.count_part(table, n_shards, 0.001)[0])
    assert len(batches) > len(list(ngrams.count_part(table, n_shards, 1024)[0]))  # slabs cut across passes


def test_edge_sequences_by_hand() -> None:
    top = neox.VOCAB_SIZE - 1
    cases = [
        [],  # no sequence at all
        [[5]],  # one 1-token sequence: no bigram
        [[5, 6]],  # one bigram, no trigram
        [[5], [6], [7]],  # never a window across sequences
        [[top, top, top], [0, 0], [top]],
        [[1, 2, 1, 2, 1, 2, 1, 2]],  # repeats
    ]
    for sequences in cases:
        table = sequence_table(sequences) if sequences else sequence_table([])
        for memory_mb in (0.0001, 1024):
            got = part_counts(table, 7, memory_mb)
            for n in ngrams.ORDERS:
                assert as_dict(got[n], n) == reference(sequences, n), (sequences, memory_mb, n)


def test_packed_keys_put_the_shard_on_top() -> None:
    tokens = np.array([9, 4, 7, 2, 8], dtype=np.uint16)
    keys = ngrams.ngram_keys(tokens, np.array([0, 5]), 2, n_shards=4)
    assert keys.tolist() == [((a % 4) << 32) | (a << 16) | b for a, b in zip(tokens[:-1].tolist(), tokens[1:].tolist())]
    table = ngrams.key_table(*ngrams.count_keys(keys, 2), 2)
    # shards 9 % 4 = 1, 4 % 4 = 0, 7 % 4 = 3, 2 % 4 = 2: sorted keys are in (shard, ids) order
    assert table.column("shard").to_pylist() == [0, 1, 2, 3]
    assert list(zip(table.column("id0").to_pylist(), table.column("id1").to_pylist())) == [
        (4, 7), (9, 4), (2, 8), (7, 2)]
    assert table.column("count").to_pylist() == [1, 1, 1, 1]


def test_unique_counts_sums_exactly_with_large_counts() -> None:
    rng = np.random.default_rng(3)
    keys = rng.integers(0, 500, 20_000).astype(np.uint64)
    counts = rng.integers(1, 4, 20_000)
    counts[::101] = 2**45 + 7  # do not fit the spare bits: summed apart and merged
    counts[::7] = 70_000  # fits 32 spare bits, not 16
    want: dict[int, int] = {}
    for k, c in zip(keys.tolist(), counts.tolist()):
        want[k] = want.get(k, 0) + c
    for bits in (32, 48, 64):
        unique, sums = ngrams.unique_counts(keys.copy(), counts, key_bits=bits)
        assert unique.tolist() == sorted(want) and sums.tolist() == [want[k] for k in sorted(want)], bits


def test_unique_counts_of_sorted_runs_equals_any_order() -> None:
    """``runs=True`` (a shard's slabs: sorted runs of distinct keys) merges; the sums are those of any order."""
    rng = np.random.default_rng(4)
    runs = [np.unique(rng.integers(0, 3000, size).astype(np.uint64)) for size in (0, 1, 500, 2000, 7)]
    counts = [rng.integers(1, 9, len(r)) for r in runs]
    counts[2][::5] = 2**40  # too large for the spare bits: the argsort path, merging too
    keys, sums = np.concatenate(runs), np.concatenate(counts)
    want = ngrams.unique_counts(keys.copy(), sums, key_bits=48)
    got = ngrams.unique_counts(keys.copy(), sums, key_bits=48, runs=True)
    assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    shuffled = rng.permutation(len(keys))
    again = ngrams.unique_counts(keys[shuffled], sums[shuffled], key_bits=48)
    assert np.array_equal(want[0], again[0]) and np.array_equal(want[1], again[1])


@pytest.mark.parametrize("n_shards", [1, 3, 8, 65535])
def test_narrow_bigram_keys_sort_like_the_wide_ones(real_sequences, n_shards) -> None:
    """The uint32 bigram keys (rank(id0) << 16 | id1), counted and widened, are the uint64 keys' counts."""
    table = sequence_table(real_sequences)
    column = table.column("tokens").combine_chunks()
    tokens = column.flatten().to_numpy().astype(np.uint16)
    offsets = column.offsets.to_numpy().astype(np.int64)
    top = np.array([neox.VOCAB_SIZE - 1, 0, neox.VOCAB_SIZE - 1], dtype=np.uint16)  # the largest id too
    tokens, offsets = np.concatenate([tokens, top]), np.append(offsets, len(tokens) + 3)
    narrow, across = ngrams._narrow_bigram_keys(tokens, offsets, n_shards)
    assert narrow.dtype == np.uint32
    unique, counts = ngrams.count_keys(narrow, 2, across)
    wide, wide_counts = ngrams.count_keys(ngrams.ngram_keys(tokens, offsets, 2, n_shards), 2)
    assert np.array_equal(ngrams._widen_bigrams(unique, n_shards), wide)
    assert np.array_equal(counts, wide_counts)


def test_partial_files_pack_the_ids_in_one_delta_encoded_key(tmp_path, real_sequences) -> None:
    """The partial layout: n, shard, key, count (all DELTA_BINARY_PACKED, no codec); an old layout is named."""
    import pyarrow.parquet as pq

    run_steps(tmp_path, [s for s in real_sequences if s], 256, 3, memory_mb=1024)
    path = sorted((tmp_path / "partials").glob("part-*.parquet"))[0]
    meta = pq.ParquetFile(path).metadata
    assert pq.read_schema(path).remove_metadata() == ngrams.PARTIAL_SCHEMA
    for name in ngrams.PARTIAL_SCHEMA.names:
        column = meta.row_group(0).column(meta.schema.names.index(name))
        assert "DELTA_BINARY_PACKED" in column.encodings and column.compression == "UNCOMPRESSED", name
    old = tmp_path / "old.parquet"
    pq.write_table(pa.table({"n": pa.array([2], pa.uint8()), "shard": pa.array([0], pa.uint16()),
                             "id0": pa.array([1], pa.uint16()), "id1": pa.array([2], pa.uint16()),
                             "count": pa.array([1], pa.int64())}), old)
    with pytest.raises(ValueError, match="older layout .* count it again"):
        ngrams.read_slab(str(old), 2, 0)


def run_steps(tmp, docs, seq_len, n_shards, memory_mb, memory_limit=None):
    (tmp / "docs").mkdir(parents=True, exist_ok=True)
    write_doc_part(tmp / "docs" / "part-000000.parquet", docs)
    pack_sequences([tmp / "docs" / "part-000000.parquet"], tmp / "seq", seq_len=seq_len, seqs_per_part=3,
                   progress=False)
    counted = count_partials(sorted((tmp / "seq").glob("part-*.parquet")), tmp / "partials", n_shards,
                             progress=False, memory_mb=memory_mb)
    return reduce_shards(counted["paths"], tmp / "counts", n_shards, progress=False, memory_mb=memory_mb,
                         memory_limit=memory_limit)


def read_all(out_dir, n):
    ids = ", ".join(ngrams.NGRAM_COLUMNS[n])
    return duckdb.sql(f"select {ids}, count from read_parquet('{out_dir}/n={n}/*.parquet') order by {ids}"
                      ).to_arrow_table()


def test_numpy_and_duckdb_reduce_write_the_same_tables(tmp_path, real_sequences, monkeypatch) -> None:
    docs = [s for s in real_sequences if s]  # reuse as documents (EOS appended again by pack)
    paths = {"numpy": 0, "duckdb": 0}
    real_numpy, real_duckdb = ngrams.reduce_shard_numpy, ngrams.reduce_shard_duckdb

    def numpy_path(*args):
        paths["numpy"] += 1
        return real_numpy(*args)

    def duckdb_path(*args):
        paths["duckdb"] += 1
        return real_duckdb(*args)

    monkeypatch.setattr(ngrams, "reduce_shard_numpy", numpy_path)
    monkeypatch.setattr(ngrams, "reduce_shard_duckdb", duckdb_path)
    run_steps(tmp_path / "a", docs, 256, 5, memory_mb=1024)
    assert paths == {"numpy": 10, "duckdb": 0}
    # 1 KB: every part counted a sequence or so at a time, every shard reduced by DuckDB
    run_steps(tmp_path / "b", docs, 256, 5, memory_mb=0.001)
    assert paths == {"numpy": 10, "duckdb": 10}
    sequences = [s for _, s in _sequences(tmp_path / "a" / "seq")]
    for n in ngrams.ORDERS:
        a, b = read_all(tmp_path / "a" / "counts", n), read_all(tmp_path / "b" / "counts", n)
        assert a.equals(b)
        assert a.schema == b.schema and a.schema.field("id0").type == pa.uint16()
        assert as_dict(a, n) == reference(sequences, n)
    # ngram_memory_limit caps the numpy path's budget too
    run_steps(tmp_path / "c", docs, 256, 5, memory_mb=1024, memory_limit="1MB")
    assert paths["numpy"] == 20
    for n in ngrams.ORDERS:
        assert read_all(tmp_path / "c" / "counts", n).equals(read_all(tmp_path / "a" / "counts", n))
    assert ngrams._size_bytes("4GB") == 4 * 10**9 and ngrams._size_bytes("500 MiB") == 500 * 2**20
    assert ngrams._size_bytes(None) is None and ngrams._size_bytes("80%") is None


def _sequences(seq_dir):
    import pyarrow.parquet as pq

    out = []
    for path in sorted(seq_dir.glob("part-*.parquet")):
        table = pq.read_table(path)
        out += list(zip(table.column("seq_id").to_pylist(), table.column("tokens").to_pylist()))
    return out


def zipf_part(n_tokens: int, seq_len: int = 2048) -> pa.Table:
    from test_counts_memory import zipf_tokens

    tokens = zipf_tokens(n_tokens, seed=5)
    offsets = np.append(np.arange(0, n_tokens, seq_len), n_tokens).astype(np.int32)
    return pa.table({"tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens, pa.uint16()))})


def peak_bytes(fn) -> tuple[int, object]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = fn()
        return tracemalloc.get_traced_memory()[1] - base, out
    finally:
        tracemalloc.stop()


def test_count_memory_follows_the_var_not_the_part() -> None:
    """One ~1M-token part: the count's peak stays near ngram_memory_mb plus its own output."""
    table = zipf_part(1_000_000)
    column = table.column("tokens").combine_chunks()
    tokens = column.flatten().to_numpy().astype(np.uint16)
    offsets = column.offsets.to_numpy().astype(np.int64)
    peaks, outputs = {}, {}
    for mb in (2, 1024):
        peaks[mb], outputs[mb] = peak_bytes(
            lambda mb=mb: ngrams.count_sequences(tokens, offsets, 3, 8, ngrams.memory_budget(mb)))
    assert len(outputs[2]) > 1 and len(outputs[1024]) == 1  # pieces: one per pass
    for i in (0, 1):
        assert np.array_equal(np.concatenate([piece[i] for piece in outputs[2]]), outputs[1024][0][i])
    output_bytes = sum(a.nbytes for piece in outputs[2] for a in piece)  # ~1M distinct trigrams x 16 bytes
    # the whole part at once: ~40 bytes per token of working arrays on top of the output
    assert peaks[1024] > 30 * len(tokens)
    # 2 MB: passes over (shard, id0) ranges; the output, ~4 bytes per token for the passes'
    # masks and ranks, and the 2 MB (plus the largest pass: one id0 can outweigh a pass)
    assert peaks[2] < output_bytes + 4 * len(tokens) + 3 * 2 * 2**20
    assert peaks[2] < 0.6 * peaks[1024]


def test_reduce_memory_follows_the_shard(tmp_path) -> None:
    """The numpy reduce of one shard holds about REDUCE_BYTES_PER_ROW per slab row it reads (what
    reduce_shard budgets with), not the other shards' rows."""
    from python_udfs.runner.parts import write_atomic

    table = zipf_part(400_000)
    (tmp_path / "p").mkdir()
    paths, slab_rows, all_rows = [], 0, 0
    for i in range(2):
        reader, meta = ngrams.count_part(table.slice(i * 100, 100), 8)
        path = tmp_path / "p" / f"part-{i:06d}.parquet"
        all_rows += write_atomic(reader, path, f"x{i}", meta, **ngrams.PARTIAL_PARQUET)
        slab_rows += ngrams.partial_metadata(path)["slabs"]["3"]["0"][0]
        paths.append(str(path))
    peak, out = peak_bytes(lambda: ngrams.reduce_shard_numpy(paths, 3, 0))
    assert 0 < out.num_rows <= slab_rows < all_rows / 10
    assert peak < ngrams.REDUCE_BYTES_PER_ROW * slab_rows
    assert peak < 16 * all_rows  # far below what every shard's rows would take


def test_memory_var_is_checked(tmp_path) -> None:
    assert default("ngram_memory_mb") > 0
    with pytest.raises(ValueError, match="ngram_memory_mb must be positive"):
        count_partials([], tmp_path / "p", 3, progress=False, memory_mb=0)


def _partial(path, rows):
    """A partial-count file of (n, shard, key, count) rows, written the way ``write_atomic`` replaces one."""
    import os

    import pyarrow.parquet as pq

    table = pa.table({name: pa.array([r[i] for r in rows], field.type)
                      for i, (name, field) in enumerate(zip(ngrams.PARTIAL_SCHEMA.names, ngrams.PARTIAL_SCHEMA))})
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, **ngrams.PARTIAL_PARQUET)
    os.replace(tmp, path)


def test_read_slab_sees_a_rewritten_partial_and_reads_mixed_row_groups(tmp_path) -> None:
    """Footers are cached per worker, keyed by the file: a partial rewritten in place is read again;
    a file whose row groups mix slabs is read through a filter, with the same rows."""
    path = tmp_path / "part-000000.parquet"
    one_slab_per_group = [(2, 0, 5, 1), (2, 0, 9, 2)], [(2, 1, 4, 7)], [(3, 0, 8, 3)]
    import pyarrow.parquet as pq

    # one row group per slab, as count_part writes them

    with pq.ParquetWriter(path.with_suffix(".tmp"), ngrams.PARTIAL_SCHEMA, **ngrams.PARTIAL_PARQUET) as writer:
        for group in one_slab_per_group:
            writer.write_table(pa.table({name: pa.array([r[i] for r in group], field.type) for i, (name, field)
                                         in enumerate(zip(ngrams.PARTIAL_SCHEMA.names, ngrams.PARTIAL_SCHEMA))}))
    path.with_suffix(".tmp").replace(path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    assert ngrams.read_slab(str(path), 2, 0).to_pydict() == {"key": [5, 9], "count": [1, 2]}
    assert ngrams.read_slab(str(path), 2, 1).to_pydict() == {"key": [4], "count": [7]}
    assert ngrams.read_slab(str(path), 2, 2).num_rows == 0
    # the same path rewritten with other rows, in one row group mixing the slabs
    _partial(path, [(2, 0, 6, 4), (2, 1, 1, 1), (3, 0, 8, 5), (3, 0, 9, 1)])
    assert pq.ParquetFile(path).metadata.num_row_groups == 1
    assert ngrams.read_slab(str(path), 2, 0).to_pydict() == {"key": [6], "count": [4]}
    assert ngrams.read_slab(str(path), 3, 0).to_pydict() == {"key": [8, 9], "count": [5, 1]}

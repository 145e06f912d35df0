"""The sharded reduce (python_udfs.ngrams.counts.reduce_shards) fits a memory limit one group-by cannot.

How the test is made robust:

* Spilling is switched off rather than measured. On an in-memory DuckDB connection with
  ``SET temp_directory = ''`` there is nowhere to offload blocks, so a query whose hash
  table outgrows ``memory_limit`` raises ``duckdb.OutOfMemoryException`` instead of
  quietly spilling to disk. ``threads = 1`` makes the memory use of the plan
  deterministic (every thread has its own hash-table partitions). ``reduce_shards`` runs
  each shard on a connection of its own, with these settings (``temp_directory=''``,
  ``threads=1``); a shard that runs out of memory fails as the runner's ``PartFailed``
  naming the shard, caused by DuckDB's ``OutOfMemoryException``.
* Data: 3,000,000 token ids drawn (seeded) from a Zipf-Mandelbrot unigram distribution
  over the 50,277 GPT-NeoX ids (p(rank r) ~ 1 / (r + 10)^1.05; the most common token is
  ~1.4% of tokens, like "the" or "," in English text), ranks mapped to ids by a seeded
  permutation. They are cut into sequences of 2,048 and written as sequence parts in
  ``pack_sequences``' format; ``count_partials`` counts them into 16 shards (one file per
  sequence part, sorted by n and shard). That is
  ~3.0M trigram windows and ~2.97M distinct trigrams (plus ~2.1M distinct bigrams).
* Measured on duckdb 2.0.0 (threads=1, no spilling): the unsharded ``group by id0, id1,
  id2`` over the exploded windows needs ~121-128 MB, the same group-by over all the
  partial counts at once (and ``reduce_shards`` over partials counted into 1 shard) needs
  over 120 MB, and ``reduce_shards`` with 16 shards (each shard's group-by plus its
  ``order by``) needs ~19-20 MB (re-measured with a connection per shard: fits 24 MB, fails
  16 MB). ``LIMIT = 48MB`` sits ~2.5x away from both sides.
* ``memory_limit`` also caps the budget of the numpy reduce (``ngram_memory_mb``): a shard
  whose slab rows need more (``REDUCE_BYTES_PER_ROW`` each) goes to DuckDB. With 16 shards
  each shard's ~0.2M rows fit 48 MB and are reduced in numpy; the one-shard partials and the
  4 MB limit do not fit, so they take the DuckDB path these tests make run out of memory.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from python_udfs.ngrams import tokenizer as neox
from python_udfs.ngrams.counts import count_partials, reduce_shards
from python_udfs.runner.executors import PartFailed
from python_udfs.runner.parts import write_atomic

N_TOKENS = 3_000_000
SEQ_LEN = 2048
SEQS_PER_PART = 128
N_SHARDS = 16
LIMIT = "48MB"


def zipf_tokens(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ranks = np.arange(neox.VOCAB_SIZE, dtype=np.float64)
    p = 1.0 / (ranks + 10.0) ** 1.05
    p /= p.sum()
    rank_to_id = rng.permutation(neox.VOCAB_SIZE)
    return rank_to_id[rng.choice(neox.VOCAB_SIZE, size=n, p=p)].astype(np.uint16)


def write_sequence_parts(tokens: np.ndarray, out_dir: Path) -> list[Path]:
    """Parts as pack_sequences writes them: seq_id, tokens list<uint16>, a fingerprint."""
    out_dir.mkdir(parents=True)
    chunk = SEQ_LEN * SEQS_PER_PART
    paths = []
    for index, start in enumerate(range(0, len(tokens), chunk)):
        part = tokens[start: start + chunk]
        starts = np.arange(0, len(part), SEQ_LEN)
        offsets = np.append(starts, len(part)).astype(np.int32)
        table = pa.table({
            "seq_id": pa.array(index * SEQS_PER_PART + np.arange(len(starts)), pa.int64()),
            "tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(part, pa.uint16())),
        })
        path = out_dir / f"part-{index:06d}.parquet"
        write_atomic(table, path, f"zipf-{index}")
        paths.append(path)
    return paths


def no_spill_connection(memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    con.execute("set threads = 1")
    con.execute("set temp_directory = ''")
    if memory_limit:
        con.execute(f"set memory_limit = '{memory_limit}'")
    assert con.execute("select current_setting('temp_directory')").fetchall()[0][0] == ""
    return con


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ngrams_memory")
    tokens = zipf_tokens(N_TOKENS)
    parts = write_sequence_parts(tokens, root / "sequences")
    stats = count_partials(parts, root / "partials", N_SHARDS, progress=False)
    # every trigram window inside a sequence, exploded into one row each
    position = np.arange(len(tokens) - 2)
    inside = position % SEQ_LEN <= SEQ_LEN - 3
    windows = root / "windows.parquet"
    pq.write_table(pa.table({"id0": tokens[:-2][inside], "id1": tokens[1:-1][inside],
                             "id2": tokens[2:][inside]}), windows)
    return {"root": root, "windows": windows, "n_windows": int(inside.sum()), "stats": stats}


def no_spill_reduce(partials: Path, out_dir: Path, n_shards: int, memory_limit: str) -> dict:
    return reduce_shards(partials, out_dir, n_shards, memory_limit=memory_limit, threads=1, temp_directory="",
                         progress=False)


def assert_out_of_memory(failed: pytest.ExceptionInfo) -> None:
    assert isinstance(failed.value.__cause__, duckdb.OutOfMemoryException), repr(failed.value.__cause__)
    assert "part 0 -> " in str(failed.value)  # the message names the shard's file


def test_reduce_without_shards_runs_out_of_memory(data) -> None:
    """The same reduce_shards, same limit, but the partials counted into a single shard."""
    root = data["root"]
    parts = sorted((root / "sequences").glob("part-*.parquet"))
    count_partials(parts, root / "partials-1", 1, progress=False)
    with pytest.raises(PartFailed) as failed:
        no_spill_reduce(root / "partials-1", root / "counts-1", 1, LIMIT)
    assert_out_of_memory(failed)


def naive_sql(windows: Path) -> str:
    return (f"select id0, id1, id2, count(*)::bigint as count from read_parquet('{windows}') "
            f"group by id0, id1, id2")


def test_single_group_by_runs_out_of_memory(data) -> None:
    root = data["root"]
    con = no_spill_connection(LIMIT)
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute(f"copy ({naive_sql(data['windows'])} order by all) "
                    f"to '{root / 'naive.parquet'}' (format parquet)")
    # not only the exploded windows: one group-by over all the partial counts fails too
    con = no_spill_connection(LIMIT)
    with pytest.raises(duckdb.OutOfMemoryException):
        con.execute(f"""
            copy (select key, sum(count)::bigint as count
                  from read_parquet('{root}/partials/part-*.parquet')
                  where n = 3
                  group by key order by all)
            to '{root / 'unsharded.parquet'}' (format parquet)
        """)


def test_sharded_reduce_fits_and_is_exact(data) -> None:
    root = data["root"]
    rows = no_spill_reduce(root / "partials", root / "counts", N_SHARDS, LIMIT)
    assert rows["computed"] == 2 * N_SHARDS
    assert len(list((root / "counts" / "n=3").glob("part-*.parquet"))) == N_SHARDS

    # the naive counts, computed without a limit, equal the sharded ones row for row
    check = duckdb.connect(":memory:")
    naive = check.sql(f"{naive_sql(data['windows'])} order by all").to_arrow_table()
    sharded = check.sql(f"select id0, id1, id2, count "
                        f"from read_parquet('{root}/counts/n=3/*.parquet') "
                        f"order by all").to_arrow_table()
    assert rows["trigrams"] == naive.num_rows == sharded.num_rows
    assert naive.num_rows > 2_500_000  # the scale the limits were measured at
    for column in ("id0", "id1", "id2", "count"):
        naive_values = naive.column(column).to_numpy()
        assert np.array_equal(naive_values, sharded.column(column).to_numpy()), column
    assert int(np.sum(sharded.column("count").to_numpy())) == data["n_windows"]

    # the limit really applied inside reduce_shards' own connections: a much smaller one fails it
    with pytest.raises(PartFailed) as failed:
        no_spill_reduce(root / "partials", root / "tiny", N_SHARDS, "4MB")
    assert_out_of_memory(failed)
    assert not list((root / "tiny").rglob("*.parquet*"))  # the failed shard left nothing behind

    # bigrams too: total windows add up, and each (id0, id1) once
    n_bigrams = check.execute(f"select count(*), count(distinct (id0, id1)), sum(count) "
                          f"from read_parquet('{root}/counts/n=2/*.parquet')").fetchall()[0]
    assert n_bigrams[0] == n_bigrams[1] == rows["bigrams"]
    assert n_bigrams[2] + data["n_windows"] == data["stats"]["windows"]

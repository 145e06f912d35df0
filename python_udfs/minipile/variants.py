"""Helpers of the sampling variants (docs/minipile.md#variants).

``text_key`` is what ``minipile_variants.duplicates_left`` compares: two documents are
duplicates when their texts are equal after NFKC normalisation, lower-casing and collapsing
every run of whitespace to one space (leading and trailing whitespace dropped); the key is the
md5 hex digest of that UTF-8 text. dbt calls it through the UDF ``pilehouse_text_key``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """NFKC, lower-case, whitespace runs collapsed to one space, stripped."""
    if not isinstance(text, str):
        raise TypeError(f"normalise_text needs a str, got {type(text).__name__}")
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def text_key(text: str) -> str:
    """md5 hex digest of ``normalise_text(text)`` (UTF-8)."""
    return hashlib.md5(normalise_text(text).encode("utf-8")).hexdigest()

"""Exact dedup's normalisation and hash, and the UDF the warehouse calls."""

from __future__ import annotations

import pyarrow as pa
import pytest
from warehouses import connect

from python_udfs.curation.normalise import normalise_text, text_hash, text_hash_arrow


@pytest.mark.parametrize(("text", "expected"), [
    ("  Hello   World \n", "hello world"),
    ("Tab\tand\r\nnewlines\u00a0nbsp", "tab and newlines nbsp"),  # NBSP: NFKC -> space
    ("\uff26\uff35\uff2c\uff2c width", "full width"),  # full-width letters fold under NFKC
    ("\ufb01ne Stra\u00dfe", "fine strasse"),  # ligature (NFKC) and sharp s (casefold)
    ("", ""),
    ("\u2003\u2029", ""),  # em space, paragraph separator: Unicode whitespace
    ("e\u0301", "\u00e9"),  # composed
])
def test_normalise_text(text, expected):
    assert normalise_text(text) == expected


def test_the_hash_equates_exactly_the_normalised_equal_texts():
    assert text_hash("The  quick\nBROWN fox") == text_hash("the quick brown fox ")
    assert text_hash("the quick brown fox") != text_hash("the quick brown fox.")
    assert text_hash("a b") != text_hash("ab")
    assert -(2**63) <= text_hash("x") < 2**63


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="takes a str"):
        normalise_text(None)  # type: ignore[arg-type]


def test_the_udf_is_the_function_and_keeps_nulls():
    texts = ["A  b", None, "a b", "c"]
    want = [text_hash("a b"), None, text_hash("a b"), text_hash("c")]
    assert text_hash_arrow(pa.array(texts)).to_pylist() == want
    with connect() as con:
        got = con.execute("select pilehouse_text_hash(t) from unnest(?::varchar[]) with ordinality as u(t, i) "
                          "order by i", [texts]).fetchall()
    assert [r[0] for r in got] == want

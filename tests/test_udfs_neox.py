"""Tests for the GPT-NeoX SQL UDFs neox_encode / neox_decode (python_udfs.udfs)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from python_udfs import udfs
from python_udfs.ngrams import tokenizer as neox

TEXTS = [
    "Hello world",
    "Two lines\nand a tab\there.",
    "Unicode: caf\u00e9, \u65e5\u672c\u8a9e, \U0001f600",
    "def f(x):\n    return x + 1\n",
    "",
]


@pytest.fixture()
def conn():
    connection = duckdb.connect(":memory:")
    udfs.register(connection)
    yield connection
    connection.close()


def one(conn, sql: str, params: list | None = None):
    return conn.execute(sql, params or []).fetchall()[0][0]


def test_encode_hello_world(conn) -> None:
    assert one(conn, "select neox_encode('Hello world')") == [12092, 1533]
    assert one(conn, "select typeof(neox_encode('Hello world'))") == "INTEGER[]"
    assert one(conn, "select neox_decode([12092, 1533])") == "Hello world"
    assert one(conn, "select typeof(neox_decode([12092, 1533]))") == "VARCHAR"


@pytest.mark.parametrize("text", TEXTS)
def test_decode_encode_round_trip(conn, text) -> None:
    assert one(conn, "select neox_encode(?)", [text]) == neox.encode(text)
    assert one(conn, "select neox_decode(neox_encode(?))", [text]) == text


def test_eos_and_pii_placeholders(conn) -> None:
    assert one(conn, "select neox_decode([0])") == "<|endoftext|>"
    ids = one(conn, "select neox_encode('|||EMAIL_ADDRESS|||')")
    assert len(ids) > 1 and max(ids) < neox.VOCAB_SIZE


def test_nulls_pass_through(conn) -> None:
    assert one(conn, "select neox_encode(NULL)") is None
    assert one(conn, "select neox_decode(NULL)") is None
    assert one(conn, "select neox_decode(neox_encode(NULL::varchar))") is None


def test_column_of_rows(conn) -> None:
    conn.execute("create table docs (i integer, t varchar)")
    rows = [(i, t) for i, t in enumerate(TEXTS)] + [(len(TEXTS), None)]
    conn.executemany("insert into docs values (?, ?)", rows)
    got = conn.execute(
        "select i, t, neox_encode(t), neox_decode(neox_encode(t)) from docs order by i"
    ).fetchall()
    assert len(got) == len(rows)
    for (i, text), (gi, gt, ids, back) in zip(rows, got):
        assert (gi, gt) == (i, text)
        if text is None:
            assert ids is None and back is None
        else:
            assert ids == neox.encode(text)
            assert back == text
    assert one(conn, "select neox_encode('')") == []
    assert one(conn, "select neox_decode([]::integer[])") == ""


def test_many_rows_keep_their_order(conn) -> None:
    texts = [f"row number {i}: {'word ' * (i % 7)}" for i in range(3000)]
    conn.execute("create table many as select * from range(3000) r(i)")
    got = conn.execute(
        "select i, neox_encode('row number ' || i || ': ' || repeat('word ', (i % 7)::integer)) "
        "from many order by i"
    ).fetchall()
    assert [ids for _, ids in got] == [neox.encode(t) for t in texts]


def test_decode_usmallint_token_lists(conn) -> None:
    # token_sequences / document_tokens store USMALLINT[]; decode casts them implicitly
    assert one(conn, "select neox_decode([12092, 1533]::usmallint[])") == "Hello world"
    assert one(conn, "select neox_decode([50276]::usmallint[])") == "  "


def test_arrow_functions_directly() -> None:
    encoded = udfs.neox_encode_arrow(pa.array(["Hello world", None, ""], pa.string()))
    assert encoded.type == pa.list_(pa.int32())
    assert encoded.to_pylist() == [[12092, 1533], None, []]
    decoded = udfs.neox_decode_arrow(encoded)
    assert decoded.type == pa.string()
    assert decoded.to_pylist() == ["Hello world", None, ""]


def test_register_twice(conn) -> None:
    udfs.register(conn)
    assert one(conn, "select neox_encode('Hello world')") == [12092, 1533]

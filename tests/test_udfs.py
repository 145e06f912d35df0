"""Tests for the SQL UDFs (python_udfs.udfs) and the dbt-duckdb plugin that registers them."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from python_udfs import udfs
from python_udfs.clustering.embed import EmbedConfig, embed_texts, resolve_model
from python_udfs.dbt_plugin import Plugin

DIM = 384
QUERY = "The cat sat on the warm mat by the fire."



@pytest.fixture(scope="module")
def model():
    return udfs._model(udfs.DEFAULT_MODEL)  # the cached model the UDF itself uses


@pytest.fixture()
def conn():
    connection = duckdb.connect(":memory:")
    udfs.register(connection)
    yield connection
    connection.close()


def expected_vector(model, text: str) -> np.ndarray:
    return embed_texts(model, [text], EmbedConfig(model=udfs.DEFAULT_MODEL))[0]


def test_embed_returns_384_floats_equal_to_embed_texts(conn, model) -> None:
    (vector,) = conn.execute("select pilehouse_embed(?)", [QUERY]).fetchone()
    assert isinstance(vector, list) and len(vector) == DIM
    assert conn.execute("select typeof(pilehouse_embed('x'))").fetchone()[0] == "FLOAT[]"
    np.testing.assert_allclose(np.array(vector, dtype=np.float32), expected_vector(model, QUERY),
                               atol=1e-6)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5


def test_null_in_null_out(conn, model) -> None:
    assert conn.execute("select pilehouse_embed(NULL)").fetchone() == (None,)
    rows = conn.execute(
        "select t, pilehouse_embed(t) from (values (1, 'A dog barked at the postman.'), "
        "(2, NULL), (3, 'The kettle boiled while we talked.')) v(i, t) order by i"
    ).fetchall()
    assert rows[1] == (None, None)
    for text, vector in (rows[0], rows[2]):
        np.testing.assert_allclose(vector, expected_vector(model, text), atol=1e-5)


def test_embed_arrow_directly(model) -> None:
    out = udfs.embed_arrow(pa.array([None, "Rain fell all night.", None], pa.string()))
    assert out.type == pa.list_(pa.float32())
    assert out.null_count == 2 and out[0].as_py() is None and out[2].as_py() is None
    np.testing.assert_allclose(out[1].as_py(), expected_vector(model, "Rain fell all night."),
                               atol=1e-6)
    assert udfs.embed_arrow(pa.array([None], pa.string())).to_pylist() == [None]


def test_register_twice_does_not_raise(conn) -> None:
    udfs.register(conn)
    udfs.register(conn)
    assert len(conn.execute("select pilehouse_embed('twice')").fetchone()[0]) == DIM


def test_registration_is_per_connection() -> None:
    a, b = duckdb.connect(), duckdb.connect()
    udfs.register(a)
    with pytest.raises(duckdb.Error):
        b.execute("select pilehouse_embed('not registered here')")
    udfs.register(b)
    assert len(b.execute("select pilehouse_embed('now it is')").fetchone()[0]) == DIM
    a.close()
    b.close()


def test_semantic_search_ranks_matching_sentence_first(conn) -> None:
    conn.execute("create table docs(doc_id int, text varchar)")
    conn.execute("insert into docs values "
                 "(1, 'The recipe needs two cups of flour and a pinch of salt.'), "
                 "(2, 'Share prices tumbled on the stock exchange as investors panicked.'), "
                 "(3, 'The goalkeeper saved a penalty in the final minute of the match.')")
    conn.execute("create table emb as select doc_id, pilehouse_embed(text) as embedding from docs")
    for query, best in [("stock markets crash", 2), ("baking bread at home", 1),
                        ("football game", 3)]:
        ranked = conn.execute(
            "select doc_id, list_cosine_similarity(embedding, pilehouse_embed(?)) as score "
            "from emb order by score desc", [query]).fetchall()
        assert ranked[0][0] == best, (query, ranked)
        assert ranked[0][1] > ranked[1][1]


def test_register_with_a_local_model_directory() -> None:
    connection = duckdb.connect()
    udfs.register(connection, embedding_model=resolve_model(udfs.DEFAULT_MODEL))
    (vector,) = connection.execute("select pilehouse_embed(?)", [QUERY]).fetchone()
    assert len(vector) == DIM
    connection.close()


def test_dbt_plugin_registers_function(model) -> None:
    plugin = Plugin(name="pilehouse", plugin_config={})
    assert plugin.name == "pilehouse"
    assert plugin.embedding_model == udfs.DEFAULT_MODEL
    connection = duckdb.connect()
    with pytest.raises(duckdb.Error):
        connection.execute("select pilehouse_embed('x')")
    plugin.configure_connection(connection)
    plugin.configure_connection(connection)  # dbt may configure a connection again
    (vector,) = connection.execute("select pilehouse_embed(?)", [QUERY]).fetchone()
    np.testing.assert_allclose(vector, expected_vector(model, QUERY), atol=1e-6)
    connection.close()


def test_dbt_plugin_config_and_create() -> None:
    path = resolve_model(udfs.DEFAULT_MODEL)
    plugin = Plugin(name="pilehouse", plugin_config={"embedding_model": path})
    assert plugin.embedding_model == path
    created = Plugin.create("python_udfs.dbt_plugin", config={})
    assert isinstance(created, Plugin) and created.name == "dbt_plugin"
    assert created.embedding_model == udfs.DEFAULT_MODEL

"""Tests for the SQL UDFs (python_udfs.udfs) and the dbt-duckdb plugin that registers them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from python_udfs import udfs
from python_udfs.clustering.embed import EmbedConfig, embed_texts, resolve_model
from python_udfs.dbt_plugin import Plugin

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
QUERY = "The cat sat on the warm mat by the fire."
LONG = ("The river rose through the night, and by morning the low fields along the valley were under water; "
        "farmers moved their animals to the hills while the council opened the school as a shelter.")
#: non-default embedding vars: a prefix and a max_tokens that truncates LONG
BUILD_VARS = {"embedding_max_tokens": 24, "embedding_prefix": "passage: "}


@pytest.fixture(scope="module")
def model():
    return udfs.model_for(EmbedConfig())  # the cached model the UDF itself uses


@pytest.fixture()
def conn():
    connection = duckdb.connect(":memory:")
    udfs.register(connection)
    yield connection
    connection.close()


def expected_vector(model, text: str) -> np.ndarray:
    return embed_texts(model, [text], EmbedConfig())[0]


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
    udfs.register(connection, EmbedConfig(model=resolve_model(udfs.DEFAULT_MODEL)))
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


# --- pilehouse_embed follows the build's embedding vars -------------------------------------

def test_embed_config_reads_the_vars_over_the_project_defaults() -> None:
    assert udfs.embed_config() == EmbedConfig()
    config = udfs.embed_config({"embedding_max_tokens": "24", "embedding_prefix": "passage: ",
                                "embedding_device": "None", "embedding_model": None})
    assert (config.model, config.max_tokens, config.prefix, config.device) == (
        EmbedConfig.model, 24, "passage: ", None)


def test_the_plugin_embeds_with_the_vars_the_profile_passes() -> None:
    # what profiles.yml renders for `--vars '{embedding_max_tokens: 24, embedding_prefix: "passage: "}'`
    plugin = Plugin(name="pilehouse", plugin_config={
        "embedding_model": None, "embedding_max_tokens": 24, "embedding_prefix": "passage: ",
        "embedding_dtype": None, "embedding_device": None, "embedding_batch_size": None,
        "preserve_insertion_order": True})
    built = EmbedConfig(max_tokens=24, prefix="passage: ")
    assert plugin.embed_config == built
    connection = duckdb.connect()
    plugin.configure_connection(connection)
    (vector,) = connection.execute("select pilehouse_embed(?)", [LONG]).fetchone()
    connection.close()
    np.testing.assert_allclose(vector, embed_texts(udfs.model_for(built), [LONG], built)[0], atol=1e-6)
    default = embed_texts(udfs.model_for(EmbedConfig()), [LONG], EmbedConfig())[0]
    assert float(np.dot(vector, default)) < 0.99  # the vars change the vector: the default would not match


def run(cmd: list[str], env: dict) -> str:
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    return result.stdout


@pytest.mark.slow
def test_pilehouse_embed_equals_the_stored_embeddings_under_non_default_vars(tmp_path: Path) -> None:
    """dbt embeds a small corpus with non-default vars; in the same project, pilehouse_embed of each
    document's text is its stored vector (and the default config's vector is not)."""
    from python_udfs.corpus.sample import build_sample_corpus

    build_sample_corpus(tmp_path / "corpus.jsonl.gz", per_source=2)
    env = {**os.environ, "PILEHOUSE_DB": str(tmp_path / "wh.duckdb"), "PILEHOUSE_LAKE": str(tmp_path / "lake"),
           "PILEHOUSE_ROOT": str(ROOT), "HF_HUB_OFFLINE": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    run([sys.executable, "-m", "python_udfs.corpus", str(tmp_path / "corpus.jsonl.gz")], env)
    def dbt(command: str) -> list[str]:
        return [str(Path(sys.executable).parent / "dbt"), "--quiet", command, "--project-dir", str(ROOT),
                "--profiles-dir", str(ROOT), "--target-path", str(tmp_path / "target"),
                "--log-path", str(tmp_path / "logs"), "--vars", json.dumps(BUILD_VARS)]

    run([*dbt("run"), "--select", "+int_document_embeddings"], env)
    shown = run([*dbt("show"), "--output", "json", "--limit", "100", "--inline",
                 "select e.doc_id, d.text, e.embedding, pilehouse_embed(d.text) as query "
                 "from {{ ref('int_document_embeddings') }} as e "
                 "join {{ ref('stg_lake__documents') }} as d using (doc_id) order by e.doc_id"], env)
    rows = json.loads(shown[shown.index("{"):])["show"]
    assert len(rows) == 8
    default_model = udfs.model_for(EmbedConfig())
    def vector(value) -> np.ndarray:  # dbt show writes lists as JSON text
        return np.asarray(json.loads(value) if isinstance(value, str) else value, np.float32)

    for row in rows:
        stored, query = vector(row["embedding"]), vector(row["query"])
        np.testing.assert_allclose(query, stored, atol=2e-5, err_msg=f"doc {row['doc_id']}")
        default = embed_texts(default_model, [row["text"]], EmbedConfig())[0]
        assert float(np.dot(default, stored)) < 0.999, f"doc {row['doc_id']}: the vars made no difference"


# --- pilehouse_pca_2d: cluster_summary's map -------------------------------------------------

def test_pca_2d_matches_an_eigendecomposition_with_a_fixed_sign() -> None:
    rng = np.random.default_rng(3)
    points = rng.normal(size=(9, 5)) * np.array([5.0, 3.0, 1.0, 0.5, 0.1])
    coords, shares = udfs.pca_2d(points)
    centred = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)  # ascending
    for j, k in enumerate([-1, -2]):
        expected = centred @ vectors[:, k]
        expected *= np.sign(expected[np.argmax(np.abs(expected))])  # the documented sign rule
        np.testing.assert_allclose(coords[:, j], expected, atol=1e-9)
        assert shares[j] == pytest.approx(values[k] / values.sum())
    assert coords[np.argmax(np.abs(coords[:, 0])), 0] > 0
    # the same points in any row order give the same coordinates, row for row
    order = rng.permutation(9)
    np.testing.assert_allclose(udfs.pca_2d(points[order])[0], coords[order], atol=1e-9)


@pytest.mark.parametrize("points, shares", [
    (np.ones((1, 4)), [0, 0]),  # one cluster: nothing to project
    (np.ones((3, 4)), [0, 0]),  # identical centroids: no variance
    (np.array([[0.0, 0.0], [2.0, 0.0]]), [1, 0]),  # two: a line, y stays 0
])
def test_pca_2d_degenerate(points, shares) -> None:
    coords, got = udfs.pca_2d(points)
    assert coords.shape == (len(points), 2) and got.tolist() == shares
    if len(points) == 2:  # |x| ties: the first row's is the positive one
        assert coords[:, 0] == pytest.approx([1.0, -1.0]) and not coords[:, 1].any()


def test_pilehouse_pca_2d_in_sql(conn) -> None:
    conn.execute("create table c as select * from (values (0, [1, 0, 0]::float[]), (1, [0, 1, 0]::float[]), "
                 "(2, [0, 0, 1]::float[]), (3, [0.6, 0.8, 0]::float[])) t(cluster_id, centroid)")
    (points,) = conn.execute("select pilehouse_pca_2d(list(centroid order by cluster_id)) from c").fetchone()
    rows = conn.execute("select centroid from c order by cluster_id").fetchall()
    coords, shares = udfs.pca_2d(np.array([r[0] for r in rows], dtype=np.float32))
    assert [(p["x"], p["y"]) for p in points] == [tuple(row) for row in coords.tolist()]
    assert {p["x_variance_share"] for p in points} == {float(shares[0])}
    assert conn.execute("select pilehouse_pca_2d(null)").fetchone() == (None,)
    with pytest.raises(duckdb.Error, match="different lengths"):
        conn.execute("select pilehouse_pca_2d([[1, 2]::float[], [1]::float[]])").fetchall()

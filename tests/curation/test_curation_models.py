"""The curation models' SQL on the review fixture warehouse: with every step off, minipile is
the same table as before int_documents_eligible existed; a real `dbt build` of the SQL
curation models runs their YAML unit tests and data tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from warehouses import ROOT, SPLITS, build_warehouse, connect, render_model, review_corpus

from python_udfs.curation.normalise import normalise_text

DBT = Path(sys.executable).parent / "dbt"


def corpus():
    corpus = review_corpus()
    corpus.texts[5] = "  " + corpus.texts[3].upper() + "\n"  # an exact duplicate of document 3
    corpus.texts[30] = corpus.texts[3]
    return corpus


def expected_duplicates() -> list[tuple[int, int, int]]:
    """(doc_id, duplicate_of, group_size) from the normalised strings themselves (not the hash)."""
    groups: dict[str, list[int]] = {}
    for doc, text in enumerate(corpus().texts):
        groups.setdefault(normalise_text(text), []).append(doc)
    return sorted((d, g[0], len(g)) for g in groups.values() for d in g[1:])


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    return build_warehouse(tmp_path_factory.mktemp("curation") / "pilehouse.duckdb", corpus(),
                           [(4, "other", "fixture")])


def test_with_every_step_off_minipile_is_unchanged(warehouse, tmp_path):
    with connect(warehouse) as con:
        eligible = con.sql("select * from int_documents_eligible order by doc_id").fetchall()
        assert eligible == con.sql("select * from int_cluster_assignments order by doc_id").fetchall()
        now = con.sql("select * from minipile order by shuffle_position").fetchall()
        # the sampling SQL as it was: reading int_cluster_assignments directly
        for name in ("int_cluster_quotas", "int_documents_sampled", "int_minipile_splits", "minipile"):
            sql = render_model(name).replace("int_documents_eligible", "int_cluster_assignments")
            sql = re.sub(r"\b(int_cluster_quotas|int_documents_sampled|int_minipile_splits)\b",
                         lambda m: "old_" + m[1], sql)
            con.execute(f"create table old_{name} as {sql}")
        before = con.sql("select * from old_minipile order by shuffle_position").fetchall()
    assert now == before and len(now) == sum(SPLITS.values())


def test_exact_candidates_are_listed_even_when_off(warehouse):
    with connect(warehouse) as con:
        got = con.sql("select doc_id, duplicate_of, group_size from int_exact_duplicates order by doc_id").fetchall()
    assert got == expected_duplicates()
    assert {(5, 3, 3), (30, 3, 3)} <= set(got)  # the planted pair; the sample holds one more (a stdlib page twice)


def test_dbt_build_of_the_curation_models(warehouse, tmp_path):
    db = tmp_path / "pilehouse.duckdb"
    shutil.copy(warehouse, db)
    env = {**os.environ, "PILEHOUSE_DB": str(db), "PILEHOUSE_LAKE": str(tmp_path / "lake"),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    result = subprocess.run(
        [str(DBT), "build", "--select", "int_document_text_hashes", "int_exact_duplicates", "int_documents_eligible",
         "exact_duplicates", "curation_summary", "int_cluster_quotas", "int_documents_sampled",
         "int_minipile_splits", "minipile", "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
         "--vars", json.dumps({**SPLITS, "exact_dedup": True})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for unit in ("exact_duplicates_point_at_the_smallest_doc_id", "eligible_drops_only_what_enabled_steps_remove",
                 "eligible_with_decontamination_drops_the_contaminated", "assert_minipile_has_no_removed_document"):
        assert unit in result.stdout
    with connect(db) as con:
        removed = con.sql("select doc_id, duplicate_of from exact_duplicates order by doc_id").fetchall()
        assert removed == [(d, of) for d, of, _ in expected_duplicates()]
        summary = con.sql("select step, enabled, documents_flagged, documents_removed from curation_summary "
                          "order by step_order").fetchall()
        sampled = {r[0] for r in con.sql("select doc_id from minipile").fetchall()}
        assert con.sql("select count(*) from minipile").fetchall() == [(sum(SPLITS.values()),)]
    n = len(removed)
    assert summary == [("exact_dedup", True, n, n), ("semdedup", False, 0, 0), ("decontaminate", False, 0, 0),
                       ("eligible", None, None, n)]
    assert not sampled & {d for d, _ in removed}


@pytest.mark.slow
def test_dbt_build_of_the_python_curation_models(tmp_path):
    """int_semantic_duplicates, int_contaminated_documents and semdedup_ecdf through dbt, on a
    lake of embedding and assignment parts (random unit vectors, two planted near-copies) and
    the review corpus with an ARC question pasted into one document."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from test_contamination import blimp_directory

    from python_udfs import settings
    from python_udfs.curation.contamination import benchmark_examples

    directory = blimp_directory()
    if directory is None:
        pytest.skip("no BLiMP folder (set PILEHOUSE_BLIMP_DIR)")
    c = corpus()
    question = next(t for task, t in benchmark_examples(directory) if task == "arc_easy" and len(t.split()) > 20)
    c.texts[7] = c.texts[7] + " " + question
    db, lake = tmp_path / "pilehouse.duckdb", tmp_path / "lake"
    build_warehouse(db, c)
    rng = np.random.default_rng(0)
    n = len(c.texts)
    units = rng.normal(size=(n, 16))
    units[11] = units[10] + 0.01 * rng.normal(size=16)  # near-copies in one cluster
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    cluster = list(c.cluster_of)
    cluster[11] = cluster[10]
    for kind, table in (
        ("embeddings", pa.table({"doc_id": pa.array(range(n), pa.int64()),
                                 "embedding": pa.array(units.astype(np.float32).tolist(), pa.list_(pa.float32()))})),
        ("assignments", pa.table({"doc_id": pa.array(range(n), pa.int64()), "cluster_id": pa.array(cluster, pa.int32()),
                                  "distance": pa.array(c.distances, pa.float64())})),
    ):
        folder = settings.lake_path(kind, {"lake_dir": str(lake)})
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-00000.parquet")
    with connect(db) as con:  # the views dbt builds over the lake replace the fixture's tables
        con.execute("drop table int_cluster_assignments")
        con.execute("drop table int_semantic_duplicates")
        con.execute("drop table int_contaminated_documents")
    env = {**os.environ, "PILEHOUSE_DB": str(db), "PILEHOUSE_LAKE": str(lake), "PILEHOUSE_BLIMP_DIR": str(directory),
           "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    result = subprocess.run(
        [str(DBT), "build", "--select", "int_document_embeddings", "int_cluster_assignments", "int_semantic_duplicates",
         "int_contaminated_documents", "semantic_duplicates", "contaminated_documents", "semdedup_ecdf",
         "int_documents_eligible", "int_cluster_quotas", "int_documents_sampled", "int_minipile_splits", "minipile",
         "curation_summary",
         "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"),
         "--vars", json.dumps({**SPLITS, "semdedup_eps": 0.01, "semdedup_keep": "closest", "decontaminate": True,
                               "semdedup_block_size": 4})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    with connect(db) as con:
        semantic = con.sql("select doc_id, duplicate_of, cluster_id from semantic_duplicates").fetchall()
        contaminated = con.sql("select doc_id, task from contaminated_documents").fetchall()
        ecdf = dict(con.sql("select eps, documents_removed from semdedup_ecdf").fetchall())
        sampled = {r[0] for r in con.sql("select doc_id from minipile").fetchall()}
        summary = con.sql("select step, documents_removed from curation_summary order by step_order").fetchall()
    closer = min((10, 11), key=lambda d: (c.distances[d], d))  # closest: the one nearer the centroid is kept
    assert semantic == [(({10, 11} - {closer}).pop(), closer, cluster[10])]
    assert contaminated == [(7, "arc_easy")]
    assert ecdf[0.01] == 1 and len(ecdf) == 13
    assert len(sampled) == sum(SPLITS.values()) and not sampled & {7, semantic[0][0]}
    assert summary == [("exact_dedup", 0), ("semdedup", 1), ("decontaminate", 1), ("eligible", 2)]

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

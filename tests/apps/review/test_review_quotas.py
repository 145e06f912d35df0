"""The quota preview equals `int_cluster_quotas` (its SQL run on random sizes, the tiny
warehouse, and the real warehouse when one is built), and the page's categories equal the
ones the dbt test accepts."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import duckdb
import pytest
from warehouses import ROOT, SIZES, TOTAL, connect, render_model

from python_udfs.apps.review import CATEGORIES, seed
from python_udfs.apps.review.quotas import cluster_quotas


def sql_quotas(sizes: dict[int, int], excluded: set[int], total: int) -> list[tuple]:
    """int_cluster_quotas.sql itself, over the given sizes and exclusions."""
    with connect() as con:
        con.execute("create table int_kmeans_centroids (cluster_id integer, centroid float[])")
        con.execute("create table int_documents_eligible (doc_id bigint, cluster_id integer, distance double)")
        con.execute("create table cluster_exclusions (cluster_id integer, category varchar, note varchar)")
        con.execute("create table int_cluster_losses (cluster_id integer, mean_loss double)")  # a default build's
        if sizes:
            con.executemany("insert into int_kmeans_centroids values (?, null)", [(c,) for c in sizes])
            # n documents per cluster: the model counts them
            con.executemany("insert into int_documents_eligible select $c * 10000 + i, $c, 0.5 from range($n) as t(i)",
                            [{"c": c, "n": n} for c, n in sizes.items()])
        if excluded:
            con.executemany("insert into cluster_exclusions values (?, 'other', '')", [(c,) for c in excluded])
        sql = render_model("int_cluster_quotas", {"train_size": total, "validation_size": 0, "test_size": 0})
        return con.execute(f"select cluster_id, n_docs, is_capped, quota from ({sql}) order by cluster_id").fetchall()


def as_rows(preview) -> list[tuple]:
    return [(q.cluster_id, q.n_docs, q.is_capped, q.quota) for q in preview.quotas]


def test_tiny_example_by_hand():
    # 20 documents over 6 clusters: clusters 3 (1 doc) and 1 (2) give all they have, the
    # other 17 go 5/4/4/4 to clusters 0, 2, 4, 5 (the remainder to the lowest id)
    preview = cluster_quotas(dict(enumerate(SIZES)), set(), TOTAL)
    assert [(q.cluster_id, q.quota) for q in preview.quotas] == [(0, 5), (1, 2), (2, 4), (3, 1), (4, 4), (5, 4)]
    assert [q.cluster_id for q in preview.quotas if q.is_capped] == [1, 3]
    assert preview.sampled == TOTAL and preview.enough and preview.kept_docs == 48
    preview = cluster_quotas(dict(enumerate(SIZES)), {0, 4}, TOTAL)
    assert [(q.cluster_id, q.quota) for q in preview.quotas] == [(1, 2), (2, 9), (3, 1), (5, 8)]
    assert preview.sampled == TOTAL
    short = cluster_quotas(dict(enumerate(SIZES)), {0, 2, 4}, TOTAL)
    assert not short.enough and short.kept_docs == 11 and short.sampled == 11


def test_python_equals_the_models_sql_on_random_cases():
    rng = random.Random(0)
    cases = [({}, set(), 5), ({0: 0, 1: 0}, set(), 0), ({0: 3}, {0}, 2), ({0: 5, 1: 5}, set(), 10)]
    for _ in range(60):
        k = rng.randint(1, 25)
        sizes = {cid: rng.choice([0, 1, 2, rng.randint(0, 40), rng.randint(0, 400)]) for cid in range(k)}
        excluded = {cid for cid in sizes if rng.random() < 0.2}
        kept = sum(n for cid, n in sizes.items() if cid not in excluded)
        total = rng.choice([rng.randint(0, max(kept, 1)), kept, kept + rng.randint(1, 10)])
        cases.append((sizes, excluded, total))
    for sizes, excluded, total in cases:
        assert as_rows(cluster_quotas(sizes, excluded, total)) == sql_quotas(sizes, excluded, total), (
            sizes, excluded, total)


def test_preview_equals_the_tiny_warehouses_int_cluster_quotas(client, tiny_warehouse):
    with duckdb.connect(str(tiny_warehouse), read_only=True) as con:
        built = con.execute("select cluster_id, n_docs, is_capped, quota from int_cluster_quotas "
                            "order by cluster_id").fetchall()
    api = client.get("/api/quotas").json()
    assert api["total"] == TOTAL and api["total_from"] == "the warehouse's last build"
    assert [(q["cluster_id"], q["n_docs"], q["is_capped"], q["quota"]) for q in api["quotas"]] == built


def real_warehouse() -> Path:
    path = Path(os.environ.get("PILEHOUSE_DB", ROOT / "warehouse" / "pilehouse.duckdb"))
    if not path.is_absolute():
        path = ROOT / path
    if not path.exists():
        pytest.skip(f"no built warehouse at {path} (run `make minipile`)")
    return path


def test_preview_equals_the_built_warehouses_int_cluster_quotas():
    """With the seed the warehouse was built with, the preview is exactly its int_cluster_quotas."""
    path = real_warehouse()
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:  # a dbt build is writing it right now
        pytest.skip(f"cannot open {path} read-only: {exc}")
    with con:
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        if not {"int_cluster_quotas", "cluster_centroids", "cluster_exclusions"} <= tables:
            pytest.skip(f"{path} has no int_cluster_quotas: build it with `make minipile`")
        sizes = dict(con.execute("select cluster_id, n_docs from cluster_centroids").fetchall())
        excluded = {r[0] for r in con.execute("select cluster_id from cluster_exclusions").fetchall()}
        built = con.execute("select cluster_id, n_docs, is_capped, quota from int_cluster_quotas "
                            "order by cluster_id").fetchall()
    total = sum(row[3] for row in built)
    assert as_rows(cluster_quotas(sizes, excluded, total)) == built
    # and through the page, reading the repository's seed when it is the one the warehouse was built with
    seed_excluded = {r.cluster_id for r in seed.read_exclusions(ROOT / "seeds" / seed.SEED_NAME)}
    if seed_excluded != excluded:
        pytest.skip("seeds/cluster_exclusions.csv differs from the warehouse's build; the direct check passed")
    from review_clients import review_client

    from python_udfs.apps.review.app import ReviewConfig, create_app

    client = review_client(create_app(ReviewConfig(db=path, seeds_dir=ROOT / "seeds", root=ROOT)))
    api = client.get("/api/quotas").json()
    assert [(q["cluster_id"], q["n_docs"], q["is_capped"], q["quota"]) for q in api["quotas"]] == built


def test_categories_equal_the_dbt_tests_list():
    sql = (ROOT / "tests" / "dbt" / "assert_cluster_exclusions_use_known_categories.sql").read_text()
    (accepted,) = re.findall(r"category not in \((.*?)\)", sql, re.S)
    assert tuple(re.findall(r"'(\w+)'", accepted)) == CATEGORIES
    # the message dbt prints lists the same names, in the same order
    joined = re.sub(r"'\s*\|\|\s*'", "", sql)
    assert "is not one of " + ", ".join(CATEGORIES) + "'" in joined


def test_the_repository_seed_has_the_header_the_page_writes():
    header = (ROOT / "seeds" / seed.SEED_NAME).read_text().splitlines()[0]
    assert tuple(header.split(",")) == seed.HEADER

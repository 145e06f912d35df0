"""The review page over a tiny warehouse, through FastAPI's TestClient: pages, the exclusion
form's validation, the seed file's format and atomic writes, and the CLI's refusals."""

from __future__ import annotations

import csv
import html
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from python_udfs.apps.review import seed
from python_udfs.apps.review.app import ReviewConfig, create_app

ROOT = Path(__file__).resolve().parents[3]


def error_text(response) -> str:
    match = re.search(r'id="error"[^>]*>(.*?)</div>', response.text, re.S)
    assert match, response.text[-2000:]
    return html.unescape(match[1]).strip()


def seed_rows(seeds_dir: Path) -> list[list[str]]:
    with (seeds_dir / "cluster_exclusions.csv").open(newline="") as f:
        return list(csv.reader(f))


def exclude(client, cluster_id, category="other", note="boilerplate", **kwargs):
    return client.post("/exclusions", data={"cluster_id": str(cluster_id), "category": category, "note": note},
                       follow_redirects=False, **kwargs)


def test_index_shows_map_clusters_and_the_next_build(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.text
    assert '<script src="/static/plotly.min.js"></script>' in page
    assert "cdn" not in page.lower()  # nothing from the internet
    assert 'id="cluster-map"' in page and "Plotly.newPlot" in page
    for cluster_id in range(6):
        assert f'href="/cluster/{cluster_id}"' in page
    assert 'id="minipile-total">20<' in page  # 14 + 2 + 4, read from the warehouse
    assert "None: every cluster is kept" in page


def test_plotly_js_is_served_locally(client):
    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert len(response.content) > 1_000_000 and b"plotly" in response.content[:2000].lower()


def test_cluster_page_shows_inspection_mix_and_more_examples(client, tiny_warehouse):
    with duckdb.connect(str(tiny_warehouse), read_only=True) as con:
        closest = con.execute("select closest[1].doc_id from cluster_inspection where cluster_id = 0").fetchone()[0]
        ordered = [r[0] for r in con.execute(
            "select doc_id from cluster_assignments where cluster_id = 0 order by distance, doc_id").fetchall()]
    page = client.get("/cluster/0").text
    assert "15</b><span>documents" in page
    assert 'id="closest"' in page and f"doc {closest} ·" in page
    assert "Wikipedia (en)" in page  # the source mix
    first_page = [int(d) for d in re.findall(r'data-example="(\d+)"', page)]
    assert first_page == ordered[:10]
    assert 'id="more-examples" href="/cluster/0?order=closest&amp;offset=10#examples"' in page
    more = client.get("/cluster/0?offset=10").text
    assert [int(d) for d in re.findall(r'data-example="(\d+)"', more)] == ordered[10:]
    assert 'id="more-examples"' not in more
    api = client.get("/api/cluster/0/examples?offset=3&limit=4&order=farthest").json()
    assert [e["doc_id"] for e in api["examples"]] == ordered[::-1][3:7]


def test_unknown_cluster_page_is_a_readable_404(client):
    response = client.get("/cluster/99")
    assert response.status_code == 404
    assert error_text(response) == "Cluster 99 is not a cluster of this warehouse (ids: 0..5)."
    response = client.get("/cluster/0?offset=-1")
    assert response.status_code == 422 and "offset" in error_text(response)


def test_exclude_writes_the_seed_and_shows_pending(client, seeds_dir):
    response = exclude(client, 2, "near_duplicates", "same page")
    assert response.status_code == 303 and response.headers["location"] == "/cluster/2?done=excluded"
    expected = "cluster_id,category,note\n2,near_duplicates,same page\n"
    assert (seeds_dir / "cluster_exclusions.csv").read_text() == expected
    page = client.get("/cluster/2?done=excluded").text
    assert 'id="done"' in page and "pending until next dbt build" in page
    index = client.get("/").text
    assert 'id="pending"' in index and "excluded in the seed, still in the warehouse" in index
    # the quota preview follows the seed: 5 kept clusters, the 2 small ones capped
    quotas = client.get("/api/quotas").json()
    assert quotas["excluded"] == [2]
    assert {q["cluster_id"]: q["quota"] for q in quotas["quotas"]} == {0: 6, 1: 2, 3: 1, 4: 6, 5: 5}


def test_exclude_again_updates_and_include_again_removes(client, seeds_dir):
    exclude(client, 4, "other", "first")
    exclude(client, 1, "pornography", "spam")
    response = exclude(client, 4, "navigation_bars", "menus")
    assert response.headers["location"] == "/cluster/4?done=updated"
    assert seed_rows(seeds_dir) == [list(seed.HEADER), ["4", "navigation_bars", "menus"], ["1", "pornography", "spam"]]
    response = client.post("/exclusions/4/delete", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/cluster/4?done=included"
    assert seed_rows(seeds_dir) == [list(seed.HEADER), ["1", "pornography", "spam"]]
    response = client.post("/exclusions/4/delete")
    assert response.status_code == 409
    assert "Cluster 4 is not excluded" in error_text(response)


@pytest.mark.parametrize(
    "cluster_id, category, note, status, message",
    [
        ("99", "other", "x", 422, "Not saved: cluster 99 is not a cluster of this warehouse (ids: 0..5)."),
        ("-1", "other", "x", 422, "Not saved: cluster -1 is not a cluster of this warehouse (ids: 0..5)."),
        ("abc", "other", "x", 422, "cluster_id: Input should be a valid integer"),
        ("1", "spam", "x", 422, "category: Input should be 'near_duplicates', 'pornography', 'navigation_bars', "
                                "'product_specifications', 'named_entity_lists' or 'other'"),
        ("1", "other", "", 422, "note: write a few words on why this cluster is excluded"),
        ("1", "other", "   \n ", 422, "note: write a few words on why this cluster is excluded"),
        ("1", "other", "x" * 501, 422, "note: is 501 characters long; keep it to 500"),
        ("1", "other", "bell\x07", 422, "note: contains control characters"),
    ],
)
def test_bad_requests_are_refused_with_a_readable_message(client, seeds_dir, cluster_id, category, note, status,
                                                          message):
    before = (seeds_dir / "cluster_exclusions.csv").read_bytes()
    response = client.post("/exclusions", data={"cluster_id": cluster_id, "category": category, "note": note})
    assert response.status_code == status
    assert message in error_text(response)
    assert (seeds_dir / "cluster_exclusions.csv").read_bytes() == before


def test_missing_fields_and_wrong_bodies(client):
    response = client.post("/exclusions", data={"cluster_id": "1"})
    assert response.status_code == 422
    assert "category: Field required" in error_text(response) and "note: Field required" in error_text(response)
    response = client.post("/exclusions", content=b"x" * 20_000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    response = client.post("/exclusions", content=b"--b--", headers={"content-type": "multipart/form-data; boundary=b"})
    assert response.status_code == 415
    # JSON clients get JSON errors
    response = client.post("/exclusions", json={"cluster_id": 1, "category": "nope", "note": "x"},
                           headers={"accept": "application/json"})
    assert response.status_code == 422 and "category" in response.json()["detail"]


def test_tricky_notes_round_trip_through_the_csv_module(client, seeds_dir):
    note = 'commas, "quotes", =HYPERLINK("x"),\nsecond line; \ttab and unicode: café ✓'
    assert exclude(client, 3, "other", note).status_code == 303
    rows = seed_rows(seeds_dir)
    assert rows == [list(seed.HEADER), ["3", "other", note]]
    assert seed.read_exclusions(seeds_dir / "cluster_exclusions.csv")[0].note == note
    # DuckDB (which dbt-duckdb's seeds end up in) reads the same three columns back
    with duckdb.connect() as con:
        got = con.execute("select * from read_csv(?, header = true, all_varchar = true)",
                          [str(seeds_dir / "cluster_exclusions.csv")]).fetchall()
    assert got == [("3", "other", note)]
    page = client.get("/cluster/3").text
    assert "=HYPERLINK(&#34;x&#34;)" in page  # escaped by the template, never markup
    assert note in html.unescape(page)


def test_the_write_is_atomic(client, seeds_dir, monkeypatch):
    exclude(client, 0, "other", "kept safe")
    path = seeds_dir / "cluster_exclusions.csv"
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(seed.os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        seed.set_exclusion(path, 5, "other", "never written")
    assert path.read_bytes() == before
    assert sorted(p.name for p in seeds_dir.iterdir()) == ["cluster_exclusions.csv"]  # no temp file left


def test_the_write_keeps_hand_edited_rows_and_the_file_mode(seeds_dir):
    path = seeds_dir / "cluster_exclusions.csv"
    path.write_text("cluster_id,category,note\n7,spam,hand edit\n")
    os.chmod(path, 0o664)
    seed.set_exclusion(path, 1, "other", "x")
    assert path.read_text() == "cluster_id,category,note\n7,spam,hand edit\n1,other,x\n"
    assert os.stat(path).st_mode & 0o777 == 0o664
    rows = seed.read_exclusions(path)
    assert rows[0].problem and "category 'spam'" in rows[0].problem


def test_a_seed_with_a_foreign_header_is_not_overwritten(client, seeds_dir):
    path = seeds_dir / "cluster_exclusions.csv"
    path.write_text("id,why\n3,dupes\n")
    response = exclude(client, 1, "other", "x")
    assert response.status_code == 409
    assert "header is 'id,why', expected 'cluster_id,category,note'" in error_text(response)
    assert path.read_text() == "id,why\n3,dupes\n"
    assert "Seed file:" in client.get("/").text


def test_seed_differences_with_the_warehouse_are_pending(tmp_path, seeds_dir):
    from review_clients import review_client
    from warehouses import review_warehouse

    db = review_warehouse(tmp_path / "built.duckdb", exclusions=[(5, "other", "built")])
    client = review_client(create_app(ReviewConfig(db=db, seeds_dir=seeds_dir, root=ROOT)))
    page = client.get("/").text
    assert "excluded in the warehouse, included again in the seed" in page
    assert "re-included, pending until next dbt build" in page
    (seeds_dir / "cluster_exclusions.csv").write_text("cluster_id,category,note\n5,other,built\n")
    page = client.get("/").text
    assert 'id="pending"' not in page
    # with the seed as built, the preview is the built int_cluster_quotas
    with duckdb.connect(str(db), read_only=True) as con:
        built = dict(con.execute("select cluster_id, quota from int_cluster_quotas").fetchall())
    assert {q["cluster_id"]: q["quota"] for q in client.get("/api/quotas").json()["quotas"]} == built


def test_a_missing_warehouse_says_run_make_minipile(tmp_path, seeds_dir):
    from review_clients import review_client

    client = review_client(create_app(ReviewConfig(db=tmp_path / "none.duckdb", seeds_dir=seeds_dir, root=ROOT)))
    response = client.get("/")
    assert response.status_code == 503
    assert "does not exist: run `make minipile` first" in error_text(response)
    assert client.get("/api/quotas").status_code == 503


def test_the_warehouse_is_opened_read_only(client, tiny_warehouse):
    client.get("/")
    client.get("/cluster/1")
    # no connection is held between requests: a writer can open the file at once
    with duckdb.connect(str(tiny_warehouse)) as con:
        assert con.execute("select count(*) from documents").fetchone()[0] == 48


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "python_udfs.apps.review", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
def test_the_cli_refuses_non_loopback_hosts(host):
    from python_udfs.apps.review.__main__ import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--host", host])
    assert exit_info.value.code == 2


def test_the_cli_refuses_0000_with_a_clear_message(tmp_path):
    result = run_cli("--host", "0.0.0.0", "--db", str(tmp_path / "x.duckdb"))
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0" in result.stderr and "127.0.0.1" in result.stderr
    result = run_cli("--db", str(tmp_path / "missing.duckdb"))
    assert result.returncode == 1
    assert "does not exist: run `make minipile` first" in result.stderr


def test_cluster_page_lists_its_prompt_scan_tasks(tiny_warehouse, seeds_dir, tmp_path):
    """When a scan was built (`make scan`), a cluster's page shows the tasks found in its documents."""
    import shutil

    from review_clients import review_client

    db = tmp_path / "with_scan.duckdb"
    shutil.copy(tiny_warehouse, db)
    with duckdb.connect(str(db)) as con:
        con.execute("""create table prompt_scan as select * from (values
            ('SmolLM2-135M-Instruct', '[,] Pluto is made primarily', ' by', ' of', 0.22, 0.99, 1),
            ('SmolLM2-135M-Instruct', '[ the] 23-', '2', 'year', 0.24, 0.81, 1),
            ('SmolLM2-135M-Instruct', '[We] would however like you', ' can', ' to', 0.12, 0.97, 2))
            t(model, text, token_short, token_long, p_short, p_long, cluster_id)""")
    with review_client(create_app(ReviewConfig(db=db, seeds_dir=seeds_dir, root=ROOT))) as client:
        page = client.get("/cluster/1").text
        assert 'id="scan-tasks"' in page
        assert page.index("Pluto is made primarily") < page.index("[ the] 23-")  # by p_long
        assert "would however" not in page  # cluster 2's
        assert 'id="scan-tasks"' not in client.get("/cluster/3").text

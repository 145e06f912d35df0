"""Strings from the corpus and the warehouse are data, never markup: a warehouse whose document
texts, source names, exclusion notes and scan prompts are HTML and script is shown by the review
page and the HTML report in a real headless Chromium, and no script of theirs runs."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pytest
from test_review_browser import browser, serving  # noqa: F401  (fixtures)
from warehouses import ROOT, Corpus, build_warehouse, unit_rows

pytestmark = pytest.mark.slow

#: each payload, if it ran, would set window.__pwned (or the title) to its own name
PAYLOADS = [
    '<script>window.__pwned="script"</script>',
    '<img src=x onerror="window.__pwned=\'img\'">',
    '"><svg onload="window.__pwned=\'svg\'"></svg>',
    "</script><script>window.__pwned='script-break'</script>",
    "'); window.__pwned='quote-break'; ('",
    '<a href="javascript:window.__pwned=\'href\'">click</a>',
    '<iframe srcdoc="<script>parent.__pwned=\'iframe\'</script>"></iframe>',
    '<style>body{display:none}</style><b onmouseover="window.__pwned=\'hover\'">x</b>',
]


def hostile_corpus() -> Corpus:
    rng = np.random.default_rng(3)
    n_clusters = 4
    sources = [PAYLOADS[i % len(PAYLOADS)] for i in range(32)]
    texts = [f"{PAYLOADS[(i + 3) % len(PAYLOADS)]} document {i} {PAYLOADS[i % len(PAYLOADS)]}" for i in range(32)]
    cluster_of = [i % n_clusters for i in range(32)]
    distances = np.round(rng.uniform(0.1, 0.7, 32), 6).tolist()
    return Corpus(sources, texts, cluster_of, distances, unit_rows(rng, n_clusters, 8))


@pytest.fixture
def hostile_warehouse(tmp_path):
    db = build_warehouse(tmp_path / "hostile.duckdb", hostile_corpus(), [(3, "other", PAYLOADS[1])],
                         splits={"train_size": 6, "validation_size": 1, "test_size": 1})
    with duckdb.connect(str(db)) as con:
        con.execute("create table rejected_documents as select 'x.jsonl' as source_file, 0 as record_number, "
                    f"'bad_json' as reason, '{PAYLOADS[0]}' as raw")
        con.execute("create table document_embeddings as select doc_id, 'm' as model from documents")
        con.execute("create table prompt_scan (model varchar, text varchar, token_short varchar, token_long varchar, "
                    "p_short double, p_long double, cluster_id integer)")
        con.executemany("insert into prompt_scan values (?, ?, ?, ?, 0.1, 0.9, ?)",
                        [(PAYLOADS[i], PAYLOADS[i + 1], PAYLOADS[i + 2], PAYLOADS[i + 3], i % 4) for i in range(4)])
    return db


def assert_nothing_ran(driver, where: str) -> None:
    pwned = driver.execute_script("return window.__pwned === undefined ? null : window.__pwned")
    assert pwned is None, f"{where}: the payload {pwned!r} ran"
    assert driver.execute_script("return document.querySelectorAll('iframe, img[src=x], svg[onload]').length") == 0, \
        f"{where}: a payload became an element"


def test_hostile_strings_stay_text_in_the_review_page_and_the_report(hostile_warehouse, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    seeds_dir = tmp_path / "seeds"
    seeds_dir.mkdir()
    (seeds_dir / "cluster_exclusions.csv").write_text(
        'cluster_id,category,note\n2,other,"' + PAYLOADS[2].replace('"', '""') + '"\n')
    wait = WebDriverWait(browser, 20)
    with serving(hostile_warehouse, seeds_dir) as url:
        browser.get(url + "/")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#cluster-map svg.main-svg")))
        assert_nothing_ran(browser, "/")
        # the payloads are shown as text: the legend names the sources literally
        legend = browser.find_element(By.CSS_SELECTOR, "#cluster-map .legend").text
        assert "<script>" in legend or "<img" in legend or "<svg" in legend, legend
        # hover every marker: plotly's hover labels render the main source
        for point in browser.find_elements(By.CSS_SELECTOR, "#cluster-map .scatterlayer .point"):
            ActionChains(browser).move_to_element(point).perform()
            assert_nothing_ran(browser, "/ (hover)")
        for cluster_id in range(4):
            browser.get(f"{url}/cluster/{cluster_id}")
            wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
            assert_nothing_ran(browser, f"/cluster/{cluster_id}")
            body = browser.find_element(By.TAG_NAME, "body").text
            assert "document" in body and ("<script>" in body or "<img" in body or "onerror" in body)
            for link in browser.find_elements(By.CSS_SELECTOR, "a[href^='javascript']"):
                raise AssertionError(f"/cluster/{cluster_id}: a javascript: link {link.get_attribute('href')}")

    # the report, opened from its file
    from python_udfs.apps.report.build import main as report_main

    out = tmp_path / "report"
    assert report_main(["--db", str(hostile_warehouse), "--out", str(out), "--root", str(ROOT)]) == 0
    shutil.copy(out / "report.html", tmp_path / "report.html")
    browser.get((out / "report.html").as_uri())
    wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert_nothing_ran(browser, "report.html")
    assert "<script>" in browser.find_element(By.TAG_NAME, "body").text

"""The review page in a real browser: the server as `python -m python_udfs.apps.review` on a free
loopback port, driven by headless Debian Chromium through selenium (`make browser` installs
both). Screenshots land in tests/artifacts/."""

from __future__ import annotations

import contextlib
import csv
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from warehouses import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = ROOT / "tests" / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(db: Path, seeds_dir: Path):
    """`python -m python_udfs.apps.review` over ``db`` on a free loopback port; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "python_udfs.apps.review", "--db", str(db), "--seeds-dir", str(seeds_dir),
         "--root", str(ROOT), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:
                if response.read() == b"ok":
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(f"the review server did not start:\n{process.stdout.read()}") from None
            time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def server(tiny_warehouse, seeds_dir):
    with serving(tiny_warehouse, seeds_dir) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no /usr/bin/chromium or /usr/bin/chromedriver: run `make browser`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1400"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.set_window_size(1280, 800)  # measure the page, not the previous window
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(height + 200, 800), 4000))  # + the window's own chrome
    driver.save_screenshot(str(path))
    return path


def test_review_a_cluster_in_a_browser(server, browser, seeds_dir):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 20)
    browser.get(server + "/")
    # the map rendered: plotly drew its svg and one marker per cluster
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#cluster-map svg.main-svg")))
    points = browser.find_elements(By.CSS_SELECTOR, "#cluster-map .scatterlayer .point")
    assert len(points) == 6
    assert screenshot(browser, "review_index.png").stat().st_size > 10_000

    # a click on the map opens the cluster (plotly's own click event, as a mouse click sends it)
    browser.execute_script(
        "document.getElementById('cluster-map').emit('plotly_click', {points: [{customdata: [4]}]})")
    wait.until(ec.url_contains("/cluster/4"))
    assert "Cluster 4" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_elements(By.CSS_SELECTOR, "#closest .excerpt")

    # more examples on demand
    browser.find_element(By.ID, "more-examples").click()
    wait.until(ec.url_contains("offset=10"))
    assert browser.find_element(By.CSS_SELECTOR, "#examples h2").text.startswith("Documents 11–12 of 12")
    assert len(browser.find_elements(By.CSS_SELECTOR, "[data-example]")) == 2
    browser.get(server + "/cluster/4")

    # the server's own validation, shown on the page (the browser's `required` taken off)
    Select(browser.find_element(By.ID, "category")).select_by_value("other")
    browser.execute_script("document.getElementById('note').removeAttribute('required')")
    browser.find_element(By.ID, "exclude-button").click()
    error = wait.until(ec.presence_of_element_located((By.ID, "error")))
    assert "note: write a few words on why this cluster is excluded" in error.text
    assert (seeds_dir / "cluster_exclusions.csv").read_text() == "cluster_id,category,note\n"

    # exclude it for real
    note = 'menus, "home" links\nand footers'
    Select(browser.find_element(By.ID, "category")).select_by_value("navigation_bars")
    box = browser.find_element(By.ID, "note")
    box.clear()
    box.send_keys(note)
    browser.find_element(By.ID, "exclude-button").click()
    wait.until(ec.presence_of_element_located((By.ID, "done")))
    status = browser.find_element(By.ID, "status").text
    assert "excluded" in status and "pending until next dbt build" in status
    with (seeds_dir / "cluster_exclusions.csv").open(newline="") as f:
        assert list(csv.reader(f)) == [["cluster_id", "category", "note"], ["4", "navigation_bars", note]]
    screenshot(browser, "review_cluster_excluded.png")

    # the overview shows it: the seed's table, the pending note, an X marker on the map
    browser.get(server + "/")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#cluster-map svg.main-svg")))
    assert "navigation_bars" in browser.find_element(By.ID, "exclusions").text
    assert "cluster 4" in browser.find_element(By.ID, "pending").text
    assert "excluded (seed)" in browser.find_element(By.CSS_SELECTOR, "#cluster-map .legend").text
    screenshot(browser, "review_index_after.png")

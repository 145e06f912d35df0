"""`make report`: a self-contained HTML report from a warehouse, rendered in headless Chromium.

Unit tests build a small synthetic warehouse (tests/warehouses.py: the real models' SQL over
deterministic rows); the browser test needs /usr/bin/chromium and /usr/bin/chromedriver
(`make browser`) and leaves its screenshot in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from warehouses import report_warehouse

from python_udfs.apps.report import build as report
from python_udfs.apps.report.html import fmt, visible

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SECTIONS = ["headline", "cluster-sizes", "source-mix", "cluster-map", "ngrams", "scan", "training", "eval"]
FIGURES = ["cluster_sizes.png", "source_mix.png", "cluster_map.png", "ngrams.png", "prompt_scan.png",
           "training_loss.png", "eval_comparison.png"]


def assert_self_contained(page: str) -> None:
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, flags=re.I)
    assert not external, f"external references: {external}"
    assert not re.search(r"<(?:script|link)\b", page, flags=re.I), "scripts or stylesheets linked"


def assert_png(path: Path, min_size: tuple[int, int] = (200, 150)) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], image.size
        pixels = np.asarray(image.convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 20, f"{path} is (nearly) blank: {len(colours)} colours"
    return pixels


def test_full_report_has_every_section_and_is_self_contained(tmp_path: Path) -> None:
    db = report_warehouse(tmp_path / "wh.duckdb")
    html_path = report.build_report(db, tmp_path / "out")
    page = html_path.read_text(encoding="utf-8")
    assert_self_contained(page)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert 'class="missing"' not in page  # every table present and non-empty
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    for name in FIGURES:
        assert_png(tmp_path / "out" / name)
    # headline numbers come from the tables
    assert "Documents (accepted)" in page and ">600<" in page
    assert "MiniPile splits" in page and "train 80" in page
    assert "Distinct trigrams" in page and "4,400" in page
    # tokens shown with visible whitespace (and escaped: no raw newline inside <code>)
    assert "\u2423the\u2423United\u2423States0" in page
    assert "exp-tiny-minipile better" in page
    # the scan's table lists tasks whose answer changed, not those that only sharpened
    assert "Pluto" in page and "3-year" not in page


def test_missing_and_empty_tables_are_reported_not_fatal(tmp_path: Path) -> None:
    db = report_warehouse(tmp_path / "wh.duckdb", full=False)
    con = duckdb.connect(str(db))
    con.execute("create table training_steps (run_id varchar, step integer, loss double)")  # empty
    parquet = tmp_path / "gone.parquet"  # a view over parquet files deleted since
    con.execute(f"copy (select 1 as model_a) to '{parquet}' (format parquet)")
    con.execute(f"create view eval_comparison as select * from read_parquet('{parquet}')")
    con.close()
    parquet.unlink()
    page = report.build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    assert_self_contained(page)
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert "Table top_bigrams is not in this warehouse" in page
    assert "Table training_steps is empty" in page
    assert "python -m trainers.train" in page  # says how to fill the section
    assert "Could not read this section" in page and "gone.parquet" in page
    assert (tmp_path / "out" / "cluster_map.png").exists()
    assert not (tmp_path / "out" / "training_loss.png").exists()


def test_empty_warehouse_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "empty.duckdb"
    duckdb.connect(str(db)).close()
    page = report.build_report(db, tmp_path / "out").read_text(encoding="utf-8")
    assert "No pilehouse tables found" in page
    assert page.count('class="missing"') >= 6
    assert report.main(["--db", str(tmp_path / "nope.duckdb"), "--out", str(tmp_path / "o")]) == 1
    assert "nope.duckdb does not exist: run `make minipile` first" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written


def test_cli_writes_report(tmp_path: Path) -> None:
    db = report_warehouse(tmp_path / "wh.duckdb", full=False)
    out = subprocess.run([sys.executable, "-m", "python_udfs.apps.report", "--db", str(db),
                          "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "report.html").exists()


def test_helpers() -> None:
    assert visible(" a\nb\t$") == "\u2423a\\nb\\t$"
    assert visible("\u4e2d") == "\\u4e2d"
    assert visible("x" * 50, 10) == "x" * 9 + "\u2026"
    assert fmt(1234567) == "1,234,567" and fmt(0.123456) == "0.1235" and fmt(None) == ""


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (make browser)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    db_env = os.environ.get("PILEHOUSE_REPORT_DB")  # a real warehouse to render instead, if given
    db = Path(db_env) if db_env else report_warehouse(tmp_path / "wh.duckdb")
    html_path = report.build_report(db, tmp_path / "out")

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(1280, 900)
        driver.get(html_path.resolve().as_uri())
        assert driver.title == "pilehouse report"
        ids = driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)")
        assert ids == SECTIONS
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0, "an embedded image did not decode"
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 100, 16000))
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / ("report_real.png" if db_env else "report.png")
    shot.write_bytes(png)
    shutil.copy(html_path, ARTIFACTS / shot.with_suffix(".html").name)
    pixels = assert_png(shot, min_size=(1000, 2000))
    with Image.open(io.BytesIO(png)) as image:
        assert image.height > 2000  # the whole page, not just the first screen
    assert pixels.std() > 10, "screenshot has almost no contrast"

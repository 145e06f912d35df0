"""The comparison math (trainers.compare) against hand-computed rows, and compare.sql
against the Python function."""

from __future__ import annotations

import math

import duckdb
import pytest

from trainers import compare as cmp

# The seed's "160M Pile Deduplicated vs. 160M Reproduction" rows (value, stderr).
PILE = {
    ("arc_challenge", "acc"): (0.1997, 0.0117),
    ("hellaswag", "acc"): (0.2903, 0.0045),
    ("lambada_openai", "perplexity"): (31.2589, 1.1594),
    ("lambada_openai", "acc"): (0.3689, 0.0067),
}
REPRO = {
    ("arc_challenge", "acc"): (0.1894, 0.0115),
    ("hellaswag", "acc"): (0.2604, 0.0044),
    ("lambada_openai", "perplexity"): (1854408.3999, 148101.5978),
    ("lambada_openai", "acc"): (0.0, 0.0),
}


def test_seed_arc_row_not_significant():
    # b - a = -0.0103; 1.96 * sqrt(0.0117² + 0.0115²) = 1.96 * 0.0164055 = 0.0321548
    r = cmp.compare(0.1997, 0.0117, 0.1894, 0.0115, metric="acc", model_a="pile",
                    model_b="repro")
    assert r["pct_difference"] == pytest.approx(-5.1577, abs=5e-5)
    assert round(r["pct_difference"], 2) == -5.16
    assert r["ci95_low"] == pytest.approx(-0.0424548, abs=1e-6)
    assert r["ci95_high"] == pytest.approx(0.0218548, abs=1e-6)
    assert r["interpretation"] == "difference not significant"
    assert r["higher_is_better"] is True


def test_accuracy_significant_names_the_higher_model():
    # seed HellaSwag: -0.0299 ± 1.96 * sqrt(0.0045² + 0.0044²) = -0.0299 ± 0.0123350
    r = cmp.compare(0.2903, 0.0045, 0.2604, 0.0044, model_a="pile", model_b="repro")
    assert r["pct_difference"] == pytest.approx(-10.2997, abs=5e-5)
    assert (r["ci95_low"], r["ci95_high"]) == pytest.approx((-0.0422350, -0.0175650), abs=1e-6)
    assert r["interpretation"] == "pile better"
    flipped = cmp.compare(0.2604, 0.0044, 0.2903, 0.0045, model_a="repro", model_b="pile")
    assert flipped["interpretation"] == "pile better"


def test_lower_perplexity_b_is_better_and_significant():
    # b - a = 25.0 - 31.2589 = -6.2589; 1.96 * sqrt(1.1594² + 1.0²) = 1.96 * 1.5310808 = 3.0009184
    r = cmp.compare(31.2589, 1.1594, 25.0, 1.0, metric="perplexity", model_a="a", model_b="b")
    assert r["pct_difference"] == pytest.approx(100 * -6.2589 / 31.2589)  # -20.0228 %
    assert r["pct_difference"] == pytest.approx(-20.0228, abs=5e-5)
    assert r["ci95_low"] == pytest.approx(-9.2598184, abs=1e-6)
    assert r["ci95_high"] == pytest.approx(-3.2579816, abs=1e-6)
    assert r["higher_is_better"] is False
    assert r["interpretation"] == "b better"  # lower perplexity wins, not the higher value


def test_seed_perplexity_row_huge_b_is_worse():
    r = cmp.compare(31.2589, 1.1594, 1854408.3999, 148101.5978, metric="perplexity",
                    model_a="pile", model_b="repro")
    assert r["pct_difference"] == pytest.approx(5932317.3272, abs=1e-3)
    assert r["ci95_high"] == pytest.approx(2144656.2727, abs=1e-3)
    assert r["ci95_low"] == pytest.approx(1564098.0093, abs=1e-3)
    assert r["interpretation"] == "pile better"


def test_edge_cases():
    zero = cmp.compare(0.0, 0.0, 0.0, 0.0)
    assert zero["pct_difference"] is None
    assert zero["interpretation"] == "difference not significant"  # [0, 0] contains 0
    from_zero = cmp.compare(0.0, 0.0, 0.3689, 0.0067, model_b="b")
    assert from_zero["pct_difference"] is None and from_zero["interpretation"] == "b better"
    missing = cmp.compare(0.5, None, 0.6, 0.01)
    assert missing["ci95_low"] is None and missing["interpretation"] == "stderr missing"
    # the interval touching 0 still contains it
    edge = cmp.compare(0.5, 0.0, 0.5 + 1.96 * 0.01, 0.01)
    assert edge["ci95_low"] == pytest.approx(0.0, abs=1e-12)
    assert cmp.higher_is_better("word_perplexity") is False
    assert cmp.higher_is_better("bits_per_byte") is False
    assert cmp.higher_is_better("acc_norm") is True


def _scores() -> list[dict]:
    rows = []
    for model, table in (("pile", PILE), ("repro", REPRO)):
        for (task, metric), (value, stderr) in table.items():
            rows.append({"model": model, "task": task, "metric": metric, "value": value,
                         "stderr": stderr, "n": 1000, "num_fewshot": 0, "doc_limit": None})
    # a quick --limit 20 run of both: must not mix with, nor duplicate, the full-split rows
    rows += [
        {"model": "pile", "task": "arc_challenge", "metric": "acc", "value": 0.35,
         "stderr": 0.1, "n": 20, "num_fewshot": 0, "doc_limit": 20},
        {"model": "repro", "task": "arc_challenge", "metric": "acc", "value": 0.05,
         "stderr": 0.05, "n": 20, "num_fewshot": 0, "doc_limit": 20},
        # scored for B only with this limit: no comparison row
        {"model": "repro", "task": "winogrande", "metric": "acc", "value": 0.5,
         "stderr": 0.1, "n": 20, "num_fewshot": 0, "doc_limit": 20},
        # only limited runs of this task: compared at that limit
        {"model": "pile", "task": "blimp", "metric": "acc", "value": 0.70,
         "stderr": 0.01, "n": 670, "num_fewshot": 0, "doc_limit": 10},
        {"model": "repro", "task": "blimp", "metric": "acc", "value": 0.55,
         "stderr": 0.01, "n": 670, "num_fewshot": 0, "doc_limit": 10},
    ]
    return rows


def compare_scores(scores: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """The reference for compare.sql: `compare` over eval_scores-like rows (model, task, metric,
    value, stderr, doc_limit), one row per (pair, task, metric), the largest common limit first."""
    by_key: dict[tuple, dict] = {}
    for row in scores:
        by_key[(row["model"], row["task"], row["metric"], row.get("doc_limit"))] = row
    out = []
    for model_a, model_b in dict.fromkeys(pairs):
        chosen: dict[tuple, tuple] = {}
        for (model, task, metric, limit), a in by_key.items():
            b = by_key.get((model_b, task, metric, limit))
            if model != model_a or b is None:
                continue
            rank = (limit is None, limit or 0)  # the full split first, then the largest limit
            if (task, metric) not in chosen or rank > chosen[(task, metric)][0]:
                chosen[(task, metric)] = (rank, a, b)
        for (task, metric), (_, a, b) in sorted(chosen.items()):
            out.append({
                "model_a": model_a, "model_b": model_b, "task": task, "metric": metric,
                "value_a": a["value"], "stderr_a": a["stderr"],
                "value_b": b["value"], "stderr_b": b["stderr"],
                **cmp.compare(a["value"], a["stderr"], b["value"], b["stderr"], metric=metric,
                              model_a=model_a, model_b=model_b),
                "doc_limit": a.get("doc_limit"),
            })
    return out


def _sql(scores: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    con = duckdb.connect()
    con.execute("create table eval_scores (model varchar, task varchar, metric varchar, "
                "value double, stderr double, n bigint, num_fewshot integer, doc_limit integer)")
    con.executemany("insert into eval_scores values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [[r[c] for c in ("model", "task", "metric", "value", "stderr", "n",
                                     "num_fewshot", "doc_limit")] for r in scores])
    con.execute("create table eval_pairs (model_a varchar, model_b varchar)")
    con.executemany("insert into eval_pairs values (?, ?)", [list(p) for p in pairs])
    return cmp.comparison(con)


def test_sql_matches_python():
    pairs = [("pile", "repro"), ("repro", "pile"), ("pile", "repro")]  # duplicate pair ignored
    sql = {(r["model_a"], r["model_b"], r["task"], r["metric"]): r for r in _sql(_scores(), pairs)}
    py = {(r["model_a"], r["model_b"], r["task"], r["metric"]): r
          for r in compare_scores(_scores(), pairs)}
    assert sql.keys() == py.keys()
    assert len(sql) == 2 * 5  # (arc, hellaswag, lambada ppl, lambada acc, blimp) both ways
    for key, p in py.items():
        s = sql[key]
        for column in ("value_a", "stderr_a", "value_b", "stderr_b", "pct_difference",
                       "ci95_low", "ci95_high"):
            if p[column] is None:
                assert s[column] is None, (key, column)
            else:
                assert math.isclose(s[column], p[column], rel_tol=1e-12, abs_tol=1e-12), key
        assert s["interpretation"] == p["interpretation"], key
        assert s["higher_is_better"] == p["higher_is_better"], key
        assert s["doc_limit"] == p["doc_limit"], key
    arc = sql[("pile", "repro", "arc_challenge", "acc")]
    assert (arc["value_a"], arc["doc_limit"]) == (0.1997, None)  # the full split wins
    assert arc["interpretation"] == "difference not significant"
    assert round(arc["pct_difference"], 2) == -5.16
    assert sql[("pile", "repro", "blimp", "acc")]["doc_limit"] == 10
    assert sql[("pile", "repro", "lambada_openai", "perplexity")]["interpretation"] == "pile better"
    assert sql[("repro", "pile", "lambada_openai", "perplexity")]["interpretation"] == "pile better"
    assert sql[("pile", "repro", "lambada_openai", "acc")]["pct_difference"] == pytest.approx(-100)
    assert sql[("repro", "pile", "lambada_openai", "acc")]["pct_difference"] is None


def test_sql_contract_columns():
    cols = list(_sql(_scores(), [("pile", "repro")])[0])
    assert cols[:12] == ["model_a", "model_b", "task", "metric", "value_a", "stderr_a",
                         "value_b", "stderr_b", "pct_difference", "ci95_low", "ci95_high",
                         "interpretation"]


def test_markdown_table_has_the_seed_rows():
    rows = compare_scores(_scores(), [("pile", "repro")])
    table = cmp.markdown_table(rows, "pile", "repro").splitlines()
    assert table[0] == ("| Benchmark | Measure |  | pile | repro | Percentage Difference of "
                        "Means | 95% Confidence Interval | Interpretation |")
    assert ("| ARC-Challenge | acc | ↑ | **0.1997 ± 0.0117** | 0.1894 ± 0.0115 | -5.1577 "
            "| (0.0219; -0.0425) | Difference not significant |") in table
    assert ("| Lambada (OpenAI) | perplexity | ↓ | **31.2589 ± 1.1594** | "
            "1854408.3999 ± 148101.5978 | 5932317.3272 | (2144656.2727; 1564098.0093) "
            "| Pile better |") in table
    # the seed's order: ARC-Challenge, HellaSwag, Lambada acc then perplexity, BLiMP
    assert [line.split(" | ")[0][2:] for line in table[2:]] == [
        "ARC-Challenge", "HellaSwag", "Lambada (OpenAI)", "Lambada (OpenAI)", "BLiMP"]


def test_cli_prints_the_table(tmp_path, capsys):
    db = tmp_path / "w.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table eval_scores (model varchar, task varchar, metric varchar, "
                "value double, stderr double, n bigint, num_fewshot integer, doc_limit integer)")
    con.executemany("insert into eval_scores values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [[r[c] for c in ("model", "task", "metric", "value", "stderr", "n",
                                     "num_fewshot", "doc_limit")] for r in _scores()])
    con.close()
    cmp.main(["pile", "repro", "--db", str(db)])
    out = capsys.readouterr().out
    assert "| ARC-Challenge | acc | ↑ | **0.1997 ± 0.0117** |" in out
    cmp.main(["pile", "repro", "--db", str(db), "--all"])
    assert "| BLiMP | acc |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cmp.main(["pile", "nobody", "--db", str(db)])

"""Is model B better than model A on a benchmark? The seed's comparison, as code and SQL.

    python -m trainers.compare pythia-160m-pile pythia-160m-minipile          # seed's table
    python -m trainers.compare A B --all --db other.duckdb                    # every row
    python -m trainers.compare --variants --prefix exp-tiny-   # an experiment over variants

For each (task, metric) both models were scored on (same --limit), with a, b the two
scores and se_a, se_b lm-eval's standard errors:

- pct_difference = 100 * (b - a) / a ("Percentage Difference of Means"; none when a = 0)
- the 95% interval of b - a = (b - a) -/+ 1.96 * sqrt(se_a^2 + se_b^2)
- "difference not significant" when that interval contains 0, else "<model> better",
  where lower is better for perplexities and bits_per_byte and higher for the rest.

`compare` is the math on one pair of numbers; `COMPARE_SQL` (trainers/compare.sql) is the
same over the tables `eval_scores` and `eval_pairs(model_a, model_b)`, for the dbt model
`eval_comparison`; tests check that both agree.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import duckdb

from python_udfs.settings import db_path

COMPARE_SQL = (Path(__file__).with_name("compare.sql")).read_text(encoding="utf-8")
Z95 = 1.96
NOT_SIGNIFICANT = "difference not significant"
# The seed's benchmark labels and row order (its tables show acc and perplexity).
SEED_BENCHMARKS = {
    "arc_challenge": "ARC-Challenge",
    "mmlu": "MMLU",
    "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande",
    "lambada_openai": "Lambada (OpenAI)",
    "lambada_standard": "Lambada (Std)",
    "blimp": "BLiMP",
    "arc_easy": "ARC-Easy",
    "heldout_loss": "Held-out loss",  # not the seed's: pilehouse's, trainers/heldout.py
}
SEED_METRICS = ("acc", "perplexity", "loss")


def higher_is_better(metric: str) -> bool:
    """lm-eval's direction by metric name: perplexities, bits_per_byte and the held-out
    `loss` go down."""
    return not (metric.endswith("perplexity") or metric in ("bits_per_byte", "loss"))


def compare(value_a: float, stderr_a: float | None, value_b: float, stderr_b: float | None,
            *, metric: str = "acc", better_high: bool | None = None,
            model_a: str = "model_a", model_b: str = "model_b") -> dict:
    """pct_difference, ci95_low/high of b - a, and the interpretation for one score pair.

    better_high: the metric's direction (default: from its name, as compare.sql does).
    """
    better_high = higher_is_better(metric) if better_high is None else better_high
    difference = value_b - value_a
    pct = 100 * difference / value_a if value_a != 0 else None
    if stderr_a is None or stderr_b is None:
        low = high = None
        interpretation = "stderr missing"
    else:
        margin = Z95 * math.sqrt(stderr_a**2 + stderr_b**2)
        low, high = difference - margin, difference + margin
        if low <= 0 <= high:
            interpretation = NOT_SIGNIFICANT
        else:
            interpretation = f"{model_b if (difference > 0) == better_high else model_a} better"
    return {"pct_difference": pct, "ci95_low": low, "ci95_high": high,
            "interpretation": interpretation, "higher_is_better": better_high}


def compare_sql(pairs: str = "eval_pairs") -> str:
    """COMPARE_SQL reading its (model_a, model_b) pairs from `pairs` (a table name or a
    parenthesised query) instead of the `eval_pairs` table."""
    marker = "    from eval_pairs\n"
    if COMPARE_SQL.count(marker) != 1:
        raise AssertionError("compare.sql must read eval_pairs exactly once")
    return COMPARE_SQL.replace(marker, f"    from {pairs} as p\n")


def comparison(con: duckdb.DuckDBPyConnection) -> list[dict]:
    """Run compare.sql on a connection that has `eval_scores` and `eval_pairs`."""
    cursor = con.execute(COMPARE_SQL)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def compare_models(db: str | os.PathLike, model_a: str, model_b: str) -> list[dict]:
    """compare.sql for one pair, reading `eval_scores` from the warehouse read-only."""
    con = duckdb.connect()
    try:
        con.execute("attach ? as warehouse (read_only)", [str(db)])
        con.execute("create view eval_scores as select * from warehouse.eval_scores")
        con.execute("create table eval_pairs (model_a varchar, model_b varchar)")
        con.execute("insert into eval_pairs values (?, ?)", [model_a, model_b])
        return comparison(con)
    finally:
        con.close()


def _score(value: float | None, stderr: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"


def markdown_table(rows: list[dict], model_a: str, model_b: str, *, seed_only: bool = True) -> str:
    """The seed's table: Benchmark | Measure | ↑/↓ | A | B | Percentage Difference of Means
    | 95% Confidence Interval (upper; lower, as the seed writes it) | Interpretation, the
    better score in bold. seed_only: the seed's benchmarks (groups) and acc/perplexity, in
    its order; otherwise every row."""
    order = list(SEED_BENCHMARKS)
    if seed_only:
        rows = [r for r in rows if r["task"] in SEED_BENCHMARKS and r["metric"] in SEED_METRICS]
        rows.sort(key=lambda r: (order.index(r["task"]), SEED_METRICS.index(r["metric"])))
    else:
        rows = sorted(rows, key=lambda r: (r["task"], r["metric"]))
    header = ["Benchmark", "Measure", "", model_a, model_b, "Percentage Difference of Means",
              "95% Confidence Interval", "Interpretation"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for r in rows:
        up = r["higher_is_better"]
        a, b = _score(r["value_a"], r["stderr_a"]), _score(r["value_b"], r["stderr_b"])
        if r["value_a"] is not None and r["value_b"] is not None and r["value_a"] != r["value_b"]:
            if (r["value_b"] > r["value_a"]) == up:
                b = f"**{b}**"
            else:
                a = f"**{a}**"
        pct = "-" if r["pct_difference"] is None else f"{r['pct_difference']:.4f}"
        ci = ("-" if r["ci95_low"] is None
              else f"({r['ci95_high']:.4f}; {r['ci95_low']:.4f})")
        verdict = r["interpretation"]
        verdict = verdict[:1].upper() + verdict[1:]
        lines.append("| " + " | ".join([
            SEED_BENCHMARKS.get(r["task"], r["task"]), r["metric"], "↑" if up else "↓",
            a, b, pct, ci, verdict]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_a", nargs="?", help="eval_scores.model of the baseline (A)")
    parser.add_argument("model_b", nargs="?", help="eval_scores.model compared with it (B)")
    parser.add_argument("--db", default=str(db_path()),
                        help="warehouse file (default %(default)s, from $PILEHOUSE_DB when set)")
    parser.add_argument("--all", action="store_true",
                        help="every shared (task, metric), not only the seed's rows")
    parser.add_argument("--variants", action="store_true",
                        help="an experiment over variants (make experiment VARIANTS=...): mean, sd "
                             "and 95%% interval over seeds per (variant, task, metric), then each "
                             "experiment pair against the baseline")
    parser.add_argument("--prefix", default="exp-",
                        help="with --variants: the experiments whose name starts so (default exp-)")
    parser.add_argument("--baseline", default="uniform",
                        help="with --variants: the variant compared against (default uniform)")
    args = parser.parse_args(argv)
    if args.variants:
        return _variants_main(args)
    if not (args.model_a and args.model_b):
        parser.error("give model_a and model_b, or --variants")
    rows = compare_models(args.db, args.model_a, args.model_b)
    if not rows:
        raise SystemExit(f"no (task, metric) scored for both {args.model_a!r} and "
                         f"{args.model_b!r} with the same limit in {args.db}")
    print(markdown_table(rows, args.model_a, args.model_b, seed_only=not args.all))


def _variants_main(args) -> None:
    from trainers import experiment

    rows = experiment.variant_scores(args.db, args.prefix)
    if not rows:
        raise SystemExit(f"no eval_scores of models named {args.prefix}* in {args.db}")
    print(experiment.variants_table(rows, headline_only=not args.all))
    pairs = [p for p in experiment.experiment_pairs(args.db, args.baseline)
             if p[0].startswith(args.prefix)]
    for model_a, model_b in pairs:
        print(f"\n{model_b} against {model_a}:\n")
        print(markdown_table(compare_models(args.db, model_a, model_b), model_a, model_b,
                             seed_only=not args.all))


if __name__ == "__main__":
    main()

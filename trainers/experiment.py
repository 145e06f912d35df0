"""An experiment over sampling variants: which runs to compare, and scores over seeds.

`make experiment VARIANTS="uniform density" EXP_SEEDS=3` trains one run per (variant,
seed) named `exp-<preset>-<variant>-s<seed>`, all at the same token budget, and scores
each. Two things are derived from those runs, both as plain DuckDB SQL over
`training_runs` and `eval_scores` (the dbt models eval_comparison and eval_variant_scores
run them; `pilehouse compare --variants` runs them on the warehouse read-only):

- `pairs_sql(baseline)`: the model pairs eval_comparison reports, the `eval_pairs` seed's
  rows plus one pair per experiment run and seed: (the baseline variant's run, this
  variant's run) for finished `exp-` runs with the same preset, seed, steps, batch size
  and sequence length whose dataset differs from the baseline's (`experiment_baseline`
  var, default `uniform`). Nothing to write by hand: a new run is compared once scored.
- `VARIANT_SCORES_SQL`: one row per (experiment, task, metric, doc_limit), where the
  experiment is the model name without its `-s<seed>` suffix (`exp-tiny-density`): the
  mean over seeds, their sample sd, min and max, and a 95% interval of the mean
  mean +- 1.96 sqrt(sd^2 / k + mean(stderr^2)): the spread over k training seeds plus the
  benchmark's own sampling error, which averaging seeds does not shrink (every seed is
  scored on the same documents). With one seed it is lm-eval's interval.
"""

from __future__ import annotations

import os

import duckdb

from trainers.data import sql_string

EXPERIMENT_PREFIX = "exp-"

VARIANT_SCORES_SQL = """
with

scores as (
    select
        model,
        task,
        metric,
        value,
        stderr,
        doc_limit,
        higher_is_better,
        is_group,
    from eval_scores
    where value is not null
),

runs as (
    select
        run_id,
        dataset,
        preset,
        seed,
    from training_runs
),

tagged as (
    select
        scores.*,
        regexp_replace(scores.model, '-s[0-9]+$', '') as experiment,
        coalesce(runs.dataset, scores.model) as variant,
        runs.preset,
        runs.seed,
    from scores
    left join runs
        on runs.run_id = scores.model
),

grouped as (
    select
        experiment,
        min(variant) as variant,
        min(preset) as preset,
        task,
        metric,
        doc_limit,
        count(*) as n_seeds,
        list(model order by model) as models,
        avg(value) as value_mean,
        stddev_samp(value) as value_sd,
        min(value) as value_min,
        max(value) as value_max,
        sqrt(avg(pow(stderr, 2))) as stderr_rms,
        bool_and(higher_is_better) as higher_is_better,
        bool_or(is_group) as is_group,
    from tagged
    group by experiment, task, metric, doc_limit
),

final as (
    select
        *,
        sqrt(coalesce(pow(value_sd, 2), 0) / n_seeds + pow(stderr_rms, 2)) as se_mean,
        value_mean - 1.96 * sqrt(coalesce(pow(value_sd, 2), 0) / n_seeds + pow(stderr_rms, 2))
            as ci95_low,
        value_mean + 1.96 * sqrt(coalesce(pow(value_sd, 2), 0) / n_seeds + pow(stderr_rms, 2))
            as ci95_high,
    from grouped
)

select * from final
"""


def pairs_sql(baseline: str = "uniform", seed_pairs: str | None = "eval_pairs") -> str:
    """(model_a, model_b, origin): the seed's pairs (origin 'eval_pairs') and the experiment's
    (origin 'experiment'); reads training_runs and eval_scores (and `seed_pairs`)."""
    if not baseline:
        raise ValueError("the experiment's baseline variant is empty")
    seeded = (f"select model_a, model_b, 'eval_pairs' as origin from {seed_pairs}"
              if seed_pairs else "select null::varchar as model_a, null::varchar as model_b, "
              "null::varchar as origin where false")
    return f"""
with

runs as (
    select run_id, dataset, preset, seed, steps, batch_size, seq_len,
    from training_runs
    where status = 'finished'
      and starts_with(run_id, '{EXPERIMENT_PREFIX}')
      and run_id in (select model from eval_scores)
),

experiment as (
    select
        a.run_id as model_a,
        b.run_id as model_b,
        'experiment' as origin,
    from runs as a
    inner join runs as b
        on b.preset = a.preset
        and b.seed = a.seed
        and b.steps = a.steps
        and b.batch_size = a.batch_size
        and b.seq_len = a.seq_len
        and b.dataset != a.dataset
    where a.dataset = {sql_string(baseline)}
),

seeded as (
    {seeded}
),

final as (
    select model_a, model_b, min(origin) as origin,
    from (select * from seeded union all select * from experiment)
    group by model_a, model_b
)

select * from final
"""


def _attach(db: str | os.PathLike) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the warehouse's eval_scores and training_runs (read-only;
    empty stand-ins where the warehouse has none)."""
    from trainers.evaluate import ensure_eval_scores
    from trainers.warehouse_log import ensure_tables

    con = duckdb.connect()
    con.execute("attach ? as warehouse (read_only)", [str(db)])
    have = {r[0] for r in con.execute(
        "select table_name from information_schema.tables where table_catalog = 'warehouse'").fetchall()}
    for table in ("eval_scores", "training_runs"):
        if table in have:
            con.execute(f"create view {table} as select * from warehouse.{table}")
    ensure_eval_scores(con)
    ensure_tables(con)
    return con


def variant_scores(db: str | os.PathLike, prefix: str = EXPERIMENT_PREFIX) -> list[dict]:
    """VARIANT_SCORES_SQL on the warehouse, for experiments whose name starts with `prefix`."""
    con = _attach(db)
    try:
        cursor = con.execute(f"select * from ({VARIANT_SCORES_SQL}) where starts_with(experiment, ?) "
                             "order by task, metric, experiment", [prefix])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def experiment_pairs(db: str | os.PathLike, baseline: str = "uniform") -> list[tuple[str, str]]:
    """The experiment's (model_a, model_b) pairs in the warehouse (no eval_pairs seed)."""
    con = _attach(db)
    try:
        return [tuple(r) for r in con.execute(
            f"select model_a, model_b from ({pairs_sql(baseline, None)}) order by 1, 2").fetchall()]
    finally:
        con.close()


HEADLINE = ("arc_easy", "arc_challenge", "mmlu", "hellaswag", "winogrande", "lambada_openai",
            "blimp", "heldout_loss")


def variants_table(rows: list[dict], headline_only: bool = True) -> str:
    """Markdown: one row per (task, metric), one column per experiment, `mean ± sd (k)`, the
    95% interval of the mean below."""
    if headline_only:
        rows = [r for r in rows if r["task"] in HEADLINE]
    experiments = sorted({r["experiment"] for r in rows})
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        sd = "" if r["value_sd"] is None else f" ± {r['value_sd']:.4f} sd"
        interval = ("" if r["ci95_low"] is None
                    else f"<br>[{r['ci95_low']:.4f}, {r['ci95_high']:.4f}]")
        cells.setdefault((r["task"], r["metric"]), {})[r["experiment"]] = (
            f"{r['value_mean']:.4f}{sd} ({r['n_seeds']}){interval}")
    order = {t: i for i, t in enumerate(HEADLINE)}
    keys = sorted(cells, key=lambda k: (order.get(k[0], len(order)), k))
    header = ["Benchmark", "Measure", *experiments]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for task, metric in keys:
        lines.append("| " + " | ".join([task, metric] + [cells[(task, metric)].get(e, "-")
                                                          for e in experiments]) + " |")
    return "\n".join(lines)

"""eval_comparison: one row per (model pair, task, metric), the seed's columns.

The SQL is trainers/compare.sql (unit-tested against hand-computed rows); it reads the
`eval_scores` table that `python -m trainers.evaluate` writes, created empty here if no
model has been evaluated yet. The pairs are the `eval_pairs` seed's rows plus those of an
experiment over variants (trainers/experiment.py: every finished `exp-` run against the
`experiment_baseline` variant's run of the same preset, seed and token budget).
"""

from trainers.compare import compare_sql
from trainers.evaluate import ensure_eval_scores
from trainers.experiment import pairs_sql
from trainers.warehouse_log import ensure_tables


def model(dbt, session):
    dbt.config(materialized="table")
    dbt.ref("eval_pairs")  # the pairs SQL reads the seed by its table name
    ensure_eval_scores(session)
    ensure_tables(session)
    pairs = f"({pairs_sql(dbt.config.get('experiment_baseline'))})"
    return session.sql(compare_sql(pairs))

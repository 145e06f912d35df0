"""eval_variant_scores: one row per (experiment, task, metric, doc_limit), scores over seeds.

An experiment is a model name without its `-s<seed>` suffix (make experiment's
`exp-<preset>-<variant>-s<seed>` runs); the SQL is trainers/experiment.py's
VARIANT_SCORES_SQL: mean, sd, min, max over seeds and the 95% interval of the mean.
"""

from trainers.evaluate import ensure_eval_scores
from trainers.experiment import VARIANT_SCORES_SQL
from trainers.warehouse_log import ensure_tables


def model(dbt, session):
    dbt.config(materialized="table")
    # after eval_comparison: both create eval_scores when it is missing, and two dbt threads
    # creating it at once conflict in DuckDB's catalog (write-write conflict on create)
    dbt.ref("eval_comparison")
    ensure_eval_scores(session)
    ensure_tables(session)
    return session.sql(VARIANT_SCORES_SQL)

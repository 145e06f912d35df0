"""training_runs / training_steps rows in the warehouse, written in short bursts.

DuckDB allows one read-write connection to a file at a time (and none while another
process has it open), so the trainer never keeps the warehouse open. It keeps the run's
whole log in memory (and in every checkpoint) and, at each checkpoint and at the end,
opens the file read-write for well under a second to replace this run's rows. If a `dbt
build` holds the file it retries for `wait` seconds, then gives up until the next flush:
training never stops for the log, and one successful flush makes the tables whole again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa

# Contract columns first (../shared/warehouse-contract.md, "Training and evaluation"),
# then extras that make a run readable on its own.
RUNS_COLUMNS = {
    "run_id": "varchar",
    "model_config": "varchar",  # JSON of the GPTNeoXConfig
    "dataset": "varchar",
    "params": "bigint",  # parameter count, embeddings included
    "tokens_seen": "bigint",  # sequences * seq_len, padding included
    "started_at": "timestamp",  # UTC
    "finished_at": "timestamp",  # UTC; null while running
    "checkpoint_path": "varchar",  # the final model dir (the last checkpoint while running)
    "preset": "varchar",
    "status": "varchar",  # running, finished, interrupted
    "step": "integer",  # optimizer steps done
    "steps": "integer",  # optimizer steps planned
    "seq_len": "integer",
    "batch_size": "integer",  # sequences per optimizer step
    "packing": "boolean",
    "lr": "double",
    "min_lr": "double",
    "init_from": "varchar",
    "seed": "integer",
    "final_loss": "double",
    "final_val_loss": "double",
    "wall_seconds": "double",  # training time, summed over resumptions
    "device": "varchar",
    "world_size": "integer",
    "train_config": "varchar",  # JSON of the TrainConfig
    "optimizer": "varchar",  # adam_l2 (the seed's) or adamw (TrainConfig.resolved())
    "schedule": "varchar",  # cosine_clamped (the seed's) or cosine_to_min
}

STEPS_COLUMNS = {
    "run_id": "varchar",
    "step": "integer",
    "loss": "double",  # mean training loss over the step's target tokens
    "lr": "double",  # learning rate used for this step
    "tokens_per_s": "double",  # sequence positions per second, all devices
    "val_loss": "double",  # null unless validation ran at this step
    "grad_norm": "double",  # before clipping
    "tokens_seen": "bigint",
    "elapsed_s": "double",
}


def _create(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, str]) -> list[str]:
    cols = ", ".join(f"{name} {kind}" for name, kind in columns.items())
    con.execute(f"create table if not exists {table} ({cols})")
    existing = [r[0] for r in con.execute(f"select * from {table} limit 0").description]
    return [c for c in columns if c in existing]  # tolerate a table made by an older version


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create empty training_runs and training_steps if missing (dbt models that read them)."""
    _create(con, "training_runs", RUNS_COLUMNS)
    _create(con, "training_steps", STEPS_COLUMNS)


def _arrow(rows: list[dict], columns: dict[str, str]) -> pa.Table:
    return pa.table({c: [r.get(c) for r in rows] for c in columns})


def write_run(db: str | Path, run: dict, steps: list[dict], wait: float = 120.0) -> bool:
    """Replace `run`'s row and step rows; False (with a warning) if the file stays locked."""
    deadline = time.monotonic() + wait
    delay = 0.5
    while True:
        try:
            con = duckdb.connect(str(db))
            break
        except duckdb.IOException as error:  # "Could not set lock on file"
            if time.monotonic() > deadline:
                print(f"warning: could not write training log to {db}: {error}; "
                      "will retry at the next checkpoint", file=sys.stderr)
                return False
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    try:
        run_cols = _create(con, "training_runs", RUNS_COLUMNS)
        step_cols = _create(con, "training_steps", STEPS_COLUMNS)
        runs_tbl = _arrow([run], RUNS_COLUMNS)  # noqa: F841 (read by the SQL below)
        steps_tbl = _arrow(steps, STEPS_COLUMNS)  # noqa: F841
        con.execute("begin")
        con.execute("delete from training_runs where run_id = ?", [run["run_id"]])
        con.execute("delete from training_steps where run_id = ?", [run["run_id"]])
        con.execute(f"insert into training_runs ({', '.join(run_cols)}) "
                    f"select {', '.join(run_cols)} from runs_tbl")
        con.execute(f"insert into training_steps ({', '.join(step_cols)}) "
                    f"select {', '.join(step_cols)} from steps_tbl")
        con.execute("commit")
    finally:
        con.close()
    return True

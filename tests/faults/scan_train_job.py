"""The prompt scan or the trainer as one process that tests/faults/test_kill_scan_train.py kills.

    python tests/faults/scan_train_job.py scan WORK MODEL   # MODEL: a tiny GPT-NeoX checkpoint
    python tests/faults/scan_train_job.py train WORK   # WORK/pilehouse.duckdb: the trainer tests' warehouse

Each writes ``WORK/started`` once its imports and set-up are done (a kill is timed from then),
then runs through the same functions the dbt model (scan) and ``pilehouse train`` call. The
scan covers 24 real documents of the sample corpus in parts of 2 documents; the training run
is 24 steps of the tiny preset in its bitwise-resumable mode (`deterministic`), a checkpoint
every 4, writing its steps to the warehouse.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCAN_DOCS = 24
TRAIN_STEPS = 24


def scan(work: Path, model_dir: str) -> None:
    import torch

    from python_udfs.corpus.sample import iter_sample_records
    from python_udfs.scan.model import load_scan_model
    from python_udfs.scan.runner import ScanSettings, scan_documents

    torch.set_num_threads(1)
    texts = [r["text"] for r in iter_sample_records(per_source=SCAN_DOCS // 4)][:SCAN_DOCS]
    model = load_scan_model(model_dir, device="cpu")
    (work / "started").write_text("scan\n")
    scan_documents(model, list(range(len(texts))), texts, [i % 3 for i in range(len(texts))], work / "out",
                   ScanSettings(min_p_long=-1.0, min_js=-1.0, max_tokens=48, part_docs=2), progress=False)


def train_config(work: Path):
    from trainers.presets import TrainConfig

    return TrainConfig.from_preset(
        "tiny", dataset="minipile", seq_len=32, batch_size=4, micro_batch_size=2, steps=TRAIN_STEPS, warmup=2,
        eval_every=8, eval_batches=1, checkpoint_every=4, out_dir=str(work / "checkpoints"),
        db=str(work / "pilehouse.duckdb"), progress=False, db_wait=30, run_id="killed", deterministic=True)


def train(work: Path) -> None:
    import torch

    from trainers.train import train as run

    torch.set_num_threads(1)
    config = train_config(work)
    (work / "started").write_text("train\n")
    run(config)


if __name__ == "__main__":
    job, work = sys.argv[1], Path(sys.argv[2])
    {"scan": scan, "train": train}[job](work, *sys.argv[3:])

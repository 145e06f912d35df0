"""Training throughput: pilehouse's trainer against a plain ``transformers.Trainer``, same run.

    make bench-training          # or: python -m bench.training --preset tiny --steps 8 --rounds 2

Both train the same model (the preset, Pythia's init, the very same initial weights), on
the same minipile sequences in the same order, with the same optimizer and schedule (the
trainer's own AdamW and LambdaLR, handed to ``Trainer(optimizers=...)``), micro-batch,
accumulation and clipping. The two run interleaved (ours, Trainer, ours, Trainer, ...,
``--rounds`` each); a run's rate is the step's tokens over its median step time after
``--warmup`` steps, and each contestant keeps its best run.

Fidelity: the per-step losses of the two agree (relative ``--loss-rtol``: the same maths,
only float rounding differs), and the trainer's ``--deterministic`` mode gives bitwise the
same weights and losses in two runs. MFU = (6 N + 12 L d T) x tokens/s (N: parameters doing
matmuls, all but the input embedding; L layers, d width, T sequence length) over the
measured ``torch_matmul_peak``: the faster of the model's largest GEMM (tokens x d @ d x
vocab) and a square 2048^3 GEMM, in fp32 (bf16 only where the CPU has it natively). Reads ``--db`` when it holds
``document_tokens`` (``make minipile``); otherwise it builds a small warehouse from the
sample corpus (real text, the real GPT-NeoX tokenizer) in a temporary folder.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.results import Ratio, torch_matmul_peak, write
from python_udfs.settings import db_path, default


def sample_warehouse(path: Path, per_source: int = 40) -> Path:
    """documents, minipile (train/validation split) and document_tokens from the sample corpus."""
    import duckdb
    import pyarrow as pa

    from python_udfs.corpus.sample import iter_sample_records
    from python_udfs.ngrams import tokenizer as neox

    records = list(iter_sample_records(per_source=per_source))
    texts = [r["text"] for r in records]
    ids = neox.encode_batch(texts)
    tokens = pa.table({"doc_id": pa.array(range(len(texts)), pa.int64()),
                       "n_tokens": pa.array([len(a) for a in ids], pa.int32()),
                       "tokens": pa.array([a.tolist() for a in ids], pa.list_(pa.uint16()))})
    with duckdb.connect(str(path)) as con:
        con.execute("create table documents (doc_id bigint, source varchar, text varchar)")
        con.executemany("insert into documents values (?, ?, ?)",
                        [(i, r["meta"]["pile_set_name"], r["text"]) for i, r in enumerate(records)])
        con.execute("create table minipile as select doc_id, case when doc_id % 10 = 0 then 'validation' "
                    "else 'train' end as split, doc_id % 5 as cluster_id, source, text from documents")
        con.register("tokens_arrow", tokens)
        con.execute("create table document_tokens as select doc_id, n_tokens, tokens::usmallint[] as tokens "
                    "from tokens_arrow")
    return path


def has_tokens(db: str) -> bool:
    import duckdb

    if not Path(db).exists():
        return False
    with duckdb.connect(db, read_only=True) as con:
        return bool(con.execute("select count(*) from information_schema.tables "
                                "where table_name = 'document_tokens'").fetchone()[0])


def step_rate(stamps: list[float], tokens_per_step: int, warmup: int) -> float:
    """Tokens over the median step time, steps after the first `warmup` (the last step, which
    also writes the final checkpoint, counts no more than any other)."""
    times = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return tokens_per_step / statistics.median(times)


def run_pilehouse(cfg) -> tuple[list[float], list[float], dict]:
    from safetensors.torch import load_file

    from trainers.train import train

    stamps, losses = [], []

    def on_step(step, row):
        stamps.append(time.perf_counter())
        losses.append(row["loss"])

    run = train(cfg, on_step=on_step)
    return stamps, losses, load_file(Path(run["checkpoint_path"]) / "model.safetensors")


def hf_rows(cfg, accum: int) -> list[dict]:
    """The sequences the trainer reads, in its order, as Trainer dataset rows."""
    from trainers import data

    exported = data.export_snapshot(
        cfg.db, cfg.dataset, Path(cfg.out_dir) / "hf-data", split=cfg.split, val_split=cfg.val_split,
        val_fraction=cfg.val_fraction, seed=cfg.seed, shuffle=cfg.shuffle,
        max_tokens=None if cfg.packing else cfg.seq_len)
    batches = data.iter_batches(exported["paths"]["train"], cfg.seq_len, cfg.packing, cfg.micro_batch_size)
    rows = []
    for _ in range(cfg.steps * accum):
        x, y = next(batches)[:2]
        rows += [{"input_ids": xi, "labels": yi} for xi, yi in zip(x, y)]
    return rows


def run_hf_trainer(cfg, accum: int, rows: list[dict], initial: dict) -> tuple[list[float], list[float]]:
    """The same model, weights, data order, optimizer and schedule through transformers.Trainer."""
    from transformers import GPTNeoXForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from trainers.presets import PRESETS
    from trainers.train import build_optimizer, lr_at

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    stamps, losses, micro = [], [], []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())
            losses.append(sum(micro))  # each micro-batch's loss is its sum over the step's targets
            micro.clear()

    class Recording(Trainer):
        """Keeps each micro-batch's loss unrounded (the logged one is rounded)."""

        def compute_loss(self, model, inputs, *a, **kw):
            out = super().compute_loss(model, inputs, *a, **kw)
            micro.append(float((out[0] if isinstance(out, tuple) else out).detach()))
            return out

    model = GPTNeoXForCausalLM(PRESETS[cfg.preset].model_config())
    model.load_state_dict(initial)
    cuda = torch.cuda.is_available()
    optimizer = build_optimizer(model, cfg, fused=cuda)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg) / cfg.lr)
    args = TrainingArguments(
        output_dir=str(Path(cfg.out_dir) / "hf"), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accum, max_steps=cfg.steps, learning_rate=cfg.lr,
        max_grad_norm=cfg.clip, save_strategy="no", eval_strategy="no", report_to=[],
        use_cpu=not cuda, dataloader_num_workers=0, disable_tqdm=True,
        seed=cfg.seed, train_sampling_strategy="sequential", logging_steps=10**6,
        bf16=cuda and cfg.resolved()["gpu_dtype"] == "bfloat16",
        fp16=cuda and cfg.resolved()["gpu_dtype"] == "float16",
    )
    Recording(model=model, args=args, train_dataset=Rows(), callbacks=[Stamp()],
            optimizers=(optimizer, scheduler)).train()
    return stamps, losses


def main() -> None:
    from trainers.presets import PRESETS, TrainConfig
    from trainers.train import build_model, cpu_has_bf16, grad_accum_steps

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=default("train_preset"))
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of a run left out of its rate")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each contestant, interleaved; best kept")
    parser.add_argument("--det-steps", type=int, default=3, help="steps of each deterministic-mode run")
    parser.add_argument("--loss-rtol", type=float, default=1e-3)
    parser.add_argument("--db", default=str(db_path()))
    parser.add_argument("--target", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db if has_tokens(args.db) else str(sample_warehouse(Path(tmp) / "sample.duckdb"))

        def config(run_id: str, **extra) -> TrainConfig:
            return TrainConfig.from_preset(
                args.preset, **{**dict(steps=args.steps, db=db, out_dir=tmp, log_to_db=False, eval_every=0,
                                       checkpoint_every=10**6, progress=False, run_id=run_id, resume=False,
                                       recipe="pilehouse", deterministic=False), **extra})

        cfg = config("fast")
        accum = grad_accum_steps(cfg, 1)
        tokens_per_step = cfg.micro_batch_size * accum * cfg.seq_len
        initial = copy.deepcopy(build_model(cfg, None).state_dict())  # what train() starts from
        rows = hf_rows(cfg, accum)
        ours, hf, ours_losses, hf_losses = [], [], [], []
        for _ in range(args.rounds):
            stamps, ours_losses, _ = run_pilehouse(cfg)
            ours.append(step_rate(stamps, tokens_per_step, args.warmup))
            stamps, hf_losses = run_hf_trainer(cfg, accum, rows, initial)
            hf.append(step_rate(stamps, tokens_per_step, args.warmup))
        # The deterministic mode: two runs, bitwise the same weights and losses.
        det = [run_pilehouse(config(f"det{i}", deterministic=True, steps=args.det_steps)) for i in (0, 1)]
        bitwise = (det[0][1] == det[1][1] and det[0][2].keys() == det[1][2].keys()
                   and all(torch.equal(det[0][2][k], det[1][2][k]) for k in det[0][2]))

    preset = PRESETS[args.preset]
    mc = preset.model_config()
    n_params = preset.num_params()
    flops_per_token = (6 * (n_params - mc.vocab_size * mc.hidden_size)
                       + 12 * mc.num_hidden_layers * mc.hidden_size * cfg.seq_len)
    dtype = "bfloat16" if cpu_has_bf16() and not torch.cuda.is_available() and cfg.dtype in ("bf16", "bfloat16") \
        else "float32"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # the machine's matmul peak: the model's largest GEMM (K = hidden is small, so it runs below
    # peak) or a square 2048^3 GEMM, whichever is faster, so MFU is never flattered by a slow shape
    peak = max(torch_matmul_peak(cfg.micro_batch_size * cfg.seq_len, mc.hidden_size, mc.vocab_size, dtype,
                                 device=device),
               torch_matmul_peak(2048, 2048, 2048, dtype, device=device))
    rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_losses, hf_losses))
    fidelity = {"max_loss_rel_diff": rel, "loss_rtol": args.loss_rtol, "steps_compared": len(hf_losses),
                "deterministic_bitwise": bitwise}
    ok = len(hf_losses) == len(ours_losses) == args.steps and rel <= args.loss_rtol and bitwise
    best_ours, best_hf = max(ours), max(hf)
    print(f"training benchmark: preset {args.preset} ({n_params / 1e6:.1f} M parameters), {args.rounds} x "
          f"{args.steps} steps of {tokens_per_step:,} tokens each, {torch.get_num_threads()} threads; "
          f"ours {[round(r) for r in ours]}, Trainer {[round(r) for r in hf]} tokens/s; "
          f"{dtype} matmul peak (max of the {cfg.micro_batch_size * cfg.seq_len}x{mc.hidden_size}x{mc.vocab_size} "
          f"and 2048^3 GEMMs) {peak:.1f} GFLOP/s; MFU ours {100 * best_ours * flops_per_token / 1e9 / peak:.1f}%, "
          f"Trainer {100 * best_hf * flops_per_token / 1e9 / peak:.1f}%")
    row = Ratio(
        step="training", metric="tokens/s", contestant=f"trainers.train {args.preset} (fast default)",
        baseline="transformers.Trainer (same model, data, AdamW, schedule)", value=best_ours,
        baseline_value=best_hf, target=args.target, fidelity=fidelity, fidelity_ok=ok,
        achieved=best_ours * flops_per_token / 1e9, peak=peak, peak_unit=f"GFLOP/s {dtype} torch.mm",
        note=f"MFU = (6N + 12LdT) tokens/s over the faster of torch.mm {cfg.micro_batch_size * cfg.seq_len}x"
             f"{mc.hidden_size}x{mc.vocab_size} and 2048^3; "
             f"baseline MFU {100 * best_hf * flops_per_token / 1e9 / peak:.1f}%")
    write("training", [row], extra={"preset": args.preset, "steps": args.steps, "rounds": args.rounds,
                                    "tokens_per_step": tokens_per_step, "ours_tokens_s": ours, "hf_tokens_s": hf,
                                    "flops_per_token": flops_per_token, "ours_losses": ours_losses,
                                    "hf_losses": hf_losses})


if __name__ == "__main__":
    main()

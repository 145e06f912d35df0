"""Training throughput: pilehouse's trainer against a plain Hugging Face ``Trainer`` loop.

    make bench-training          # or: python -m bench.training --preset tiny --steps 12

Same preset (model), same optimizer settings, same micro-batch and accumulation, same
minipile rows, in the same run. Tokens/s is measured over the steps after the first two
(warm-up excluded) from per-step timestamps. MFU = (6 N + 12 L d T) x tokens/s over the
measured peak of a large fp32 matmul on this machine (N: parameters doing matmuls, i.e.
all but the input embedding; L layers, d width, T sequence length). Needs a built
warehouse (`make minipile`, which also builds the `document_tokens` both read their ids
from). No assertions: numbers are for reading.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from python_udfs.settings import db_path, default


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def steady_rate(stamps: list[float], tokens_per_step: int) -> float:
    steady = stamps[2:]
    return tokens_per_step * (len(steady) - 1) / (steady[-1] - steady[0])


def run_pilehouse(cfg) -> list[float]:
    from trainers.train import train

    stamps: list[float] = []
    train(cfg, on_step=lambda step, row: stamps.append(time.perf_counter()))
    return stamps


def run_hf_trainer(cfg, accum: int) -> list[float]:
    """The same model, data and optimizer settings through transformers.Trainer."""
    from transformers import GPTNeoXForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from trainers import data
    from trainers.presets import PRESETS

    snapshot = Path(cfg.out_dir) / "hf-data"
    exported = data.export_snapshot(
        cfg.db, cfg.dataset, snapshot, split=cfg.split, val_split=cfg.val_split,
        val_fraction=cfg.val_fraction, seed=cfg.seed, shuffle=cfg.shuffle,
        max_tokens=None if cfg.packing else cfg.seq_len,
    )
    batches = data.iter_batches(exported["paths"]["train"], cfg.seq_len, cfg.packing,
                                cfg.micro_batch_size)
    rows = []
    for _ in range(cfg.steps * accum):
        x, y = next(batches)[:2]
        rows += [{"input_ids": xi, "labels": yi} for xi, yi in zip(x, y)]

    class Rows(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            return rows[i]

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(PRESETS[cfg.preset].model_config())
    args = TrainingArguments(
        output_dir=str(Path(cfg.out_dir) / "hf"), per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=accum, max_steps=cfg.steps, learning_rate=cfg.lr,
        adam_beta1=cfg.betas[0], adam_beta2=cfg.betas[1], adam_epsilon=cfg.eps,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.clip, warmup_steps=cfg.warmup,
        lr_scheduler_type="cosine", save_strategy="no", eval_strategy="no", report_to=[],
        logging_steps=10**6, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=True, seed=cfg.seed,
    )
    Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[Stamp()]).train()
    return stamps


def main() -> None:
    from trainers.presets import PRESETS, TrainConfig
    from trainers.train import grad_accum_steps

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=default("train_preset"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--db", default=str(db_path()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_preset(
            args.preset, steps=args.steps, db=args.db, out_dir=tmp, log_to_db=False,
            eval_every=0, checkpoint_every=10**6, progress=False, run_id="bench",
            recipe="pilehouse",  # AdamW on matrices and a cosine: what transformers.Trainer runs
        )
        accum = grad_accum_steps(cfg, 1)
        tokens_per_step = cfg.micro_batch_size * accum * cfg.seq_len
        ours = steady_rate(run_pilehouse(cfg), tokens_per_step)
        hf = steady_rate(run_hf_trainer(cfg, accum), tokens_per_step)
    preset = PRESETS[args.preset]
    model_config = preset.model_config()
    n_params = preset.num_params()
    embed = model_config.vocab_size * model_config.hidden_size
    flops_per_token = 6 * (n_params - embed) + 12 * model_config.num_hidden_layers \
        * model_config.hidden_size * cfg.seq_len
    peak = matmul_peak()
    print(f"training benchmark: preset {args.preset} ({n_params / 1e6:.1f} M parameters), "
          f"{args.steps} steps of {tokens_per_step:,} tokens, {torch.get_num_threads()} threads")
    print(f"measured fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s; {flops_per_token / 1e6:.1f} MFLOP per token")
    print(f"{'contestant':<40}{'tokens/s':>10}{'vs baseline':>13}{'MFU':>8}")
    for name, rate in [("baseline: transformers.Trainer", hf), ("pilehouse trainers.train", ours)]:
        print(f"{name:<40}{rate:>10,.0f}{rate / hf:>12.2f}x{100 * rate * flops_per_token / peak:>7.1f}%")


if __name__ == "__main__":
    main()

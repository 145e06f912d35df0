r"""Train a Pythia-style (GPT-NeoX) model on a warehouse table.

    python -m trainers.train --preset tiny --dataset minipile         # minutes on 2 CPU cores
    python -m trainers.train --preset pythia-160m --dataset minipile  # the seed's recipe, GPU
    python -m trainers.train --preset pythia-160m --dataset documents --packing
    python -m trainers.train --preset tiny \
        --dataset "sql:select doc_id, text from documents where source = 'BBC News'"
    python -m trainers.train --preset pythia-160m \
        --init-from EleutherAI/pythia-160m-deduped --revision step0   # Pythia's own init
    torchrun --nproc-per-node 8 -m trainers.train --preset pythia-1.4b  # DDP, same code

Every field of `TrainConfig` (trainers/presets.py) is a flag (`--micro-batch-size 4`,
`--no-shuffle`, ...). A run lives in `out_dir/run_id/`: the data snapshot (`data/`),
resumable checkpoints (`step-000100/`, ...) and the final model (`final/`), each a
`save_pretrained` folder with the tokenizer, so `AutoModelForCausalLM.from_pretrained` and
lm-eval's HFLM load it as they load `EleutherAI/pythia-160m`. Run the same command again
after a crash and it continues from the last checkpoint; with `--deterministic` (var
`train_deterministic`) the result is bitwise the one an uninterrupted run gives (CPU),
without it (the default, faster) it is that run up to float rounding. Rows land in the warehouse's `training_runs` and
`training_steps` tables (see trainers/warehouse_log.py for how the file lock is shared
with dbt).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import json
import math
import os
import random
import re
import shutil
import sys
import time
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from python_udfs import hardware
from trainers import data as data_lib
from trainers.fused_loss import linear_cross_entropy_sum
from trainers.fused_loss import supports as fused_loss_supported
from trainers.presets import OPTIMIZERS, PRESETS, RECIPES, SCHEDULES, TrainConfig
from trainers.warehouse_log import write_run

STATE_FILE = "trainer_state.pt"


# --------------------------------------------------------------------------- setup


@dataclasses.dataclass
class Env:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    dtype: torch.dtype  # autocast dtype; float32 means no autocast

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_env(cfg: TrainConfig) -> Env:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; without them this is a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        kind = torch.device(cfg.device).type
    # Under torchrun each process drives the GPU numbered by its LOCAL_RANK.
    device = torch.device(f"cuda:{local_rank}") if kind == "cuda" else torch.device(kind)
    if kind == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if cfg.dtype == "auto":
        if kind == "cuda":  # the recipe's: seed fp16 (with a loss scaler), pilehouse bf16
            wanted = names[cfg.resolved()["gpu_dtype"]]
            dtype = (torch.float16 if wanted == torch.bfloat16 and not torch.cuda.is_bf16_supported()
                     else wanted)
        else:
            dtype = torch.float32  # bf16 autocast on CPU is slower on most CPUs, and lossy
    elif cfg.dtype not in names:
        raise ValueError(f"unknown dtype {cfg.dtype!r}; choose from auto, {', '.join(names)}")
    else:
        dtype = names[cfg.dtype]
    if dtype == torch.float16 and kind != "cuda":
        raise ValueError("fp16 autocast is CUDA only (the seed's mixed precision); on "
                         f"{kind} use --dtype bf16 (where the CPU has bf16 support) or fp32")
    if dtype == torch.bfloat16 and kind == "cpu" and not cpu_has_bf16():
        print("warning: this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 autocast is "
              "emulated and slower than fp32", file=sys.stderr)
    return Env(rank, world, local_rank, device, dtype)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls on this CPU (AVX512-BF16 or AMX tiles): the same answer as the
    scan's and the benchmarks' (python_udfs.hardware)."""
    return hardware.native_bf16()


def grad_accum_steps(cfg: TrainConfig, world: int) -> int:
    if cfg.grad_accum is not None:
        return cfg.grad_accum
    per_pass = cfg.micro_batch_size * world
    if cfg.batch_size % per_pass:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of micro_batch_size "
                         f"{cfg.micro_batch_size} x world size {world}")
    return cfg.batch_size // per_pass


@functools.lru_cache(maxsize=4)  # building it from the 50k-token vocabulary takes ~1 s
def build_tokenizer(max_length: int = 2048):
    """Pythia's tokenizer as a transformers tokenizer, saved next to every checkpoint."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from python_udfs.ngrams import tokenizer as neox

    # A copy: transformers sets padding/truncation on the object it wraps, and the rest of
    # the process (the n-gram UDFs) shares neox.load_tokenizer()'s cached instance.
    backend = Tokenizer.from_str(neox.load_tokenizer().to_str())
    eos = "<|endoftext|>"  # Pythia: bos = eos = unk, no pad token
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=eos, eos_token=eos,
                                   unk_token=eos, model_max_length=max_length)


def build_model(cfg: TrainConfig, checkpoint: Path | None):
    from transformers import AutoModelForCausalLM, GPTNeoXForCausalLM

    if checkpoint is not None:  # resuming: the weights saved with the optimizer state
        return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    if cfg.init_from:  # a local save_pretrained dir or a hub name (+ revision)
        return AutoModelForCausalLM.from_pretrained(cfg.init_from, revision=cfg.revision,
                                                    dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    model = GPTNeoXForCausalLM(PRESETS[cfg.preset].model_config())
    pythia_init(model)
    return model


@torch.no_grad()
def pythia_init(model) -> None:
    """Pythia's init (GPT-NeoX `small_init` / `wang_init`) in place of HF's normal(0, 0.02).

    Every weight matrix and embedding ~ N(0, sqrt(2 / 5d)); the two projections that write
    into the residual stream (attention.dense, mlp.dense_4h_to_h) ~ N(0, 2 / (L sqrt(d))),
    so the residual's variance does not grow with depth. Biases 0, LayerNorms 1 and 0.
    """
    d, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    small, wang = math.sqrt(2 / (5 * d)), 2 / (n_layers * math.sqrt(d))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Embedding):
            std = wang if name.endswith(("attention.dense", "mlp.dense_4h_to_h")) else small
            module.weight.normal_(0.0, std)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


def param_groups(model: torch.nn.Module, cfg: TrainConfig, optimizer: str) -> list[dict]:
    """adam_l2 (the seed's): one group, every parameter decayed. adamw: matrices decayed,
    biases and LayerNorm gains not."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "adam_l2":
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool):
    """The recipe's optimizer (TrainConfig.resolved()["optimizer"]):

    - adam_l2: torch.optim.Adam, weight decay added to the gradient before the moments
      (g + wd * p, L2 regularisation), on every parameter: what the seed ran;
    - adamw: torch.optim.AdamW, decoupled decay (p -= lr * wd * p) on matrices only.
    """
    name = cfg.resolved()["optimizer"]
    kind = torch.optim.Adam if name == "adam_l2" else torch.optim.AdamW
    # fused on GPU; elsewhere foreach (one kernel per op over all tensors, not per tensor).
    return kind(param_groups(model, cfg, name), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                fused=True if fused else None, foreach=None if fused else True)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step `step` (0-based) under the config's schedule.

    cosine_to_min: linear warm-up to lr over `warmup` steps (step 0 already at lr / warmup),
    then cosine decay to min_lr at the last step.
    cosine_clamped (the seed's): transformers' get_cosine_schedule_with_warmup, i.e.
    lr * t / warmup while warming up (0 at step 0), then lr * 0.5 (1 + cos(pi p)) with
    p = (t - warmup) / (steps - warmup), towards 0 at step `steps`; every value raised to
    min_lr: max(lr(t), min_lr).
    """
    if cfg.resolved()["schedule"] == "cosine_clamped":
        if step < cfg.warmup:
            factor = step / max(1, cfg.warmup)
        else:
            progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
            factor = max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
        return max(cfg.lr * factor, cfg.min_lr)
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - 1 - cfg.warmup))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


# --------------------------------------------------------------------------- checkpoints


def step_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a directory is renamed into place when whole)."""
    dirs = [p for p in run_dir.glob("step-*") if re.fullmatch(r"step-\d+", p.name)
            and (p / STATE_FILE).exists()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


def save_pretrained_atomic(model, tokenizer, target: Path, extra: dict | None = None) -> None:
    """save_pretrained into target.tmp, then rename: a reader never sees half a checkpoint."""
    from transformers.utils import logging as hf_logging

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "Writing model shards" bar per checkpoint is noise
    try:
        model.save_pretrained(tmp, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(tmp)
    if extra is not None:
        torch.save(extra, tmp / STATE_FILE)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resumable(saved: dict, cfg: TrainConfig) -> None:
    """A resumed run must compute the same thing; only operational fields may change."""
    now = cfg.semantic_dict()
    if "recipe" not in saved:  # saved before recipes existed: it trained pilehouse's AdamW
        saved = {**saved, "recipe": "pilehouse"}
    was = TrainConfig(**saved).semantic_dict()
    diff = {k: (was.get(k), now.get(k)) for k in set(now) | set(was) if was.get(k) != now.get(k)}
    if diff:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"run {cfg.run_id} was started with a different config ({lines}); "
                         "pass another --run-id, or --no-resume to start it over")


# --------------------------------------------------------------------------- loss


def target_count(y: torch.Tensor) -> int:
    """Tokens that carry a loss: positions 1.. (position 0 is never predicted), not -100."""
    return int((y[:, 1:] != data_lib.IGNORE).sum())


def loss_sum(model, x: torch.Tensor, y: torch.Tensor, env: Env, fused: bool = False) -> torch.Tensor:
    """Summed next-token cross-entropy over the target (non -100) tokens of a batch.

    fused: the output projection and the loss in row chunks (trainers/fused_loss.py), never
    the whole [batch, seq, vocab] logits; `model` must then be the bare causal LM (not DDP).
    """
    x, y = x.to(env.device, non_blocking=True), y.to(env.device, non_blocking=True)
    autocast = (torch.autocast(env.device.type, dtype=env.dtype)
                if env.dtype != torch.float32 else contextlib.nullcontext())
    # Position t predicts token t+1: shift the labels left (the last position predicts
    # nothing) rather than slicing the logits, which would copy a [batch, seq, 50304] tensor.
    targets = F.pad(y[:, 1:], (0, 1), value=data_lib.IGNORE)
    if fused:
        with autocast:
            hidden = model.base_model(input_ids=x, use_cache=False).last_hidden_state
        return linear_cross_entropy_sum(hidden.flatten(0, 1), model.get_output_embeddings().weight,
                                        targets.flatten(), mm_dtype=env.dtype)
    with autocast:
        logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                           ignore_index=data_lib.IGNORE, reduction="sum")


def all_reduce_sum(values: list[float], env: Env) -> list[float]:
    if env.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(model, batches: list, env: Env, fused: bool = False) -> float | None:
    """Token-weighted mean validation loss over the cached validation batches."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        if len(x):
            total += float(loss_sum(model, x, y, env, fused))
            count += target_count(y)
    model.train()
    total, count = all_reduce_sum([total, count], env)
    return total / count if count else None


# --------------------------------------------------------------------------- train


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def train(config: TrainConfig, on_step: Callable[[int, dict], None] | None = None) -> dict:
    """Train (or resume) one run; returns its summary (the training_runs row as a dict).

    `on_step(step, row)` is called after every optimizer step (after that step's checkpoint
    is written), e.g. to stop a run early in tests.
    """
    cfg = dataclasses.replace(config)
    if cfg.preset not in PRESETS and not cfg.init_from:
        raise KeyError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    cfg.resolved()  # an unknown recipe, optimizer or schedule fails here, before any work
    cfg.run_id = cfg.run_id or cfg.default_run_id()
    env = setup_env(cfg)
    accum = grad_accum_steps(cfg, env.world)
    global_batch = cfg.micro_batch_size * accum * env.world
    run_dir = Path(cfg.out_dir) / cfg.run_id
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if env.main else (lambda *a: None)

    # --deterministic: deterministic kernels make a resumed run bitwise equal to an
    # uninterrupted one (and two runs equal). Off by default: torch then fills every new
    # tensor before use (fill_uninitialized_memory), which costs ~20% of a CPU step. Without
    # it a resumed run restores the same data position, optimizer, schedule and RNG state;
    # only float rounding may differ.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(bool(cfg.deterministic))
    if cfg.deterministic and env.device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
    try:
        return _train(cfg, env, accum, global_batch, run_dir, say, on_step)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(cfg, env, accum, global_batch, run_dir, say, on_step) -> dict:
    # ---- resume point
    checkpoint = None
    if run_dir.exists() and not cfg.resume and env.main:
        for old in step_dirs(run_dir) + [run_dir / "final", run_dir / "data"]:
            shutil.rmtree(old, ignore_errors=True)
    if cfg.resume and step_dirs(run_dir):
        checkpoint = step_dirs(run_dir)[-1]
    state = torch.load(checkpoint / STATE_FILE, weights_only=False) if checkpoint else None
    if state is not None:
        check_resumable(state["config"], cfg)

    # ---- data: a snapshot of the documents' NeoX ids, made once per run by rank 0
    export = functools.partial(
        data_lib.export_snapshot, cfg.db, cfg.dataset, run_dir / "data", split=cfg.split,
        val_split=cfg.val_split, val_fraction=cfg.val_fraction, seed=cfg.seed, shuffle=cfg.shuffle,
        max_tokens=None if cfg.packing else cfg.seq_len)  # truncating needs only seq_len ids
    if env.main:
        snapshot = export()
    if env.world > 1:
        dist.barrier()
    if not env.main:  # the other ranks read what rank 0 wrote
        snapshot = export()
    data_state = state["data_state"] if state else data_lib.start_state()
    train_batches = data_lib.iter_batches(snapshot["paths"]["train"], cfg.seq_len, cfg.packing,
                                          cfg.micro_batch_size, data_state, env.rank, env.world)
    if env.device.type == "cuda":  # cut the next step's sequences while this one runs
        train_batches = data_lib.prefetch(train_batches, depth=2 * accum)
    val_batches = data_lib.validation_batches(snapshot["paths"]["val"], cfg.seq_len, cfg.packing,
                                              cfg.micro_batch_size, cfg.eval_batches,
                                              env.rank, env.world)

    # ---- model, optimizer, schedule
    model = build_model(cfg, checkpoint).to(env.device)
    model.train()
    if cfg.seq_len > model.config.max_position_embeddings:
        raise ValueError(f"seq_len {cfg.seq_len} > the model's max_position_embeddings "
                         f"{model.config.max_position_embeddings}")
    tokenizer = build_tokenizer(model.config.max_position_embeddings)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, cfg, fused=env.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg) / cfg.lr)
    scaler = torch.amp.GradScaler(env.device.type, enabled=env.dtype == torch.float16)
    step, tokens_seen, history = 0, 0, []
    started_at, wall_before = now_utc(), 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        step, tokens_seen, history = state["step"], state["tokens_seen"], state["history"]
        started_at, wall_before = state["started_at"], state["wall_seconds"]
        say(f"resuming {cfg.run_id} from {checkpoint} (step {step}/{cfg.steps})")
    # The fused loss calls the model's base and head directly, which DDP's forward would not
    # see: one process only.
    fused = bool(cfg.fused_loss) and env.world == 1 and fused_loss_supported(model)
    ddp_model = model
    if env.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)

    say(f"run {cfg.run_id}: {cfg.preset} ({n_params / 1e6:.1f}M params) on {cfg.dataset} "
        f"({snapshot['rows']['train']:,} train / {snapshot['rows']['val']:,} val rows), "
        f"{global_batch} x {cfg.seq_len} tokens per step = {cfg.micro_batch_size} micro x "
        f"{accum} accum x {env.world} device(s), {env.device} {str(env.dtype).split('.')[-1]}")

    session_start = time.perf_counter()
    last_loss = next((r["loss"] for r in reversed(history)), None)
    vals = [r["val_loss"] for r in history if r.get("val_loss") is not None]
    last_val = vals[-1] if vals else None
    run_row: dict = {}

    def summary(status: str, finished: bool, ckpt_path: Path | None) -> dict:
        wall = wall_before + time.perf_counter() - session_start
        run_row.update(
            run_id=cfg.run_id, model_config=model.config.to_json_string(use_diff=False),
            dataset=cfg.dataset, params=n_params, tokens_seen=tokens_seen,
            started_at=started_at, finished_at=now_utc() if finished else None,
            checkpoint_path=str(Path(ckpt_path).resolve()) if ckpt_path else None,
            preset=cfg.preset, status=status, step=step, steps=cfg.steps, seq_len=cfg.seq_len,
            batch_size=global_batch, packing=cfg.packing, lr=cfg.lr, min_lr=cfg.min_lr,
            init_from=cfg.init_from, seed=cfg.seed, final_loss=last_loss,
            final_val_loss=last_val, wall_seconds=wall, device=str(env.device),
            world_size=env.world, train_config=json.dumps(cfg.to_dict()),
            optimizer=cfg.resolved()["optimizer"], schedule=cfg.resolved()["schedule"])
        return run_row

    def flush(status: str, finished: bool = False, ckpt_path: Path | None = None) -> None:
        row = summary(status, finished, ckpt_path)
        if env.main and cfg.log_to_db:
            write_run(cfg.db, row, history, wait=cfg.db_wait)

    def save_checkpoint() -> Path:
        target = run_dir / f"step-{step:06d}"
        extra = dict(step=step, tokens_seen=tokens_seen, data_state=data_state,
                     optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                     scaler=scaler.state_dict(), rng=rng_state(), history=history,
                     started_at=started_at,
                     wall_seconds=wall_before + time.perf_counter() - session_start,
                     config=cfg.to_dict())
        save_pretrained_atomic(model, tokenizer, target, extra)
        for old in step_dirs(run_dir)[: -max(1, cfg.keep_checkpoints)]:
            shutil.rmtree(old)
        return target

    if env.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        flush("running", ckpt_path=checkpoint)

    bar = None
    if env.main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=cfg.run_id, unit="step",
                   file=sys.stderr, dynamic_ncols=True)
    latest = checkpoint
    try:
        while step < cfg.steps:
            t0 = time.perf_counter()
            micro = [next(train_batches) for _ in range(accum)]
            data_state = micro[-1][2]
            # Scale each micro-batch so the step's gradient is the mean over all target
            # tokens of the whole (global) batch, however it is split into micro-batches.
            n_global = all_reduce_sum([sum(target_count(y) for _, y, _ in micro)], env)[0]
            step_loss = torch.zeros((), device=env.device)  # a tensor: no GPU sync per micro
            for i, (x, y, _) in enumerate(micro):
                # DDP all-reduces gradients on the last micro-batch of the step only.
                last_micro = i == accum - 1
                with (ddp_model.no_sync() if env.world > 1 and not last_micro
                      else contextlib.nullcontext()):
                    loss = loss_sum(ddp_model, x, y, env, fused)
                    # DDP averages gradients over ranks; multiply by world to undo that.
                    scaler.scale(loss * env.world / n_global).backward()
                step_loss += loss.detach()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), cfg.clip if cfg.clip > 0 else float("inf"))
            lr = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            tokens_seen += global_batch * cfg.seq_len
            last_loss = all_reduce_sum([float(step_loss)], env)[0] / n_global
            elapsed = time.perf_counter() - t0
            row = dict(run_id=cfg.run_id, step=step, loss=last_loss, lr=lr,
                       tokens_per_s=global_batch * cfg.seq_len / elapsed, val_loss=None,
                       grad_norm=float(grad_norm), tokens_seen=tokens_seen,
                       elapsed_s=wall_before + time.perf_counter() - session_start)
            last = step == cfg.steps
            if cfg.eval_every and val_batches and (step % cfg.eval_every == 0 or last):
                row["val_loss"] = last_val = evaluate(model, val_batches, env, fused)
            if step % cfg.log_every == 0 or last or row["val_loss"] is not None:
                history.append(row)
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last:
                if env.main:
                    latest = save_checkpoint()
                    flush("running", ckpt_path=latest)
                if env.world > 1:
                    dist.barrier()
            if bar is not None:
                bar.update(1)
                post = dict(loss=f"{last_loss:.3f}", lr=f"{lr:.2e}",
                            tok_s=f"{row['tokens_per_s']:,.0f}")
                if row["val_loss"] is not None:
                    post["val"] = f"{row['val_loss']:.3f}"
                bar.set_postfix(post)
            if on_step is not None:
                on_step(step, row)
    except BaseException:
        if env.main:  # log what this session did; the rows past the checkpoint are redone
            flush("interrupted", ckpt_path=latest)
        raise
    finally:
        if bar is not None:
            bar.close()
        train_batches.close()  # stops a prefetch thread

    # ---- final model: a plain save_pretrained folder (no optimizer state)
    final = run_dir / "final"
    if env.main:
        save_pretrained_atomic(model, tokenizer, final)
        flush("finished", finished=True, ckpt_path=final)
        (run_dir / "run.json").write_text(json.dumps(run_row, default=str, indent=2) + "\n")
        say(f"done: {final} (loss {last_loss}, val loss {last_val})")
    if env.world > 1:
        dist.barrier()
    return dict(run_row)


# --------------------------------------------------------------------------- CLI


def _field_help() -> dict[str, str]:
    """The trailing comment of each TrainConfig field, so --help shows the documented defaults."""
    out = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        m = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.+)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _optional(kind: type) -> Callable[[str], object]:
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    parse.__name__ = kind.__name__
    return parse


def build_parser() -> argparse.ArgumentParser:
    presets = "\n".join(
        f"  {name:<12} " + (", ".join(f"{k}={v}" for k, v in p.train.items()) or "the defaults")
        for name, p in PRESETS.items())
    parser = argparse.ArgumentParser(
        prog="python -m trainers.train", description=__doc__,
        epilog=f"presets and the training defaults they change:\n{presets}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(TrainConfig)
    helps = _field_help()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f"{helps.get(f.name, '')} (default: {default})"
        # SUPPRESS: a flag the user did not give leaves the preset's default in place.
        if f.name == "preset":
            parser.add_argument(flag, choices=list(PRESETS), default=argparse.SUPPRESS, help=text)
        elif f.name in ("recipe", "optimizer", "schedule"):
            choices = {"recipe": RECIPES, "optimizer": OPTIMIZERS, "schedule": SCHEDULES}[f.name]
            parser.add_argument(flag, choices=list(choices), default=argparse.SUPPRESS, help=text)
        elif kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
        elif f.name == "betas":
            parser.add_argument(flag, nargs=2, type=float, default=argparse.SUPPRESS, help=text)
        else:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            base = args[0] if args else kind
            parser.add_argument(flag, type=_optional(base) if args else base,
                                default=argparse.SUPPRESS, help=text)
    return parser


def main(argv: list[str] | None = None) -> dict:
    given = vars(build_parser().parse_args(argv))
    if "betas" in given:
        given["betas"] = tuple(given["betas"])
    preset = given.pop("preset", TrainConfig.preset)
    summary = train(TrainConfig.from_preset(preset, **given))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary, default=str, indent=2))
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    main()

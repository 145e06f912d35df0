"""Training config and named model presets: Pythia's real architectures plus a CPU-sized `tiny`.

`TrainConfig` holds the seed's recipe as its defaults (Pythia-160M on MiniPile: Adam
0.9/0.95 with L2 weight decay 0.01 on every parameter, lr 6e-4 after 10 warm-up steps,
transformers' cosine towards 0 clamped at 6e-5, fp16 autocast on GPU, 1,024 steps of 1,024
sequences of 2,048 tokens; `recipe="pilehouse"` is AdamW on matrices with a cosine to 6e-5).
A preset names a model architecture and may override a few training defaults
(`tiny` shrinks everything so it trains in minutes on 2 CPU cores; `pythia-1.4b` uses
Pythia's lower lr). Build a config with the preset's defaults through `TrainConfig.from_preset`:

    cfg = TrainConfig.from_preset("tiny", dataset="minipile", steps=50)

The architectures are the ones in EleutherAI's released `config.json` files: GPT-NeoX blocks
with a parallel residual, rotary embeddings on 25% of each head's dimensions, untied input
and output embeddings, and the 50,277-token vocabulary padded to 50,304 rows (a multiple of
128, which keeps the embedding matmuls aligned on GPUs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from python_udfs.settings import db_path, default

PADDED_VOCAB = 50_304  # Pythia's embedding rows: neox.VOCAB_SIZE (50,277) rounded up to 128


def _default_db() -> str:
    # settings.db_path() resolves $PILEHOUSE_DB as profiles.yml does: the trainer and dbt share one file.
    return str(db_path())


@dataclass
class TrainConfig:
    # --- what to train -------------------------------------------------------------------
    preset: str = "pythia-160m"  # a key of PRESETS (the seed trained Pythia-160M)
    init_from: str | None = None  # None: random init; else a local checkpoint dir or hub name
    revision: str | None = None  # hub revision for init_from, e.g. "step0" (Pythia's init)

    # --- what to train on ----------------------------------------------------------------
    dataset: str = default("train_dataset")  # a warehouse table (minipile, documents, ...) or "sql:select ..."
    split: str | None = "train"  # used when the source has a `split` column (minipile does)
    val_split: str | None = "validation"  # validation rows for sources with a `split` column
    val_fraction: float = 0.01  # otherwise hold out this fraction of rows (hash of the doc key)
    shuffle: bool = True  # order rows by md5(seed, doc_id); False: by doc_id
    seq_len: int = 2048  # tokens per sequence (Pythia's context length)
    packing: bool = False  # False: the seed's one document per sequence, truncated, EOS-padded
    #                        True: documents joined with EOS and cut into full sequences

    # --- batch -------------------------------------------------------------------------------
    batch_size: int = 1024  # sequences per optimizer step (= micro_batch * grad_accum * world)
    micro_batch_size: int = 8  # sequences per forward/backward on one device
    grad_accum: int | None = None  # None: derived as batch_size / (micro_batch_size * world)

    # --- optimizer and schedule (RECIPES: the seed's Adam + L2, or pilehouse's AdamW) --------
    recipe: str = "seed"  # seed: Adam+L2, clamped cosine, GPU fp16; pilehouse: AdamW, cosine to min_lr, bf16
    optimizer: str | None = None  # adam_l2 or adamw; None: the recipe's
    schedule: str | None = None  # cosine_clamped or cosine_to_min; None: the recipe's
    steps: int = 1024  # optimizer steps
    lr: float = 6e-4  # peak learning rate, reached after `warmup` steps
    min_lr: float = 6e-5  # lr floor: cosine_clamped's clamp, cosine_to_min's end (lr / 10, Pythia)
    warmup: int = 10  # linear warm-up steps
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = default("seed")  # model init, data order (with shuffle) and every RNG

    # --- evaluation, checkpoints, logging ----------------------------------------------------
    eval_every: int = 100  # validation loss every N steps (and at the last step); 0: never
    eval_batches: int | None = 64  # validate on eval_batches * micro_batch_size sequences
    checkpoint_every: int = 100  # resumable checkpoint every N steps (and at the last step)
    keep_checkpoints: int = 2  # how many step checkpoints to keep on disk
    log_every: int = 1  # a training_steps row every N steps
    out_dir: str = default("train_out_dir")  # runs land in out_dir/run_id/
    run_id: str | None = default("train_run_id")  # None: preset-dataset-<hash of the config>, so a rerun resumes
    resume: bool = True  # continue from out_dir/run_id's last checkpoint when there is one

    # --- where and how ---------------------------------------------------------------------
    db: str = field(default_factory=_default_db)  # the warehouse file ($PILEHOUSE_DB)
    log_to_db: bool = True  # write training_runs / training_steps rows into `db`
    db_wait: float = 120.0  # seconds to retry a locked warehouse (a dbt build holds it)
    device: str = "auto"  # auto: cuda if available, else cpu
    dtype: str = "auto"  # auto: the recipe's autocast on GPU (seed fp16, pilehouse bf16), fp32 on CPU; fp16 is GPU only
    progress: bool = True  # tqdm progress bar on stderr
    fused_loss: bool = default("train_fused_loss")  # projection + loss in row chunks, no full logits
    deterministic: bool = default("train_deterministic")  # bitwise-resumable kernels (slower)

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> TrainConfig:
        """The config with `preset`'s training defaults, then `overrides` on top."""
        if preset not in PRESETS:
            raise KeyError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        return cls(**{**PRESETS[preset].train, **overrides, "preset": preset})

    def resolved(self) -> dict[str, str]:
        """The optimizer, schedule and GPU autocast dtype this config trains with."""
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}")
        out = dict(RECIPES[self.recipe])
        for key, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            value = getattr(self, key)
            if value is not None:
                if value not in choices:
                    raise ValueError(f"unknown {key} {value!r}; choose from {', '.join(choices)}")
                out[key] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # Fields that change what the run computes. The others (where files go, how often to
    # evaluate or log, how the batch is split across micro-batches and devices) may change
    # between a run and its resumption.
    OPERATIONAL = frozenset({
        "out_dir", "run_id", "resume", "db", "log_to_db", "db_wait", "device", "dtype",
        "progress", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
        "log_every", "micro_batch_size", "grad_accum", "deterministic", "fused_loss",
    })

    def semantic_dict(self) -> dict[str, Any]:
        d = self.to_dict()
        d["betas"] = list(d["betas"])
        return {k: v for k, v in d.items() if k not in self.OPERATIONAL}

    def default_run_id(self) -> str:
        """preset-dataset-hash: the same command in the same out_dir gives the same id."""
        key = {**self.semantic_dict(), "out_dir": str(Path(self.out_dir).resolve())}
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
        source = "sql" if self.dataset.startswith("sql:") else self.dataset.replace(":", "-")
        return f"{self.preset}-{source}-{digest}"


OPTIMIZERS = {
    # The seed (MK2112/minicorpus, Pythia recipe): torch.optim.Adam over every parameter with
    # weight_decay=0.01, which Adam adds to the gradient (L2: grad + wd * p, then the moments).
    "adam_l2": "torch.optim.Adam on all parameters, weight decay added to the gradient (L2)",
    # pilehouse's earlier default: decoupled decay (p -= lr * wd * p) on matrices only.
    "adamw": "torch.optim.AdamW, decoupled weight decay on matrices only (not biases, LayerNorms)",
}
SCHEDULES = {
    # transformers.get_cosine_schedule_with_warmup (linear warm-up from 0, cosine to 0 at the
    # last step), every value raised to at least min_lr: max(lr(t), min_lr).
    "cosine_clamped": "transformers' cosine-with-warmup towards 0, clamped at min_lr (the seed's)",
    "cosine_to_min": "linear warm-up, then cosine from lr to min_lr at the last step",
}
RECIPES: dict[str, dict[str, str]] = {
    "seed": dict(optimizer="adam_l2", schedule="cosine_clamped", gpu_dtype="float16"),
    "pilehouse": dict(optimizer="adamw", schedule="cosine_to_min", gpu_dtype="bfloat16"),
}


@dataclass(frozen=True)
class Preset:
    model: dict[str, Any]  # GPTNeoXConfig kwargs
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults to override

    def model_config(self):
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(**self.model)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count, computed by building the model on the meta device (no memory)."""
        import torch
        from transformers import GPTNeoXForCausalLM

        with torch.device("meta"):
            model = GPTNeoXForCausalLM(self.model_config())
        total = sum(p.numel() for p in model.parameters())
        if non_embedding:  # Pythia's "non-embedding" count leaves out embed_in and embed_out
            total -= (model.get_input_embeddings().weight.numel()
                      + model.get_output_embeddings().weight.numel())
        return total


def neox(layers: int, d_model: int, heads: int, **extra: Any) -> dict[str, Any]:
    """GPTNeoXConfig kwargs for a Pythia-shaped model (names as in Pythia's config.json)."""
    base = dict(
        vocab_size=PADDED_VOCAB,
        hidden_size=d_model,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * d_model,
        hidden_act="gelu",
        rotary_pct=0.25,  # rotary embeddings on the first 25% of each head's dimensions
        rotary_emb_base=10_000,
        max_position_embeddings=2048,
        use_parallel_residual=True,  # x + attn(ln1(x)) + mlp(ln2(x))
        layer_norm_eps=1e-5,
        initializer_range=0.02,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=0,  # <|endoftext|>, as in Pythia's config
        eos_token_id=0,
    )
    return {**base, **extra}


PRESETS: dict[str, Preset] = {
    # Published totals (with the 50,304-row embeddings): 14.1M, 70.4M, 162.3M, 405.3M, 1.41B.
    "pythia-14m": Preset(neox(6, 128, 4)),
    "pythia-70m": Preset(neox(6, 512, 8)),
    "pythia-160m": Preset(neox(12, 768, 12)),
    "pythia-410m": Preset(neox(24, 1024, 16)),
    "pythia-1.4b": Preset(neox(24, 2048, 16), train=dict(lr=2e-4, min_lr=2e-5)),
    # 6.5M parameters, almost all of them the two 50,304 x 64 embedding matrices: the
    # smallest model that still uses the real tokenizer. Sized so a run is minutes on 2 cores.
    "tiny": Preset(
        neox(2, 64, 4),
        train=dict(
            seq_len=128,
            batch_size=16,
            micro_batch_size=16,
            steps=200,
            lr=3e-3,  # a small model tolerates (and needs, in 200 steps) a larger lr
            min_lr=3e-4,
            eval_every=50,
            eval_batches=4,
            checkpoint_every=50,
        ),
    ),
}

"""Held-out loss: a model's mean per-token loss on documents no variant and no MiniPile sampled.

    pilehouse evaluate --model checkpoints/exp-tiny-uniform-s1/final --tasks '' --heldout-docs 500

Which documents: those of `documents` that are in neither `minipile` nor (when the mart
exists) `minipile_variant_documents`, ordered by md5('heldout:<seed>:' || doc_id) and cut
to the first `n` (a seeded hash sample: the same warehouse, n and seed give the same
documents, whatever ran before). So every model of an experiment, whichever variant it
trained on, is scored on the same documents, none of which it saw.

How: each document is tokenized with the model's own tokenizer (no BOS or EOS added) and
cut to `max_tokens` (default: the model's context); token t is predicted from tokens < t,
t = 2..L, as in training. A document's loss is the mean next-token cross-entropy (nats)
over its L - 1 predicted tokens; a group's value is the mean of its documents' losses and
its stderr sd / sqrt(n) over documents (sample sd; none for one document), so the 95%
interval is value +- 1.96 stderr, as for lm-eval's scores. Documents with fewer than two
tokens predict nothing and are left out.

Rows (`eval_scores`, metric `loss`, lower is better, `doc_limit` = the requested n):
`heldout_loss` over every document (is_group), `heldout_loss:source=<source>` per source
and `heldout_loss:cluster=<cluster_id>` per cluster (from `cluster_assignments`, when the
warehouse has it). Per-token losses depend on the tokenizer: compare models that share one
(every trained Pythia-style model uses GPT-NeoX's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np

from trainers.data import VARIANTS_TABLE, connect_read_only, relation_exists

TASK = "heldout_loss"
METRIC = "loss"
TASK_VERSION = "heldout-v1"


@dataclass(frozen=True)
class HeldoutDoc:
    doc_id: int
    source: str
    cluster_id: int | None
    text: str


def heldout_sql(con: duckdb.DuckDBPyConnection, n: int, seed: int) -> str:
    """The held-out sample's query (doc_id, source, cluster_id, text), for this warehouse."""
    if n <= 0:
        raise ValueError(f"held-out documents must be a positive count, got {n}")
    for table in ("documents", "minipile"):
        if not relation_exists(con, table):
            raise ValueError(f"the warehouse has no `{table}`, which the held-out sample needs "
                             "(build MiniPile first: make minipile)")
    sampled = ["select doc_id from minipile"]
    if relation_exists(con, VARIANTS_TABLE):
        sampled.append(f"select doc_id from {VARIANTS_TABLE}")
    cluster, join = "null::integer", ""
    if relation_exists(con, "cluster_assignments"):
        cluster, join = "a.cluster_id::integer", "left join cluster_assignments as a on a.doc_id = d.doc_id"
    return f"""
        with sampled as ({' union '.join(sampled)})
        select d.doc_id::bigint as doc_id, d.source, {cluster} as cluster_id, d.text
        from documents as d
        {join}
        where d.text is not null and length(d.text) > 0
          and d.doc_id not in (select doc_id from sampled where doc_id is not null)
        order by md5('heldout:{int(seed)}:' || d.doc_id::varchar), d.doc_id
        limit {int(n)}
    """


def select_heldout(db: str | Path, n: int, seed: int) -> list[HeldoutDoc]:
    """The first n unsampled documents of the seeded hash order (read-only, for seconds)."""
    if not Path(db).exists():
        raise FileNotFoundError(f"warehouse {db} not found (set --db or PILEHOUSE_DB)")
    with connect_read_only(db) as con:
        rows = con.execute(heldout_sql(con, n, seed)).fetchall()
    if not rows:
        raise ValueError(f"{db}: every document is in minipile or a variant; none is left for a "
                         "held-out loss")
    return [HeldoutDoc(int(r[0]), r[1], None if r[2] is None else int(r[2]), r[3]) for r in rows]


def _batches(order: list[int], lengths: list[int], batch_size: int, tokens_per_batch: int) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by length) of at most batch_size rows whose padded
    size (rows x longest) stays within tokens_per_batch (a longer document goes alone)."""
    out: list[list[int]] = []
    for i in order:
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * lengths[i] <= tokens_per_batch:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def document_losses(model, tokenizer, texts: Sequence[str], *, max_tokens: int | None = None,
                    batch_size: int = 8, device: str = "cpu", tokens_per_batch: int = 4096) -> np.ndarray:
    """Mean next-token loss (nats) of each text; NaN for a text of fewer than two tokens.

    Texts are batched by length and right-padded; padding is masked out of attention and
    loss, so a document's loss does not depend on its batch. A batch holds at most
    tokens_per_batch padded positions, which bounds the [rows, width, vocab] logits (4,096
    positions of Pythia's 50,304-way vocabulary: 0.8 GB in float32).
    """
    import torch
    import torch.nn.functional as F

    limit = max_tokens or getattr(model.config, "max_position_embeddings", 2048)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][:limit] for t in texts]
    out = np.full(len(ids), np.nan)
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    order = [i for i in order if len(ids[i]) >= 2]
    model.eval()
    with torch.no_grad():
        for chunk in _batches(order, [len(x) for x in ids], batch_size, tokens_per_batch):
            width = max(len(ids[i]) for i in chunk)
            x = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                x[row, :len(ids[i])] = torch.tensor(ids[i])
                mask[row, :len(ids[i])] = 1
            x, mask = x.to(device), mask.to(device)
            logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()
            nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten(),
                                  reduction="none").view(len(chunk), width - 1)
            keep = mask[:, 1:].float()
            per_doc = (nll * keep).sum(1) / keep.sum(1)
            for row, i in enumerate(chunk):
                out[i] = float(per_doc[row])
    return out


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error sd / sqrt(n) (sample sd); stderr None for one value."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) == 0:
        raise ValueError("no values")
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None
    return float(a.mean()), se


def heldout_rows(model: str, docs: Sequence[HeldoutDoc], losses: Sequence[float], *, requested: int,
                 seed: int, model_path: str, evaluated_at: datetime | None = None) -> list[dict]:
    """eval_scores rows: overall, per source, per cluster (groups in sorted order)."""
    import lm_eval

    evaluated_at = evaluated_at or datetime.now(UTC).replace(tzinfo=None)
    scored = [(d, float(x)) for d, x in zip(docs, losses, strict=True) if not math.isnan(x)]
    if not scored:
        raise ValueError("no held-out document has two or more tokens")
    groups: dict[str, list[float]] = {TASK: [x for _, x in scored]}
    for key in sorted({d.source for d, _ in scored}):
        groups[f"{TASK}:source={key}"] = [x for d, x in scored if d.source == key]
    for key in sorted({d.cluster_id for d, _ in scored if d.cluster_id is not None}):
        groups[f"{TASK}:cluster={key}"] = [x for d, x in scored if d.cluster_id == key]
    rows = []
    for task, values in groups.items():
        value, se = mean_and_stderr(values)
        rows.append({
            "model": model, "task": task, "metric": METRIC, "value": value, "stderr": se,
            "n": len(values), "num_fewshot": 0, "doc_limit": int(requested),
            "higher_is_better": False, "is_group": task == TASK,
            "task_version": f"{TASK_VERSION}:seed={int(seed)}", "data_source": "warehouse",
            "model_path": model_path, "lm_eval_version": lm_eval.__version__,
            "evaluated_at": evaluated_at,
        })
    return rows


def load_model(model: str, gguf_file: str | None = None, device: str = "cpu"):
    """The model and tokenizer as HFLM loads them (float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tok = AutoTokenizer.from_pretrained(model, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kwargs).to(device)
    return lm, tok


def heldout_loss(model: str, db: str | Path, *, n: int, seed: int, name: str,
                 gguf_file: str | None = None, device: str = "cpu", batch_size: int = 8,
                 max_tokens: int | None = None) -> list[dict]:
    """Select the held-out documents, score them with `model`, return eval_scores rows."""
    docs = select_heldout(db, n, seed)
    lm, tok = load_model(model, gguf_file, device)
    losses = document_losses(lm, tok, [d.text for d in docs], max_tokens=max_tokens,
                             batch_size=batch_size, device=device)
    model_path = f"{model}/{gguf_file}" if gguf_file else model
    return heldout_rows(name, docs, losses, requested=n, seed=seed, model_path=model_path)

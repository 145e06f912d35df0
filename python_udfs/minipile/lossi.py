"""Per-cluster mean loss of a reference causal LM: the weights of the ``loss_informed`` strategy.

The seed's "lossi", its idea 2 (MK2112/minicorpus, ``04_distill_pile_embed_idea_2_lossi_1.py``
scores, ``04_distill_pile_embed_idea_2_lossi_2.py`` samples): score up to n documents per kept
cluster with a small proxy LM (the seed: 1,000 per cluster, Pythia-70M, 512 tokens), take each
cluster's mean loss Lᵢ as its informativeness and give it nᵢ = T x Lᵢ / Σ L documents
(``quotas.py``). Here:

- the documents: per kept cluster, the ``lossi_docs_per_cluster`` with the smallest
  ``md5('lossi:<seed>:' || doc_id)`` (``int_cluster_loss_documents``), so the same whatever
  the threads, the part layout or the executor;
- a document's loss: the mean next-token cross-entropy (nats per token) over its first
  ``lossi_max_tokens`` tokens in the model's own tokenizer, no BOS, every token after the
  first predicted; a document of fewer than 2 tokens predicts nothing and is not scored.
  The seed averaged Hugging Face's batch loss, which counts padding positions and which it
  divided by the batch size; here padding is masked and each document counts once;
- a cluster's ``mean_loss``: the mean of its documents' losses, ``stderr`` its standard
  error (sample standard deviation / √n; NULL for one document), ``n_tokens`` the tokens
  predicted.

Batched (``lossi_batch_size`` documents, right-padded, attention-masked), under
``torch.no_grad``, the log-softmax in float32. Batches are cut from the documents in
(cluster_id, pick_rank) order, so one build always scores the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from python_udfs.settings import default, none_if_blank, resolve

LOSSES_SCHEMA = pa.schema([
    ("cluster_id", pa.int32()),
    ("n_docs_scored", pa.int64()),
    ("n_tokens", pa.int64()),
    ("mean_loss", pa.float64()),
    ("stderr", pa.float64()),
    ("model", pa.string()),
])

LOSS_STRATEGY = "loss_informed"


@dataclass(frozen=True)
class LossConfig:
    """How the clusters are scored; each default is its dbt var's, in dbt_project.yml."""

    #: smollm2 (offline default), a .gguf file, a checkpoint folder or a hub name (online)
    model: str = field(default_factory=lambda: str(default("lossi_model")))
    #: documents scored per kept cluster at most (the seed: 1,000)
    docs_per_cluster: int = field(default_factory=lambda: int(default("lossi_docs_per_cluster")))
    #: tokens of a document scored at most (the seed: 512)
    max_tokens: int = field(default_factory=lambda: int(default("lossi_max_tokens")))
    #: documents per forward pass
    batch_size: int = field(default_factory=lambda: int(default("lossi_batch_size")))
    #: cuda, cpu, ...; None picks cuda when present
    device: str | None = None

    def __post_init__(self) -> None:
        for name in ("docs_per_cluster", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"lossi_{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or self.max_tokens < 2:
            raise ValueError(f"lossi_max_tokens must be a whole number >= 2 (one token predicts nothing), "
                             f"got {self.max_tokens!r}")
        if not str(self.model).strip():
            raise ValueError("lossi_model is empty: give smollm2, a .gguf file, a checkpoint folder or a hub name")

    @classmethod
    def from_vars(cls, given: Mapping[str, Any] | None = None) -> LossConfig:
        return cls(
            model=str(resolve("lossi_model", given)),
            docs_per_cluster=int(resolve("lossi_docs_per_cluster", given)),
            max_tokens=int(resolve("lossi_max_tokens", given)),
            batch_size=int(resolve("lossi_batch_size", given)),
            device=none_if_blank(given.get("lossi_device") if given else None),
        )


def parse_variants(value: object) -> list[Any]:
    """The ``sampling_variants`` var as a list: it may be absent (None, ''), a list, or the
    string Jinja rendered it to (``"['uniform', {'sampling_strategy': 'loss_informed'}]"``)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "none", "null")):
        return []
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"sampling_variants is not a list: {value!r} ({err})") from None
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"sampling_variants must be a list of strategy names or mappings, got {value!r}")
    return list(value)


def losses_needed(strategy: object, variants: object = None) -> bool:
    """Does the build use loss_informed (``sampling_strategy`` or an item of ``sampling_variants``,
    a strategy name or a mapping with ``sampling_strategy``)? Only then is the LM loaded."""
    if str(strategy or "").strip() == LOSS_STRATEGY:
        return True
    for item in parse_variants(variants):
        name = item.get("sampling_strategy") if isinstance(item, Mapping) else item
        if str(name or "").strip() == LOSS_STRATEGY:
            return True
    return False


def empty_losses() -> pa.Table:
    """``int_cluster_losses`` when no strategy needs it: typed, no rows, no model loaded."""
    return LOSSES_SCHEMA.empty_table()


def token_losses(lm, sequences: Sequence[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """Per sequence of token ids, the cross-entropy (nats) of each token after the first
    given the ones before it: len(ids) - 1 values. Right-padded batches, padding masked."""
    import torch

    device = next(lm.parameters()).device
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(sequences), batch_size):
            batch = [np.asarray(s, dtype=np.int64) for s in sequences[start:start + batch_size]]
            width = max(len(s) for s in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(batch):
                ids[row, :len(seq)] = torch.from_numpy(seq)
                mask[row, :len(seq)] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            nll = -torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
            nll = nll.cpu().numpy().astype(np.float64)
            out.extend(nll[row, :len(seq) - 1] for row, seq in enumerate(batch))
    return out


def document_losses(scan_model, texts: Sequence[str], max_tokens: int, batch_size: int) -> list[tuple[float, int]]:
    """Per text, (mean next-token loss in nats, tokens predicted) over its first ``max_tokens``
    tokens in the model's tokenizer; (nan, 0) for a text of fewer than 2 tokens."""
    encoded = [np.asarray(ids, dtype=np.int64)[:max_tokens] for ids in scan_model.encode_batch(list(texts))]
    scorable = [i for i, ids in enumerate(encoded) if len(ids) >= 2]
    result: list[tuple[float, int]] = [(math.nan, 0)] * len(texts)
    for i, nll in zip(scorable, token_losses(scan_model.lm, [encoded[i] for i in scorable], batch_size)):
        result[i] = (float(nll.mean()), len(nll))
    return result


def summarise(cluster_ids: Sequence[int], losses: Sequence[tuple[float, int]], model: str) -> pa.Table:
    """One row per cluster with a scored document: mean, standard error, documents, tokens."""
    per: dict[int, list[tuple[float, int]]] = {}
    for cid, (loss, n) in zip(cluster_ids, losses):
        if n > 0:
            per.setdefault(int(cid), []).append((loss, n))
    rows = []
    for cid in sorted(per):
        values = np.array([loss for loss, _ in per[cid]], dtype=np.float64)
        stderr = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
        rows.append((cid, len(values), sum(n for _, n in per[cid]), float(values.mean()), stderr))
    columns = list(zip(*rows)) if rows else [[]] * 5
    return pa.table([pa.array(columns[0], pa.int32()), pa.array(columns[1], pa.int64()),
                     pa.array(columns[2], pa.int64()), pa.array(columns[3], pa.float64()),
                     pa.array(columns[4], pa.float64()), pa.array([model] * len(rows), pa.string())],
                    schema=LOSSES_SCHEMA)


def cluster_losses(documents: pa.Table | Iterable[Mapping[str, Any]], config: LossConfig,
                   scan_model=None) -> pa.Table:
    """``int_cluster_losses``: ``documents`` (cluster_id, pick_rank, text; the chosen ones) scored
    by ``config.model`` (or an already loaded ``scan_model``), one row per scored cluster.

    Only the ``docs_per_cluster`` lowest pick ranks of each cluster are scored, in
    (cluster_id, pick_rank) order, so a caller may pass more.
    """
    rows = documents.to_pylist() if isinstance(documents, pa.Table) else list(documents)
    missing = {"cluster_id", "pick_rank", "text"} - set(rows[0]) if rows else set()
    if missing:
        raise ValueError(f"the documents to score lack column(s) {', '.join(sorted(missing))}")
    rows = sorted((r for r in rows if r["pick_rank"] <= config.docs_per_cluster and r["text"] is not None),
                  key=lambda r: (r["cluster_id"], r["pick_rank"]))
    if not rows:
        return empty_losses()
    if scan_model is None:
        from python_udfs.scan.model import load_scan_model

        # float32 everywhere: the losses set the quotas, so they must not move with the CPU's bf16 support
        scan_model = load_scan_model(config.model, device=config.device, dtype="float32")
    losses = document_losses(scan_model, [r["text"] for r in rows], config.max_tokens, config.batch_size)
    return summarise([r["cluster_id"] for r in rows], losses, scan_model.name)

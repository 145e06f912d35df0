"""Where each scanned window came from, and how many windows each document had.

- A window of a document scan belongs to its document.
- A window of a packed GPT-NeoX sequence (``python_udfs.ngrams.counts.pack_sequences``:
  documents in ``doc_id`` order, each followed by one end-of-text token, cut every
  ``packed_len`` tokens) belongs to the document of its long prompt's last token.
  ``DocumentIndex`` maps stream positions to documents; ``segments`` cuts that map down to
  one sequence, so a part carries its own provenance and its worker needs no index.
- Each scan part stores the windows it scanned per document (and each document's cluster)
  in its parquet metadata under ``SCANNED_KEY``; ``scanned_windows`` reads them back, so
  documents with no kept window still count as scanned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCANNED_KEY = b"pilehouse.scanned"

#: Where windows came from: (seq_index, position) arrays -> (doc_id, cluster_id) arrays (None: unknown).
Locate = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class DocumentIndex:
    """Where each position of the packed token stream comes from.

    Position ``p`` of sequence ``s`` is stream offset ``s * packed_len + p``.
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

    def segments(self, seq_id: int, length: int) -> tuple[list[int], list[int], list[int | None]]:
        """The documents of sequence ``seq_id``'s first ``length`` positions: (start position, doc_id, cluster_id)
        of each, in order; ``locate_in_segments`` then gives the same answers as ``locate``."""
        if length <= 0 or not len(self.doc_ids):
            return [], [], []
        first = int(seq_id) * self.packed_len
        lo, hi = np.searchsorted(self.starts, [first, first + length - 1], side="right") - 1
        lo, hi = max(int(lo), 0), max(int(hi), 0)
        starts = [max(int(self.starts[k]) - first, 0) for k in range(lo, hi + 1)]
        docs = [int(self.doc_ids[k]) for k in range(lo, hi + 1)]
        return starts, docs, [self.cluster_of.get(d) for d in docs]


def locate_in_segments(starts: Sequence[int], docs: Sequence[int], clusters: Sequence[int | None],
                       positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(doc_id, cluster_id) of positions of one sequence, from its ``DocumentIndex.segments``."""
    if not len(starts):
        nothing = np.full(len(positions), None, dtype=object)
        return nothing, nothing.copy()
    index = np.clip(np.searchsorted(np.asarray(starts, dtype=np.int64), positions, side="right") - 1, 0, None)
    return np.asarray(docs, dtype=object)[index], np.asarray(list(clusters), dtype=object)[index]


def windows_per_document(doc_ids: Sequence, cluster_ids: Sequence,
                         documents: dict[str, object] | None = None) -> tuple[dict[str, int], dict[str, object]]:
    """Windows scanned per document (``"null"`` when unknown) and each document's cluster.

    ``documents``: every document of the part -> its cluster, so that documents too short
    for a window still count, with 0 windows.
    """
    windows: dict[str, int] = {}
    clusters: dict[str, object] = {}
    for doc_id, cluster_id in zip(doc_ids, cluster_ids):
        key = "null" if doc_id is None else str(int(doc_id))
        windows[key] = windows.get(key, 0) + 1
        clusters[key] = None if cluster_id is None else int(cluster_id)
    for key, value in (documents or {}).items():
        windows.setdefault(key, 0)
        clusters.setdefault(key, value)
    return windows, clusters


def scanned_metadata(model: str, windows: dict[str, int], clusters: dict[str, object]) -> dict[str, str]:
    """A scan part's metadata entry (read back by ``scanned_windows``)."""
    return {SCANNED_KEY.decode(): json.dumps({"model": model, "windows": windows, "clusters": clusters})}


def part_windows(path: Path) -> int:
    """Windows a scan part scanned (all of them, kept or not)."""
    meta = (pq.read_schema(path).metadata or {}).get(SCANNED_KEY)
    return sum(json.loads(meta)["windows"].values()) if meta else 0


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

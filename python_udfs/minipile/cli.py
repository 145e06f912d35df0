"""``pilehouse quotas``: MiniPile's per-cluster quotas from a stats file, without a warehouse.

The same function as dbt's ``int_cluster_quotas`` (``python_udfs.minipile.quotas``), so the
numbers agree with a build given the same clusters, exclusions and vars::

    pilehouse quotas cluster_stats.csv --exclusions seeds/cluster_exclusions.csv \\
        --sampling-strategy density --density-weight 0.5 --sampling-total seed --total 1010500
    pilehouse quotas cluster_info_for_inspection.json --exclusions excluded.txt \\
        --sampling-strategy inter_cluster --centroids cluster_centers.npy --total 1010500
    pilehouse quotas cluster_info_for_inspection.json --exclusions excluded.txt \\
        --sampling-strategy loss_informed --losses cluster_loss.jsonl --sampling-total seed --total 1010500

STATS_FILE is a CSV with a header (``cluster_id``, ``n_docs`` or ``total_examples``, and
``sum_distance`` or ``average_distance``, and for loss_informed ``mean_loss``; e.g.
``int_cluster_quotas`` or ``cluster_inspection`` exported, or ``cluster_losses`` joined on),
or JSON: the seed's ``cluster_info_for_inspection.json`` (an object keyed by cluster
id, each with ``total_examples`` and ``sum_distance``) or a list of such objects with a
``cluster_id``. The exclusions are a CSV with a ``cluster_id`` column (``seeds/cluster_exclusions.csv``)
or cluster ids, one or more per line (``#`` starts a comment). The centroids (inter_cluster
only) are a .npy array whose row i is cluster i's centroid (the seed's ``cluster_centers.npy``,
or ``cluster_centroids`` exported in cluster_id order).

Prints ``cluster_id,quota`` for every kept cluster, then a last line ``total N``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from python_udfs.minipile.quotas import (
    STRATEGIES,
    TOTAL_MODES,
    USES_CENTROIDS,
    USES_DISTANCES,
    USES_LOSSES,
    ClusterStats,
    QuotaError,
    QuotaParams,
    quotas,
)
from python_udfs.settings import default

SIZE_KEYS = ("n_docs", "total_examples")
ID_KEYS = ("cluster_id", "cluster", "id")


class InputError(ValueError):
    """A file the command cannot read; the message names the file, the line and what was expected."""


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InputError(f"{what}: expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        raise InputError(f"{what}: expected a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{what}: expected a whole number, got {value!r}")
    return int(number)


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputError(f"{what}: expected a finite number, got {value!r}")
    return number


def _record(row: dict[str, Any], where: str, cluster_id: Any, needs_distances: bool) -> ClusterStats:
    cid = _integer(cluster_id, f"{where}: cluster_id")
    size_key = next((k for k in SIZE_KEYS if row.get(k) not in (None, "")), None)
    if size_key is None:
        raise InputError(f"{where}: no cluster size (a {' or '.join(SIZE_KEYS)} value)")
    n_docs = _integer(row[size_key], f"{where}: {size_key}")
    if row.get("sum_distance") not in (None, ""):
        sum_distance = _number(row["sum_distance"], f"{where}: sum_distance")
    elif row.get("average_distance") not in (None, ""):
        # a rebuilt sum: exact only up to float rounding (prefer sum_distance where the file has it)
        sum_distance = _number(row["average_distance"], f"{where}: average_distance") * n_docs
    elif needs_distances:
        raise InputError(f"{where}: no sum_distance or average_distance, which this strategy needs")
    else:
        sum_distance = 0.0
    mean_loss = None
    if row.get("mean_loss") not in (None, ""):
        mean_loss = _number(row["mean_loss"], f"{where}: mean_loss")
    return ClusterStats(cid, n_docs, sum_distance, mean_loss=mean_loss)


def read_stats(path: Path, needs_distances: bool = True) -> list[ClusterStats]:
    """The clusters of a stats file (CSV with a header, or the seed's JSON)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        stats = _read_json_stats(path, text, needs_distances)
    else:
        stats = _read_csv_stats(path, text, needs_distances)
    if not stats:
        raise InputError(f"{path}: holds no clusters")
    seen: set[int] = set()
    for c in stats:
        if c.cluster_id in seen:
            raise InputError(f"{path}: cluster {c.cluster_id} appears twice")
        seen.add(c.cluster_id)
    return stats


def _read_json_stats(path: Path, text: str, needs_distances: bool) -> list[ClusterStats]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict):
        items = list(data.items())
    elif isinstance(data, list):
        items = []
        for i, entry in enumerate(data):
            key = next((k for k in ID_KEYS if isinstance(entry, dict) and k in entry), None)
            if key is None:
                raise InputError(f"{path}: entry {i} has no {' / '.join(ID_KEYS)} key")
            items.append((entry[key], entry))
    else:
        raise InputError(f"{path}: expected an object keyed by cluster id or a list of clusters")
    stats = []
    for cluster_id, entry in items:
        if not isinstance(entry, dict):
            raise InputError(f"{path}: cluster {cluster_id!r} is not an object")
        stats.append(_record(entry, f"{path}: cluster {cluster_id}", cluster_id, needs_distances))
    return stats


def _read_csv_stats(path: Path, text: str, needs_distances: bool) -> list[ClusterStats]:
    reader = csv.DictReader(text.splitlines())
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    if "cluster_id" not in header or not any(k in header for k in SIZE_KEYS):
        raise InputError(f"{path}: the header must name cluster_id and {' or '.join(SIZE_KEYS)} "
                         f"(and sum_distance or average_distance); found {header or 'nothing'}")
    return [_record(row, f"{path}: line {reader.line_num}", row["cluster_id"], needs_distances)
            for row in reader]


def read_exclusions(path: Path) -> set[int]:
    """Excluded cluster ids: a CSV with a cluster_id column, or ids one or more per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from None
    body = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(lines, start=1)]
    body = [(n, line) for n, line in body if line]
    if body and "cluster_id" in [cell.strip() for cell in body[0][1].split(",")]:
        reader = csv.DictReader(lines)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        return {_integer(row["cluster_id"], f"{path}: line {reader.line_num}: cluster_id")
                for row in reader if (row.get("cluster_id") or "").strip()}
    excluded = set()
    for n, line in body:
        for token in re.split(r"[,\s]+", line):
            if token:
                excluded.add(_integer(token, f"{path}: line {n}: cluster id"))
    return excluded


def read_losses(path: Path) -> dict[int, float]:
    """Per-cluster mean losses: JSON lines with ``cluster_idx`` (or ``cluster_id``) and ``mean_loss``
    (the seed's ``MiniPile_Lossi_1/cluster_loss.jsonl``), or a CSV with ``cluster_id`` and
    ``mean_loss`` columns (``cluster_losses`` exported)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from None
    losses: dict[int, float] = {}

    def add(cluster_id: Any, loss: Any, where: str) -> None:
        cid = _integer(cluster_id, f"{where}: cluster id")
        if cid in losses:
            raise InputError(f"{path}: cluster {cid} appears twice")
        losses[cid] = _number(loss, f"{where}: mean_loss")

    if text.lstrip().startswith("{"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {n}: not valid JSON ({err.msg})") from None
            key = next((k for k in ("cluster_idx", "cluster_id") if isinstance(entry, dict) and k in entry), None)
            if key is None or "mean_loss" not in entry:
                raise InputError(f"{path}: line {n}: expected cluster_idx (or cluster_id) and mean_loss")
            add(entry[key], entry["mean_loss"], f"{path}: line {n}")
    else:
        reader = csv.DictReader(text.splitlines())
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        if not {"cluster_id", "mean_loss"} <= set(reader.fieldnames):
            raise InputError(f"{path}: the header must name cluster_id and mean_loss; found "
                             f"{reader.fieldnames or 'nothing'}")
        for row in reader:
            add(row["cluster_id"], row["mean_loss"], f"{path}: line {reader.line_num}")
    if not losses:
        raise InputError(f"{path}: holds no losses")
    return losses


def read_centroids(path: Path, stats: list[ClusterStats]) -> list[ClusterStats]:
    """The clusters with their centroids: row i of the .npy array for cluster i."""
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    if array.ndim != 2 or not len(array):
        raise InputError(f"{path}: expected a 2-D array (one row per cluster), got shape {array.shape}")
    beyond = [c.cluster_id for c in stats if not 0 <= c.cluster_id < len(array)]
    if beyond:
        raise InputError(f"{path}: has {len(array)} rows, so no centroid for cluster(s) "
                         f"{', '.join(map(str, beyond[:10]))}")
    return [ClusterStats(c.cluster_id, c.n_docs, c.sum_distance, array[c.cluster_id].tolist(), c.mean_loss)
            for c in stats]


def parse_weights(text: str) -> tuple[float, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip().strip("[]")) if p]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers a,b,c, got {text!r}") from None
    if len(weights) != 3:
        raise argparse.ArgumentTypeError(f"expected three numbers a,b,c, got {text!r}")
    return weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pilehouse quotas", description=__doc__.split("\n\n")[0],
                                     epilog="Strategies: " + "; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stats_file", metavar="STATS_FILE", type=Path,
                        help="cluster stats: CSV (cluster_id, n_docs, sum_distance; mean_loss for loss_informed) "
                             "or the seed's JSON")
    parser.add_argument("--exclusions", type=Path, metavar="FILE",
                        help="excluded clusters: a CSV with a cluster_id column, or ids one or more per line")
    parser.add_argument("--sampling-strategy", choices=list(STRATEGIES), default=default("sampling_strategy"),
                        help="how the total is shared (default: %(default)s)")
    parser.add_argument("--sampling-total", choices=TOTAL_MODES, default=default("sampling_total"),
                        help="exact: exactly --total when the clusters hold it; seed: the seed's floor(total x share), "
                             "nothing redistributed (default: %(default)s)")
    parser.add_argument("--total", type=int, required=True, metavar="N",
                        help="documents in all (train_size + validation_size + test_size)")
    parser.add_argument("--density-weight", type=float, default=float(default("density_weight")), metavar="W",
                        help="ω of density and density_spread (default: %(default)s)")
    parser.add_argument("--low-density-weight", type=float, default=float(default("low_density_weight")),
                        metavar="W", help="ω of low_density's first phase (default: %(default)s)")
    parser.add_argument("--inter-cluster-weights", type=parse_weights, metavar="a,b,c",
                        default=tuple(float(w) for w in default("inter_cluster_weights")),
                        help="inter_cluster's size, density and spread weights (default: %(default)s)")
    parser.add_argument("--centroids", type=Path, metavar="FILE.npy",
                        help="centroids, row i for cluster i (needed by inter_cluster)")
    parser.add_argument("--losses", type=Path, metavar="FILE",
                        help="per-cluster mean losses for loss_informed, instead of a mean_loss column: the seed's "
                             "cluster_loss.jsonl, or a CSV with cluster_id and mean_loss (cluster_losses)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    strategy = args.sampling_strategy
    try:
        stats = read_stats(args.stats_file, needs_distances=strategy in USES_DISTANCES)
        excluded = read_exclusions(args.exclusions) if args.exclusions else set()
        unknown = sorted(excluded - {c.cluster_id for c in stats})
        if unknown:
            raise InputError(f"{args.exclusions}: names cluster(s) {', '.join(map(str, unknown))}, "
                             f"which {args.stats_file} does not have")
        kept = [c for c in stats if c.cluster_id not in excluded]
        if args.losses:
            losses = read_losses(args.losses)
            kept = [ClusterStats(c.cluster_id, c.n_docs, c.sum_distance, c.centroid,
                                 losses.get(c.cluster_id, c.mean_loss)) for c in kept]
        if strategy in USES_LOSSES and all(c.mean_loss is None for c in kept):
            raise InputError(f"--sampling-strategy {strategy} needs a mean_loss for every kept cluster: "
                             f"{args.stats_file} has none (a mean_loss column, or --losses FILE)")
        if strategy in USES_CENTROIDS:
            if args.centroids is None:
                raise InputError(f"--sampling-strategy {strategy} needs --centroids FILE.npy")
            kept = read_centroids(args.centroids, kept)
        params = QuotaParams(density_weight=args.density_weight, low_density_weight=args.low_density_weight,
                             inter_cluster_weights=args.inter_cluster_weights)
        result = quotas(kept, strategy, params, args.total, args.sampling_total)
    except (InputError, QuotaError) as err:
        parser.error(str(err))
    out = sys.stdout
    out.write("cluster_id,quota\n")
    for q in result:
        out.write(f"{q.cluster_id},{q.quota}\n")
    sampled = sum(q.quota for q in result)
    out.write(f"total {sampled}\n")
    available = sum(c.n_docs for c in kept)
    if available < args.total:
        print(f"pilehouse quotas: warning: the kept clusters hold only {available} documents, fewer than "
              f"--total {args.total} (dbt build fails here)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

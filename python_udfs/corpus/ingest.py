"""Ingest: read a corpus with the readers into the lake's `documents` and `rejected_documents` shards."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs.corpus.readers import (
    DOCUMENT_SCHEMA,
    MANIFEST_SCHEMA,
    RAW_LIMIT,
    REJECTED_SCHEMA,
    CorpusConfig,
    IngestStats,
    _meta_of,
    _raw_of,
    expand_inputs,
    iter_records,
    validate,
)
from python_udfs.settings import lake_dir


def fingerprint(config: CorpusConfig) -> str:
    """Identify the input (file names, sizes, mtimes) and reading options."""
    digest = hashlib.sha256()
    for path in expand_inputs(config.inputs):
        stat = os.stat(path) if not path.startswith("hf:") else None
        digest.update(f"{path}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}\n".encode())
    digest.update(
        f"{config.text_field}|{config.source_field}|{config.default_source}|{config.hf_split}".encode()
    )
    return digest.hexdigest()[:16]


class _ShardWriter:
    """Write rows to numbered parquet shards of at most ``shard_size`` rows."""

    def __init__(self, directory: Path, schema: pa.Schema, shard_size: int):
        self.directory, self.schema, self.shard_size = directory, schema, shard_size
        self.rows: list[dict] = []
        self.n_shards = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self, force: bool = False) -> None:
        if not self.rows and not (force and self.n_shards == 0):
            return
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        pq.write_table(table, self.directory / f"part-{self.n_shards:05d}.parquet")
        self.n_shards += 1
        self.rows = []


def ingest(config: CorpusConfig, lake_dir: Path, progress: bool = True) -> IngestStats:
    """Read the corpus into ``lake_dir/corpus/{documents,rejected,manifest}/part-*.parquet``.

    Idempotent: if the lake already holds this input's fingerprint, nothing is read again.
    Atomic: shards are written to a temporary folder that replaces the old one at the end,
    so a killed ingest leaves the previous corpus intact and the next run starts over.
    """
    target = Path(lake_dir) / "corpus"
    stamp = fingerprint(config)
    stamp_file = target / "FINGERPRINT"
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        manifest = pq.read_table(target / "manifest").to_pylist()
        stats = IngestStats(
            n_records=sum(m["n_records"] for m in manifest),
            n_accepted=sum(m["n_accepted"] for m in manifest),
            n_rejected=sum(m["n_rejected"] for m in manifest),
        )
        print(f"corpus already ingested ({stamp}): {stats.n_accepted} accepted, "
              f"{stats.n_rejected} rejected", file=sys.stderr)
        return stats

    staging = Path(lake_dir) / f".corpus-{stamp}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    documents = _ShardWriter(staging / "documents", DOCUMENT_SCHEMA, config.shard_size)
    rejected = _ShardWriter(staging / "rejected", REJECTED_SCHEMA, config.shard_size)
    per_file: dict[str, dict] = {}
    stats = IngestStats()

    records = iter_records(config)
    if progress:
        from tqdm import tqdm

        records = tqdm(records, desc="ingest records", unit="rec", mininterval=1.0, file=sys.stderr)
    for index, record in enumerate(records):
        counts = per_file.setdefault(
            record.source_file,
            {"source_file": record.source_file, "n_records": 0, "n_accepted": 0,
             "n_rejected": 0, "first_record_index": index},
        )
        counts["n_records"] += 1
        stats.n_records += 1
        reason, text_or_detail, source = validate(record, config)
        if reason is None:
            documents.add({
                "doc_id": index, "source": source, "text": text_or_detail,
                "meta": _meta_of(record, config), "source_file": record.source_file,
                "record_number": record.record_number,
            })
            counts["n_accepted"] += 1
            stats.n_accepted += 1
        else:
            rejected.add({
                "record_index": index, "source_file": record.source_file,
                "record_number": record.record_number, "reason": reason,
                "detail": text_or_detail[:RAW_LIMIT], "raw": _raw_of(record),
            })
            counts["n_rejected"] += 1
            stats.n_rejected += 1
            stats.reasons[reason] += 1
    documents.flush(force=True)
    rejected.flush(force=True)
    manifest_dir = staging / "manifest"
    manifest_dir.mkdir()
    pq.write_table(
        pa.Table.from_pylist(list(per_file.values()), schema=MANIFEST_SCHEMA),
        manifest_dir / "part-00000.parquet",
    )
    (staging / "FINGERPRINT").write_text(stamp + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilehouse ingest",
        description="Ingest a corpus into the pilehouse lake (documents + rejected_documents).",
    )
    parser.add_argument("inputs", nargs="+", help="files, directories, globs, or hf:NAME[:CONFIG]")
    parser.add_argument("--lake", default=str(lake_dir()),
                        help="the parquet lake (default %(default)s, from $PILEHOUSE_LAKE when set)")
    parser.add_argument("--text-field", default=CorpusConfig.text_field)
    parser.add_argument("--source-field", default=CorpusConfig.source_field)
    parser.add_argument("--default-source", default=CorpusConfig.default_source)
    parser.add_argument("--hf-split", default=CorpusConfig.hf_split)
    parser.add_argument("--shard-size", type=int, default=CorpusConfig.shard_size)
    args = parser.parse_args(argv)
    config = CorpusConfig(
        inputs=args.inputs, text_field=args.text_field, source_field=args.source_field,
        default_source=args.default_source, hf_split=args.hf_split, shard_size=args.shard_size,
    )
    stats = ingest(config, Path(args.lake))
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.reasons.items())) or "none"
    print(f"{stats.n_records} records: {stats.n_accepted} accepted, {stats.n_rejected} rejected "
          f"({reasons}) -> {args.lake}/corpus", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

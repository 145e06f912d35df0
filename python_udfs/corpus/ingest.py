"""Ingest: read a corpus with the readers into the lake, one runner part per input file.

A part is one input file (an ``hf:`` stream is one part): the worker reads the file and
writes one parquet part of all its records, accepted and rejected (``RECORD_SCHEMA``),
streamed in row groups of ``shard_size`` records. A part's fingerprint covers the file
(path, size, modification time, position in the sorted input) and the reading options, so
a rerun with the same input reads nothing again, a changed file is read again alone, and a
killed ingest keeps the parts of the files it finished.

A worker cannot know where its file starts in the whole input (the files before it may be
read elsewhere, at the same time), so parts keep each record's position inside its file;
``manifest.parquet`` (one row per file, written once every part is there) holds each
file's counts and ``first_record_index``, and the staging models give every record
``doc_id = first_record_index + record_number``: its position in the whole input.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from python_udfs import settings
from python_udfs.corpus.readers import (
    MANIFEST_SCHEMA,
    RAW_LIMIT,
    RECORD_SCHEMA,
    CorpusConfig,
    IngestStats,
    _meta_of,
    _raw_of,
    expand_inputs,
    read_file,
    source_name,
    validate,
)
from python_udfs.runner.executors import Executor, open_executor
from python_udfs.runner.parts import existing_fingerprint, write_atomic
from python_udfs.runner.run import RunStats, run_step
from python_udfs.runner.step import Part, Step, Worker, digest_bytes

#: Bumped when RECORD_SCHEMA or the validation rules change: every file is read again.
RECORD_FORMAT = 1
MANIFEST_NAME = "manifest.parquet"
#: What an ingest before the part runner left in the lake (folders of shards and a stamp).
OLD_LAYOUT = ("documents", "rejected", "manifest", "FINGERPRINT")


def file_digest(path: str) -> str:
    """Identifies an input file's content cheaply: size and modification time (a stream: its name)."""
    if path.startswith("hf:"):
        return digest_bytes("hf", path)
    stat = os.stat(path)
    return digest_bytes("file", path, str(stat.st_size), str(stat.st_mtime_ns))


def file_parts(files: list[str], config: CorpusConfig) -> Iterator[Part]:
    """One part per input file, in sorted order; the rows are the file's name, read where computed."""
    for index, path in enumerate(files):
        rows = pa.table({"file_index": pa.array([index], pa.int64()), "path": [path],
                         "source_file": [source_name(path, config)]})
        yield Part(index=index, content=digest_bytes(str(index), file_digest(path)), rows=rows, size=1)


def record_batches(path: str, file_index: int, config: CorpusConfig) -> Iterator[pa.RecordBatch]:
    """Every record of one file as ``RECORD_SCHEMA`` batches of at most ``shard_size`` rows."""
    columns: dict[str, list] = {name: [] for name in RECORD_SCHEMA.names}

    def batch() -> pa.RecordBatch:
        out = pa.record_batch([pa.array(columns[f.name], f.type) for f in RECORD_SCHEMA], schema=RECORD_SCHEMA)
        for values in columns.values():
            values.clear()
        return out

    for record in read_file(path, config):
        reason, text_or_detail, source = validate(record, config)
        accepted = reason is None
        columns["file_index"].append(file_index)
        columns["source_file"].append(record.source_file)
        columns["record_number"].append(record.record_number)
        columns["source"].append(source if accepted else None)
        columns["text"].append(text_or_detail if accepted else None)
        columns["meta"].append(_meta_of(record, config) if accepted else None)
        columns["reason"].append(reason)
        columns["detail"].append(None if accepted else text_or_detail[:RAW_LIMIT])
        columns["raw"].append(None if accepted else _raw_of(record))
        if len(columns["file_index"]) >= config.shard_size:
            yield batch()
    if columns["file_index"]:
        yield batch()


def read_part(rows: pa.Table, config: CorpusConfig) -> pa.RecordBatchReader:
    """The step's function: one file's name in, all its records out (streamed, so a whole Pile file fits)."""
    (row,) = rows.to_pylist()
    return pa.RecordBatchReader.from_batches(RECORD_SCHEMA, record_batches(row["path"], row["file_index"], config))


def make_file_reader(config: CorpusConfig) -> Worker:
    return functools.partial(read_part, config=config)


def corpus_step(config: CorpusConfig, out_dir: Path) -> Step:
    """The ingest step: the reading options are its settings (shard_size changes only row groups)."""
    return Step(
        name="ingest", out_dir=Path(out_dir), unit="file",
        settings={"format": RECORD_FORMAT, "text_field": config.text_field, "source_field": config.source_field,
                  "default_source": config.default_source, "hf_split": config.hf_split,
                  "max_doc_chars": config.max_doc_chars},
        make_worker=functools.partial(make_file_reader, config),
    )


def _file_counts(path: Path) -> tuple[int, Counter]:
    """(records, rejections by reason) of a part, from its ``reason`` column alone."""
    reasons = pq.read_table(path, columns=["reason"]).column("reason")
    counts = Counter({item["values"]: item["counts"] for item in pc.value_counts(reasons.drop_null()).to_pylist()})
    return len(reasons), counts


def build_manifest(files: list[str], stats: RunStats, config: CorpusConfig) -> pa.Table:
    """One row per file, in input order: counts and where its records start in the whole input."""
    rows, start = [], 0
    for index, path, part, fingerprint in zip(stats.indices, files, stats.paths, stats.fingerprints):
        n_records, reasons = _file_counts(part)
        n_rejected = sum(reasons.values())
        rows.append({"file_index": index, "source_file": source_name(path, config), "n_records": n_records,
                     "n_accepted": n_records - n_rejected, "n_rejected": n_rejected, "first_record_index": start,
                     "reasons": sorted(reasons.items()), "fingerprint": fingerprint})
        start += n_records
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _remove_old_layout(target: Path, lake: Path) -> None:
    for name in OLD_LAYOUT:
        old = target / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    for staging in lake.glob(".corpus-*.tmp"):
        shutil.rmtree(staging, ignore_errors=True)
    for torn in target.glob(f"{MANIFEST_NAME}.*.tmp"):
        torn.unlink(missing_ok=True)


def ingest(
    config: CorpusConfig,
    lake_dir: Path,
    progress: bool = True,
    executor: str | Executor | None = None,
) -> IngestStats:
    """Read the corpus into ``lake_dir/corpus/part-*.parquet`` (one per input file) plus its manifest.

    Resumable: a file whose part is on disk with the same fingerprint is not read again.
    """
    files = expand_inputs(config.inputs)  # a bad input fails before the lake is touched
    lake = Path(lake_dir)
    target = settings.lake_path("corpus", {"lake_dir": str(lake)})
    target.mkdir(parents=True, exist_ok=True)
    _remove_old_layout(target, lake)
    run = run_step(corpus_step(config, target), file_parts(files, config), executor=executor,
                   total=len(files), progress=progress)
    manifest_path = target / MANIFEST_NAME
    stamp = digest_bytes(*run.fingerprints)
    if existing_fingerprint(manifest_path) == stamp:  # every part as before: counts need no reading
        manifest = pq.read_table(manifest_path)
    else:
        manifest = build_manifest(files, run, config)
        write_atomic(manifest, manifest_path, stamp)
    stats = IngestStats()
    for row in manifest.to_pylist():
        stats.n_records += row["n_records"]
        stats.n_accepted += row["n_accepted"]
        stats.n_rejected += row["n_rejected"]
        stats.reasons.update(dict(row["reasons"]))
    if run.computed_parts == 0:
        print(f"corpus already ingested ({run.parts} files reused): {stats.n_accepted} accepted, "
              f"{stats.n_rejected} rejected", file=sys.stderr)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pilehouse ingest",
        description="Ingest a corpus into the pilehouse lake (documents + rejected_documents).",
    )
    parser.add_argument("inputs", nargs="+", help="files, directories, globs, or hf:NAME[:CONFIG]")
    parser.add_argument("--lake", default=str(settings.lake_dir()),
                        help="the parquet lake (default %(default)s, from $PILEHOUSE_LAKE when set)")
    parser.add_argument("--text-field", default=CorpusConfig.text_field)
    parser.add_argument("--source-field", default=CorpusConfig.source_field)
    parser.add_argument("--default-source", default=CorpusConfig.default_source)
    parser.add_argument("--hf-split", default=CorpusConfig.hf_split)
    parser.add_argument("--shard-size", type=int, default=CorpusConfig.shard_size,
                        help="records per row group (bounds memory)")
    parser.add_argument("--max-doc-chars", type=int, default=settings.default("max_doc_chars"),
                        help="texts longer than this are rejected as too_long (default %(default)s, the "
                             "max_doc_chars var)")
    parser.add_argument("--executor", default=settings.default("executor"), choices=["local", "ray"],
                        help="where files are read: local (in-process, the default) or ray (one Ray actor per file)")
    parser.add_argument("--ray-address", default=settings.default("ray_address"),
                        help="executor ray: the cluster to join; empty: a local Ray on 127.0.0.1")
    parser.add_argument("--ray-workers", default=settings.default("ray_workers"),
                        help="executor ray: actors (empty: the cluster's CPUs)")
    args = parser.parse_args(argv)
    config = CorpusConfig(
        inputs=args.inputs, text_field=args.text_field, source_field=args.source_field,
        default_source=args.default_source, hf_split=args.hf_split, shard_size=args.shard_size,
        max_doc_chars=args.max_doc_chars,
    )
    with open_executor(args.executor, args.ray_address, args.ray_workers) as executor:
        stats = ingest(config, Path(args.lake), executor=executor)
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.reasons.items())) or "none"
    print(f"{stats.n_records} records: {stats.n_accepted} accepted, {stats.n_rejected} rejected "
          f"({reasons}) -> {args.lake}/corpus", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Corpus readers: turn a raw corpus into records, each accepted (a document) or rejected.

Every input record ends up in exactly one of the two outputs, so
``input records = accepted + rejected`` holds by construction and is tested.
``doc_id`` is the record's position in the whole input (files in sorted order, 0-based),
so it indexes the original corpus the way the seed's ``pile_idx`` was meant to.

Inputs:
- Pile-format JSON lines (``{"text": ..., "meta": {"pile_set_name": ...}}``), plain,
  ``.gz`` or ``.zst``;
- parquet files with a text column (and optionally a source column);
- a Hugging Face dataset name (``hf:NAME`` or ``hf:NAME:CONFIG``), streamed with ``datasets``.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

RAW_LIMIT = 1000  # rejected records keep at most this many characters of the raw record

REASONS = ("bad_json", "missing_text", "empty_text", "not_utf8", "wrong_type")

#: One ingest part (one input file): every record of the file, accepted (``reason`` null,
#: ``text`` set) or rejected (``reason``, ``detail``, ``raw`` set), in file order.
RECORD_SCHEMA = pa.schema(
    [
        ("file_index", pa.int64()),  # the file's position in the sorted input (its part number)
        ("source_file", pa.string()),
        ("record_number", pa.int64()),  # position inside source_file, 0-based
        ("source", pa.string()),
        ("text", pa.string()),
        ("meta", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)
#: One row per input file: its counts and where its records start in the whole input.
MANIFEST_SCHEMA = pa.schema(
    [
        ("file_index", pa.int64()),
        ("source_file", pa.string()),
        ("n_records", pa.int64()),
        ("n_accepted", pa.int64()),
        ("n_rejected", pa.int64()),
        ("first_record_index", pa.int64()),
        ("reasons", pa.map_(pa.string(), pa.int64())),
        ("fingerprint", pa.string()),
    ]
)


@dataclass
class CorpusConfig:
    """How to read a corpus.

    inputs: files, directories (read recursively) or globs; or one ``hf:NAME[:CONFIG]``.
    text_field: the record's text key (JSON) or column (parquet, Hugging Face).
    source_field: dotted path to the source label; Pile's is ``meta.pile_set_name``.
    default_source: label used where a record carries no source.
    hf_split: split streamed from a Hugging Face dataset.
    shard_size: records read before they are written out as one row group of the file's
        part (bounds memory: a whole Pile file streams through).
    """

    inputs: list[str]
    text_field: str = "text"
    source_field: str = "meta.pile_set_name"
    default_source: str = "unknown"
    hf_split: str = "train"
    shard_size: int = 50_000


@dataclass
class Record:
    """One input record as read, before validation."""

    source_file: str
    record_number: int  # position inside source_file, 0-based
    value: object = None  # parsed record (dict for JSON/parquet/HF)
    raw: str = ""
    reason: str | None = None  # set when the reader already knows the record is bad
    detail: str = ""


@dataclass
class IngestStats:
    n_records: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    reasons: Counter = field(default_factory=Counter)


JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
DIRECTORY_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")


def expand_inputs(inputs: list[str]) -> list[str]:
    """Resolve files, directories and globs into one sorted list of readable files."""
    if len(inputs) == 1 and inputs[0].startswith("hf:"):
        return inputs
    files: set[str] = set()
    for item in inputs:
        if item.startswith("hf:"):
            raise ValueError("a Hugging Face dataset (hf:NAME) must be the only input")
        matches = glob.glob(item, recursive=True) if glob.has_magic(item) else [item]
        if not matches:
            raise FileNotFoundError(f"corpus input {item!r} matches no file")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                # inside folders only unambiguous corpus names count: a stray .json
                # (a manifest, a config) is not a JSON-lines shard
                files.update(
                    str(p) for p in path.rglob("*")
                    if p.is_file() and str(p).endswith(DIRECTORY_SUFFIXES)
                )
            elif path.is_file():
                if _kind(str(path)) is None:
                    raise ValueError(
                        f"{path}: unknown corpus file type (expected one of "
                        f"{', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)})"
                    )
                files.add(str(path))
            else:
                raise FileNotFoundError(f"corpus input {match!r} does not exist")
    if not files:
        raise FileNotFoundError(f"no corpus files found in {inputs}")
    return sorted(files)


def _kind(path: str) -> str | None:
    if path.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if path.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _open_binary(path: str) -> io.BufferedIOBase:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def read_jsonl(path: str) -> Iterator[Record]:
    """Yield one Record per line; blank lines are records too (rejected as bad JSON)."""
    with _open_binary(path) as fh:
        for number, line in enumerate(fh):
            line = line.rstrip(b"\r\n")
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                yield Record(path, number, raw=line.decode("utf-8", "replace"),
                             reason="not_utf8", detail=str(err))
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                yield Record(path, number, raw=text, reason="bad_json", detail=str(err))
                continue
            yield Record(path, number, value=value, raw=text)


def read_parquet(path: str, batch_size: int = 4096) -> Iterator[Record]:
    """Yield one Record per parquet row; non-string text values are judged by validation."""
    parquet = pq.ParquetFile(path)
    number = 0
    for batch in parquet.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield Record(path, number, value=row)
            number += 1


def read_hf(name: str, split: str) -> Iterator[Record]:
    """Stream a Hugging Face dataset (online users); ``name`` may be ``NAME:CONFIG``."""
    import datasets

    dataset_name, _, config = name.partition(":")
    stream = datasets.load_dataset(dataset_name, config or None, split=split, streaming=True)
    for number, row in enumerate(stream):
        yield Record(f"hf:{name}/{split}", number, value=row)


def source_name(path: str, config: CorpusConfig) -> str:
    """The ``source_file`` a file's records carry: the path, or ``hf:NAME/SPLIT`` for a stream."""
    return f"{path}/{config.hf_split}" if path.startswith("hf:") else path


def read_file(path: str, config: CorpusConfig) -> Iterator[Record]:
    """The records of one input file (or one ``hf:`` stream), in file order."""
    if path.startswith("hf:"):
        yield from read_hf(path[3:], config.hf_split)
    elif _kind(path) == "parquet":
        yield from read_parquet(path)
    else:
        yield from read_jsonl(path)


def iter_records(config: CorpusConfig) -> Iterator[Record]:
    """All records of the corpus, files in sorted order."""
    for path in expand_inputs(config.inputs):
        yield from read_file(path, config)


def _lookup(value: dict, dotted: str) -> object:
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def validate(record: Record, config: CorpusConfig) -> tuple[str, str, str] | tuple[None, str, str]:
    """Return (reason, detail, "") for a bad record, else (None, text, source)."""
    if record.reason:
        return record.reason, record.detail, ""
    value = record.value
    if not isinstance(value, dict):
        return "wrong_type", f"record is a JSON {type(value).__name__}, not an object", ""
    if config.text_field not in value or value[config.text_field] is None:
        return "missing_text", f"no {config.text_field!r} field", ""
    text = value[config.text_field]
    if not isinstance(text, str):
        return "wrong_type", f"{config.text_field!r} is {type(text).__name__}, not a string", ""
    if not text.strip():
        return "empty_text", f"{config.text_field!r} is empty or whitespace", ""
    if "\x00" in text or _has_surrogates(text):
        return "not_utf8", "text holds NUL or unpaired surrogate code points", ""
    source = _lookup(value, config.source_field)
    if source is None:
        source = config.default_source
    elif not isinstance(source, str):
        return "wrong_type", f"{config.source_field!r} is {type(source).__name__}", ""
    return None, text, source


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _raw_of(record: Record) -> str:
    raw = record.raw
    if not raw and record.value is not None:
        raw = json.dumps(record.value, ensure_ascii=False, default=str)
    return raw.encode("utf-8", "replace").decode("utf-8")[:RAW_LIMIT]


def _meta_of(record: Record, config: CorpusConfig) -> str | None:
    meta = record.value.get("meta") if isinstance(record.value, dict) else None
    return json.dumps(meta, ensure_ascii=False, default=str) if meta is not None else None

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

import codecs
import glob
import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from python_udfs import settings

RAW_LIMIT = 1000  # rejected records keep at most this many characters of the raw record

REASONS = ("bad_json", "missing_text", "empty_text", "not_utf8", "wrong_type", "too_long", "truncated_stream",
           "corrupt_file")

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
    max_doc_chars: a longer text is rejected as ``too_long`` (the dbt var of the same name;
        its length is in ``detail``); a JSON line is never read whole past what such a text
        could take, so one huge line cannot exhaust memory.
    """

    inputs: list[str]
    text_field: str = "text"
    source_field: str = "meta.pile_set_name"
    default_source: str = "unknown"
    hf_split: str = "train"
    shard_size: int = 50_000
    max_doc_chars: int = field(default_factory=lambda: int(settings.default("max_doc_chars")))

    def __post_init__(self) -> None:
        if not isinstance(self.max_doc_chars, int) or self.max_doc_chars < 1:
            raise ValueError(f"max_doc_chars must be a positive whole number, got {self.max_doc_chars!r}")

    @property
    def max_line_bytes(self) -> int:
        """The longest JSON line read: the text at 6 bytes a character (``\\uXXXX`` escapes) plus
        1 MiB of other fields."""
        return 6 * self.max_doc_chars + (1 << 20)


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


class _ZstdFrames(io.RawIOBase):
    """A zstd file's decompressed bytes, frame after frame, that raises ``EOFError`` when the
    file ends inside a frame (``zstandard``'s own stream reader returns a short read
    silently there, which would turn a cut file into a quiet loss)."""

    def __init__(self, fh: io.BufferedIOBase, chunk: int = 1 << 17):
        import zstandard

        self._fh, self._chunk, self._zstd = fh, chunk, zstandard
        self._dobj = zstandard.ZstdDecompressor().decompressobj()
        self._pending = b""
        self._in_frame = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            data = self._fh.read(self._chunk)
            if not data:
                if self._in_frame:
                    raise EOFError("the zstd stream ends inside a frame (the file was cut short)")
                return 0
            while data:
                self._in_frame = True
                self._pending += self._dobj.decompress(data)
                if not self._dobj.eof:
                    break
                data, self._in_frame = self._dobj.unused_data, False
                self._dobj = self._zstd.ZstdDecompressor().decompressobj()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_binary(path: str) -> io.BufferedIOBase:
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(open(path, "rb")))
    return open(path, "rb")


#: what a compressed stream raises when it is cut short or corrupt
STREAM_ERRORS: tuple[type[BaseException], ...] = (EOFError, gzip.BadGzipFile, zlib.error)


def _stream_errors() -> tuple[type[BaseException], ...]:
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a pinned dependency
        return STREAM_ERRORS
    return (*STREAM_ERRORS, zstandard.ZstdError)


def _lines(fh: io.BufferedIOBase, limit: int) -> Iterator[tuple[bytes, int | None]]:
    """(line, None) for each line of at most ``limit`` bytes; (its first bytes, its length) for
    a longer one, whose rest is skipped in 1 MiB reads, never held."""
    while True:
        line = fh.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith(b"\n"):
            yield line, None
            continue
        total = len(line)
        head = line[:4 * RAW_LIMIT]
        while True:
            chunk = fh.readline(1 << 20)
            total += len(chunk)
            if not chunk or chunk.endswith(b"\n"):
                break
        yield head, total


def read_jsonl(path: str, max_line_bytes: int = 1 << 62) -> Iterator[Record]:
    """Yield one Record per line; blank lines are records too (rejected as bad JSON).

    Never raises on content: a line over ``max_line_bytes`` is rejected as ``too_long`` unread;
    a UTF-8 byte-order mark opening the file is dropped; a gzip or zstd stream that is cut
    short or corrupt keeps the records before the damage and becomes one last record with
    reason ``truncated_stream``; JSON nested too deeply for the parser is ``bad_json``."""
    read = 0  # records yielded: the number the record after the last good one gets
    try:
        with _open_binary(path) as fh:
            for number, (line, too_long) in enumerate(_lines(fh, max_line_bytes)):
                read = number + 1
                if number == 0 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                line = line.rstrip(b"\r\n")
                if too_long is not None:
                    yield Record(path, number, raw=line.decode("utf-8", "replace"), reason="too_long",
                                 detail=f"the line is {too_long:,} bytes, more than a text of max_doc_chars "
                                        f"takes ({max_line_bytes:,} bytes); not parsed")
                    continue
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
                except RecursionError:
                    yield Record(path, number, raw=text, reason="bad_json",
                                 detail="JSON nested too deeply to parse")
                    continue
                yield Record(path, number, value=value, raw=text)
    except _stream_errors() as err:
        # the line being read when the stream broke (if any) is lost with it: this record stands for it
        yield Record(path, read, reason="truncated_stream",
                     detail=f"the compressed stream is cut short or corrupt after {read:,} records: "
                            f"{type(err).__name__}: {err}")


def read_parquet(path: str, batch_size: int = 4096) -> Iterator[Record]:
    """Yield one Record per parquet row; non-string text values are judged by validation.

    A file that is not readable parquet (cut short, its footer gone, bytes flipped) keeps the
    rows read before the damage and becomes one last record with reason ``corrupt_file``."""
    number = 0
    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield Record(path, number, value=row)
                number += 1
    except (pa.ArrowException, OSError, ValueError, EOFError) as err:
        yield Record(path, number, reason="corrupt_file",
                     detail=f"not readable as parquet after {number:,} rows: {type(err).__name__}: {err}")


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
        yield from read_jsonl(path, config.max_line_bytes)


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
    if len(text) > config.max_doc_chars:
        return ("too_long",
                f"the text is {len(text):,} characters, more than max_doc_chars ({config.max_doc_chars:,})", "")
    source = _lookup(value, config.source_field)
    if source is None:
        source = config.default_source
    elif not isinstance(source, str):
        return "wrong_type", f"{config.source_field!r} is {type(source).__name__}", ""
    elif "\x00" in source or _has_surrogates(source):
        return "not_utf8", f"{config.source_field!r} holds NUL or unpaired surrogate code points", ""
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
    if meta is None:
        return None
    # a lone surrogate in a meta value (a JSON escape) cannot be stored as UTF-8: replaced by "?"
    return json.dumps(meta, ensure_ascii=False, default=str).encode("utf-8", "replace").decode("utf-8")

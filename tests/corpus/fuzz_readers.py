"""A time-boxed mutational fuzz run over the corpus readers (JSON lines, gzip, zstd, parquet).

    python tests/corpus/fuzz_readers.py --seconds 600 [--seed 0]

Seed files hold real sample-corpus documents; each input is one of them cut, with bytes
flipped, inserted, zeroed or repeated at seeded places. Every input goes through the reader
and validation; every 20th through a whole `ingest` into a fresh lake, whose parts are read
back and counted (records = accepted + rejected). Any exception is a crash: it is kept
(`crashes`, with the input saved under the work folder) and the run goes on.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from python_udfs.corpus.readers import REASONS, CorpusConfig, read_file, validate

KINDS = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")


def seed_files(n_docs: int = 60) -> dict[str, bytes]:
    from python_udfs.corpus.sample import iter_sample_records

    records = list(iter_sample_records(per_source=n_docs // 4))
    lines = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": [r["text"] for r in records],
                             "source": [r["meta"]["pile_set_name"] for r in records]}), buffer, row_group_size=16)
    return {".jsonl": lines, ".jsonl.gz": gzip.compress(lines),
            ".jsonl.zst": zstandard.ZstdCompressor().compress(lines), ".parquet": buffer.getvalue()}


def mutate(blob: bytes, rng: random.Random) -> bytes:
    data = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(("cut", "flip", "insert", "zero", "repeat", "newline"))
        at = rng.randrange(len(data)) if data else 0
        if op == "cut":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= rng.randint(1, 255)
        elif op == "insert":
            data[at:at] = rng.randbytes(rng.randint(1, 64))
        elif op == "zero":
            data[at:at + rng.randint(1, 256)] = bytes(min(256, len(data) - at))
        elif op == "repeat" and data:
            data[at:at] = data[at:at + rng.randint(1, 2048)]
        elif op == "newline":
            data[at:at] = rng.choice((b"\n", b"\r\n", b"\x00", b"\xef\xbb\xbf", b'{"text": "\\ud800"}\n'))
    return bytes(data)


def fuzz(seconds: float, seed: int = 0, workdir: Path | None = None) -> dict:
    from python_udfs.corpus.ingest import ingest

    rng = random.Random(seed)
    seeds = seed_files()
    work = Path(workdir or tempfile.mkdtemp(prefix="pilehouse-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    summary: dict = {"seconds": seconds, "seed": seed, "inputs": 0, "records": 0, "ingests": 0,
                     "reasons": {}, "crashes": [], "by_kind": {k: 0 for k in KINDS}}
    deadline = time.monotonic() + seconds
    config = CorpusConfig(inputs=["x"], max_doc_chars=5_000)
    while time.monotonic() < deadline:
        kind = rng.choice(KINDS)
        blob = mutate(seeds[kind], rng)
        path = work / f"input{kind}"
        path.write_bytes(blob)
        summary["inputs"] += 1
        summary["by_kind"][kind] += 1
        try:
            for record in read_file(str(path), config):
                reason = validate(record, config)[0]
                assert reason is None or reason in REASONS, reason
                summary["reasons"][reason or "accepted"] = summary["reasons"].get(reason or "accepted", 0) + 1
                summary["records"] += 1
            if summary["inputs"] % 20 == 0:
                lake = work / "lake"
                shutil.rmtree(lake, ignore_errors=True)
                stats = ingest(CorpusConfig(inputs=[str(path)], max_doc_chars=5_000), lake, progress=False)
                parts = list((lake / "corpus").glob("part-*.parquet"))
                stored = sum(pq.read_metadata(p).num_rows for p in parts)
                assert stored == stats.n_records == stats.n_accepted + stats.n_rejected, (stored, stats)
                summary["ingests"] += 1
        except Exception:  # noqa: BLE001 - a fuzz run records every crash and goes on
            kept = work / f"crash-{len(summary['crashes'])}{kind}"
            shutil.copy(path, kept)
            summary["crashes"].append({"input": str(kept), "error": traceback.format_exc(limit=4)})
    summary["elapsed_s"] = round(seconds, 1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    summary = fuzz(args.seconds, args.seed, args.workdir)
    print(json.dumps({k: v for k, v in summary.items() if k != "crashes"} | {"crashes": len(summary["crashes"])}))
    for crash in summary["crashes"][:5]:
        print(crash["input"], crash["error"], sep="\n", file=sys.stderr)
    return 1 if summary["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())

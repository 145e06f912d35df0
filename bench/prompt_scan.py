"""Prompt-scan throughput: the batched scanner against two baselines, same model and windows, same run.

    make bench-scan            # or: python -m bench.prompt_scan --docs 8 --max-tokens 128

- ``naive``: the definition, two unbatched forward passes (short, then long) per window;
- ``catalog``: the catalog's scanner.py loop, batched, but two passes per micro-batch (the
  4-token short rows and the 5-token long rows) with full logits at every position;
- ``pilehouse``: one pass of 5-token rows per window (a row's position 3 is the previous
  window's short prompt) and the LM head on the last two positions only.

Windows are real text (the sample corpus when built, else the Python standard library's
own source) in the model's tokenizer. Rates are windows (= scanned tokens) per second. For
scale, the catalog's published run: ~112.5M tokens in ~19 h on one A6000 with
pythia-2.8b-deduped (about 1,645 windows/s), shown as model FLOP/s next to ours
(2 x parameters x tokens per window x windows/s). No assertions: numbers are for reading.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from python_udfs.scan.metrics import naive_window_metrics, scan_windows, window_metrics
from python_udfs.scan.model import load_scan_model
from python_udfs.settings import default

CATALOG_TOKENS, CATALOG_SECONDS, CATALOG_PARAMS = 112.5e6, 19 * 3600, 2.78e9


def real_texts(n: int) -> list[str]:
    sample = Path("warehouse/sample/sample_corpus.jsonl.gz")
    if sample.exists():
        texts = []
        with gzip.open(sample, "rt") as f:
            for line in f:
                text = json.loads(line).get("text") or ""
                if len(text) > 2000:
                    texts.append(text)
                if len(texts) == n:
                    return texts
    import json as module  # the standard library's own source, always present

    source = Path(module.__file__).parent
    return [p.read_text() for p in sorted(source.glob("*.py"))][:n]


def catalog_loop(lm, sequences, seq_len: int, batch_size: int) -> dict:
    """scanner.py's step 1: unfold short and long windows, two batched passes, full logits."""
    shorts, longs = [], []
    for ids in sequences:
        t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
        if len(t) < seq_len + 1:
            continue
        longs.append(t.unfold(0, seq_len + 1, 1))
        shorts.append(t[1:].unfold(0, seq_len, 1))
    short_2d, long_2d = torch.cat(shorts), torch.cat(longs)
    out = []
    with torch.no_grad():
        for j in range(0, len(short_2d), batch_size):
            s = lm(input_ids=short_2d[j: j + batch_size]).logits[:, -1]
            ll = lm(input_ids=long_2d[j: j + batch_size]).logits[:, -1]
            out.append(window_metrics(s, ll)["js"])
    return {"js": torch.cat(out).numpy()}


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default("scan_model"))
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=default("scan_batch_size"))
    parser.add_argument("--naive-windows", type=int, default=120, help="the naive loop times this many windows")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 row")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_scan_model(args.model)
    params = sum(p.numel() for p in model.lm.parameters())
    sequences = [a[: args.max_tokens] for a in model.encode_batch(real_texts(args.docs))]
    windows = sum(max(0, len(s) - 4) for s in sequences)
    print(f"model {model.name} ({params / 1e6:.0f}M parameters, {model.device}, torch threads "
          f"{torch.get_num_threads()}); {len(sequences)} documents, {windows} windows", file=sys.stderr)

    scan_windows(model.lm, [sequences[0][:40]], batch_size=args.batch_size)  # warm-up
    ours, t_ours = timed(lambda: scan_windows(model.lm, sequences, batch_size=args.batch_size))
    catalog, t_catalog = timed(lambda: catalog_loop(model.lm, sequences, 4, args.batch_size))
    picks = [(s, p) for s, p in zip(ours["seq_index"], ours["position"])][: args.naive_windows]
    naive, t_naive = timed(lambda: [naive_window_metrics(model.lm, sequences[s], p) for s, p in picks])

    bf16 = None
    if not args.no_bf16:
        low = load_scan_model(args.model, dtype="bfloat16")
        scan_windows(low.lm, [sequences[0][:40]], batch_size=args.batch_size)
        bf16, t_bf16 = timed(lambda: scan_windows(low.lm, sequences, batch_size=args.batch_size))
        del low

    diff_catalog = float(np.abs(catalog["js"] - ours["js"]).max())
    diff_naive = max(abs(float(n["js"]) - float(ours["js"][i])) for i, n in enumerate(naive))
    rate_ours, rate_catalog, rate_naive = windows / t_ours, windows / t_catalog, len(picks) / t_naive
    catalog_rate = CATALOG_TOKENS / CATALOG_SECONDS
    rows = [
        ("naive (2 unbatched passes/window)", rate_naive, 9),
        ("catalog loop (batched, 2 passes)", rate_catalog, 9),
        ("pilehouse (1 shared pass)", rate_ours, 5),
    ]
    if bf16 is not None:
        rows.append(("pilehouse, bfloat16 weights", windows / t_bf16, 5))
    print(f"\n{'method':38s} {'windows/s':>10s} {'vs naive':>9s} {'vs catalog loop':>16s} {'model GFLOP/s':>14s}")
    for name, rate, tokens in rows:
        print(f"{name:38s} {rate:10.1f} {rate / rate_naive:8.2f}x {rate / rate_catalog:15.2f}x "
              f"{2 * params * tokens * rate / 1e9:14.1f}")
    print(f"{'catalog published (A6000, 2.8B, fp16)':38s} {catalog_rate:10.1f} {'':>9s} {'':>16s} "
          f"{2 * CATALOG_PARAMS * 9 * catalog_rate / 1e9:14.1f}")
    print(f"\nmax |js| difference: vs catalog loop {diff_catalog:.2e}, vs naive {diff_naive:.2e} "
          f"(the naive loop timed {len(picks)} windows)")
    if bf16 is not None:
        keep32 = (ours["p_long"] > 0.5) & (ours["js"] > 0.5)
        keep16 = (bf16["p_long"] > 0.5) & (bf16["js"] > 0.5)
        print(f"bfloat16 vs float32: max |p_long| difference {np.abs(bf16['p_long'] - ours['p_long']).max():.3f}, "
              f"kept windows {int(keep16.sum())} vs {int(keep32.sum())} ({int((keep16 & keep32).sum())} in both)")
    print(f"at {rate_ours:.0f} windows/s this machine would scan the catalog's 112.5M tokens with "
          f"{model.name} in {CATALOG_TOKENS / rate_ours / 3600:.0f} h")


if __name__ == "__main__":
    main()

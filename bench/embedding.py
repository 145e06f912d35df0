"""Embedding throughput: pilehouse's embedding backends against plain ``SentenceTransformer.encode`` fp32.

    make bench                    # or: python -m bench.embedding --docs 160 --rounds 2

One process, the same documents (an even mix of the sample corpus' sources), the same
model (``embedding_model``, at ``embedding_max_tokens``) and batch size for everyone, torch
and ONNX Runtime at one thread per core. Contestants run interleaved (baseline, each
backend, baseline, ...) for ``--rounds`` rounds and each keeps its best round, so a noisy
neighbour hurts all alike. The baseline is ``SentenceTransformer.encode(texts,
normalize_embeddings=True)`` in fp32 (which sorts by length inside). Contestants: pilehouse's
``embed_texts`` with ``embedding_backend`` torch, onnx and onnx-int8.

Fidelity per contestant: the per-document cosine to the baseline's vectors (min >= 0.99,
mean >= 0.995) and k-means agreement >= 0.97: pilehouse's own k-means (kmeans.fit) fitted
once on the baseline vectors (k = ``--clusters``, default clusters_per_source x the sample's
sources), both vector sets assigned to those centroids, the share of equal assignments.
Achieved GFLOP/s: the model's matmul FLOPs per real token (weights 2 x params per token,
attention 4 x tokens x hidden per layer) over the tokens embedded, against ``torch.mm`` of
one feed-forward matmul (batch x tokens, hidden, 4 x hidden) in fp32.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from python_udfs.settings import default

TARGET = 2.0
MIN_COSINE, MEAN_COSINE, KMEANS_AGREEMENT = 0.99, 0.995, 0.97


def sample_texts(n_docs: int) -> list[str]:
    from python_udfs.corpus.sample import SOURCES, iter_sample_records

    per_source = -(-n_docs // len(SOURCES))
    texts = [r["text"] for r in iter_sample_records(per_source=per_source) if r["text"].strip()]
    return texts[:n_docs]


def model_flops(st_model, texts: list[str], max_tokens: int) -> tuple[float, int, float]:
    """(matmul FLOPs for these texts, real tokens, mean tokens per text)."""
    config = st_model[0].auto_model.config
    hidden, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    lengths = [len(ids) for ids in st_model.tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]]
    per_token_weights = 2 * layers * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = sum(2 * 2 * layers * n * n * hidden for n in lengths)  # QK^T and AV
    return float(per_token_weights * sum(lengths) + attention), sum(lengths), float(np.mean(lengths))


def kmeans_agreement(reference: np.ndarray, other: np.ndarray, k: int, seed: int) -> float:
    from python_udfs.clustering.kmeans import KMeansConfig, assign, fit

    centroids, _ = fit(lambda: iter([reference]), KMeansConfig(n_clusters=k, seed=seed), progress=False)
    return float(np.mean(assign(reference, centroids)[0] == assign(other, centroids)[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=default("embedding_batch_size"))
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each contestant keeps its best")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--clusters", type=int, default=None,
                        help="k for the k-means check (default clusters_per_source x the sample's sources)")
    args = parser.parse_args()

    import torch

    from bench.results import Ratio, torch_matmul_peak, write
    from python_udfs.clustering.embed import EmbedConfig, embed_texts, load_model
    from python_udfs.corpus.sample import SOURCES

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    texts = sample_texts(args.docs)
    base_config = EmbedConfig(batch_size=args.batch_size, device="cpu", backend="torch")
    baseline = load_model(base_config)
    runners = {"SentenceTransformer.encode fp32": lambda: baseline.encode(
        texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)}
    for backend in args.backends.split(","):
        config = EmbedConfig(batch_size=args.batch_size, device="cpu", backend=backend)
        model = baseline if backend == "torch" else load_model(config)  # builds the cached ONNX model once
        embed_texts(model, texts[:8], config)  # warm-up: first-call allocations are not throughput
        runners[f"pilehouse embed_texts {backend}"] = (
            lambda model=model, config=config: embed_texts(model, texts, config))
    best, vectors = {}, {}
    for _ in range(max(1, args.rounds)):
        for name, run in runners.items():
            start = time.perf_counter()
            out = np.asarray(run(), dtype=np.float32)
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
            vectors.setdefault(name, out)

    flops, tokens, mean_tokens = model_flops(baseline, texts, base_config.max_tokens)
    hidden = baseline[0].auto_model.config.hidden_size
    peak = torch_matmul_peak(int(args.batch_size * mean_tokens), hidden, 4 * hidden)
    k = args.clusters or int(default("clusters_per_source")) * len(SOURCES)
    names = list(runners)
    reference = vectors[names[0]]
    base_rate = len(texts) / best[names[0]]
    rows = []
    auto = EmbedConfig(device="cpu").resolved_backend()
    print(f"{len(texts)} documents, {tokens} tokens (mean {mean_tokens:.0f}), {base_config.model} at "
          f"{base_config.max_tokens} tokens, batch {args.batch_size}, {cores} threads, best of {args.rounds}, k={k}; "
          f"embedding_backend auto (the default) picks {auto} on this CPU")
    for name in names[1:]:
        cosine = np.sum(vectors[name] * reference, axis=1)
        fidelity = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
                    "kmeans_agreement": kmeans_agreement(reference, vectors[name], k, int(default("seed")))}
        ok = (fidelity["min_cosine"] >= MIN_COSINE and fidelity["mean_cosine"] >= MEAN_COSINE
              and fidelity["kmeans_agreement"] >= KMEANS_AGREEMENT)
        picked = " (auto's pick here: the default)" if name.endswith(f" {auto}") else ""
        rows.append(Ratio(
            step="embedding", metric="docs/s", contestant=name + picked, baseline=names[0],
            value=len(texts) / best[name], baseline_value=base_rate, target=TARGET,
            fidelity=fidelity, fidelity_ok=ok, achieved=flops / best[name] / 1e9, peak=peak,
            peak_unit="GFLOP/s", note=f"{len(texts)} docs, batch {args.batch_size}, {cores} threads; "
                                      f"baseline at {flops / best[names[0]] / 1e9:.1f} GFLOP/s"))
    write("embedding", rows, extra={"docs": len(texts), "tokens": tokens, "batch_size": args.batch_size,
                                    "rounds": args.rounds, "kmeans_k": k, "auto_picks": auto,
                                    "seconds": {name: best[name] for name in names}})


if __name__ == "__main__":
    main()

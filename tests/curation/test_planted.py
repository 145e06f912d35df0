"""Planted test: real sample-corpus documents with benchmark questions copied into some and
near-copies of others added; decontamination must flag exactly the planted documents, exact
dedup the whitespace/case copies, SemDeDup (real MiniLM embeddings) the lightly edited ones,
and the warehouse's SQL (int_documents_eligible, the quotas, minipile) must leave them out."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from test_contamination import blimp_directory
from warehouses import Corpus, build_models, build_warehouse, connect

from python_udfs.curation import contamination as ct
from python_udfs.curation import semdedup as sd
from python_udfs.curation.normalise import text_hash

PER_SOURCE = 40  # 4 sources: 160 real documents
PLANT_TASKS = ("arc_easy", "arc_challenge", "mmlu", "hellaswag", "winogrande", "lambada_openai")
EXACT_COPIES = 6
SEMANTIC_COPIES = 6
COPY_OFFSET = 10_000


def exact_variant(text: str) -> str:
    """The same text after normalisation: case flipped, whitespace runs changed."""
    return "  " + " \n\t".join(text.swapcase().split(" ")) + "\n"


def semantic_variant(text: str) -> str:
    """A small edit: one word dropped, one word added, a sentence's full stop changed."""
    words = text.split(" ")
    mid = len(words) // 2
    return " ".join(words[:mid] + ["indeed"] + words[mid + 1:]).replace(".", ";", 1)


@pytest.fixture(scope="module")
def planted():
    from python_udfs.corpus.sample import iter_sample_records

    directory = blimp_directory()
    if directory is None:
        pytest.skip("no BLiMP folder (set PILEHOUSE_BLIMP_DIR)")
    index = ct.BenchmarkNgrams.load(directory)
    records = list(iter_sample_records(per_source=PER_SOURCE))
    texts = {i: r["text"] for i, r in enumerate(records)}
    sources = {i: r["meta"]["pile_set_name"] for i, r in enumerate(records)}
    rng = np.random.default_rng(0)
    # two long-enough examples per task, pasted into the middle of two documents each
    examples: dict[str, list[str]] = {t: [] for t in PLANT_TASKS}
    for task, text in ct.benchmark_examples(directory):
        if task in examples and len(ct.words(text)) >= 20 and len(examples[task]) < 40:
            examples[task].append(text)
    targets = rng.choice(len(records), size=2 * len(PLANT_TASKS), replace=False).tolist()
    contaminated: set[tuple[int, str]] = set()
    for k, doc in enumerate(targets):
        task = PLANT_TASKS[k // 2]
        example = examples[task][int(rng.integers(len(examples[task])))]
        words = texts[doc].split(" ")
        texts[doc] = " ".join(words[: len(words) // 2] + [example] + words[len(words) // 2:])
        contaminated.add((doc, task))
    rest = [i for i in range(len(records)) if i not in targets and len(texts[i]) > 200]
    chosen = rng.choice(rest, size=EXACT_COPIES + SEMANTIC_COPIES, replace=False).tolist()
    exact_pairs = {COPY_OFFSET + d: d for d in chosen[:EXACT_COPIES]}
    semantic_pairs = {COPY_OFFSET + d: d for d in chosen[EXACT_COPIES:]}
    for copy, doc in exact_pairs.items():
        texts[copy], sources[copy] = exact_variant(texts[doc]), sources[doc]
    for copy, doc in semantic_pairs.items():
        texts[copy], sources[copy] = semantic_variant(texts[doc]), sources[doc]
    return index, texts, sources, contaminated, exact_pairs, semantic_pairs


def test_decontamination_flags_exactly_the_planted_documents(planted):
    """Every planted (document, task) is found; any other flagged document must be a real
    13-gram overlap (checked on the strings, not the hashes): a false positive fails."""
    index, texts, _, contaminated, _, _ = planted
    ids = sorted(texts)
    table = index.contaminated(pa.table({"doc_id": ids, "text": [texts[i] for i in ids]}).to_batches(max_chunksize=37))
    rows = table.to_pylist()
    flagged = {(r["doc_id"], r["task"]) for r in rows}
    assert contaminated <= flagged, f"missed: {sorted(contaminated - flagged)}"
    by_task: dict[str, list[str]] = {}
    for task, text in ct.benchmark_examples(blimp_directory()):
        by_task.setdefault(task, []).append(" " + " ".join(ct.words(text)) + " ")
    natural = sorted((r["doc_id"], r["task"], r["example_ngram"]) for r in rows
                     if (r["doc_id"], r["task"]) not in contaminated)
    for row in rows:  # every reported n-gram is really in the document and in one of the task's examples
        gram = " " + row["example_ngram"] + " "
        assert gram in " " + " ".join(ct.words(texts[row["doc_id"]])) + " "
        assert any(gram in example for example in by_task[row["task"]]), f"hash collision: {row}"
    others = {d for d, _, _ in natural} - {d for d, _ in contaminated}
    print(f"planted {len(contaminated)} contaminated documents, all found; {len(others)} other real-corpus "
          f"documents overlap for real: {natural}")
    assert len(others) <= 2  # the 160 sample documents hold one true overlap (a Constitution clause in MMLU)


def test_exact_dedup_catches_the_whitespace_and_case_copies(planted):
    _, texts, _, _, exact_pairs, semantic_pairs = planted
    groups: dict[int, list[int]] = {}
    for doc in sorted(texts):
        groups.setdefault(text_hash(texts[doc]), []).append(doc)
    removed = {doc: members[0] for members in groups.values() for doc in members[1:]}
    print(f"exact dedup: {len(removed)} removed, {len(set(removed) - set(exact_pairs))} not planted")
    assert {d: removed.get(d) for d in exact_pairs} == exact_pairs
    assert not set(semantic_pairs) & set(removed)  # an edited copy is not an exact duplicate


@pytest.fixture(scope="module")
def embedded(planted):
    from python_udfs.clustering.embed import EmbedConfig, embed_texts, load_model

    _, texts, _, _, _, _ = planted
    config = EmbedConfig(device="cpu")
    ids = sorted(texts)
    units = embed_texts(load_model(config), [texts[i] for i in ids], config)
    return np.array(ids), units


def test_semdedup_catches_the_near_copies(planted, embedded):
    _, texts, _, _, exact_pairs, semantic_pairs = planted
    ids, units = embedded
    # one cluster per source (what k-means roughly finds), distances to its mean direction
    _, _, sources, _, _, _ = planted
    names = sorted(set(sources.values()))
    cluster = np.array([names.index(sources[i]) for i in ids])
    centroids = np.stack([units[cluster == c].mean(0) for c in range(len(names))])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    distance = 1 - (units * centroids[cluster]).sum(1)
    order = np.lexsort((ids, cluster))
    table = pa.table({"doc_id": ids[order], "cluster_id": pa.array(cluster[order], pa.int32()),
                      "distance": distance[order].astype(np.float64),
                      "embedding": pa.array([u.tolist() for u in units[order]], pa.list_(pa.float32()))})
    for keep in sd.KEEP_RULES:
        got = sd.semantic_duplicates(table.to_batches(max_chunksize=50), 0.05, keep, block_size=16)
        rows = {r["doc_id"]: r for r in got.to_pylist()}
        for copy, doc in {**exact_pairs, **semantic_pairs}.items():
            gone = [d for d in (copy, doc) if d in rows]
            assert len(gone) == 1, f"{keep}: pair ({doc}, {copy}) removed {gone}"
            assert rows[gone[0]]["duplicate_of"] == ({copy, doc} - {gone[0]}).pop()
            assert rows[gone[0]]["similarity"] >= 0.95
        planted_docs = {d for pair in {**exact_pairs, **semantic_pairs}.items() for d in pair}
        others = set(rows) - planted_docs
        print(f"semdedup eps 0.05 keep {keep}: {len(rows)} removed, {len(others)} not planted "
              f"(similarities {sorted(round(rows[d]['similarity'], 3) for d in others)})")
    ecdf = sd.ecdf(table.to_batches(), [0.001, 0.05, 0.3], "farthest")
    assert ecdf.column("documents_removed").to_pylist()[1] >= len(exact_pairs) + len(semantic_pairs)


def test_the_warehouse_leaves_the_removed_documents_out(planted, tmp_path):
    """int_documents_eligible, the quotas and minipile from their SQL, every step on."""
    index, texts, sources, contaminated, exact_pairs, semantic_pairs = planted
    ids = sorted(texts)
    rng = np.random.default_rng(1)
    k = 4
    dense = {doc: n for n, doc in enumerate(ids)}  # the fixture numbers documents 0..n-1
    corpus = Corpus([sources[i] for i in ids], [texts[i] for i in ids], [n % k for n in range(len(ids))],
                    np.round(rng.uniform(0.2, 0.8, len(ids)), 6).tolist(),
                    np.eye(k, 8, dtype=np.float32))
    splits = {"train_size": 80, "validation_size": 10, "test_size": 20}
    path = build_warehouse(tmp_path / "planted.duckdb", corpus, splits=splits, models=("documents",))
    semantic = {dense[c]: dense[d] for c, d in semantic_pairs.items()}  # as SemDeDup with closest would name them
    flagged = index.contaminated(pa.table({"doc_id": [dense[i] for i in ids],
                                           "text": [texts[i] for i in ids]}).to_batches())
    with connect(path) as con:
        con.executemany("insert into int_semantic_duplicates (doc_id, duplicate_of, similarity, cluster_id) "
                        "values (?, ?, 0.99, 0)", list(semantic.items()))
        con.register("flagged", flagged)
        con.execute("insert into int_contaminated_documents select * from flagged")
        build_models(con, ("int_documents_eligible", "minipile"),
                     {**splits, "exact_dedup": True, "decontaminate": True})
        exact = dict(con.execute("select doc_id, duplicate_of from int_exact_duplicates").fetchall())
        eligible = {r[0] for r in con.execute("select doc_id from int_documents_eligible").fetchall()}
        sampled = {r[0] for r in con.execute("select doc_id from minipile").fetchall()}
    removed = set(exact) | set(semantic) | set(flagged.column("doc_id").to_pylist())
    assert {dense[d] for d, _ in contaminated} <= removed
    assert {dense[c]: dense[d] for c, d in exact_pairs.items()}.items() <= exact.items()
    assert eligible == set(range(len(ids))) - removed
    assert len(sampled) == 110 and not sampled & removed

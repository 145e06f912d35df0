"""Sampling variants (docs/minipile.md#variants) on a tiny warehouse of real sample text.

The base warehouse (documents, clusters, minipile) is built from the models' SQL by
tests/warehouses.py; the variant models are rendered with their real Jinja and macros
(macros/variants.sql) and run in DuckDB with pilehouse's UDFs. Checked against independent
Python: a variant with minipile's settings gives minipile's rows, the quotas are
python_udfs.minipile.quotas' for the same stats, a token-budget variant takes documents by
the stated rule, and every number of minipile_variants is recomputed from the texts with the
GPT-NeoX tokenizer.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from warehouses import SPLITS, CompilerError, build_warehouse, connect, render_jinja, review_corpus

from python_udfs.curation.normalise import text_hash
from python_udfs.minipile.quotas import ClusterStats, QuotaParams, quotas
from python_udfs.ngrams import tokenizer as neox

VARIANT_MODELS = ("int_documents_eligible", "int_sampling_variants", "int_variant_quotas",
                  "int_variant_documents_sampled", "int_variant_splits", "minipile_variant_documents",
                  "minipile_variants")


@functools.cache
def benchmark_ngrams():
    from python_udfs.curation.contamination import BenchmarkNgrams

    return BenchmarkNgrams.load()


def build_variants(con: duckdb.DuckDBPyConnection, variables: dict) -> None:
    for name in VARIANT_MODELS:
        if name == "minipile_variants":
            # the Python model int_variant_contamination, as it runs: the variants' documents scanned
            rows = con.sql("select doc_id, text from documents semi join int_variant_splits using (doc_id) "
                           "order by doc_id")
            found = benchmark_ngrams().contaminated(rows.fetch_arrow_reader(64))  # noqa: F841 (read by SQL)
            con.execute("create or replace table int_variant_contamination as select * from found")
        con.execute(f"create or replace table {name} as {render_jinja(name, {**SPLITS, **variables})}")


def corpus():
    corpus = review_corpus()
    # doc 1 repeats doc 0 up to case and whitespace: a duplicate by the NFKC-lower-space key
    corpus.texts[1] = "  " + re.sub(r"\s+", "   ", corpus.texts[0].upper()) + "\n"
    return corpus


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    path = build_warehouse(tmp_path_factory.mktemp("variants") / "pilehouse.duckdb", corpus(),
                           [(3, "near_duplicates", "excluded")])
    with duckdb.connect(str(path)) as con:
        texts = con.execute("select doc_id, text from documents order by doc_id").fetchall()
        ids = neox.encode_batch([t for _, t in texts])
        con.execute("create table document_tokens (doc_id bigint, n_tokens bigint, tokens usmallint[])")
        con.executemany("insert into document_tokens values (?, ?, ?)",
                        [(d, len(x), x.tolist()) for (d, _), x in zip(texts, ids)])
        con.execute("create table int_documents_tokenized as select doc_id, n_tokens from document_tokens")
        # three prefixes of document 5's text and one that occurs nowhere
        first = ids[5].tolist()
        rows = [(first[i], first[i + 1]) for i in (0, 3, 7)] + [(50276, 50275)]
        con.execute("create table top_trigrams (id0 integer, id1 integer)")
        con.executemany("insert into top_trigrams values (?, ?)", rows)
    return path


def token_budget(con) -> int:
    return int(con.execute("select sum(n_tokens) from document_tokens").fetchall()[0][0] * 0.3)


def variants_for(con) -> list:
    budget = token_budget(con)
    return [
        {"name": "same"},  # minipile's settings under another name
        "proportionate",
        {"name": "density_seed", "sampling_strategy": "density", "sampling_total": "seed", "density_weight": 0.3},
        {"name": "everything", "train_size": 40, "validation_size": 2, "test_size": 2},  # the 44 kept documents
        {"name": "tokens_30", "sampling_unit": "tokens", "sampling_strategy": "proportionate",
         "train_size": budget * 8 // 10, "validation_size": budget // 10, "test_size": budget - budget * 9 // 10},
    ]


@pytest.fixture(scope="module")
def built(warehouse):
    con = connect(warehouse)
    build_variants(con, {"sampling_variants": variants_for(con)})
    yield con
    con.close()


def rows(con, sql: str) -> list[tuple]:
    return con.execute(sql).fetchall()


def test_variant_with_minipiles_settings_is_minipile(built) -> None:
    minipile = rows(built, "select doc_id, split, cluster_id, shuffle_position from minipile order by doc_id")
    assert len(minipile) == sum(SPLITS.values())
    for name in ("minipile", "same"):
        got = rows(built, "select doc_id, split, cluster_id, shuffle_position from minipile_variant_documents "
                          f"where variant = '{name}' order by doc_id")
        assert got == minipile, name
    assert rows(built, "select cluster_id, quota from int_variant_quotas where variant = 'minipile' order by 1") == \
        rows(built, "select cluster_id, quota from int_cluster_quotas order by 1")


def _hash_order(doc_ids: list[int], tag: str, seed: int = 42) -> list[int]:
    return sorted(doc_ids, key=lambda d: (hashlib.md5(f"{tag}:{seed}:{d}".encode()).hexdigest(), d))


def _cluster_stats(con, unit: str) -> list[ClusterStats]:
    stats = []
    sql = ("select a.cluster_id, count(*), sum(t.n_tokens), sum(a.distance::decimal(18, 15))::double "
           "from int_cluster_assignments a join document_tokens t using (doc_id) "
           "where a.cluster_id not in (select cluster_id from cluster_exclusions) group by 1 order by 1")
    for cid, n, n_tok, s in rows(con, sql):
        size = n_tok if unit == "tokens" else n
        stats.append(ClusterStats(cid, int(size), s / n * n_tok if unit == "tokens" else s))
    return stats


@pytest.mark.parametrize("name, strategy, mode, weight", [
    ("proportionate", "proportionate", "exact", 0.5), ("density_seed", "density", "seed", 0.3),
    ("everything", "uniform", "exact", 0.5)])
def test_variant_quotas_are_the_quota_functions(built, name, strategy, mode, weight) -> None:
    total = rows(built, f"select total from int_sampling_variants where variant = '{name}'")[0][0]
    want = [(q.cluster_id, q.quota) for q in quotas(_cluster_stats(built, "documents"), strategy,
                                                     QuotaParams(density_weight=weight), total, mode)]
    assert rows(built, f"select cluster_id, quota from int_variant_quotas where variant = '{name}' order by 1") == want
    got = rows(built, f"select cluster_id, count(*) from minipile_variant_documents where variant = '{name}' "
                      "group by 1 order by 1")
    assert got == [(c, q) for c, q in want if q > 0]


def test_token_budget_fills_clusters_and_splits_by_tokens(built) -> None:
    variant = rows(built, "select total, train_size, validation_size from int_sampling_variants "
                          "where variant = 'tokens_30'")[0]
    total, train, validation = variant
    stats = _cluster_stats(built, "tokens")
    budgets = {q.cluster_id: q.quota for q in quotas(stats, "proportionate", None, total, "exact")}
    assert sum(budgets.values()) == total
    n_tokens = dict(rows(built, "select doc_id, n_tokens from document_tokens"))
    members: dict[int, list[int]] = {}
    for doc_id, cid in rows(built, "select doc_id, cluster_id from int_cluster_assignments order by doc_id"):
        members.setdefault(cid, []).append(doc_id)
    taken = []
    for cid, budget in budgets.items():  # pick-rank order while the tokens before are below the budget
        before = 0
        for doc_id in _hash_order(members[cid], "select"):
            if before >= budget:
                break
            taken.append(doc_id)
            before += n_tokens[doc_id]
    got = rows(built, "select doc_id, split from minipile_variant_documents where variant = 'tokens_30' "
                      "order by shuffle_position")
    assert sorted(d for d, _ in got) == sorted(taken)
    sampled_tokens = sum(n_tokens[d] for d in taken)
    assert sampled_tokens >= total
    cut_train, cut_validation = sampled_tokens * train // total, sampled_tokens * validation // total
    before, want = 0, []
    for doc_id in _hash_order(taken, "shuffle"):
        want.append((doc_id, "train" if before < cut_train else
                     "validation" if before < cut_train + cut_validation else "test"))
        before += n_tokens[doc_id]
    assert got == want
    train_tokens = sum(n_tokens[d] for d, s in got if s == "train")
    assert cut_train <= train_tokens < cut_train + max(n_tokens.values())


def _kl(p: Counter, q: Counter) -> float:
    n_p, n_q = sum(p.values()), sum(q.values())
    return sum(c / n_p * math.log((c / n_p) / (q[k] / n_q)) for k, c in p.items())


def _bigrams(ids) -> list[tuple[int, int]]:
    ids = [int(i) for i in ids]
    return list(zip(ids, ids[1:]))


def test_minipile_variants_numbers_match_python(built) -> None:
    docs = {d: (s, t) for d, s, t in rows(built, "select doc_id, source, text from documents")}
    ids = {d: neox.encode(t) for d, (_, t) in docs.items()}
    corpus_sources = Counter(s for s, _ in docs.values())
    corpus_bigrams = Counter(b for d in docs for b in _bigrams(ids[d]))
    prefixes = set(rows(built, "select id0, id1 from top_trigrams"))
    table = {r[0]: r for r in rows(built, "select variant, documents, tokens, bytes, clusters, source_kl, bigram_kl, "
                                          "top_trigram_share, duplicates_left, contaminated_left "
                                          "from minipile_variants")}
    names = [r[0] for r in rows(built, "select variant from minipile_variants order by variant_order")]
    assert names == ["minipile", "same", "proportionate", "density_seed", "everything", "tokens_30"]
    for name in names:
        members = [d for (d,) in rows(built, f"select doc_id from minipile_variant_documents where variant = '{name}'")]
        bigrams = Counter(b for d in members for b in _bigrams(ids[d]))
        keys = [text_hash(docs[d][1]) for d in members]
        contaminated = sum(1 for d in members if benchmark_ngrams().matches(docs[d][1]))
        want = (name, len(members), sum(len(ids[d]) for d in members),
                sum(len(docs[d][1].encode("utf-8")) for d in members),
                len(set(rows(built, f"select cluster_id from minipile_variant_documents where variant = '{name}'"))),
                _kl(Counter(docs[d][0] for d in members), corpus_sources), _kl(bigrams, corpus_bigrams),
                len({b for b in bigrams if b in prefixes}) / len(prefixes), len(keys) - len(set(keys)),
                contaminated)
        got = table[name]
        assert got[:5] == want[:5], name
        assert got[5] == pytest.approx(want[5], rel=1e-9, abs=1e-12), name
        assert got[6] == pytest.approx(want[6], rel=1e-9, abs=1e-12), name
        assert got[7:] == want[7:], name
    assert table["everything"][1] == 44 and table["everything"][4] == 5  # cluster 3 (1 document) excluded
    assert table["everything"][8] >= 1  # documents 0 and 1 are one text up to case and spacing (at least)
    assert table["everything"][6] > 0 and table["minipile"][6] > table["everything"][6]


@pytest.mark.parametrize("variants, message", [
    ([{"sampling_strategy": "density"}], "has no name"),
    ([{"name": "x", "train_sise": 3}], "sets train_sise"),
    (["density", "density"], "used twice"),
    (["minipile"], "used twice"),
    ([{"name": "Bad-Name"}], "must be lower-case"),
    ([{"name": "t", "sampling_unit": "bytes"}], "documents or tokens"),
    ("density", "must be a list"),
])
def test_bad_variants_fail_with_a_clear_error(variants, message) -> None:
    with pytest.raises(CompilerError, match=message):
        render_jinja("int_sampling_variants", {"sampling_variants": variants})


def test_tokens_need_the_documents_catalog() -> None:
    with pytest.raises(CompilerError, match="needs ngram_source documents"):
        render_jinja("int_sampling_variants", {"sampling_variants": [{"name": "t", "sampling_unit": "tokens"}],
                                         "ngram_source": "minipile"})


def test_minipile_itself_takes_a_token_budget(warehouse, tmp_path) -> None:
    """sampling_unit tokens for minipile: its own models (int_cluster_quotas, int_documents_sampled,
    int_minipile_splits) give the token-budget variant's rows, and the variant minipile equals it."""
    path = tmp_path / "tokens.duckdb"
    path.write_bytes(warehouse.read_bytes())
    con = connect(path)
    try:
        budget = token_budget(con)
        sizes = {"train_size": budget * 8 // 10, "validation_size": budget // 10,
                 "test_size": budget - budget * 9 // 10}
        variables = {**sizes, "sampling_unit": "tokens", "sampling_strategy": "proportionate",
                     "sampling_variants": [{"name": "same_tokens"}]}
        for name in ("int_cluster_quotas", "int_documents_sampled", "int_minipile_splits", "minipile"):
            con.execute(f"create or replace table {name} as {render_jinja(name, variables)}")
        build_variants(con, variables)
        minipile = rows(con, "select doc_id, split, cluster_id, shuffle_position from minipile order by doc_id")
        for name in ("minipile", "same_tokens"):
            assert rows(con, "select doc_id, split, cluster_id, shuffle_position from minipile_variant_documents "
                             f"where variant = '{name}' order by doc_id") == minipile, name
        want = quotas(_cluster_stats(con, "tokens"), "proportionate", None, budget, "exact")
        assert rows(con, "select cluster_id, quota from int_cluster_quotas order by 1") == \
            [(q.cluster_id, q.quota) for q in want]
        tokens = rows(con, "select sum(t.n_tokens) from minipile join document_tokens t using (doc_id)")[0][0]
        assert tokens >= budget
        per_split = dict(rows(con, "select split, sum(t.n_tokens) from minipile join document_tokens t using (doc_id) "
                                   "group by split"))
        assert per_split["train"] >= tokens * sizes["train_size"] // budget
    finally:
        con.close()


def test_same_tables_whatever_the_thread_count(built) -> None:
    variables = {**SPLITS, "sampling_variants": variants_for(built)}
    sql = {name: render_jinja(name, variables) for name in ("minipile_variants", "int_variant_splits")}
    got = {}
    for threads in (1, 4):
        built.execute(f"set threads = {threads}")
        got[threads] = {name: built.execute(f"select * from ({text}) order by all").fetchall()
                        for name, text in sql.items()}
    built.execute("reset threads")
    assert got[1] == got[4]
    assert got[1]["minipile_variants"] == rows(built, "select * from minipile_variants order by all")


def test_without_the_documents_catalog_the_variants_are_tokenized_here(built) -> None:
    """ngram_source minipile: no corpus tokens, so the variants' documents are tokenized in the
    model, with the same counts, and bigram_kl is null."""
    # the variant tables as built; only minipile_variants is rendered with ngram_source minipile
    variables = {**SPLITS, "ngram_source": "minipile"}
    sql = render_jinja("minipile_variants", variables)
    assert "document_tokens" not in sql
    got = rows(built, f"select variant, tokens, bigram_kl, top_trigram_share from ({sql}) order by variant")
    want = rows(built, "select variant, tokens, null, top_trigram_share from minipile_variants order by variant")
    assert got == want

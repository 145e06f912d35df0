"""bench/scale.py's core on a tiny corpus: rows per step and size, ratios, memory, the projection's arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import scale


def test_a_tiny_run_gives_rows_ratios_and_a_projection(tmp_path):
    config = scale.Config(docs=40, factors=(1, 2), steps=("tokenize",), ray_steps=(), workdir=str(tmp_path))
    result = scale.run_bench(config, log=lambda line: None)

    assert [c["records"] for c in result["corpus"]] == [40, 80]
    assert all(c["replicated"] == 0 for c in result["corpus"])
    rows = [(r["step"], r["factor"]) for r in result["rows"]]
    assert rows == [("ingest", 1), ("tokenize", 1), ("ingest", 2), ("tokenize", 2)]  # ingest: what tokenize reads
    for row in result["rows"]:
        assert row["seconds"] > 0 and row["cpu_s"] >= 0
        assert 30 < row["peak_rss_mib"] < 4000  # the step's own process, not the driver's
        assert row["units"] > 0 and row["us_per_unit"] == pytest.approx(1e6 * row["seconds"] / row["units"])
    tokenize = {r["factor"]: r for r in result["rows"] if r["step"] == "tokenize"}
    assert tokenize[2]["docs"] > tokenize[1]["docs"] and tokenize[2]["tokens"] > tokenize[1]["tokens"]

    by_step = {s["step"]: s for s in result["scaling"]}
    assert set(by_step) == {"ingest", "tokenize"}
    for entry in by_step.values():
        assert entry["time_ratio"]["2"] == pytest.approx(entry["seconds"][1] / entry["seconds"][0])
        assert entry["bounded"] and isinstance(entry["rss_flat"], bool)

    projection = result["projection"]
    assert projection["label"].startswith("PROJECTION")
    for row in projection["rows"]:
        units = scale.PILE_UNITS[row["unit"]]
        assert row["hours_this_machine"] == pytest.approx(row["us_per_unit"] * 1e-6 * units * row["model_scale"] / 3600)
    text = scale.format_tables(result)
    assert "PROJECTION" in text and "tokenize" in text and "t2N/tN" in text
    json.dumps(result, default=str)  # what main writes


def _row(step, n, units, seconds, cpu=None, **extra):
    return {"step": step, "executor": "local", "factor": n // 10, "n": n, "units": units, "seconds": seconds,
            "cpu_s": seconds if cpu is None else cpu, **extra}


def test_the_projection_formula():
    rows = [
        _row("ingest", 10, 1e6, 2.0), _row("ingest", 40, 4e6, 5.0),  # marginal: 3 s / 3e6 bytes
        _row("embed", 10, 10, 11.0),  # one size: the average
        _row("fit", 40, 40, 1.0, k=40, epochs=30),
        _row("distill", 40, 40, 2.0),
        _row("count", 10, 1000, 3.0, cpu=4.0), _row("count", 40, 4000, 6.0, cpu=10.0),
        _row("reduce", 10, 1000, 3.0), _row("reduce", 40, 4000, 2.0),  # slower at the smaller size: average
    ]
    assume = scale.Assumptions(node_cores=100, node_gpus=8, nodes=4, gpu_tflops=100.0, gpu_mfu=0.5)
    p = scale.project(rows, [100, 300, 2000], assume, cores_here=2)
    got = {r["step"]: r for r in p["rows"]}
    pile = scale.PILE

    ingest = got["ingest"]
    assert ingest["basis"] == "marginal 10->40" and ingest["us_per_unit"] == pytest.approx(1.0)
    core_h = 1e-6 * pile["text_bytes"] / 3600
    assert ingest["hours_this_machine"] == pytest.approx(core_h)
    # one part per input file: 30 files cap the parallelism on one node and on the cluster alike
    assert ingest["hours_one_node"] == pytest.approx(core_h / assume.pile_files)
    assert ingest["hours_nodes"] == pytest.approx(core_h / assume.pile_files)

    count = got["count"]  # marginal wall 3 s and CPU 6 s over 3,000 tokens
    assert count["us_per_unit"] == pytest.approx(1000.0) and count["cpu_us_per_unit"] == pytest.approx(2000.0)
    assert count["hours_one_node"] == pytest.approx(2e-3 * pile["tokens"] / 3600 / 100)
    assert count["hours_nodes"] == pytest.approx(count["hours_one_node"] / 4)
    assert got["reduce"]["basis"] == "average at 40"

    embed = got["embed"]
    flops = p["embedding_flops"]
    assert embed["model_scale"] == pytest.approx(flops["flops_per_doc_seed"] / flops["flops_per_doc_here"])
    assert embed["model_scale"] > 1
    assert p["gpu_docs_per_s"] == pytest.approx(100e12 * 0.5 / flops["flops_per_doc_seed"])
    assert embed["hours_one_node"] == pytest.approx(pile["documents"] / (8 * p["gpu_docs_per_s"]) / 3600)
    assert embed["hours_nodes"] == pytest.approx(embed["hours_one_node"] / 4)
    assert embed["hours_this_machine"] == pytest.approx(1.1 * pile["documents"] * embed["model_scale"] / 3600)

    fit = got["fit"]  # d x k and the Pile's 3 epochs against the 30 measured; on the driver: more nodes don't help
    assert fit["model_scale"] == pytest.approx(768 * 220 / (384 * 40) * 3 / 30)
    assert fit["hours_nodes"] == fit["hours_one_node"]
    assert got["distill"]["hours_nodes"] == got["distill"]["hours_one_node"]

    groups = {g["group"]: g for g in p["groups"]}
    assert groups["n-grams"]["hours_nodes"] == pytest.approx(count["hours_nodes"] + got["reduce"]["hours_nodes"])
    assert groups["prompt scan"]["hours_nodes"] is None and groups["embedding"]["hours"] == 170.0


def test_embedding_flops_grow_with_model_and_length():
    short = scale.embedding_scale([100] * 10, pile_mean_tokens=100)
    assert short["length_stretch"] == pytest.approx(1.0)
    # at equal lengths: 8x the matmul FLOPs per token (12 L d^2), 4x the attention (L d T^2)
    assert 7.5 < short["ratio"] < 8.0
    long = scale.embedding_scale([100] * 10, pile_mean_tokens=1000)  # Pile docs 10x longer: 1,000 tokens kept
    assert long["ratio"] > 9 * short["ratio"]


def test_replication_and_the_sampling_sql(tmp_path):
    pool = [{"text": f"document {i}", "meta": {"pile_set_name": "x"}} for i in range(3)] + \
           [{"text": "  ", "meta": {"pile_set_name": "x"}}]
    corpus = scale.write_corpus(pool, 10, tmp_path / "input", file_docs=4)
    assert (corpus["records"], corpus["from_sample"], corpus["replicated"], corpus["files"]) == (10, 4, 6, 3)
    assert corpus["empty"] == 2  # the empty record and its replica

    for name in scale.DISTILL_MODELS:
        sql = scale.render_model(name, {"seed": 42, "train_size": 8, "validation_size": 1, "test_size": 1})
        assert "{{" not in sql and "{%" not in sql and "select" in sql
    folder = tmp_path / "assignments"
    folder.mkdir()
    n = 40
    pq.write_table(pa.table({"doc_id": pa.array(range(n), pa.int64()),
                             "cluster_id": pa.array(np.arange(n) % 4, pa.int32()),
                             "distance": pa.array(np.linspace(0, 1, n))}), folder / "part-000000.parquet")
    sizes = scale.split_sizes(n, 0.5)
    assert sum(sizes.values()) == 20
    out = scale.distill(folder, 4, {"seed": 42, **sizes})
    assert out["docs"] == n
    assert out["splits"] == {"train": sizes["train_size"], "validation": sizes["validation_size"],
                             "test": sizes["test_size"]}


def test_steps_bring_what_they_read():
    assert scale.with_needs(["reduce"]) == ("ingest", "tokenize", "pack", "count", "reduce")
    assert scale.with_needs(["distill"]) == ("ingest", "embed", "fit", "assign", "distill")
    with pytest.raises(ValueError, match="unknown step"):
        scale.with_needs(["train"])

"""``python_udfs.minipile.lossi``: the per-cluster mean losses of loss_informed sampling, against
an independent per-document computation (Hugging Face's own ``labels=`` loss, one document at a
time) with a tiny GPT-NeoX checkpoint and the real SmolLM2-135M; the cost rule (no LM unless
loss_informed is in use); the bad-input errors."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from python_udfs.minipile import lossi
from python_udfs.minipile.lossi import LOSSES_SCHEMA, LossConfig, cluster_losses, losses_needed

# the scan tests' real texts and tiny random GPT-NeoX checkpoint (tests/scan/conftest.py)
_SCAN_CONFTEST = Path(__file__).resolve().parents[1] / "scan" / "conftest.py"
_spec = importlib.util.spec_from_file_location("scan_fixtures", _SCAN_CONFTEST)
_scan = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_scan)
TEXTS, save_tiny_neox = _scan.TEXTS, _scan.save_tiny_neox

DOCS = [  # (cluster_id, pick_rank, text): cluster 2 holds one document, cluster 5 only a 1-token one
    (0, 1, TEXTS[0]), (0, 2, TEXTS[1]), (0, 3, TEXTS[4]),
    (2, 1, TEXTS[2]),
    (3, 1, TEXTS[1] * 3), (3, 2, TEXTS[3]), (3, 3, TEXTS[0]), (3, 4, TEXTS[2]),
    (5, 1, "Short"),
]


def as_table(rows) -> pa.Table:
    return pa.table({"cluster_id": pa.array([r[0] for r in rows], pa.int32()),
                     "pick_rank": pa.array([r[1] for r in rows], pa.int64()),
                     "text": [r[2] for r in rows]})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    from python_udfs.scan.model import load_scan_model

    return load_scan_model(save_tiny_neox(tmp_path_factory.mktemp("ckpt") / "tiny-neox"), device="cpu", dtype="float32")


def reference_loss(scan_model, text: str, max_tokens: int) -> tuple[float, int] | None:
    """One document alone, no padding: Hugging Face's mean shifted cross-entropy."""
    import torch

    ids = [int(i) for i in scan_model.encode_batch([text])[0]][:max_tokens]
    if len(ids) < 2:
        return None
    with torch.no_grad():
        x = torch.tensor([ids])
        return float(scan_model.lm(input_ids=x, labels=x).loss), len(ids) - 1


def reference_table(scan_model, rows, per_cluster: int, max_tokens: int) -> dict[int, tuple]:
    per: dict[int, list[tuple[float, int]]] = {}
    for cid, rank, text in rows:
        got = reference_loss(scan_model, text, max_tokens) if rank <= per_cluster else None
        if got is not None:
            per.setdefault(cid, []).append(got)
    out = {}
    for cid, values in per.items():
        losses = np.array([v for v, _ in values])
        stderr = float(np.std(losses, ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else None
        out[cid] = (len(losses), sum(n for _, n in values), float(losses.mean()), stderr)
    return out


def check(table: pa.Table, expected: dict[int, tuple], model: str) -> None:
    assert table.schema == LOSSES_SCHEMA
    rows = table.to_pylist()
    assert [r["cluster_id"] for r in rows] == sorted(expected)
    for r in rows:
        n, tokens, mean, stderr = expected[r["cluster_id"]]
        assert (r["n_docs_scored"], r["n_tokens"], r["model"]) == (n, tokens, model)
        assert r["mean_loss"] == pytest.approx(mean, rel=1e-5, abs=1e-5)
        if stderr is None:
            assert r["stderr"] is None
        else:
            assert r["stderr"] == pytest.approx(stderr, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("per_cluster, max_tokens, batch_size", [(16, 512, 3), (2, 12, 8), (16, 40, 1)])
def test_tiny_neox_matches_one_document_at_a_time(tiny, per_cluster, max_tokens, batch_size):
    config = LossConfig(model="unused", docs_per_cluster=per_cluster, max_tokens=max_tokens, batch_size=batch_size)
    table = cluster_losses(as_table(DOCS[::-1]), config, scan_model=tiny)  # any row order
    check(table, reference_table(tiny, DOCS, per_cluster, max_tokens), tiny.name)
    assert 5 not in table.column("cluster_id").to_pylist()  # one token predicts nothing


def test_batching_changes_nothing_beyond_float_noise(tiny):
    tables = [cluster_losses(as_table(DOCS), LossConfig(model="unused", batch_size=b, max_tokens=64), scan_model=tiny)
              for b in (1, 2, 8)]
    for other in tables[1:]:
        np.testing.assert_allclose(other.column("mean_loss").to_numpy(), tables[0].column("mean_loss").to_numpy(),
                                   rtol=1e-5)
    again = cluster_losses(as_table(DOCS), LossConfig(model="unused", batch_size=2, max_tokens=64), scan_model=tiny)
    assert again.equals(tables[1])  # the same input, the same batches: identical


def test_loads_the_model_by_name(tiny):
    config = LossConfig(model=tiny.source, docs_per_cluster=1, max_tokens=16, batch_size=4, device="cpu")
    table = cluster_losses(as_table(DOCS), config)
    check(table, reference_table(tiny, DOCS, 1, 16), tiny.name)


@pytest.mark.slow
def test_smollm2_matches_one_document_at_a_time():
    pytest.importorskip("transformers")
    from python_udfs.scan.model import load_scan_model

    smollm2 = load_scan_model("smollm2", device="cpu", dtype="float32")
    rows = DOCS[:4]
    table = cluster_losses(as_table(rows), LossConfig(model="smollm2", max_tokens=48, batch_size=4),
                           scan_model=smollm2)
    check(table, reference_table(smollm2, rows, 16, 48), "SmolLM2-135M-Instruct")
    # a real model: prose is far likelier than the uniform guess over its vocabulary
    assert all(0.5 < loss < math.log(smollm2.lm.config.vocab_size) for loss in table.column("mean_loss").to_pylist())


def test_no_documents_no_model():
    # "smollm2" is never loaded: nothing to score (a load would take seconds, not fail)
    table = cluster_losses(as_table([]), LossConfig(model="smollm2"))
    assert table.num_rows == 0 and table.schema == LOSSES_SCHEMA


@pytest.mark.parametrize("strategy, variants, needed", [
    ("uniform", None, False),
    ("uniform", "[]", False),
    ("uniform", "", False),
    ("None", "None", False),
    ("loss_informed", None, True),
    ("uniform", ["density", {"sampling_strategy": "inter_cluster"}], False),
    ("uniform", ["density", "loss_informed"], True),
    ("uniform", [{"name": "lossi", "sampling_strategy": "loss_informed", "sampling_total": "seed"}], True),
    ("uniform", "['density', {'sampling_strategy': 'loss_informed'}]", True),  # as Jinja renders the var
    ("uniform", "['density', 'uniform']", False),
])
def test_the_lm_is_needed_only_for_loss_informed(strategy, variants, needed):
    assert losses_needed(strategy, variants) is needed


def test_the_empty_table_is_typed():
    assert lossi.empty_losses().schema == LOSSES_SCHEMA and lossi.empty_losses().num_rows == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"docs_per_cluster": 0}, "lossi_docs_per_cluster must be a whole number >= 1"),
    ({"batch_size": -2}, "lossi_batch_size must be a whole number >= 1"),
    ({"max_tokens": 1}, "lossi_max_tokens must be a whole number >= 2"),
    ({"model": " "}, "lossi_model is empty"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**kwargs)


def test_bad_variants_and_documents_are_clear_errors():
    with pytest.raises(ValueError, match="sampling_variants must be a list"):
        losses_needed("uniform", {"sampling_strategy": "loss_informed"})
    with pytest.raises(ValueError, match=r"lack column\(s\) pick_rank"):
        cluster_losses(pa.table({"cluster_id": [0], "text": ["a b"]}), LossConfig(model="x"))


def test_defaults_are_the_dbt_vars():
    from python_udfs.settings import default

    config = LossConfig()
    assert (config.model, config.docs_per_cluster, config.max_tokens, config.batch_size) == (
        default("lossi_model"), default("lossi_docs_per_cluster"), default("lossi_max_tokens"),
        default("lossi_batch_size"))
    assert LossConfig.from_vars({"lossi_docs_per_cluster": "4", "lossi_device": "None"}).docs_per_cluster == 4


def test_the_thread_count_changes_nothing(tiny):
    import torch

    threads = torch.get_num_threads()
    config = LossConfig(model="unused", batch_size=3, max_tokens=64)
    try:
        tables = []
        for n in (1, 2):
            torch.set_num_threads(n)
            tables.append(cluster_losses(as_table(DOCS), config, scan_model=tiny))
    finally:
        torch.set_num_threads(threads)
    assert tables[0].equals(tables[1])

"""trainers.heldout: the seeded held-out sample and each model's per-document loss on it,
checked against transformers' own loss computed document by document."""

from __future__ import annotations

import statistics

import duckdb
import pytest

pytest.importorskip("lm_eval")

from trainers import evaluate as ev  # noqa: E402
from trainers import heldout  # noqa: E402

MAX_TOKENS = 48


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
        intermediate_size=64, max_position_embeddings=2048)
    transformers.GPTNeoXForCausalLM(config).save_pretrained(path)
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=neox.load_tokenizer(), eos_token="<|endoftext|>").save_pretrained(path)
    return path


def _unsampled(warehouse) -> set[int]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return {r[0] for r in con.execute("""
            select doc_id from documents
            where doc_id not in (select doc_id from minipile)
              and doc_id not in (select doc_id from minipile_variant_documents)""").fetchall()}


def test_the_sample_is_unsampled_documents_in_a_seeded_order(warehouse):
    free = _unsampled(warehouse)
    assert len(free) == 10
    docs = heldout.select_heldout(warehouse, 6, seed=3)
    assert len(docs) == 6 and {d.doc_id for d in docs} <= free
    assert [d.doc_id for d in heldout.select_heldout(warehouse, 6, seed=3)] == [d.doc_id for d in docs]
    assert [d.doc_id for d in heldout.select_heldout(warehouse, 10, seed=4)] != \
        [d.doc_id for d in heldout.select_heldout(warehouse, 10, seed=3)]
    everything = heldout.select_heldout(warehouse, 500, seed=3)  # fewer left than asked: all of them
    assert {d.doc_id for d in everything} == free
    assert all(d.cluster_id == d.doc_id % 5 for d in everything)  # from cluster_assignments


def test_bad_input_is_a_clear_error(warehouse):
    with pytest.raises(ValueError, match="positive"):
        heldout.select_heldout(warehouse, 0, seed=1)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("insert into minipile_variant_documents "
                    "select 'all', doc_id, 'train', 0 from documents")
    with pytest.raises(ValueError, match="none is left"):
        heldout.select_heldout(warehouse, 5, seed=1)


def test_losses_match_transformers_document_by_document(warehouse, tiny_model):
    import torch

    docs = heldout.select_heldout(warehouse, 10, seed=7)
    model, tok = heldout.load_model(str(tiny_model))
    losses = heldout.document_losses(model, tok, [d.text for d in docs], max_tokens=MAX_TOKENS,
                                     batch_size=4)
    # smaller batches (a token budget of two documents) give the same losses
    again = heldout.document_losses(model, tok, [d.text for d in docs], max_tokens=MAX_TOKENS,
                                    batch_size=4, tokens_per_batch=2 * MAX_TOKENS)
    assert again.tolist() == pytest.approx(losses.tolist(), rel=1e-6)
    expected = []
    with torch.no_grad():
        for d in docs:  # one document at a time, no padding; HF shifts the labels itself
            ids = torch.tensor([tok(d.text)["input_ids"][:MAX_TOKENS]])
            expected.append(float(model(input_ids=ids, labels=ids).loss))
    assert losses.tolist() == pytest.approx(expected, rel=1e-5)

    rows = heldout.heldout_rows("m", docs, losses, requested=10, seed=7, model_path="p")
    by_task = {r["task"]: r for r in rows}
    overall = by_task["heldout_loss"]
    assert overall["value"] == pytest.approx(statistics.fmean(expected), rel=1e-5)
    assert overall["stderr"] == pytest.approx(statistics.stdev(expected) / len(expected) ** 0.5, rel=1e-4)
    assert overall["n"] == 10 and overall["is_group"] and overall["metric"] == "loss"
    assert not overall["higher_is_better"] and overall["doc_limit"] == 10
    for source in {d.source for d in docs}:
        mine = [x for d, x in zip(docs, expected, strict=True) if d.source == source]
        row = by_task[f"heldout_loss:source={source}"]
        assert row["n"] == len(mine) and row["value"] == pytest.approx(statistics.fmean(mine), rel=1e-5)
        assert (row["stderr"] is None) == (len(mine) == 1)
    clusters = {k for k in by_task if k.startswith("heldout_loss:cluster=")}
    assert clusters == {f"heldout_loss:cluster={d.cluster_id}" for d in docs}
    assert sum(by_task[k]["n"] for k in clusters) == 10


def test_batches_keep_the_token_budget():
    lengths = [5, 10, 10, 10, 40, 3]
    order = sorted(range(6), key=lambda i: lengths[i])
    batches = heldout._batches(order, lengths, batch_size=3, tokens_per_batch=30)
    assert batches == [[5, 0, 1], [2, 3], [4]]
    assert sorted(i for b in batches for i in b) == list(range(6))


def test_evaluate_writes_the_heldout_rows(warehouse, tiny_model):
    rows = ev.evaluate(str(tiny_model), [], device="cpu", db=warehouse, name="tiny",
                       heldout_docs=4, heldout_seed=1, heldout_max_tokens=MAX_TOKENS)
    with duckdb.connect(str(warehouse), read_only=True) as con:
        stored = con.execute("select task, metric, value, n from eval_scores where model = 'tiny' "
                             "order by task").fetchall()
    assert len(stored) == len(rows) and ("heldout_loss", "loss") == stored[0][:2]
    assert stored[0][3] == 4
    with pytest.raises(ValueError, match="no tasks"):
        ev.evaluate(str(tiny_model), [], device="cpu", db=warehouse)

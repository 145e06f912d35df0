"""Tests for the catalog's next-token probabilities (python_udfs.ngrams.lm, python_udfs.ngrams.probabilities).

A tiny random GPT-NeoX (Pythia architecture) saved as a local checkpoint stands in for
Pythia: no download, and the code path is the one a real checkpoint folder takes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from python_udfs.ngrams import tokenizer as neox  # noqa: E402
from python_udfs.ngrams.lm import column_name, load_causal_lm, next_token_probability  # noqa: E402
from python_udfs.ngrams.probabilities import add_model_probabilities, parse_models  # noqa: E402

TINY = dict(vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25,
            use_parallel_residual=True)



def save_tiny(path, **overrides) -> str:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**{**TINY, **overrides}))
    with torch.no_grad():
        # random init gives near-uniform next-token distributions (~1/50304 everywhere);
        # sharpen them (top token ~1-3%, a random one ~1e-6) so a wrong row, position or
        # target shows up well above the tolerances
        model.get_output_embeddings().weight.mul_(20.0)
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    return save_tiny(tmp_path_factory.mktemp("ckpt") / "tiny-neox")


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_causal_lm(checkpoint, device="cpu")


def direct(model, prefixes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """One forward pass per row: P(target | prefix) at the last position, no BOS."""
    out = []
    with torch.no_grad():
        for prefix, target in zip(prefixes, targets):
            ids = torch.tensor([[int(t) for t in prefix]], dtype=torch.long)
            probs = model(input_ids=ids).logits[0, -1].float().softmax(-1)
            out.append(float(probs[int(target)]))
    return np.array(out)


def rows(length: int, n: int = 7, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + length)
    prefixes = rng.integers(0, neox.VOCAB_SIZE, size=(n, length)).astype(np.uint16)
    prefixes[0] = 0  # EOS as a prefix token
    prefixes[1, -1] = neox.VOCAB_SIZE - 1
    targets = rng.integers(0, neox.VOCAB_SIZE, size=n).astype(np.uint16)
    return prefixes, targets


def test_load_local_checkpoint(model) -> None:
    assert not model.training
    assert next(model.parameters()).device.type == "cpu"
    assert next(model.parameters()).dtype == torch.float32
    assert model.get_input_embeddings().num_embeddings == 50304


def test_distribution_is_not_flat(model) -> None:
    # guards the tolerance below: the probabilities differ by far more than 1e-6
    prefixes, _ = rows(2)
    with torch.no_grad():
        ids = torch.as_tensor(prefixes.astype(np.int64))
        probs = model(input_ids=ids).logits[:, -1].softmax(-1)
    assert float(probs.max()) > 1e-2
    assert float(probs.max(dim=-1).values.min()) > 5e-3


@pytest.mark.parametrize("length", [1, 2])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_next_token_probability_matches_direct(model, length, batch_size) -> None:
    prefixes, targets = rows(length)
    # half the targets are each row's most likely next token: large probabilities
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(prefixes.astype(np.int64))).logits[:, -1]
    argmax = logits.argmax(-1).numpy().astype(np.uint16)
    targets[::2] = argmax[::2]

    got = next_token_probability(model, prefixes, targets, batch_size=batch_size, progress=False)
    want = direct(model, prefixes, targets)
    assert got.dtype == np.float64 and got.shape == (len(prefixes),)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)
    assert want[::2].min() > 5e-3  # the argmax rows are far from zero


def test_next_token_probability_uses_last_position(model) -> None:
    prefixes, _ = rows(2)
    with torch.no_grad():
        logits = model(input_ids=torch.as_tensor(prefixes.astype(np.int64))).logits[:, -1]
    targets = logits.argmax(-1).numpy().astype(np.uint16)
    got = next_token_probability(model, prefixes, targets, batch_size=4, progress=False)
    first_only = direct(model, prefixes[:, :1], targets)
    assert np.abs(got - first_only).max() > 1e-3  # the second token matters
    np.testing.assert_allclose(got, direct(model, prefixes, targets), atol=1e-6, rtol=1e-4)


def test_next_token_probability_empty(model) -> None:
    out = next_token_probability(model, np.zeros((0, 2), np.uint16), np.zeros(0, np.uint16),
                                 progress=False)
    assert out.shape == (0,)


def test_column_name() -> None:
    assert column_name("EleutherAI/pythia-70m-deduped") == "p_pythia_70m_deduped"
    assert column_name("EleutherAI/pythia-1.4b") == "p_pythia_1_4b"
    assert column_name("/data/checkpoints/My-Model.v2/") == "p_my_model_v2"
    assert column_name("C:\\models\\pythia-160m") == "p_pythia_160m"
    assert column_name("tiny-neox") == "p_tiny_neox"


def test_small_vocabulary_is_rejected(tmp_path) -> None:
    path = save_tiny(tmp_path / "small-vocab", vocab_size=1000)
    with pytest.raises(ValueError, match="50277"):
        load_causal_lm(path, device="cpu")


def test_just_enough_vocabulary_is_accepted(tmp_path) -> None:
    path = save_tiny(tmp_path / "exact-vocab", vocab_size=neox.VOCAB_SIZE)
    model = load_causal_lm(path, device="cpu")
    assert model.get_input_embeddings().num_embeddings == neox.VOCAB_SIZE


def test_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    with pytest.raises((RuntimeError, OSError), match="nowhere"):
        load_causal_lm(str(tmp_path / "nowhere"), device="cpu")


@pytest.mark.parametrize(("value", "expected"), [
    ([], []),
    ("[]", []),
    ("['a', 'b']", ["a", "b"]),
    ('["EleutherAI/pythia-70m", "/ckpt/x"]', ["EleutherAI/pythia-70m", "/ckpt/x"]),
    ("None", []),
    (None, []),
    ("", []),
    ("EleutherAI/pythia-70m-deduped", ["EleutherAI/pythia-70m-deduped"]),
    ("  /ckpt/tiny  ", ["/ckpt/tiny"]),
    (["EleutherAI/pythia-70m", "/ckpt/x"], ["EleutherAI/pythia-70m", "/ckpt/x"]),
    (("a",), ["a"]),
])
def test_parse_models(value, expected) -> None:
    assert parse_models(value) == expected


def catalog_table(n_prefix: int) -> pa.Table:
    prefixes, targets = rows(n_prefix, n=5, seed=7)
    columns = {f"id{k}": pa.array(prefixes[:, k], pa.uint16()) for k in range(n_prefix)}
    columns[f"id{n_prefix}"] = pa.array(targets, pa.uint16())
    columns["seq"] = pa.array([f"row {i}" for i in range(5)])
    return pa.table(columns)


@pytest.mark.parametrize("n_prefix", [1, 2])
def test_add_model_probabilities(model, checkpoint, n_prefix) -> None:
    table = catalog_table(n_prefix)
    prefix_columns = [f"id{k}" for k in range(n_prefix)]
    out = add_model_probabilities(table, prefix_columns, f"id{n_prefix}", [checkpoint],
                                  batch_size=2, device="cpu")
    assert out.column_names == table.column_names + ["p_tiny_neox"]
    assert out.drop_columns(["p_tiny_neox"]).equals(table)
    prefixes = np.stack([table.column(c).to_numpy() for c in prefix_columns], axis=1)
    want = direct(model, prefixes, table.column(f"id{n_prefix}").to_numpy())
    assert out.column("p_tiny_neox").type == pa.float64()
    np.testing.assert_allclose(out.column("p_tiny_neox").to_numpy(), want, atol=1e-6, rtol=1e-4)


def test_add_model_probabilities_two_models(checkpoint, tmp_path) -> None:
    other = save_tiny(tmp_path / "other-neox", hidden_size=16)
    table = catalog_table(1)
    out = add_model_probabilities(table, ["id0"], "id1", [checkpoint, other], device="cpu")
    assert out.column_names[-2:] == ["p_tiny_neox", "p_other_neox"]
    tiny, other_p = out.column("p_tiny_neox").to_numpy(), out.column("p_other_neox").to_numpy()
    assert (tiny > 0).all() and (other_p > 0).all()
    assert not np.allclose(tiny, other_p, rtol=1e-2, atol=0)


def test_add_model_probabilities_no_models_is_a_no_op(monkeypatch) -> None:
    import python_udfs.ngrams.probabilities as top_ngrams

    def fail(*args, **kwargs):
        raise AssertionError("no model should be loaded")

    monkeypatch.setattr(top_ngrams, "load_causal_lm", fail)
    table = catalog_table(2)
    assert add_model_probabilities(table, ["id0", "id1"], "id2", []) is table
    assert add_model_probabilities(table, ["id0", "id1"], "id2", parse_models("[]")) is table
    empty = table.slice(0, 0)
    assert add_model_probabilities(empty, ["id0", "id1"], "id2", ["x"]) is empty


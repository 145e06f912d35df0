"""Tests for loading the scanned model (python_udfs.scan.model)."""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs.scan.model import is_neox_tokenizer, load_scan_model  # noqa: E402


def test_smollm2_is_the_real_model_with_its_own_tokenizer(smollm2):
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert "GGUF" in smollm2.tokenizer_name
    # SmolLM2's own tokenizer, not NeoX's: "Hello world" is [19556, 905] there
    assert smollm2.encode_batch(["Hello world"])[0].tolist() == [19556, 905]
    assert smollm2.dtype == "float32" and str(smollm2.device) == "cpu"
    assert not is_neox_tokenizer(smollm2)


def test_a_worker_rebuilds_the_model_from_plain_load_args(tiny):
    """What a worker gets is plain data; in the driver's process it finds the model already loaded."""
    args = pickle.loads(pickle.dumps(tiny.load_args))
    assert args == {"model": tiny.source, "device": "cpu", "dtype": "float32", "name": None}
    assert load_scan_model(**args) is tiny
    assert tiny.name == "tiny-neox" and tiny.tokenizer_name and is_neox_tokenizer(tiny)
    renamed = load_scan_model(tiny.source, device="cpu", name="other")
    assert renamed is not tiny and renamed.name == "other" and renamed.slug == "other"


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="cannot load causal LM"):
        load_scan_model(str(tmp_path / "no-such-model"), device="cpu")


def test_unknown_dtype_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match="scan dtype must be float32, float16 or bfloat16, not 'int8'"):
        load_scan_model(tiny.source, device="cpu", dtype="int8")

"""Tests for the offline GPT-NeoX (Pythia) tokenizer wrapper (python_udfs.ngrams.tokenizer)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from tokenizers import Tokenizer

from python_udfs.corpus.sample import iter_sample_records
from python_udfs.ngrams import tokenizer as neox

PII = ["|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||", "|||IP_ADDRESS|||"]

SENTENCES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "First line\nsecond line\n\n\tindented after a blank line\r\nwindows ending",
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve r\u00e9sum\u00e9 "
    "\u2014 \u201cquoted\u201d \u2026",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3002 "
    "\u0420\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442. "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 emoji "
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467 \u00b1\u221e",
    "def f(x: int) -> int:\n    return {'a': [x ** 2, x // 3]}['a'][0]  # comment\n",
    "    leading spaces, trailing spaces    ",
    "a  b   c    d\t\te",
    "",
]


def test_hello_world() -> None:
    assert neox.encode("Hello world") == [12092, 1533]
    assert neox.decode([12092, 1533]) == "Hello world"


def test_vocabulary_is_exactly_pythias_50277_ids() -> None:
    tokenizer = neox.load_tokenizer()
    assert neox.VOCAB_SIZE == 50_277
    assert tokenizer.get_vocab_size(with_added_tokens=True) == 50_277
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    assert len(vocab) == 50_277
    assert sorted(vocab.values()) == list(range(50_277))
    for extra in (50_277, 50_278, 50_279):
        assert tokenizer.id_to_token(extra) is None
    assert len(neox.vocab_strings()) == 50_277


def test_pii_placeholders_are_not_single_tokens() -> None:
    # the package file itself does have them as ids 50277-50279: the wrapper must drop them
    raw = Tokenizer.from_file(str(neox.tokenizer_path()))
    assert raw.get_vocab_size(with_added_tokens=True) == 50_280
    assert raw.encode(PII[0], add_special_tokens=False).ids == [50_277]

    for placeholder in PII:
        ids = neox.encode(placeholder)
        assert len(ids) > 1
        assert all(i < neox.VOCAB_SIZE for i in ids)
        assert neox.decode(ids) == placeholder
    ids = neox.encode(f"mail me at {PII[0]} or call {PII[1]} from {PII[2]}")
    assert max(ids) < neox.VOCAB_SIZE


def test_all_ids_below_vocab_size_on_real_text() -> None:
    texts = [r["text"] for r in iter_sample_records(per_source=5)] + SENTENCES
    for ids in neox.encode_batch(texts):
        assert ids.size == 0 or int(ids.max()) < neox.VOCAB_SIZE


@pytest.mark.parametrize("text", SENTENCES)
def test_decode_encode_round_trip(text: str) -> None:
    assert unicodedata.is_normalized("NFC", text)  # the tokenizer normalises to NFC
    ids = neox.encode(text)
    assert neox.decode(ids) == text
    assert neox.decode(np.asarray(ids, dtype=np.uint16)) == text  # numpy ids decode too


def test_round_trip_on_sample_corpus_documents() -> None:
    texts = [r["text"] for r in iter_sample_records(per_source=4)]
    assert any("\n" in t for t in texts) and any("def " in t for t in texts)
    for text in texts:
        assert neox.decode(neox.encode(text)) == text


def test_no_bos_or_eos_added() -> None:
    ids = neox.encode("Hello world")
    assert neox.EOS_ID not in ids
    assert neox.encode("") == []


def test_encode_batch_uint16_equal_to_encode() -> None:
    texts = SENTENCES + [r["text"] for r in iter_sample_records(per_source=3)]
    arrays = neox.encode_batch(texts)
    assert len(arrays) == len(texts)
    for text, array in zip(texts, arrays):
        assert isinstance(array, np.ndarray)
        assert array.dtype == np.uint16
        assert array.tolist() == neox.encode(text)
    assert neox.encode_batch([]) == []


def test_vocab_strings_are_single_id_decodes() -> None:
    strings = neox.vocab_strings()
    rng = np.random.default_rng(0)
    ids = [0, 1, 187, 1533, 12092, 50_254, 50_276] + rng.integers(0, neox.VOCAB_SIZE, 20).tolist()
    for i in ids:
        assert strings[i] == neox.decode([i])
    assert strings[12092] == "Hello"
    assert strings[1533] == " world"
    assert strings[50_276] == "  "  # the last id: two spaces


def test_eos_is_id_zero() -> None:
    assert neox.EOS_ID == 0
    assert neox.decode([0]) == "<|endoftext|>"
    assert neox.vocab_strings()[0] == "<|endoftext|>"
    assert neox.encode("<|endoftext|>") == [0]
    assert neox.load_tokenizer().token_to_id("<|endoftext|>") == 0


def test_missing_tokenizer_file_is_a_clear_error(monkeypatch, tmp_path) -> None:
    missing = tmp_path / "nowhere" / "tokenizer.json"
    neox.load_tokenizer.cache_clear()
    try:
        monkeypatch.setenv("PILEHOUSE_NEOX_TOKENIZER", str(missing))
        assert neox.tokenizer_path() == missing
        with pytest.raises(FileNotFoundError, match="nowhere"):
            neox.load_tokenizer()
        with pytest.raises(FileNotFoundError):
            neox.encode("Hello world")
    finally:
        monkeypatch.delenv("PILEHOUSE_NEOX_TOKENIZER", raising=False)
        neox.load_tokenizer.cache_clear()
    assert neox.encode("Hello world") == [12092, 1533]


def test_override_with_a_valid_copy(monkeypatch, tmp_path) -> None:
    copy = tmp_path / "tokenizer.json"
    monkeypatch.delenv("PILEHOUSE_NEOX_TOKENIZER", raising=False)
    copy.write_bytes(neox.tokenizer_path().read_bytes())
    neox.load_tokenizer.cache_clear()
    try:
        monkeypatch.setenv("PILEHOUSE_NEOX_TOKENIZER", str(copy))
        assert neox.tokenizer_path() == copy
        assert neox.encode("Hello world") == [12092, 1533]
        assert neox.load_tokenizer().get_vocab_size(with_added_tokens=True) == 50_277
    finally:
        monkeypatch.delenv("PILEHOUSE_NEOX_TOKENIZER", raising=False)
        neox.load_tokenizer.cache_clear()

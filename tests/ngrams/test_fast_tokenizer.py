"""The fast GPT-NeoX encoder (tiktoken BPE) gives the reference tokenizer's ids exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.tokenize import stdlib_texts
from python_udfs.corpus.sample import iter_sample_records
from python_udfs.ngrams import tokenizer as neox


def reference(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in neox.load_tokenizer().encode_batch(list(texts), add_special_tokens=False)]


def assert_identical(texts: list[str]) -> None:
    fast = neox.encode_batch(texts, "fast")
    assert len(fast) == len(texts)
    bad = [i for i, (a, b) in enumerate(zip(fast, reference(texts))) if a.tolist() != b]
    assert not bad, f"{len(bad)} texts differ, first: {texts[bad[0]][:200]!r}"
    assert all(a.dtype == np.uint16 for a in fast)


@pytest.fixture(scope="module")
def fast() -> neox.FastEncoder:
    encoder = neox.load_fast_encoder()
    assert encoder is not None, "the fast encoder must cover the GPT-NeoX file"
    return encoder


def test_default_backend_is_fast(monkeypatch) -> None:
    monkeypatch.delenv("PILEHOUSE_TOKENIZER_BACKEND", raising=False)
    assert neox.backend() == "fast"
    monkeypatch.setenv("PILEHOUSE_TOKENIZER_BACKEND", "reference")
    assert neox.backend() == "reference"
    assert [a.tolist() for a in neox.encode_batch(["Hello world"])] == [[12092, 1533]]
    monkeypatch.setenv("PILEHOUSE_TOKENIZER_BACKEND", "tiktoken")
    with pytest.raises(ValueError, match="tokenizer_backend"):
        neox.encode_batch(["Hello world"])


def test_every_token_bpe_encodes_to_itself_under_both_rules(fast) -> None:
    # the condition under which tiktoken's rank-of-merged-bytes rule and the merge-pair rule
    # agree on this vocabulary: each token's own bytes merge back to it, under both
    model = neox.load_tokenizer().model
    byte_of = neox._bytes_to_unicode()
    vocab = json.loads(neox.tokenizer_path().read_text(encoding="utf-8"))["model"]["vocab"]
    checked = 0
    for token, token_id in vocab.items():
        if token_id < 2 or token_id >= neox.VOCAB_SIZE:
            continue
        assert [t.id for t in model.tokenize(token)] == [token_id], token
        ranks = fast.encoding._core_bpe.encode_single_piece(bytes(byte_of[c] for c in token))
        assert [int(fast.rank_to_id[r]) for r in ranks] == [token_id], token
        checked += 1
    assert checked == 50_254 - 2


def test_hello_world_and_added_tokens(fast) -> None:
    assert fast.encode("Hello world").tolist() == [12092, 1533]
    assert fast.encode("<|endoftext|>").tolist() == [0]
    assert fast.encode("<|padding|>").tolist() == [1]
    assert fast.encode("a  b").tolist() == [66, 50276, 67]  # two spaces: the added whitespace token
    assert fast.encode("").tolist() == []


SPECIAL_CASES = [
    "<|endoftext|>", "<|endoftext|><|endoftext|>", "a<|endoftext|>b", " <|endoftext|> ",
    "<|endoftext|", "<|endoftext|>>", "<<|endoftext|>", "<|padding|><|endoftext|>",
    "end.<|endoftext|>Next document", "<|endoftext|>\u0301", "e\u0301<|endoftext|>e\u0301",
    "|||EMAIL_ADDRESS||| <|endoftext|> |||IP_ADDRESS|||", "<|ENDOFTEXT|>", "<| endoftext |>",
    "x  <|endoftext|>  y", "\n<|padding|>\n\n",
]
WHITESPACE_CASES = (
    [" " * n for n in range(1, 60)] + [f"a{' ' * n}b" for n in range(1, 60)]
    + [f"\n{' ' * n}x" for n in range(1, 30)] + [f"x{' ' * n}\n" for n in range(1, 30)]
    + ["\t\t\tdef f():\n\t\treturn 1", "a \u00a0 \u00a0b", "x\r\n\r\n  y", " \n \n ", "\u3000\u3000x",
       "end   ", "   start", "a \t b", "  \u2028  ", "x" + " " * 100 + "y"]
)
UNICODE_CASES = [
    "Caf\u00e9 vs Cafe\u0301 (NFC composes)", "\u212b\u2126 \u1e9b\u0323 \uac00 \u1100\u1161\u11a8",
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f3f3\ufe0f\u200d\U0001f308",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \u05e9\u05dc\u05d5\u05dd",
    "\u4e2d\u6587\u5b57\u7b26123\uff11\uff12\uff13 \u0661\u0662\u0663", "don't we'll they're I'd I'M O'Neil's",
    "1234567890 3.14159 1e-10 0xDEADBEEF", "\x00\x01\x1b[0m\x7f", "\ufeffBOM", "\U0001d400\U0001d7ce",
    "\u00ad soft\u00adhyphen \u200b zero\u200bwidth", "\ud7ff\ue000\uf8ff\U000f0000",
]


@pytest.mark.parametrize("group", ["special", "whitespace", "unicode"])
def test_identical_on_edge_cases(group: str) -> None:
    texts = {"special": SPECIAL_CASES, "whitespace": WHITESPACE_CASES, "unicode": UNICODE_CASES}[group]
    assert_identical(texts)


def test_unassigned_code_points_go_to_the_reference(fast) -> None:
    texts = ["unassigned \u0378 here", "a \U0003fffe b", "fine text"]
    assert fast.encode(texts[0]) is None and fast.encode(texts[1]) is None
    assert fast.encode(texts[2]) is not None
    assert_identical(texts)


def test_identical_on_stdlib_text() -> None:
    texts = stdlib_texts(400)
    assert len(texts) == 400
    assert any(not t.isascii() for t in texts)
    assert_identical(texts)


def test_identical_on_sample_corpus_mix_and_order_kept() -> None:
    texts = [r["text"] for r in iter_sample_records(per_source=150)]
    assert_identical(texts)
    # threads over chunks keep the input order, and the same input gives the same output
    again = neox.encode_batch(texts[::-1], "fast")[::-1]
    assert all(np.array_equal(a, b) for a, b in zip(again, neox.encode_batch(texts, "fast")))


@pytest.mark.slow
def test_identical_on_the_whole_sample_corpus() -> None:
    texts = [r["text"] for r in iter_sample_records()]
    assert len(texts) > 10_000
    assert_identical(texts)


PIECES = st.sampled_from(["<|endoftext|>", "<|padding|>", "  ", "   ", "\n", "\t", "'s", "'ll", " 's", "e\u0301",
                          "\u00a0", "\r\n", "0", "123", " the", "\U0001f600", "\u200d", "<|", "|>"])
TEXTS = st.lists(st.one_of(st.text(max_size=30), st.text(alphabet=" \n\t'sdmtlvre0123456789aZ.,", max_size=30),
                           PIECES), max_size=12).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXTS, min_size=1, max_size=8))
def test_identical_on_generated_text(texts: list[str]) -> None:
    assert_identical(texts)


def test_a_file_the_construction_does_not_cover_uses_the_reference(monkeypatch, tmp_path) -> None:
    spec = json.loads(neox.tokenizer_path().read_text(encoding="utf-8"))
    spec["normalizer"] = {"type": "NFKC"}
    copy = tmp_path / "tokenizer.json"
    copy.write_text(json.dumps(spec), encoding="utf-8")
    neox.load_tokenizer.cache_clear()
    try:
        monkeypatch.setenv("PILEHOUSE_NEOX_TOKENIZER", str(copy))
        assert neox.load_fast_encoder() is None
        text = "\uff11\uff12 \ufb01"  # NFKC changes these, NFC does not
        assert neox.encode_batch([text], "fast")[0].tolist() == neox.encode(text)
    finally:
        monkeypatch.delenv("PILEHOUSE_NEOX_TOKENIZER", raising=False)
        neox.load_tokenizer.cache_clear()
    assert neox.load_fast_encoder() is not None


def _encode_in_child(texts: list[str]) -> list[list[int]]:
    return [a.tolist() for a in neox.encode_batch(texts, "fast")]


def test_a_forked_child_encodes_after_the_parent_did() -> None:
    import multiprocessing

    texts = [f"document {i}: the quick brown fox" for i in range(64)]
    expected = [a.tolist() for a in neox.encode_batch(texts, "fast")]  # the parent's thread pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_encode_in_child, (texts,)).get(timeout=120) == expected

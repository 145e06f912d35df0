"""The ``pilehouse`` command: every subcommand reaches its tool's own flags, errors are clear, help is light."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from python_udfs import cli

ROOT = Path(__file__).resolve().parents[1]

# flags only that tool's own parser has: seeing them proves the arguments reached it
FLAGS = {
    "ingest": ["inputs", "--text-field", "--source-field", "--default-source"],
    "sample-corpus": ["--out", "--per-source", "--overwrite"],
    "scan": ["--model", "--where", "--docs", "--min-js"],
    "quotas": ["STATS_FILE", "--exclusions", "--sampling-strategy", "--centroids"],
    "review": ["--seeds-dir", "--port", "--host"],
    "report": ["--db", "--out"],
    "train": ["--preset", "--dataset", "--steps", "--run-id", "--recipe", "--optimizer", "--schedule"],
    "evaluate": ["--tasks", "--limit", "--smollm2", "--heldout-docs"],
    "compare": ["model_a", "model_b", "--all", "--variants"],
    "export": ["name", "--out", "--run-results", "--overwrite"],
    "bench embedding": ["--docs", "--batch-size"],
    "bench tokenize": ["--docs", "--other-text"],
    "bench ngrams": ["--docs", "--shards"],
    "bench kmeans": ["--docs", "--clusters"],
    "bench summary": ["--dir"],
    "bench training": ["--preset", "--steps"],
    "bench scan": ["--naive-windows", "--no-bf16"],
    "bench scale": ["--docs", "--factors", "--embed-factors", "--ray-steps"],
}


def leaf_commands(commands: dict[str, cli.Command], prefix: str = "") -> list[str]:
    out = []
    for name, command in commands.items():
        out += leaf_commands(command.commands, f"{prefix}{name} ") if command.commands else [prefix + name]
    return out


def test_every_command_has_a_help_test():
    assert sorted(leaf_commands(cli.COMMANDS)) == sorted(FLAGS)


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_subcommand_help_shows_the_tools_own_flags(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command.split(), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:"), out[:200]
    missing = [flag for flag in FLAGS[command] if flag not in out]
    assert not missing, f"pilehouse {command} --help lacks {missing}:\n{out}"
    assert "COMMAND --help" not in out  # the tool's help, not pilehouse's own list


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in cli.COMMANDS.items():
        assert f"  {name} " in out and command.summary in out


def test_bench_help_lists_the_benchmarks(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pilehouse bench COMMAND")
    assert all(f"  {name} " in out for name in cli.BENCHMARKS)


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: pilehouse COMMAND")


def test_unknown_subcommand_is_a_clear_error(capsys):
    assert cli.main(["sacn", "--docs", "3"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'sacn'" in err and "did you mean 'scan'" in err
    assert "ingest, sample-corpus, scan" in err


def test_unknown_benchmark_is_a_clear_error(capsys):
    assert cli.main(["bench", "embeddings"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'embeddings'" in err and "did you mean 'embedding'" in err
    assert "pilehouse bench --help" in err


def test_console_script_is_declared():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"pilehouse": "python_udfs.cli:main"}
    assert cli.resolve([scripts["pilehouse"]]) is cli.main


def test_help_is_fast_and_imports_no_heavy_library():
    code = ("import sys; from python_udfs.cli import main; rc = main(['--help']); "
            "heavy = [m for m in ('torch', 'transformers', 'duckdb', 'pyarrow', 'numpy') if m in sys.modules]; "
            "assert rc == 0 and not heavy, heavy")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)


def make_module(tmp_path: Path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_arguments_pass_through_unchanged(tmp_path, monkeypatch):
    make_module(tmp_path, monkeypatch, "pilehouse_fake_tool", (
        "import sys\n"
        "seen = []\n"
        "def main(argv=None):\n"
        "    seen.append((list(argv), sys.argv[0]))\n"
        "    return 3\n"
        "def main_without_argv():\n"
        "    seen.append((sys.argv[1:], sys.argv[0]))\n"))
    monkeypatch.setitem(cli.COMMANDS, "fake", cli.Command("a fake", ("pilehouse_fake_tool:main",)))
    monkeypatch.setitem(cli.BENCHMARKS, "fake", cli.Command("a fake", ("pilehouse_fake_tool:main_without_argv",)))
    argv_before = list(sys.argv)
    assert cli.main(["fake", "--x", "1", "a b", "--help"]) == 3  # the tool's exit status, its own --help
    assert cli.main(["bench", "fake", "--docs", "5"]) == 0
    assert sys.modules["pilehouse_fake_tool"].seen == [(["--x", "1", "a b", "--help"], "pilehouse fake"),
                                        (["--docs", "5"], "pilehouse bench fake")]
    assert sys.argv == argv_before


def test_fallback_only_when_the_module_is_missing(tmp_path, monkeypatch):
    from python_udfs.corpus import ingest

    assert cli.resolve(["python_udfs.no_such_module:main", "python_udfs.corpus.ingest:main"]) is ingest.main
    # a module that exists but fails inside must raise, not silently fall back
    make_module(tmp_path, monkeypatch, "pilehouse_broken_tool", "import pilehouse_missing_dependency\n")
    with pytest.raises(ModuleNotFoundError, match="pilehouse_missing_dependency"):
        cli.resolve(["pilehouse_broken_tool:main", "python_udfs.corpus.ingest:main"])
    with pytest.raises(cli.CommandError, match="python_udfs.no_such_module"):
        cli.resolve(["python_udfs.no_such_module:main"])


def test_scan_resolves_to_the_scan_cli():
    func = cli.resolve(cli.COMMANDS["scan"].targets)
    assert func.__name__ == "main" and func.__module__ == "python_udfs.scan.cli"


def test_ingest_runs_through_pilehouse(tmp_path):
    corpus = tmp_path / "corpus.jsonl.gz"
    with gzip.open(corpus, "wt") as f:
        for i in range(3):
            f.write(json.dumps({"text": f"document {i}", "meta": {"pile_set_name": "test"}}) + "\n")
        f.write("{not json\n")
    lake = tmp_path / "lake"
    assert cli.main(["ingest", str(corpus), "--lake", str(lake)]) == 0
    import pyarrow.parquet as pq

    texts = []  # the accepted documents, wherever in the lake ingest writes them
    for path in sorted(lake.rglob("*.parquet")):
        table = pq.read_table(path)
        if {"text", "reason"} <= set(table.column_names):  # a corpus part: every record of one file
            texts += [row["text"] for row in table.to_pylist() if row["reason"] is None]
    assert sorted(texts) == ["document 0", "document 1", "document 2"]

"""python_udfs.settings is the one owner of every setting: the dataclasses, the command lines and
dbt (macros/paths.sql, the profile, the YAML configs) all agree with it, checked here by
reading each of them rather than by repeating the values."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from python_udfs import settings
from python_udfs.clustering.embed import EmbedConfig
from python_udfs.clustering.kmeans import KMeansConfig
from python_udfs.corpus.readers import CorpusConfig
from python_udfs.scan.runner import ScanSettings
from python_udfs.settings import int_or_none, none_if_blank, true_or_false
from trainers.presets import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DBT = Path(sys.executable).parent / "dbt"



#: (dataclass, field) -> the dbt var whose default it must equal.
MIRRORS: list[tuple[type, str, str]] = [
    *[(EmbedConfig, field, f"embedding_{field}")
      for field in ("model", "max_tokens", "prefix", "batch_size", "part_size", "device", "dtype", "backend")],
    *[(KMeansConfig, field, f"kmeans_{field}")
      for field in ("batch_size", "n_init", "max_epochs", "tol", "fit_fraction")],
    (KMeansConfig, "seed", "seed"),
    *[(ScanSettings, field, f"scan_{field}")
      for field in ("seq_len", "min_p_long", "min_js", "max_tokens", "batch_size", "part_docs")],
    (TrainConfig, "dataset", "train_dataset"),
    (TrainConfig, "out_dir", "train_out_dir"),
    (TrainConfig, "run_id", "train_run_id"),
    (TrainConfig, "seed", "seed"),
]


@pytest.mark.parametrize("cls, field, var", MIRRORS, ids=[f"{c.__name__}.{f}" for c, f, _ in MIRRORS])
def test_dataclass_defaults_are_the_dbt_vars(cls: type, field: str, var: str) -> None:
    project = yaml.safe_load((ROOT / "dbt_project.yml").read_text())["vars"]  # read here, not via settings
    (spec,) = [f for f in dataclasses.fields(cls) if f.name == field]
    assert spec.default == project[var], f"{cls.__name__}.{field} = {spec.default!r}, dbt var {var} = {project[var]!r}"


def test_default_names_a_missing_var() -> None:
    with pytest.raises(KeyError, match="'no_such_setting' is not a var in dbt_project.yml"):
        settings.default("no_such_setting")


def test_resolve_prefers_the_given_value() -> None:
    assert settings.resolve("seed", {"seed": 7}) == 7
    assert settings.resolve("seed", {"seed": None}) == settings.default("seed")
    assert settings.resolve("embedding_prefix", {"embedding_prefix": ""}) == ""


# --- the command lines read the same defaults ----------------------------------------------

class _Parsed(Exception):
    pass


def parser_of(monkeypatch: pytest.MonkeyPatch, main: Callable, argv: list[str] | None = None,
              ) -> argparse.ArgumentParser:
    """The parser a CLI's main builds, caught when it parses (nothing runs)."""
    caught: list[argparse.ArgumentParser] = []

    def parse_args(self, args=None, namespace=None):
        caught.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    with pytest.raises(_Parsed):
        main() if argv is None else main(argv)
    return caught[0]


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """PILEHOUSE_DB and PILEHOUSE_LAKE pointing elsewhere: every default must follow them."""
    db, lake = tmp_path / "elsewhere.duckdb", tmp_path / "elsewhere-lake"
    monkeypatch.setenv("PILEHOUSE_DB", str(db))
    monkeypatch.setenv("PILEHOUSE_LAKE", str(lake))
    return db, lake


def test_scan_cli_defaults(monkeypatch, moved) -> None:
    from python_udfs.scan.cli import main

    parser = parser_of(monkeypatch, main, [])
    scan = ScanSettings()
    assert parser.get_default("db") == str(moved[0]) and parser.get_default("lake") == str(moved[1])
    for flag, var in [("model", "scan_model"), ("where", "scan_where"), ("docs", "scan_docs"), ("seed", "seed")]:
        assert parser.get_default(flag) == settings.default(var), flag
    for flag in ("seq_len", "min_p_long", "min_js", "max_tokens", "batch_size", "part_docs"):
        assert parser.get_default(flag) == getattr(scan, flag), flag


def test_ingest_cli_defaults(monkeypatch, moved) -> None:
    from python_udfs.corpus.ingest import main

    parser = parser_of(monkeypatch, main, [])
    assert parser.get_default("lake") == str(moved[1])
    config = CorpusConfig(inputs=[])
    for field in ("text_field", "source_field", "default_source", "hf_split", "shard_size"):
        assert parser.get_default(field) == getattr(config, field), field


def test_app_and_trainer_clis_default_to_the_same_warehouse(monkeypatch, moved) -> None:
    from python_udfs.apps.report.build import main as report_main
    from python_udfs.apps.review.__main__ import parse_args as review_args
    from trainers.compare import main as compare_main

    for main, argv in [(report_main, []), (review_args, []), (compare_main, ["a", "b"])]:
        assert str(parser_of(monkeypatch, main, argv).get_default("db")) == str(moved[0]), main.__module__
    assert TrainConfig().db == str(moved[0])


def test_bench_defaults(monkeypatch) -> None:
    import bench.embedding
    import bench.ngrams

    assert parser_of(monkeypatch, bench.embedding.main).get_default("batch_size") == EmbedConfig.batch_size
    assert parser_of(monkeypatch, bench.ngrams.main).get_default("shards") == settings.default("ngram_shards")


# --- locations ---------------------------------------------------------------------------

def test_db_path_honours_pilehouse_db(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PILEHOUSE_DB", raising=False)
    assert settings.db_path() == Path(settings.DEFAULT_DB)
    monkeypatch.setenv("PILEHOUSE_DB", str(tmp_path / "x.duckdb"))
    assert settings.db_path() == tmp_path / "x.duckdb"


def test_lake_dir_var_beats_env_beats_default(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("PILEHOUSE_LAKE", raising=False)
    assert settings.lake_dir() == Path(settings.DEFAULT_LAKE)
    monkeypatch.setenv("PILEHOUSE_LAKE", str(tmp_path / "env"))
    assert settings.lake_dir() == tmp_path / "env"
    assert settings.lake_dir({"lake_dir": "None"}) == tmp_path / "env"  # dbt's rendering of an unset var
    assert settings.lake_dir({"lake_dir": str(tmp_path / "var")}) == tmp_path / "var"
    with pytest.raises(ValueError, match="unknown lake folder 'nope'"):
        settings.lake_path("nope")


def test_profile_falls_back_to_the_default_db() -> None:
    profile = yaml.safe_load((ROOT / "profiles.yml").read_text())
    path = profile["pilehouse"]["outputs"]["dev"]["path"]
    assert re.fullmatch(r"\{\{ env_var\('PILEHOUSE_DB', '([^']+)'\) \}\}", path)[1] == settings.DEFAULT_DB


LITERALS = re.compile("|".join(re.escape(p) for p in (settings.DEFAULT_DB, settings.DEFAULT_LAKE)))
#: the one Python owner and its dbt twin; YAML (which cannot call either) is checked through dbt below
OWNERS = {"python_udfs/settings.py", "macros/paths.sql"}


def test_no_other_code_spells_the_default_paths() -> None:
    files = subprocess.run(["git", "ls-files", "*.py", "*.sql"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found = [f"{name}:{n}" for name in files if name not in OWNERS and not name.startswith("tests/")
             for n, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1)
             if LITERALS.search(line)]
    assert not found, "use settings.db_path/lake_dir/lake_path or macros/paths.sql:\n" + "\n".join(found)


# --- dbt's twin: macros/paths.sql, the corpus source, the Python models' lake_dir ------------

NON_DEFAULT = {"embedding_model": "Some/Model_X.v2", "embedding_max_tokens": 1024, "embedding_prefix": "query: ",
               "embedding_dtype": "bfloat16", "ngram_source": "minipile", "ngram_seq_len": 1024}


def dbt_paths(tmp_path: Path, dbt_vars: dict, lake_env: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PILEHOUSE_LAKE"}
    env.update(PILEHOUSE_DB=str(tmp_path / "paths.duckdb"), DBT_SEND_ANONYMOUS_USAGE_STATS="false")
    if lake_env is not None:
        env["PILEHOUSE_LAKE"] = lake_env
    result = subprocess.run(
        [str(DBT), "run-operation", "print_lake_paths", "--quiet", "--vars", json.dumps(dbt_vars),
         "--project-dir", str(ROOT), "--profiles-dir", str(ROOT),
         "--target-path", str(tmp_path / "target"), "--log-path", str(tmp_path / "logs")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"dbt run-operation failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["defaults", "non-default vars, PILEHOUSE_LAKE", "lake_dir var over PILEHOUSE_LAKE"])
def test_python_and_dbt_give_the_same_paths(case: str, tmp_path: Path, monkeypatch) -> None:
    dbt_vars, lake_env = {
        "defaults": ({}, None),
        "non-default vars, PILEHOUSE_LAKE": (NON_DEFAULT, str(tmp_path / "env-lake")),
        "lake_dir var over PILEHOUSE_LAKE": ({"lake_dir": str(tmp_path / "var-lake"), "embedding_max_tokens": 64},
                                             str(tmp_path / "env-lake")),
    }[case]
    got = dbt_paths(tmp_path, dbt_vars, lake_env)
    if lake_env is None:
        monkeypatch.delenv("PILEHOUSE_LAKE", raising=False)
    else:
        monkeypatch.setenv("PILEHOUSE_LAKE", lake_env)
    lake = settings.lake_dir(dbt_vars)
    assert got["lake_dir"] == str(lake)
    for kind in settings.LAKE_KINDS:
        assert got[kind] == str(settings.lake_path(kind, dbt_vars)), kind
    assert got["source_records"] == f"'{settings.lake_path('corpus', dbt_vars)}/part-*.parquet'"
    assert got["model_lake_dirs"] and set(got["model_lake_dirs"].values()) == {str(lake)}, got["model_lake_dirs"]
    assert got["db"] == str(tmp_path / "paths.duckdb")
    if dbt_vars == NON_DEFAULT:  # the vars really moved the folders
        assert "some-model-x-v2-1024-" in got["embeddings"] and got["ngrams"].endswith("/minipile-train-1024")


def test_every_var_a_python_model_reads_reaches_it() -> None:
    """dbt hands a Python model only the config keys its parser finds in `dbt.config.get` calls;
    a call it does not look into (e.g. inside `x or y`) silently returns None."""
    from dbt.parser.models import PythonParseVisitor

    for path in sorted((ROOT / "models").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        read = set(re.findall(r"dbt\.config\.get\(\s*['\"](\w+)['\"]", source))
        visitor = PythonParseVisitor(None)
        visitor.visit(ast.parse(source))
        seen = {args[0] for func, args, _ in visitor.dbt_function_calls if func == "get"}
        assert read <= seen, f"{path.relative_to(ROOT)}: dbt never passes {sorted(read - seen)}"


# --- the dbt-var helpers -----------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", "   ", "None", "none", "null", " None "])
def test_none_if_blank_unset(value: object) -> None:
    assert none_if_blank(value) is None
    assert int_or_none(value) is None


@pytest.mark.parametrize("value, expected", [
    ("abc", "abc"), ("  padded  ", "padded"), (0, "0"), (12, "12"), (1.5, "1.5"),
    ("NULLABLE", "NULLABLE"), (False, "False"),
])
def test_none_if_blank_keeps_values(value: object, expected: str) -> None:
    assert none_if_blank(value) == expected


@pytest.mark.parametrize("value, expected", [
    ("220", 220), (220, 220), ("0", 0), (0, 0), ("3.0", 3), ("3.9", 3), (7.0, 7), (" 16 ", 16),
    ("-2", -2), ("1e3", 1000),
])
def test_int_or_none_parses(value: object, expected: int) -> None:
    result = int_or_none(value)
    assert result == expected and isinstance(result, int)


@pytest.mark.parametrize("value", ["ten", "1,000", "[]"])
def test_int_or_none_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError):
        int_or_none(value)


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), ("True", True), ("False", False), ("true", True), (" false ", False),
    ("1", True), ("0", False), ("yes", True), ("no", False), (None, False), ("", False), ("None", False),
])
def test_true_or_false_parses(value: object, expected: bool) -> None:
    assert true_or_false(value) is expected


@pytest.mark.parametrize("value", ["maybe", "2", "t rue"])
def test_true_or_false_rejects_garbage(value: str) -> None:
    with pytest.raises(ValueError, match="expected true or false"):
        true_or_false(value)


def test_make_merges_a_vars_file_with_executor_overrides(tmp_path):
    """`make build VARS=f.yml EXECUTOR=ray RAY_WORKERS=2` hands dbt one JSON object."""
    import json
    import subprocess
    import sys

    from python_udfs.settings import merged_vars

    vars_file = tmp_path / "v.yml"
    vars_file.write_text("seed: 7\nexecutor: local\n")
    assert merged_vars(str(vars_file), {"executor": "ray", "ray_workers": "2", "ray_address": ""}) == \
        {"seed": 7, "executor": "ray", "ray_workers": "2"}
    assert merged_vars(None, {"executor": ""}) == {}
    with pytest.raises(KeyError, match="not dbt vars: executer"):
        merged_vars(None, {"executer": "ray"})
    out = subprocess.run([sys.executable, "-m", "python_udfs.settings", str(vars_file), "executor=ray"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {"seed": 7, "executor": "ray"}

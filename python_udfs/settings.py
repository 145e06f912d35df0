"""One owner for every setting: defaults, the warehouse file and the lake's paths.

- **Defaults** live only in ``dbt_project.yml``'s ``vars:`` (each with a comment saying what
  it does). Python dataclasses and CLI flags read them from there (``default("seed")``), so
  dbt, the dataclasses and the command line agree by construction.
- **Locations**: ``db_path()`` is ``$PILEHOUSE_DB`` or ``warehouse/pilehouse.duckdb``;
  ``lake_dir()`` is the ``lake_dir`` var, else ``$PILEHOUSE_LAKE``, else ``warehouse/lake``.
  ``lake_path(kind, vars)`` names each step's folder in the lake; ``macros/paths.sql``
  computes the same paths inside dbt (``tests/test_settings.py`` checks they agree).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILE = ROOT / "dbt_project.yml"
DEFAULT_DB = "warehouse/pilehouse.duckdb"
DEFAULT_LAKE = "warehouse/lake"

#: The lake's folders, one per step output (warehouse/README.md describes each).
LAKE_KINDS = ("corpus", "embeddings", "assignments", "tokens", "ngrams", "scan")


@lru_cache(maxsize=1)
def project_vars() -> dict[str, Any]:
    """The ``vars:`` of dbt_project.yml: every setting's one default."""
    import yaml

    with open(PROJECT_FILE, encoding="utf-8") as fh:
        project = yaml.safe_load(fh)
    return dict(project.get("vars") or {})


def default(name: str) -> Any:
    """A setting's default, as written in dbt_project.yml (KeyError names a missing var)."""
    values = project_vars()
    if name not in values:
        raise KeyError(f"{name!r} is not a var in {PROJECT_FILE.name}: add it there, with a comment")
    return values[name]


def resolve(name: str, given: Mapping[str, Any] | None = None) -> Any:
    """``given[name]`` when set (dbt config, CLI), else the project default."""
    if given is not None and name in given and given[name] is not None:
        return given[name]
    return default(name)


def db_path() -> Path:
    """The warehouse file: ``$PILEHOUSE_DB``, else warehouse/pilehouse.duckdb (relative to the cwd)."""
    return Path(os.environ.get("PILEHOUSE_DB") or DEFAULT_DB)


def lake_dir(given: Mapping[str, Any] | None = None) -> Path:
    """The parquet lake: the ``lake_dir`` var, else ``$PILEHOUSE_LAKE``, else warehouse/lake."""
    if given is not None and none_if_blank(given.get("lake_dir")):
        return Path(str(given["lake_dir"]))
    return Path(os.environ.get("PILEHOUSE_LAKE") or DEFAULT_LAKE)


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()


def embedding_slug(model: str, max_tokens: int, prefix: str = "", dtype: str = "float32",
                   backend: str = "torch") -> str:
    """The embedding folder's name: changes whenever the vectors would change."""
    key = f"{model}|{int(max_tokens)}|{prefix or ''}"
    if dtype and dtype != "float32":
        key += f"|{dtype}"
    if backend and backend != "torch":
        key += f"|{backend}"
    return f"{slugify(model)}-{int(max_tokens)}-{hashlib.md5(key.encode()).hexdigest()[:8]}"


def ngram_source_slug(source: str) -> str:
    if source not in ("documents", "minipile"):
        raise ValueError(f"ngram_source must be 'documents' or 'minipile', not {source!r}")
    return "minipile-train" if source == "minipile" else "documents"


def lake_path(kind: str, given: Mapping[str, Any] | None = None) -> Path:
    """A step's folder in the lake, from the build's vars (``given``) over the defaults."""
    lake = lake_dir(given)
    if kind == "corpus":
        return lake / "corpus"
    if kind in ("embeddings", "assignments"):
        slug = embedding_slug(resolve("embedding_model", given), resolve("embedding_max_tokens", given),
                              resolve("embedding_prefix", given) or "", resolve("embedding_dtype", given),
                              resolve("embedding_backend", given))
        return lake / kind / slug
    if kind == "tokens":
        return lake / "tokens" / ngram_source_slug(resolve("ngram_source", given))
    if kind == "ngrams":
        source = ngram_source_slug(resolve("ngram_source", given))
        return lake / "ngrams" / f"{source}-{int(resolve('ngram_seq_len', given))}"
    if kind == "scan":
        return lake / "scan"
    raise ValueError(f"unknown lake folder {kind!r}: one of {', '.join(LAKE_KINDS)}")


def none_if_blank(value: object) -> str | None:
    """dbt renders a null var into YAML config as 'None' or ''; treat both as unset."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", "None", "none", "null") else text


def int_or_none(value: object) -> int | None:
    text = none_if_blank(value)
    return None if text is None else int(float(text))


def true_or_false(value: object) -> bool:
    """A boolean var as dbt renders it into YAML config ('True', 'false', '1', ''): blank is
    False; anything but a yes or a no is an error rather than a silent False."""
    if isinstance(value, bool):
        return value
    text = (none_if_blank(value) or "false").lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, not {value!r}")


def merged_vars(vars_file: str | None, overrides: Mapping[str, str | None]) -> dict[str, Any]:
    """A YAML vars file (or none) with ``overrides`` on top, blank overrides ignored: what
    ``make build VARS=file.yml EXECUTOR=ray`` hands to ``dbt --vars`` as one JSON object."""
    import yaml

    merged: dict[str, Any] = {}
    if vars_file:
        loaded = yaml.safe_load(Path(vars_file).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{vars_file} must hold a mapping of dbt vars, not {type(loaded).__name__}")
        merged.update(loaded)
    unknown = sorted(set(overrides) - set(project_vars()))
    if unknown:
        raise KeyError(f"not dbt vars: {', '.join(unknown)}")
    merged.update({key: value for key, value in overrides.items() if value not in (None, "")})
    return merged


if __name__ == "__main__":  # python -m python_udfs.settings [FILE] [key=value ...] -> JSON for dbt --vars
    import json
    import sys

    args = sys.argv[1:]
    given_file = args[0] if args and "=" not in args[0] else None
    pairs = dict(arg.split("=", 1) for arg in args[1 if given_file else 0:])
    print(json.dumps(merged_vars(given_file, pairs)))

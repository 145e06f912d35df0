"""``pilehouse``: one command for what people run outside dbt.

    pilehouse ingest warehouse/sample/sample_corpus.jsonl.gz
    pilehouse scan --model smollm2 --docs 20 --where "d.source = 'BBC News'"
    pilehouse quotas cluster_stats.csv --sampling-strategy density --total 1010500
    pilehouse train --preset tiny --dataset minipile
    pilehouse export minipile --out exports/minipile
    pilehouse bench ngrams --docs 1000
    pilehouse COMMAND --help          # that tool's own flags

Each command is a ``module:function`` imported only when it runs, so ``pilehouse --help``
stays fast and never imports torch; the remaining arguments go to the tool unchanged.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PROG = "pilehouse"
DESCRIPTION = "pilehouse: the commands people run outside dbt (`dbt build` / `make build` does the rest)."


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line summary and where its ``main`` lives.

    ``targets`` are tried in order; a later one is used only when an earlier module does not
    exist (a module that moved), never to hide an
    import error inside a module that does exist. ``commands`` makes a group (``bench NAME``).
    """

    summary: str
    targets: tuple[str, ...] = ()
    commands: dict[str, Command] = field(default_factory=dict)


BENCHMARKS = {
    "embedding": Command("embedding docs/s against plain SentenceTransformer.encode, with peak memory",
                         ("bench.embedding:main",)),
    "tokenize": Command("GPT-NeoX tokenization MB/s against the tokenizers library's encode_batch, ids compared",
                        ("bench.tokenize:main",)),
    "ngrams": Command("n-gram counting and the end-to-end build, tokens/s per core, against a DuckDB group by",
                      ("bench.ngrams:main",)),
    "kmeans": Command("k-means assignment GFLOP/s against numpy's matmul peak of the same shapes",
                      ("bench.kmeans:main",)),
    "training": Command("the trainer's tokens/s and MFU against a plain transformers.Trainer loop",
                        ("bench.training:main",)),
    "scan": Command("prompt-scan windows/s against the naive and the catalog's loops", ("bench.prompt_scan:main",)),
    "summary": Command("one table of every result in bench/results/ (ratios, targets, fidelity, peaks)",
                       ("bench.results:main",)),
    "scale": Command("every step at N, 4N, 16N docs (time, peak RSS), Ray against local, a Pile projection",
                     ("bench.scale:main",)),
}

COMMANDS = {
    "ingest": Command("read a corpus (JSON lines, parquet, hf:NAME) into the lake: documents and rejected records",
                      ("python_udfs.corpus.ingest:main",)),
    "sample-corpus": Command("write the embedded sample corpus (deterministic, Pile format)",
                             ("python_udfs.corpus.sample:main",)),
    "scan": Command("the prompt scan over a slice of the warehouse (the parts dbt's tag:scan reads)",
                    ("python_udfs.scan.cli:main",)),
    "quotas": Command("MiniPile's per-cluster quotas from a stats file, as int_cluster_quotas computes them",
                      ("python_udfs.minipile.cli:main",)),
    "review": Command("serve the cluster review page on the loopback (writes seeds/cluster_exclusions.csv)",
                      ("python_udfs.apps.review.__main__:main",)),
    "report": Command("write the HTML report of the warehouse (reports/report.html)",
                      ("python_udfs.apps.report.build:main",)),
    "train": Command("train a Pythia-style model on a warehouse table (resumable)", ("trainers.train:main",)),
    "evaluate": Command("score a model with lm-evaluation-harness into eval_scores", ("trainers.evaluate:main",)),
    "compare": Command("compare two models' eval_scores with 95% intervals (--variants: an experiment)",
                       ("trainers.compare:main",)),
    "export": Command("write minipile, a variant or a catalog table as a Hugging Face dataset folder",
                      ("python_udfs.export:main",)),
    "bench": Command("benchmarks against their baselines: pilehouse bench NAME", commands=BENCHMARKS),
}


class CommandError(Exception):
    """A command line pilehouse cannot dispatch; the message says what to type instead."""


def usage(commands: dict[str, Command], prog: str, description: str) -> str:
    width = max(len(name) for name in commands) + 2
    lines = [f"usage: {prog} COMMAND [ARGS ...]", "", description, "", "commands:"]
    lines += [f"  {name:<{width}}{command.summary}" for name, command in commands.items()]
    lines += ["", f"`{prog} COMMAND --help` shows that command's own flags."]
    return "\n".join(lines) + "\n"


def resolve(targets: Sequence[str]) -> Callable:
    """Import the first target whose module exists and return its function."""
    missing = []
    for target in targets:
        module_name, _, function = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # only "this module is not there" falls through; a missing dependency inside it is the user's error
            if err.name is None or not (module_name == err.name or module_name.startswith(err.name + ".")):
                raise
            missing.append(module_name)
            continue
        return getattr(module, function)
    raise CommandError(f"none of {', '.join(missing)} is installed (is the pilehouse package installed?)")


def run(func: Callable, prog: str, args: list[str]) -> int:
    """Call a tool's ``main`` with ``args``: as its argv parameter, or as ``sys.argv`` when it takes none.

    ``sys.argv[0]`` is the subcommand for the call, so the tool's argparse usage reads ``pilehouse X``.
    """
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        takes_argv = any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                         for p in inspect.signature(func).parameters.values())
        result = func(args) if takes_argv else func()
    finally:
        sys.argv = saved
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def dispatch(commands: dict[str, Command], prog: str, argv: list[str], description: str) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        # asked for: help on stdout, exit 0; nothing given: the same on stderr, exit 2 (argparse's convention)
        (sys.stdout if argv else sys.stderr).write(usage(commands, prog, description))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    command = commands.get(name)
    if command is None:
        close = difflib.get_close_matches(name, commands, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise CommandError(f"unknown command {name!r}{hint}; choose from: {', '.join(commands)}. "
                           f"`{prog} --help` lists them")
    if command.commands:
        return dispatch(command.commands, f"{prog} {name}", rest, command.summary)
    return run(resolve(command.targets), f"{prog} {name}", rest)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pilehouse`` console script (``[project.scripts]`` in pyproject.toml)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return dispatch(COMMANDS, PROG, args, DESCRIPTION)
    except CommandError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

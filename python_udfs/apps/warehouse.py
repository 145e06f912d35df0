"""The one read-only reader of the warehouse that the apps share (the review page, the report).

Each ``connect()`` opens the DuckDB file read-only and closes it afterwards, so a running
`dbt build` is never blocked by an app for longer than one read. ``file_search_path`` is set
to the project root, so the views over the lake's relative parquet paths resolve whatever
the working directory. A missing file or one locked by a build raises
``WarehouseUnavailable`` with a message that says what to do.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from python_udfs import settings


class WarehouseUnavailable(Exception):
    """The warehouse cannot be read now; the message says what to do."""


def _command_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    words = [w.decode("utf-8", "replace") for w in raw.split(b"\0") if w]
    # the program's own name and its first arguments: `dbt build --threads 2`, `harlequin ...`
    words = [Path(words[0]).name, *words[1:]] if words else []
    if len(words) > 1 and words[0].startswith("python"):
        words = words[1:]
        words[0] = Path(words[0]).name if words[0].startswith("/") else words[0]
    return " ".join(" ".join(words).split())[:120]


def lock_message(db: str | Path, error: BaseException | str, wanted: str) -> str | None:
    """A readable message for DuckDB's lock error on ``db`` (None when ``error`` is not one):
    which process holds it (PID and command), and what to do. ``wanted``: what was refused."""
    text = str(error)
    if "lock" not in text.lower():
        return None
    match = re.search(r"\(PID (\d+)\)", text)
    holder = "another process"
    if match:
        pid = int(match[1])
        command = _command_of(pid)
        holder = f"process {pid}" + (f" ({command})" if command else "")
    return (f"The warehouse {db} is in use by {holder}: DuckDB lets one process write it, or several read "
            f"it, never both. {wanted} was refused at once and nothing was changed. Wait for that process "
            "to finish (a dbt build, or close make shell / make review), then run it again.")


def check_free(db: str | Path, read_only: bool) -> str | None:
    """None when ``db`` can be opened now (read-only, or for writing); else why not. Opens and
    closes it at once; a missing file is free (a build creates it)."""
    db = Path(db)
    if not db.exists():
        return None
    try:
        duckdb.connect(str(db), read_only=read_only).close()
    except duckdb.Error as exc:
        return lock_message(db, exc, "Reading it" if read_only else "Writing it (dbt build)")
    return None


def sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class WarehouseReader:
    """The warehouse file (``settings.db_path()`` by default), opened read-only per use.

    root: the folder the lake's relative paths are relative to (the project root, where dbt runs).
    """

    def __init__(self, db: str | Path | None = None, root: str | Path | None = None) -> None:
        self.db = Path(db) if db is not None else settings.db_path()
        self.root = Path(root) if root is not None else settings.ROOT

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if not self.db.exists():
            raise WarehouseUnavailable(
                f"The warehouse {self.db} does not exist: run `make minipile` first "
                "(or point --db / $PILEHOUSE_DB at a built warehouse)."
            )
        try:
            con = duckdb.connect(str(self.db), read_only=True)
        except duckdb.Error as exc:
            message = lock_message(self.db, exc, "Reading it")
            if message:
                raise WarehouseUnavailable(message) from exc
            raise WarehouseUnavailable(f"Cannot open the warehouse {self.db}: {exc}") from exc
        try:
            con.execute(f"set file_search_path = {sql_string(str(self.root.resolve()))}")
            yield con
        finally:
            con.close()

    @staticmethod
    def tables(con: duckdb.DuckDBPyConnection) -> set[str]:
        """Tables and views of the main schema."""
        return {row[0] for row in con.execute(
            "select table_name from information_schema.tables where table_schema = 'main'"
        ).fetchall()}


def main(argv: list[str] | None = None) -> int:
    """`python -m python_udfs.apps.warehouse check DB [--write]`: exit 1 with the reason when DB is
    locked (make shell runs it before harlequin, which would show only DuckDB's raw error)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m python_udfs.apps.warehouse")
    parser.add_argument("command", choices=["check"])
    parser.add_argument("db", type=Path)
    parser.add_argument("--write", action="store_true", help="check that it can be written (default: read)")
    args = parser.parse_args(argv)
    problem = check_free(args.db, read_only=not args.write)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

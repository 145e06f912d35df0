"""The one read-only reader of the warehouse that the apps share (the review page, the report).

Each ``connect()`` opens the DuckDB file read-only and closes it afterwards, so a running
`dbt build` is never blocked by an app for longer than one read. ``file_search_path`` is set
to the project root, so the views over the lake's relative parquet paths resolve whatever
the working directory. A missing file or one locked by a build raises
``WarehouseUnavailable`` with a message that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from python_udfs import settings


class WarehouseUnavailable(Exception):
    """The warehouse cannot be read now; the message says what to do."""


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
            if "lock" in str(exc).lower():
                raise WarehouseUnavailable(
                    f"The warehouse {self.db} is locked by another process (a running dbt build?): "
                    "try again when it has finished."
                ) from exc
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

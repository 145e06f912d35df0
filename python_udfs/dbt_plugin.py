"""dbt-duckdb plugin: registers pilehouse's Python functions as DuckDB UDFs on every connection.

Listed under ``plugins:`` in ``profiles.yml``, whose ``config:`` hands it the build's
``--vars`` for the embedding (a profile sees only command-line vars); the rest come from
dbt_project.yml. So ``pilehouse_embed`` embeds a query exactly as ``int_documents_embedded``
embedded the documents of the same build. The functions load their models lazily, so a
connection that never calls them pays nothing.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from duckdb import DuckDBPyConnection

from python_udfs import udfs


def given_vars(plugin_config: dict[str, Any]) -> dict[str, Any]:
    """The vars the profile passed: a var not given renders as None (or 'None'); '' is a value."""
    return {k: v for k, v in plugin_config.items() if v is not None and str(v).strip() not in ("None", "none")}


class WarehouseInUse(RuntimeError):
    """The warehouse is held by another process: said at once, before any model runs."""


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        plugin_config = dict(plugin_config)
        path = plugin_config.pop("path", None)
        if path and str(path) != ":memory:":
            # a second dbt build (or one beside make shell / make review) would otherwise fail with
            # DuckDB's traceback from deep inside the adapter; say who holds the file instead
            from python_udfs.apps.warehouse import check_free

            problem = check_free(path, read_only=False)
            if problem:
                raise WarehouseInUse(problem)
        self.embed_config = udfs.embed_config(given_vars(plugin_config))

    @property
    def embedding_model(self) -> str:
        return self.embed_config.model

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        udfs.register(conn, self.embed_config)

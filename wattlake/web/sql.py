"""Read-only SQL over the lake's tables, for the API.

Each query gets a fresh DuckDB connection with the lake's views, then locked down before the
user's text runs: only the lake's own data files may be read (``allowed_paths``), no other file,
network, extension or attached database (``enable_external_access = false``), and the
configuration cannot be changed back (``lock_configuration``). Only ``SELECT`` statements are
taken; a timer interrupts a query past its time limit, and at most ``max_rows`` rows return.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import duckdb

from wattlake.lake.catalog import sql_string
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.web.errors import BadRequest, QueryTimeout


@dataclass(frozen=True, slots=True)
class SqlResult:
    """Columns, rows and whether more rows were cut off by the row cap."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


def sandboxed(lake: Lake) -> duckdb.DuckDBPyConnection:
    """Return a connection with the lake's views that can read nothing else."""
    con = connect(lake)
    # Only the tables' data files: not the catalog, token or state files beside them.
    files = lake.list_files("", ".parquet") if lake.is_local else []
    listing = ", ".join(sql_string(f) for f in files)
    con.execute(f"SET allowed_paths = [{listing}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con


def run_sql(lake: Lake, text: str, *, time_limit_ms: int, max_rows: int) -> SqlResult:
    """Run one read-only query over the lake's tables.

    Raises:
        BadRequest: not a single SELECT, or DuckDB refuses it (e.g. it reads a file).
        QueryTimeout: it ran longer than ``time_limit_ms``.
    """
    con = sandboxed(lake)
    try:
        try:
            statements = con.extract_statements(text)
        except duckdb.Error as exc:
            raise BadRequest(f"The query cannot be parsed: {exc}") from exc
        if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
            raise BadRequest("Only one SELECT statement is allowed; the lake is read-only here.")
        timer = threading.Timer(time_limit_ms / 1000, con.interrupt)
        timer.start()
        try:
            cursor = con.execute(text)
            columns = [d[0] for d in cursor.description or []]
            fetched = cursor.fetchmany(max_rows + 1)
        except duckdb.InterruptException as exc:
            raise QueryTimeout(
                f"The query ran longer than {time_limit_ms} ms; narrow it (a time range, a "
                "device) or use `wattlake query` on the server."
            ) from exc
        except duckdb.Error as exc:
            raise BadRequest(f"The query was refused: {str(exc).splitlines()[0]}") from exc
        finally:
            timer.cancel()
    finally:
        con.close()
    rows = [[_plain(v) for v in row] for row in fetched[:max_rows]]
    return SqlResult(columns, rows, len(fetched) > max_rows)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)

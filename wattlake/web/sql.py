"""Read-only SQL over the lake's tables, for the API.

Each query gets a fresh in-memory DuckDB database with the lake's views, locked down before the
user's text runs (docs/web.md, "What user SQL can reach"): the only files DuckDB may open are
the data files the views read by path (a local lake's current Parquet files, ``allowed_paths``;
none on S3, where pyarrow reads them); there is no temporary folder (``temp_directory = ''``:
DuckDB allows its temporary folder, ``.tmp`` in the working folder by default, to every query
once external access is off), no allowed directory, external access is off (no other file, URL,
attached database or extension; DuckDB's local file system is disabled outright when the views
name no file), Python variables are not scanned, and the configuration is locked so that no
statement can change any of it back. Only one ``SELECT`` statement is taken; a timer interrupts
a query past its time limit, and at most ``max_rows`` rows return.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

import duckdb

from wattlake.httpserver import BadRequest, QueryTimeout
from wattlake.lake.catalog import sql_string
from wattlake.lake.storage import Lake
from wattlake.query.engine import define_views


@dataclass(frozen=True, slots=True)
class SqlResult:
    """Columns, rows and whether more rows were cut off by the row cap."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


# The one sentence for a query that reaches for something outside the views.
OUTSIDE_VIEWS: Final = (
    "The query was refused: SQL here reads only the lake's views (no other file, URL, "
    "extension, database or setting)."
)


def sandboxed(lake: Lake) -> duckdb.DuckDBPyConnection:
    """Return a connection with the lake's views that can read nothing else."""
    con = duckdb.connect()
    files = define_views(con, lake)
    # Before external access goes off: that adds the temporary folder to the allowed ones.
    con.execute("SET temp_directory = ''")
    con.execute("SET allowed_directories = []")
    con.execute(f"SET allowed_paths = [{', '.join(sql_string(f) for f in files)}]")
    con.execute("SET enable_external_access = false")
    if not files:
        con.execute("SET disabled_filesystems = 'LocalFileSystem'")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET python_enable_replacements = false")
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
        except duckdb.PermissionException as exc:
            raise BadRequest(OUTSIDE_VIEWS) from exc
        except duckdb.Error as exc:
            reason = str(exc).splitlines()[0].rstrip("!. ")
            raise BadRequest(f"The query was refused: {reason}.") from exc
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

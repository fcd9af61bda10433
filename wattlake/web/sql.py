"""Read-only SQL over the lake's tables, for the API.

Each query gets a fresh in-memory DuckDB database with the lake's views, then locked down
before the user's text runs (docs/web.md, "What user SQL can reach"). The views read the
lake's data files through pyarrow (the plan's files, never a path the user names), so DuckDB
itself needs no file at all: no temporary folder (``temp_directory = ''``; DuckDB would
otherwise allow its temporary folder, ``.tmp`` in the working folder by default, to every
query once external access is off), no allowed directories or paths, external access off, the
local file system disabled, no extension loaded or installed, no Python variables scanned,
and the configuration locked so no statement can change any of that back. Only one ``SELECT``
statement is taken; a timer interrupts a query past its time limit, and at most ``max_rows``
rows return.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Final

import duckdb

from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.web.errors import BadRequest, QueryTimeout


@dataclass(frozen=True, slots=True)
class SqlResult:
    """Columns, rows and whether more rows were cut off by the row cap."""

    columns: list[str]
    rows: list[list[Any]]
    truncated: bool


# The settings that lock a sandboxed connection, in order (temp_directory before external
# access: switching that off adds the temporary folder to the allowed directories).
LOCKDOWN: Final = (
    ("temp_directory", "''"),
    ("allowed_directories", "[]"),
    ("allowed_paths", "[]"),
    ("enable_external_access", "false"),
    ("disabled_filesystems", "'LocalFileSystem'"),
    ("autoinstall_known_extensions", "false"),
    ("autoload_known_extensions", "false"),
    ("python_enable_replacements", "false"),
    ("lock_configuration", "true"),
)
# The one sentence for a query that reaches for something outside the views.
OUTSIDE_VIEWS: Final = (
    "The query was refused: SQL here reads only the lake's views (no file, URL, extension, "
    "database or setting)."
)


def sandboxed(lake: Lake) -> duckdb.DuckDBPyConnection:
    """Return a connection with the lake's views that can read nothing else."""
    con = connect(lake, by_path=False)
    for name, value in LOCKDOWN:
        con.execute(f"SET {name} = {value}")
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

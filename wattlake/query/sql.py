"""SQL typed by a user, over the lake's views: one call that says what went wrong in words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wattlake.errors import UsageError

if TYPE_CHECKING:
    from wattlake.config import Settings


class QueryError(UsageError):
    """The SQL cannot run: a syntax error, an unknown table or column, a bad value."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Column names and rows of one statement (no columns: it returned nothing)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


def run_sql(settings: Settings, sql: str) -> QueryResult:
    """Run ``sql`` over the lake's views (readings, raw_readings, dead_letters …).

    Raises:
        QueryError: the SQL is empty or cannot run; the message has DuckDB's first line.
        wattlake.errors.StorageError: the lake cannot be read.
    """
    import duckdb

    from wattlake.lake.storage import Lake
    from wattlake.query.engine import connect

    if not sql.strip() or not sql.strip().strip(";").strip():
        raise QueryError("The query is empty; give SQL such as: SELECT * FROM readings LIMIT 10")
    con = connect(Lake.from_settings(settings))
    try:
        cursor = con.execute(sql)
        if cursor.description is None:
            return QueryResult([], [])
        columns = [d[0] for d in cursor.description]
        return QueryResult(columns, cursor.fetchall())
    except duckdb.Error as exc:
        lines = str(exc).strip().splitlines()
        raise QueryError(f"The query failed: {lines[0] if lines else type(exc).__name__}") from exc

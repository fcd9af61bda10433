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


def run_sql(settings: Settings, sql: str, *, as_of_ms: int | None = None) -> QueryResult:
    """Run ``sql`` over the lake's views (readings, raw_readings, dead_letters …), as the
    tables were at ``as_of_ms`` (epoch ms) when given.

    Raises:
        QueryError: the SQL is empty or cannot run; the message has DuckDB's first line.
        UsageError: ``as_of_ms`` is older than the history the lake keeps.
        wattlake.errors.StorageError: the lake cannot be read.
    """
    import duckdb

    from wattlake.lake.storage import Lake
    from wattlake.query.engine import connect, tables_read_by

    if not sql.strip() or not sql.strip().strip(";").strip():
        raise QueryError("The query is empty; give SQL such as: SELECT * FROM readings LIMIT 10")
    lake = Lake.from_settings(settings)
    if as_of_ms is not None:
        check_history(lake, as_of_ms)
    # Only the views the statement names: each costs opening and planning its table.
    con = connect(lake, as_of_ms=as_of_ms, only=tables_read_by(sql))
    try:
        return _interruptible(con, sql)
    except duckdb.Error as exc:
        lines = str(exc).strip().splitlines()
        raise QueryError(f"The query failed: {lines[0] if lines else type(exc).__name__}") from exc


def _interruptible(con: Any, sql: str) -> QueryResult:
    """Run ``sql`` in a helper thread so that Ctrl-C (KeyboardInterrupt) stops DuckDB at once.

    While DuckDB computes, the main thread would sit in C code and see the signal only when the
    query ends; here it waits in short joins, and on an interrupt asks DuckDB to stop.
    """
    import threading

    outcome: list[QueryResult | BaseException] = []

    def work() -> None:
        try:
            cursor = con.execute(sql)
            if cursor.description is None:
                outcome.append(QueryResult([], []))
            else:
                columns = [d[0] for d in cursor.description]
                outcome.append(QueryResult(columns, cursor.fetchall()))
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=work, name="query", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt:
        con.interrupt()
        worker.join(5.0)
        raise
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def check_history(lake: Any, as_of_ms: int) -> None:
    """Refuse an instant older than the snapshots the readings table still keeps.

    Before the table's first snapshot ever the answer is an empty table, which is true; before
    the oldest snapshot ``maintain`` kept (sequence number above 1: commits came before it)
    the answer is unknown.

    Raises:
        UsageError: the history before ``as_of_ms`` was expired.
    """
    from datetime import UTC, datetime

    from wattlake.lake import tables
    from wattlake.schema import READINGS_TABLE

    table = tables.open_table(lake, READINGS_TABLE)
    kept = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    if not kept or as_of_ms >= kept[0].timestamp_ms or (kept[0].sequence_number or 0) <= 1:
        return
    oldest = datetime.fromtimestamp(kept[0].timestamp_ms / 1000, UTC).isoformat(timespec="seconds")
    asked = datetime.fromtimestamp(as_of_ms / 1000, UTC).isoformat(timespec="seconds")
    raise UsageError(
        f"The lake keeps its history back to {oldest} only, and {asked} is older; "
        "lake.snapshot_history_s sets how much history jobs run maintain keeps."
    )

"""``wattlake query``: SQL over the lake."""

from __future__ import annotations

from typing import Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    existing_lake,
    load_settings,
)


def register(app: typer.Typer) -> None:
    """Add ``query`` to ``app``."""
    app.command()(query)


def query(
    sql: Annotated[
        str, typer.Argument(help="SQL over the views readings, raw_readings, dead_letters.")
    ],
    fmt: FormatOption = OutputFormat.table,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="TIMESTAMP",
            help="Show the lake as it was then: a date or ISO timestamp (no offset: local time "
            "in energy.tz). History reaches back lake.snapshot_history_s (jobs run maintain).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run SQL over the lake and print the result.

    Tables: readings (deduplicated), raw_readings, dead_letters, energy_15min, power_1min,
    power_1h. A result without rows prints its columns only (CSV header; nothing in JSON).
    --as-of runs it over the tables as they were at that instant (time travel).
    """
    from wattlake.query.sql import run_sql

    settings = load_settings(data_dir, config)
    existing_lake(settings)
    as_of_ms = None
    if as_of is not None:
        from wattlake.energy.buckets import parse_time_ms, zone

        as_of_ms = parse_time_ms(as_of, zone(settings["energy.tz"]))
    result = run_sql(settings, sql, as_of_ms=as_of_ms)
    if not result.columns:
        return
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    emit_rows(rows, fmt, columns=result.columns)

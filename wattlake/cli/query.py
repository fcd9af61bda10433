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
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run SQL over the lake and print the result.

    Tables: readings (deduplicated), raw_readings, dead_letters. A result without rows prints
    its columns only (CSV header; nothing in JSON).
    """
    from wattlake.query.sql import run_sql

    settings = load_settings(data_dir, config)
    result = run_sql(settings, sql)
    if not result.columns:
        return
    rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
    emit_rows(rows, fmt, columns=result.columns)

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
from wattlake.errors import UsageError


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
    """Run SQL over the lake and print the result."""
    import duckdb

    from wattlake.lake.storage import Lake
    from wattlake.query.engine import connect

    settings = load_settings(data_dir, config)
    con = connect(Lake.from_settings(settings))
    try:
        cursor = con.execute(sql)
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise UsageError(f"The query failed: {first_line}") from exc
    if cursor.description is None:
        return
    columns = [d[0] for d in cursor.description]
    rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    emit_rows(rows, fmt, columns=columns)

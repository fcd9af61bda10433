"""``wattlake import``: history into the lake through the same validation as live data."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    command_prefix,
    deprecated_spelling,
    load_settings,
    progress,
    say,
)
from wattlake.errors import BadInputError
from wattlake.gateway.files import FileFormat

if TYPE_CHECKING:
    from wattlake.config import Settings
    from wattlake.gateway.files import FileRows
    from wattlake.stream.file_import import ImportSummary as FileSummary


def register(app: typer.Typer) -> None:
    """Add ``import`` to ``app``."""
    app.command("import")(import_files)


def import_files(
    paths: Annotated[
        list[Path],
        typer.Argument(help="CSV, JSONL or Parquet files of readings, or Shelly CSV exports."),
    ],
    input_format: Annotated[
        FileFormat | None,
        typer.Option(
            "--input-format",
            help="Kind of file: csv, jsonl, parquet or shelly-csv (default: from the file name).",
            show_default=False,
        ),
    ] = None,
    old_input_format: Annotated[
        FileFormat | None,
        typer.Option("--format", hidden=True, help="Deprecated spelling of --input-format."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="Device id of every row (needed for shelly-csv, or without device_id)."),
    ] = None,
    channel: Annotated[int, typer.Option(help="Channel of a shelly-csv export.", min=0)] = 0,
    period: Annotated[
        float, typer.Option(help="Seconds per row of a shelly-csv export.", min=1)
    ] = 60.0,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Import history into the lake through the same validation as live data.

    Each file's header (or schema) is checked before anything is written; rows that cannot be
    readings are kept in dead_letters with their row number, the others are stored. One
    summary line per file goes to stderr.
    """
    if old_input_format is not None:
        deprecated_spelling("--format", "--input-format")
    chosen = input_format or old_input_format
    settings = load_settings(data_dir, config, **{"stream.name": "import"})
    # One summary line per file instead of a log line per dead letter or flush; the level is
    # put back afterwards, so a program that runs this command in-process keeps its logging.
    stream_log = logging.getLogger("wattlake.stream")
    level = stream_log.level
    stream_log.setLevel(logging.ERROR)
    try:
        _import(paths, chosen, device, channel, period, settings)
    finally:
        stream_log.setLevel(level)


def _import(
    paths: list[Path],
    chosen: FileFormat | None,
    device: str | None,
    channel: int,
    period: float,
    settings: Settings,
) -> None:
    from wattlake.gateway.files import FileRows, guess_format
    from wattlake.stream.file_import import import_file

    file_rows = []
    for path in paths:
        if chosen is None and not path.is_file():
            file_rows.append(FileRows(path, FileFormat.csv, device_id=device))
            continue  # the check below says that the file is missing
        kind = chosen or guess_format(path)
        file_rows.append(FileRows(path, kind, device_id=device, channel=channel, period_s=period))
    for rows in file_rows:  # every file's shape before the first is written
        rows.check()
    summaries: list[FileSummary] = []
    received_at_ms = 0
    try:
        for rows in file_rows:
            # Each file its own receive time, so that its rows are found in the lake by it.
            received_at_ms = max(time.time_ns() // 1_000_000, received_at_ms + 1)
            with progress(f"importing {rows.path.name}") as on_progress:
                summary = import_file(
                    settings, rows, on_progress=on_progress, received_at_ms=received_at_ms
                )
            summaries.append(summary)
            if summary.stored or len(file_rows) > 1:
                say(_summary_line(summary))
    except KeyboardInterrupt:
        _say_interrupted(settings, file_rows, summaries, received_at_ms)
        raise
    if not any(s.stored for s in summaries):
        detail = _summary_line(summaries[0]) if len(summaries) == 1 else "see above"
        raise BadInputError(f"No row could be imported ({detail}).")


def _say_interrupted(
    settings: Settings, file_rows: list[FileRows], done: list[FileSummary], received_at_ms: int
) -> None:
    """Say which files are wholly in the lake, how many rows of the interrupted one were
    committed before the interrupt (counted in the lake), and which were not started."""
    from wattlake.errors import WattlakeError
    from wattlake.lake.storage import Lake
    from wattlake.query.sql import run_sql

    lake_url = Lake.from_settings(settings).url
    if len(done) == len(file_rows):  # the interrupt came after the last file was in
        say(f"The import was interrupted once every file was in the lake {lake_url}.")
        return
    cut = file_rows[len(done)]
    try:
        result = run_sql(
            settings,
            "SELECT count(*) FROM raw_readings "
            f"WHERE epoch_ms(received_at) = {int(received_at_ms)}",
        )
        stored = f"{result.rows[0][0]} row(s) stored, the rest not"
    except (WattlakeError, KeyboardInterrupt) as exc:
        stored = f"its rows stored so far could not be counted ({exc or 'interrupted again'})"
    lines = [f"The import stopped during {cut.path.name}; in the lake {lake_url}:"]
    lines += [f"  {s.file_name}: complete, {s.stored} row(s) stored" for s in done]
    lines.append(f"  {cut.path.name}: partly, {stored}")
    left = file_rows[len(done) + 1 :]
    lines += [f"  {rows.path.name}: not started" for rows in left]
    again = " ".join(shlex.quote(str(rows.path)) for rows in [cut, *left])
    lines.append(
        f"To finish, import {again} again (the readings view keeps one copy of a row stored twice)."
    )
    for line in lines:
        say(line)


def _summary_line(summary: FileSummary) -> str:
    line = summary.line()
    if summary.first_problems:
        line += f"; first rejected: {summary.first_problems[0]}"
    if summary.rejected:
        line += f' (all are in dead_letters: {command_prefix()} query "SELECT * FROM dead_letters")'
    return line

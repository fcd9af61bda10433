"""``wattlake jobs run NAME``: run one job over the lake now."""

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
    progress,
    say,
)
from wattlake.errors import UsageError

# The jobs that report progress (``on_progress(done, total)``), and what they count.
PROGRESS_UNITS = {"compact": "days", "rollup": "days", "migrate": "files"}


def register(app: typer.Typer) -> None:
    """Add the ``jobs`` group to ``app``."""
    group = typer.Typer(help="Run jobs over the lake.", no_args_is_help=True)
    group.command("run")(jobs_run)
    app.add_typer(group, name="jobs")


def jobs_run(
    name: Annotated[str, typer.Argument(help="Job: compact, maintain, migrate, rollup.")],
    date: Annotated[
        list[str] | None, typer.Option(help="Only this UTC day, YYYY-MM-DD (repeatable).")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run one job now and print what it did."""
    from datetime import date as date_type

    from wattlake.jobs import job

    function = job(name)
    for day in date or []:
        try:
            date_type.fromisoformat(day)
        except ValueError as exc:
            raise UsageError(f"--date {day!r} is not a date like 2026-01-31.") from exc
    settings = load_settings(data_dir, config)
    existing_lake(settings)
    if name in PROGRESS_UNITS:
        quiet = fmt is OutputFormat.json
        with progress(f"{name}", quiet=quiet, unit=PROGRESS_UNITS[name]) as on_progress:
            rows = function(settings, dates=date, on_progress=on_progress)
    else:
        rows = function(settings, dates=date)
    emit_rows(rows, fmt)
    if not rows:
        say(f"Job {name}: nothing to do.")

"""What every command shares: common options, settings loading, and rows out.

Command modules import from here so that all of them take the same ``--data-dir``/``--config``
options, print ``--format table|csv|json`` the same way and log the same way.
"""

from __future__ import annotations

import csv
import enum
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from wattlake.config import Settings


class OutputFormat(enum.StrEnum):
    """How a command prints rows."""

    table = "table"
    csv = "csv"
    json = "json"


DataDirOption = Annotated[
    str | None,
    typer.Option(
        "--data-dir",
        help="Lake root: a folder or s3://bucket/prefix [env WATTLAKE_DATA_DIR].",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Settings file (default: wattlake.toml in the data dir)."),
]
FormatOption = Annotated[
    OutputFormat, typer.Option("--format", help="Output: table, csv or json (one object a line).")
]


def load_settings(data_dir: str | None, config: Path | None, **overrides: Any) -> Settings:
    """Resolve settings with command-line ``overrides`` (None means not given).

    Raises:
        wattlake.errors.ConfigError: a settings file or value is bad.
    """
    return Settings.load(config_file=config, overrides={"data_dir": data_dir, **overrides})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value != value:  # NaN has no JSON form
        return None
    return value


def emit_rows(
    rows: Iterable[Mapping[str, Any]],
    fmt: OutputFormat,
    *,
    columns: list[str] | None = None,
    title: str | None = None,
) -> None:
    """Print ``rows`` to stdout as a table, CSV or JSON lines."""
    rows = list(rows)
    names = columns or (list(rows[0].keys()) if rows else [])
    if fmt is OutputFormat.json:
        for row in rows:
            sys.stdout.write(json.dumps({k: _jsonable(row.get(k)) for k in names}) + "\n")
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow(["" if row.get(k) is None else _jsonable(row.get(k)) for k in names])
    else:
        table = Table(title=title)
        for name in names:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(
                *("" if row.get(k) is None else str(_jsonable(row.get(k))) for k in names)
            )
        Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200).print(table)
    sys.stdout.flush()


def say(message: str) -> None:
    """Tell the user something on stderr (stdout is for results)."""
    Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty()).print(message)


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on Ctrl-C or SIGTERM so the command can flush and exit cleanly."""

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("wattlake").info("received signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class _OneLineFormatter(logging.Formatter):
    """Log lines without tracebacks: an exception is summarised as ``(Type: message)``.

    Third-party libraries (amqtt, uvicorn …) log tracebacks for conditions we already report
    in one sentence; ``WATTLAKE_DEBUG=1`` shows them in full.
    """

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record = logging.makeLogRecord(record.__dict__)
            summary = " ".join(str(exc).split())[:300]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {summary})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return " ".join(super().format(record).split("\n"))


def configure_logging() -> None:
    """Send log lines to stderr, one line each, with third-party chatter at WARNING."""
    import os

    handler = logging.StreamHandler()
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(
        logging.Formatter(fmt) if os.environ.get("WATTLAKE_DEBUG") else _OneLineFormatter(fmt)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("amqtt", "transitions", "uvicorn.access", "pyiceberg"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

"""What every command shares: common options, settings loading, rows out, progress, logging.

Command modules import from here so that all of them take the same ``--data-dir``/``--config``
options, print ``--format table|csv|json`` the same way and log the same way.

Progress: a long library call takes ``on_progress(done, total)`` (the convention is written in
``wattlake.progress``); the command passes the callback that ``progress()`` yields, which draws a
``rich`` bar with rate and ETA on stderr when stderr is a terminal, and does nothing in pipes or
with ``--format json``::

    with progress("importing rows", quiet=fmt is OutputFormat.json) as on_progress:
        result = import_rows(..., on_progress=on_progress)

``rich`` is imported only when something is drawn, so that every command starts quickly.
"""

from __future__ import annotations

import csv
import enum
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from wattlake.config import Settings
    from wattlake.progress import ProgressCallback


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
    from wattlake.config import Settings

    return Settings.load(config_file=config, overrides={"data_dir": data_dir, **overrides})


def existing_lake(settings: Settings) -> None:
    """Check, for a command that only reads, that ``data_dir`` holds a lake (nothing is
    created: a mistyped folder is an error, not an empty answer).

    Raises:
        wattlake.lake.presence.NoLakeError: there is no lake there.
    """
    from wattlake.lake.presence import open_lake

    open_lake(settings, create=False)


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
        from rich.console import Console
        from rich.table import Table

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
    from rich.console import Console

    Console(stderr=True, highlight=False, markup=False, soft_wrap=not sys.stderr.isatty()).print(
        message
    )


def command_prefix() -> str:
    """Return how the user can run ``wattlake`` from where they are, as a shell prefix.

    ``wattlake`` when that is on the PATH, ``./run wattlake`` in the project folder (the
    ``./run`` script's environment), else the full path of this program; so that a command
    printed in a hint runs as printed.
    """
    import shlex
    import shutil

    program = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    on_path = shutil.which("wattlake")
    if program is not None and on_path and Path(on_path).resolve() == program:
        return "wattlake"
    project = Path(__file__).resolve().parents[2]
    if (project / "run").is_file() and (project / ".venv").is_dir():
        if Path.cwd().resolve() == project:
            return "./run wattlake"
        return f"{shlex.quote(str(project / 'run'))} wattlake"
    if program is not None and program.name == "wattlake" and os.access(program, os.X_OK):
        return shlex.quote(str(program))
    return f"{shlex.quote(sys.executable)} -m wattlake"


def deprecated_spelling(old: str, new: str) -> None:
    """Warn on stderr that option ``old`` is now spelled ``new`` (the old one still works)."""
    say(f"Warning: {old} is deprecated here and will be removed; use {new} instead.")


@contextmanager
def progress(
    description: str, *, quiet: bool = False, unit: str = "rows"
) -> Iterator[ProgressCallback]:
    """Yield an ``on_progress(done, total)`` callback that draws a progress bar on stderr.

    The bar (with rate and ETA) appears only on a terminal and not when ``quiet`` (e.g. with
    ``--format json``); otherwise the callback does nothing. ``unit`` names what ``done``
    counts, for the rate column.
    """
    if quiet or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        from wattlake.progress import no_progress

        yield no_progress
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class RateColumn(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task: Any) -> Any:
            from rich.text import Text

            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f} {unit}/s")

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task(description, total=None)

    def on_progress(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield on_progress


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


class _HoldThirdPartyErrors(logging.Filter):
    """Hold a third-party library's error lines for a moment before they are printed.

    A library such as amqtt logs its own error (often with a traceback) for a failure that
    wattlake then reports as one sentence, e.g. a port in use. Such lines are held for
    ``hold_s``; when the command ends with an error first, ``discard_held_logs()`` drops them,
    since the sentence says it all. Otherwise they are printed late (``release_held_logs()``).
    """

    hold_s = 5.0  # longer than a failing start takes to report, even on a busy machine

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self._handler = handler
        self._held: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno < logging.ERROR
            or record.name.split(".")[0] == "wattlake"
            or getattr(record, "wattlake_released", False)
        ):
            return True
        with self._lock:
            self._held.append(record)
        timer = threading.Timer(self.hold_s, self.release)
        timer.daemon = True
        timer.start()
        return False

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for record in held:
            record.wattlake_released = True
            self._handler.handle(record)

    def discard(self) -> None:
        with self._lock:
            self._held.clear()


_hold: _HoldThirdPartyErrors | None = None


def release_held_logs() -> None:
    """Print third-party error lines still held back (the command did not fail)."""
    if _hold is not None:
        _hold.release()


def discard_held_logs() -> None:
    """Drop third-party error lines still held back: the command's own error sentence follows."""
    if _hold is not None:
        _hold.discard()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stderr`` is when a line is logged.

    A plain ``StreamHandler`` keeps the stream it was made with; when the CLI runs inside another
    program that later swaps or closes that stream (a test runner capturing output), threads that
    log afterwards would fail with "I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging() -> None:
    """Send log lines to stderr, one line each, with third-party chatter at WARNING."""
    global _hold

    handler = _StderrHandler()
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    debug = bool(os.environ.get("WATTLAKE_DEBUG"))
    handler.setFormatter(logging.Formatter(fmt) if debug else _OneLineFormatter(fmt))
    if not debug:
        _hold = _HoldThirdPartyErrors(handler)
        handler.addFilter(_hold)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("amqtt", "transitions", "uvicorn.access", "pyiceberg", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

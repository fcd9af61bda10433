"""The ``wattlake`` command line. One place turns errors into messages and exit codes."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer

from wattlake.console import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    load_settings,
    say,
    stop_on_signals,
)
from wattlake.errors import BadInputError, UsageError, WattlakeError
from wattlake.gateway.files import FileFormat

app = typer.Typer(
    name="wattlake",
    help="Self-hosted, real-time energy monitoring: meters over MQTT into a Parquet lake.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
log = logging.getLogger("wattlake")


@app.command()
def demo(
    devices: Annotated[int | None, typer.Option(help="Simulated devices.", min=1)] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    broker_port: Annotated[
        int | None, typer.Option(help="Port of the embedded broker (0: any free port).")
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between a device's publishes.", min=0.001)
    ] = None,
    history_days: Annotated[
        float | None,
        typer.Option(help="Days of simulated history to publish before going live.", min=0),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole stack on this machine: broker, ingest, lake and simulated meters."""
    from wattlake.devices.simulator import Simulator
    from wattlake.gateway.broker import EmbeddedBroker, port_is_free
    from wattlake.gateway.mqtt import BrokerAddress
    from wattlake.stream.ingest import IngestWorker

    if duration is not None and duration <= 0:
        raise UsageError("--duration must be a positive number of seconds.")
    settings = load_settings(
        data_dir,
        config,
        **{
            "demo.devices": devices,
            "broker.port": broker_port,
            "demo.interval_s": interval,
            "demo.history_days": history_days,
        },
    )
    port = settings["broker.port"]
    if settings.origins["broker.port"] == "default" and not port_is_free(
        settings["broker.host"], port
    ):
        say(f"Port {port} is taken (another MQTT broker?); the demo broker uses a free port.")
        port = 0
    stop = threading.Event()
    stop_on_signals(stop)
    with EmbeddedBroker(host=settings["broker.host"], port=port) as broker:
        worker = IngestWorker(settings, broker.url, mqtt5=False, drain=True)
        errors: list[BaseException] = []
        ingest = threading.Thread(
            target=_run_collecting, args=(worker.run, stop, errors), name="ingest"
        )
        ingest.start()
        if not worker.ready.wait(15):
            stop.set()
            ingest.join()
            raise errors[0] if errors else WattlakeError("The ingest worker did not start.")
        simulator = Simulator(
            BrokerAddress.parse(broker.url),
            devices=settings["demo.devices"],
            interval_s=settings["demo.interval_s"],
            backfill_days=settings["demo.history_days"],
        )
        sim = threading.Thread(
            target=_run_collecting, args=(lambda _: simulator.run(), stop, errors), name="simulator"
        )
        sim.start()
        history = settings["demo.history_days"]
        say(
            f"wattlake demo: broker {broker.url}, {settings['demo.devices']} simulated device(s), "
            f"lake {worker.lake.url}"
            + (f"; {history:g} day(s) of history first" if history else "")
        )
        say(
            "Readings land in raw/readings/ under the lake after each flush "
            f"(every {settings['stream.flush_interval_s']:g} s, and at exit). Ask them with:\n"
            f'  wattlake query --data-dir {worker.lake.url} "SELECT device_id, channel, '
            'count(*), max(ts) FROM readings GROUP BY ALL"\n'
            "Stop with Ctrl-C: every buffer is flushed first."
        )
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            stop.wait(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
        simulator.stop()
        sim.join()
        stop.set()
        ingest.join()
        if errors:
            raise errors[0]
        figures = worker.figures()
        say(
            f"stopped: {simulator.stats.data_messages} messages published "
            f"(and {simulator.stats.status_messages} status), {figures.readings} readings "
            f"in {figures.files_written} file(s), {figures.dead_letters} dead letter(s)"
        )


def _run_collecting(target: Any, stop: threading.Event, errors: list[BaseException]) -> None:
    try:
        target(stop)
    except BaseException as exc:
        errors.append(exc)
        stop.set()


@app.command("import")
def import_file(
    path: Annotated[
        Path, typer.Argument(help="CSV, JSONL or Parquet file, or a Shelly CSV export.")
    ],
    file_format: Annotated[
        FileFormat | None,
        typer.Option("--format", help="File format (default: from the file name)."),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device id for every row (needed for shelly-csv).")
    ] = None,
    channel: Annotated[int, typer.Option(help="Channel of a shelly-csv export.", min=0)] = 0,
    period: Annotated[
        float, typer.Option(help="Seconds per row of a shelly-csv export.", min=1)
    ] = 60.0,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Import history into the lake through the same validation as live data."""
    from wattlake.gateway.files import FileRows, guess_format
    from wattlake.lake.storage import Lake
    from wattlake.stream.delivery import stream_from_settings

    if not path.is_file():
        raise UsageError(f"{path} is not a file.")
    chosen = file_format or guess_format(path)
    settings = load_settings(data_dir, config, **{"stream.name": "import"})
    lake = Lake.from_settings(settings)
    stream = stream_from_settings(settings, lake)
    rows = FileRows(path, chosen, device_id=device, channel=channel, period_s=period)
    batch = []
    for message in rows.messages(received_at_ms=time.time_ns() // 1_000_000):
        batch.append(message)
        if len(batch) >= IMPORT_BATCH:
            stream.accept(batch)
            batch = []
            if stream.flush_wanted():  # the buffer's byte and row limits bound memory
                stream.flush()
    stream.accept(batch)
    stream.flush()
    stats = stream.stats
    say(
        f"imported {stats.readings} reading(s) from {stats.messages} row(s) of {path.name} "
        f"into {lake.url}"
    )
    if stats.dead_letters:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(stats.dead_letters_by_reason.items()))
        say(
            f"{stats.dead_letters} row(s) could not be used ({reasons}); they are kept in "
            f'errors/ under the lake: wattlake query "SELECT * FROM dead_letters"'
        )
        if stats.readings == 0:
            raise BadInputError(f"No row of {path.name} could be imported.")


IMPORT_BATCH = 10_000


@app.command()
def query(
    sql: Annotated[
        str, typer.Argument(help="SQL over the views readings, raw_readings, dead_letters.")
    ],
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run SQL over the lake and print the result."""
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


config_app = typer.Typer(help="Show settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Print every setting with its value and where the value came from."""
    from wattlake.config import REGISTRY

    settings = load_settings(data_dir, config)
    rows = [
        {
            "setting": n,
            "value": "********" if s.unit == "secret" and settings[n] else settings[n],
            "unit": s.unit,
            "from": settings.origins[n],
        }
        for n, s in REGISTRY.items()
    ]
    emit_rows(rows, fmt)


@config_app.command("docs")
def config_docs() -> None:
    """Print the configuration reference (docs/configuration.md is this output)."""
    from wattlake.config import settings_markdown

    sys.stdout.write(CONFIG_DOC_HEADER + settings_markdown())


CONFIG_DOC_HEADER = """# Configuration reference

Every setting has a default, can be set in `wattlake.toml` (in the data dir, or the file given
with `--config`), overridden by an environment variable, and, where a command has a flag for it,
by that flag. Precedence, lowest first: default < `wattlake.toml` < environment < flag.

A setting `section.key` is written in `wattlake.toml` as

```toml
[section]
key = value
```

and in the environment as `WATTLAKE_SECTION__KEY`. `wattlake config show` prints every value
in force and where it came from. This page is generated by `wattlake config docs`.

"""


jobs_app = typer.Typer(help="Run jobs over the lake.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
JOBS = ("compact",)


@jobs_app.command("run")
def jobs_run(
    name: Annotated[str, typer.Argument(help="Job: compact.")],
    date: Annotated[
        list[str] | None, typer.Option(help="Only this UTC day, YYYY-MM-DD (repeatable).")
    ] = None,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run one job now and print what it did."""
    from datetime import date as date_type

    from wattlake.jobs.compact import compact
    from wattlake.lake.storage import Lake

    if name not in JOBS:
        raise UsageError(f"There is no job {name!r}; choose one of: {', '.join(JOBS)}.")
    for day in date or []:
        try:
            date_type.fromisoformat(day)
        except ValueError as exc:
            raise UsageError(f"--date {day!r} is not a date like 2026-01-31.") from exc
    settings = load_settings(data_dir, config)
    results = compact(Lake.from_settings(settings), dates=date)
    emit_rows([r.as_row() for r in results], fmt)
    if not results:
        say("Nothing to compact: raw/readings holds no files for those days.")


def _register_optional_commands() -> None:
    """Add the command groups that live beside this module."""
    import importlib

    for module_name in (
        "wattlake.cli_devices",
        "wattlake.cli_stream",
        "wattlake.cli_energy",
        "wattlake.cli_pv",
    ):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(app)


_register_optional_commands()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: a user's mistake is one sentence and exit code 2, never a traceback."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app(args=argv, prog_name="wattlake")
    except WattlakeError as exc:
        say(f"Error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        say("Interrupted.")
        sys.exit(130)

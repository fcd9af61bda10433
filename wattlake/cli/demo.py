"""``wattlake demo``: the whole stack on one machine with simulated meters."""

from __future__ import annotations

import shlex
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    command_prefix,
    load_settings,
    progress,
    say,
)
from wattlake.errors import UsageError

if TYPE_CHECKING:
    from wattlake.stack import Stack, StackReport, StopRequests


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command()(demo)


def demo(
    devices: Annotated[int | None, typer.Option(help="Simulated devices.", min=1)] = None,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).")
    ] = None,
    broker_port: Annotated[
        int | None,
        typer.Option(help="Port of the embedded broker (0: any free port).", min=0, max=65535),
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between a device's publishes.", min=0.001)
    ] = None,
    history_days: Annotated[
        float | None,
        typer.Option(help="Days of simulated history to publish before going live.", min=0),
    ] = None,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start from an empty data dir: remove what earlier runs left (not wattlake.toml).",
        ),
    ] = False,
    web: Annotated[
        bool, typer.Option("--web/--no-web", help="Serve the dashboard beside the stack.")
    ] = True,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the whole stack on this machine: broker, ingest, lake, dashboard, simulated meters.

    Ctrl-C (or SIGTERM, or the end of --duration) stops the simulated meters, delivers every
    reading the broker accepted into the lake, then exits; a second Ctrl-C quits at once and
    says where the rest waits.
    """
    from wattlake.stack import (
        Stack,
        StopRequests,
        empty_data_dir,
        inspect_data_dir,
        write_demo_sites,
    )

    if duration is not None and duration <= 0:
        raise UsageError("--duration must be a positive number of seconds.")
    settings = load_settings(
        data_dir,
        config,
        **{
            "demo.devices": devices,
            "demo.interval_s": interval,
            "demo.history_days": history_days,
        },
    )
    stack = Stack(settings, simulate=True, web=web, broker_port=broker_port)
    stack.check_ports()  # a taken port is refused before the data dir is touched
    if fresh:
        removed = empty_data_dir(settings)
        if removed:
            say(f"Started from an empty data dir: removed {removed} file(s) of earlier runs.")
    else:
        state = inspect_data_dir(settings)
        if state.used:
            parts = []
            if state.lake_files:
                parts.append(f"{state.lake_files} file(s) of an earlier run")
            if state.wal_segments:
                parts.append(
                    f"a write-ahead log of {state.wal_bytes:,} bytes not yet in the lake "
                    f"({state.wal_dir}; delivered first)"
                )
            say(
                f"The data dir {state.url} already holds {' and '.join(parts)}; the demo adds to "
                "it. Start from an empty one with --fresh."
            )
    sites = write_demo_sites(settings)
    requests = StopRequests().install()
    try:
        stack.start()
        _announce(stack)
        if sites is not None:
            _describe_sites(stack, *sites)
        _run(stack, requests, duration)
        report = _stop(stack, requests)
    finally:
        requests.uninstall()
    say(
        f"stopped: {report.published} messages published ({report.data_messages} data, "
        f"{report.status_messages} status), {report.readings} readings in "
        f"{report.files_written} file(s), {report.dead_letters} dead letter(s)"
        + (f", {report.replayed} replayed from an earlier run's WAL" if report.replayed else "")
        + "; every reading the broker accepted is in the lake."
    )


def _announce(stack: Stack) -> None:
    settings = stack.settings
    assert stack.broker is not None
    for note in stack.notes:
        say(note)
    history = settings["demo.history_days"]
    say(
        f"wattlake demo: broker {stack.broker.url}, {settings['demo.devices']} simulated "
        f"device(s), lake {stack.lake_url}"
        + (f"; {history:g} day(s) of history first" if history else "")
    )
    if stack.web is not None:
        say(f"Dashboard: {stack.web.login_url()}")
    command = command_prefix()
    data = shlex.quote(stack.lake_url)
    sql = (
        "SELECT device_id, channel, count(*) AS readings, max(ts) AS latest "
        "FROM readings GROUP BY ALL"
    )
    say(
        "The first readings are queryable within seconds. Ask them with:\n"
        f"  {command} query --data-dir {data} {shlex.quote(sql)}\n"
        "Stop with Ctrl-C: every reading the broker accepted is delivered to the lake first "
        "(Ctrl-C again quits at once)."
    )


def _describe_sites(stack: Stack, path: Path, kinds: dict[str, str]) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86_400))
    described = ", ".join(f"{name} ({kind})" for name, kind in kinds.items())
    example = next((n for n, kind in kinds.items() if "pv" in kind), next(iter(kinds)))
    say(
        f"The simulated homes are sites in {path}: {described}. The energy of {example} today:\n"
        f"  {command_prefix()} energy --site {example} --data-dir "
        f"{shlex.quote(stack.lake_url)} --start {today} --end {tomorrow} --every hour"
    )


def _run(stack: Stack, requests: StopRequests, duration_s: float | None) -> None:
    """Run until a stop request or the end of ``duration_s``; show the history backfill."""
    deadline = None if duration_s is None else time.monotonic() + duration_s

    def left_s() -> float | None:
        return None if deadline is None else deadline - time.monotonic()

    backfill = stack.backfill_progress()
    if backfill is not None:
        with progress("history", unit="rounds") as on_progress:
            while (backfill := stack.backfill_progress()) is not None:
                on_progress(*backfill)
                remaining = left_s()
                if (
                    requests.stop.is_set()
                    or stack.failed
                    or (remaining is not None and remaining <= 0)
                ):
                    return
                requests.stop.wait(0.2 if remaining is None else min(0.2, remaining))
            on_progress(1, 1)
    remaining = left_s()
    if remaining is None or remaining > 0:
        stack.wait(requests.stop, remaining)


def _stop(stack: Stack, requests: StopRequests) -> StackReport:
    """Stop the stack in a helper thread (signals reach this one), showing the drain."""
    outcome: list[StackReport] = []
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            outcome.append(stack.stop(requests.abort))
        except BaseException as exc:
            errors.append(exc)

    stopper = threading.Thread(target=stop, name="stack-stop")
    stopper.start()
    shown = False
    with progress("delivering", unit="messages") as on_progress:
        while stopper.is_alive():
            state = stack.drain_state()
            if state is not None and state.started and state.first_left:
                if not shown:
                    say(f"Delivering {state.first_left} message(s) the broker still holds ...")
                    shown = True
                on_progress(state.first_left - min(state.left, state.first_left), state.first_left)
            stopper.join(0.1)
    if errors:
        raise errors[0]
    return outcome[0]

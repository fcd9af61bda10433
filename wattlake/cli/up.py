"""``wattlake up``: broker, ingest, refill, jobs and dashboard for real meters."""

from __future__ import annotations

from typing import Annotated

import typer

from wattlake.cli.output import ConfigOption, DataDirOption, load_settings, say


def register(app: typer.Typer) -> None:
    """Add ``up`` to ``app``."""
    app.command()(up)


def up(
    external_broker: Annotated[
        str,
        typer.Option(help="Use this MQTT 5 broker (e.g. Mosquitto) instead of the embedded one."),
    ] = "",
    web: Annotated[bool, typer.Option("--web/--no-web", help="Serve the dashboard.")] = True,
    print_systemd: Annotated[
        bool, typer.Option(help="Print systemd unit files for this arrangement and exit.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run the stack for real meters until stopped (SIGTERM drains and flushes everything)."""
    from wattlake.stack import StopRequests
    from wattlake.up import STOP_MAX_S, Up, systemd_units

    settings = load_settings(data_dir, config)
    if print_systemd:
        for name, text in systemd_units(settings, external_broker=external_broker).items():
            typer.echo(f"# --- {name}\n{text}")
        return
    requests = StopRequests().install()
    try:
        stack = Up(settings, external_broker=external_broker, web=web)
        stack.start()
        assert stack.stack is not None
        for note in stack.stack.notes:
            say(note)
        broker = stack.stack.broker
        if broker is not None:
            say(
                f"wattlake up: devices connect to {broker.tls_url} (TLS) with the credentials "
                f"of `wattlake device add`; local clients to {broker.url} with credentials too."
            )
        else:
            say(f"wattlake up: reading from the external broker {external_broker}.")
        if stack.stack.web is not None:
            say(f"Dashboard: {stack.stack.web.login_url()}")
        requests.stop.wait()
        say(f"Stopping: draining the ingest and flushing the lake (at most {STOP_MAX_S:.0f} s).")
        report = stack.stop(requests.abort)
        say(f"Stopped: {report.readings} readings, {report.files_written} file(s) written.")
    finally:
        requests.uninstall()

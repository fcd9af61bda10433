"""Commands of the delivery stream: ``wattlake ingest``."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from wattlake.console import ConfigOption, DataDirOption, load_settings, say, stop_on_signals


def register(app: typer.Typer) -> None:
    """Add the stream's commands to ``app``."""
    app.command()(ingest)


def ingest(
    broker: Annotated[str, typer.Option(help="Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT.")],
    client_id: Annotated[
        str | None, typer.Option(help="Fixed client id: a persistent session across restarts.")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run one ingest worker on an external broker until Ctrl-C or SIGTERM."""
    from wattlake.stream.ingest import IngestWorker

    settings = load_settings(data_dir, config)
    stop = threading.Event()
    stop_on_signals(stop)
    worker = IngestWorker(settings, broker, client_id=client_id)
    say(f"wattlake ingest: {broker} -> {worker.lake.url}")
    worker.run(stop)
    stats = worker.stream.stats
    say(f"stopped: {stats.readings} readings, {stats.dead_letters} dead letter(s)")

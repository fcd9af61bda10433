"""``wattlake demo``: the whole stack on one machine with simulated meters."""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any

import typer

from wattlake.cli.output import ConfigOption, DataDirOption, load_settings, say, stop_on_signals
from wattlake.errors import UsageError, WattlakeError


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command()(demo)


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

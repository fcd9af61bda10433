"""Commands of the device stage: ``wattlake simulate``."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from wattlake.console import say, stop_on_signals


def register(app: typer.Typer) -> None:
    """Add the device stage's commands to ``app``."""
    app.command()(simulate)


def simulate(
    broker: Annotated[str, typer.Option(help="Broker URL, mqtt://HOST:PORT.")],
    devices: Annotated[int, typer.Option(help="Simulated devices.", min=1)] = 1,
    rate: Annotated[float, typer.Option(help="Messages per second per device.", min=0.001)] = 1.0,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many messages per device.", min=1)
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same data.")] = 0,
    qos: Annotated[int, typer.Option(help="MQTT QoS of the publishes (0 or 1).", min=0, max=1)] = 1,
) -> None:
    """Publish simulated meter readings to a broker."""
    from wattlake.devices.simulator import Simulator
    from wattlake.gateway.mqtt import BrokerAddress

    stop = threading.Event()
    stop_on_signals(stop)
    simulator = Simulator(
        BrokerAddress.parse(broker),
        devices=devices,
        interval_s=1.0 / rate,
        seed=seed,
        qos=qos,
        count=count,
    )

    def stop_when_asked() -> None:
        stop.wait()
        simulator.stop()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    published = simulator.run()
    say(f"published {published} messages")

"""Commands of the device stage: ``wattlake simulate``."""

from __future__ import annotations

import enum
import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from wattlake.cli.output import deprecated_spelling, say, stop_on_signals
from wattlake.errors import UsageError


class Payload(enum.StrEnum):
    """Payload formats of the simulator (its ``FORMAT_NAMES``; the simulator itself, with
    paho-mqtt, loads only when the command runs; a test keeps the two equal)."""

    shelly_gen1 = "shelly-gen1"
    shelly_gen1_3em = "shelly-gen1-3em"
    shelly_gen2 = "shelly-gen2"
    shelly_gen2_3em = "shelly-gen2-3em"
    generic = "generic"
    csv = "csv"


class Report(enum.StrEnum):
    """How ``wattlake simulate`` reports what it published and injected."""

    text = "text"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add the device stage's commands to ``app``."""
    app.command()(simulate)


def simulate(
    broker: Annotated[str, typer.Option(help="Broker URL, mqtt://HOST:PORT.")],
    devices: Annotated[int, typer.Option(help="Simulated devices.", min=1)] = 1,
    first_device: Annotated[
        int, typer.Option(help="Number of the first device (to run several simulators).", min=0)
    ] = 0,
    rate: Annotated[float, typer.Option(help="Publish rounds per second per device.")] = 1.0,
    payload_format: Annotated[
        Payload | None,
        typer.Option(
            "--payload", help="Payload format of every device.", show_default="shelly-gen2"
        ),
    ] = None,
    old_payload_format: Annotated[
        Payload | None,
        typer.Option("--format", hidden=True, help="Deprecated spelling of --payload."),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Stop after this many live rounds per device.", min=1)
    ] = None,
    batch: Annotated[
        int, typer.Option(help="Readings per message (generic format only).", min=1)
    ] = 1,
    duration: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed, the same data.")] = 0,
    qos: Annotated[int, typer.Option(help="MQTT QoS of the publishes (0 or 1).", min=0, max=1)] = 1,
    speed: Annotated[
        float,
        typer.Option(help="Simulated seconds per wall-clock second."),
    ] = 1.0,
    start: Annotated[
        str | None,
        typer.Option(help="Simulated time of the first live round, ISO 8601 (default: now)."),
    ] = None,
    backfill_days: Annotated[
        float,
        typer.Option(help="First publish this many days of history (device-time formats).", min=0),
    ] = 0.0,
    backfill_interval: Annotated[
        float,
        typer.Option(help="Seconds of device time between backfilled rounds."),
    ] = 60.0,
    pv_kwp: Annotated[
        float, typer.Option(help="Peak power of the PV array of PV homes [kWp] (0: none).", min=0)
    ] = 0.0,
    pv_share: Annotated[float, typer.Option(help="Share of devices with PV.", min=0, max=1)] = 1.0,
    ev_share: Annotated[
        float, typer.Option(help="Share of devices charging an electric car.", min=0, max=1)
    ] = 0.0,
    heat_pump_share: Annotated[
        float, typer.Option(help="Share of devices with a heat pump.", min=0, max=1)
    ] = 0.0,
    utc_offset_h: Annotated[
        float,
        typer.Option(help="Local time of the homes' habits, hours from UTC.", min=-12, max=14),
    ] = 0.0,
    reboot_rate: Annotated[
        float, typer.Option(help="Chance per device and round of a reboot.", min=0, max=1)
    ] = 0.0,
    offline_rate: Annotated[
        float, typer.Option(help="Chance per device and round of going offline.", min=0, max=1)
    ] = 0.0,
    offline_s: Annotated[
        float, typer.Option(help="Length of an offline gap [simulated s].", min=0)
    ] = 60.0,
    duplicate_rate: Annotated[
        float, typer.Option(help="Chance per message of sending it twice.", min=0, max=1)
    ] = 0.0,
    late_rate: Annotated[
        float, typer.Option(help="Chance per message of sending it late.", min=0, max=1)
    ] = 0.0,
    late_s: Annotated[
        float, typer.Option(help="How late a late message is [simulated s].", min=0)
    ] = 30.0,
    malformed_rate: Annotated[
        float, typer.Option(help="Chance per message of a broken payload.", min=0, max=1)
    ] = 0.0,
    clock_skew_rate: Annotated[
        float, typer.Option(help="Share of devices whose clock is off.", min=0, max=1)
    ] = 0.0,
    clock_skew_s: Annotated[
        float, typer.Option(help="Largest clock offset of a skewed device [s].", min=0)
    ] = 120.0,
    report: Annotated[
        Report, typer.Option(help="Report at the end: text (stderr) or json (one line on stdout).")
    ] = Report.text,
) -> None:
    """Publish simulated meter readings, with injected faults, to a broker."""
    from wattlake.devices.sim.simulator import Faults, FleetConfig, SimFormat, Simulator
    from wattlake.gateway.mqtt import BrokerAddress

    for option, value in (
        ("--rate", rate),
        ("--speed", speed),
        ("--backfill-interval", backfill_interval),
        ("--duration", duration),
    ):
        if value is not None and not value > 0:
            raise UsageError(f"{option} must be a positive number, not {value:g}.")
    if old_payload_format is not None:
        deprecated_spelling("--format", "--payload")
    chosen = payload_format or old_payload_format or Payload.shelly_gen2
    address = BrokerAddress.parse(broker)
    faults = Faults(
        reboot_rate=reboot_rate,
        offline_rate=offline_rate,
        offline_s=offline_s,
        duplicate_rate=duplicate_rate,
        late_rate=late_rate,
        late_s=late_s,
        malformed_rate=malformed_rate,
        clock_skew_rate=clock_skew_rate,
        clock_skew_s=clock_skew_s,
    )
    config = FleetConfig(
        fmt=SimFormat(chosen.value),
        devices=devices,
        first_device=first_device,
        seed=seed,
        faults=faults,
        batch=batch,
        pv_kwp=pv_kwp,
        pv_share=pv_share,
        ev_share=ev_share,
        heat_pump_share=heat_pump_share,
        utc_offset_s=utc_offset_h * 3600.0,
    )
    simulator = Simulator(
        address,
        config=config,
        interval_s=1.0 / rate,
        qos=qos,
        count=count,
        speed=speed,
        backfill_days=backfill_days,
        backfill_interval_s=backfill_interval,
        duration_s=duration,
        start_s=_epoch_s(start),
    )
    stop = threading.Event()
    stop_on_signals(stop)

    def stop_when_asked() -> None:
        stop.wait()
        simulator.stop()

    threading.Thread(target=stop_when_asked, daemon=True).start()
    started = time.monotonic()
    simulator.run()
    elapsed_s = time.monotonic() - started
    stats = simulator.stats
    if report is Report.json:
        sys.stdout.write(json.dumps({**stats.as_dict(), "elapsed_s": round(elapsed_s, 3)}) + "\n")
        sys.stdout.flush()
    rate_text = f" ({stats.messages / elapsed_s:.0f} msg/s)" if elapsed_s > 0 else ""
    say(f"{stats.summary()}; {elapsed_s:.1f} s{rate_text}")


def _epoch_s(text: str | None) -> float | None:
    """Return an ISO 8601 time (naive means UTC) as epoch seconds.

    Raises:
        UsageError: the text is not a time.
    """
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--start {text!r} is not a time like 2026-01-31T12:00:00Z.") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()

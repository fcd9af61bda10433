"""Simulator payloads through the real decoders: the readings that come out are the ones sent."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.devices.sim.simulator import (
    FORMAT_NAMES,
    RENDERED_FORMATS,
    Faults,
    Fleet,
    FleetConfig,
    SimFormat,
    SimMessage,
)
from wattlake.errors import DecodeError
from wattlake.schema import Reading

START_S = datetime(2026, 6, 21, 4, 0, tzinfo=UTC).timestamp()
STEP_S = 10.0
ROUNDS = 60
DEVICES = 4


def rows(decoded: list[Reading] | pa.Table) -> list[Reading]:
    if isinstance(decoded, pa.Table):
        table = decoded.set_column(0, "ts", decoded.column("ts").cast(pa.int64()))
        return [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
    return decoded


def run(
    config: FleetConfig,
) -> tuple[Fleet, list[tuple[SimMessage, list[Reading]]], list[tuple[SimMessage, DecodeError]]]:
    """Decode every message, received at its round's simulated time (Gen1 has no other)."""
    fleet = Fleet(config)
    router = DecoderRouter()
    decoded: list[tuple[SimMessage, list[Reading]]] = []
    refused: list[tuple[SimMessage, DecodeError]] = []
    for i in range(ROUNDS + 1):
        at_ms = round((START_S + i * STEP_S) * 1000)
        batch = fleet.round(START_S + i * STEP_S, STEP_S) if i < ROUNDS else fleet.drain()
        for message in batch:
            try:
                out = rows(router.decode(RawMessage(message.topic, message.payload, at_ms)))
            except DecodeError as exc:
                refused.append((message, exc))
            else:
                decoded.append((message, out))
    decoded.append((SimMessage("drain", b""), router.drain()))
    return fleet, decoded, refused


def all_readings(decoded: list[tuple[SimMessage, list[Reading]]]) -> list[Reading]:
    return [r for _, out in decoded for r in out]


def test_gen2_notifications_become_one_reading_per_channel_with_device_time() -> None:
    config = FleetConfig(fmt=SimFormat.shelly_gen2, devices=DEVICES, seed=1, pv_kwp=5.0)
    fleet, decoded, refused = run(config)
    assert refused == []
    for message, out in decoded:
        if not message.topic.endswith("/events/rpc"):
            assert out == []
            continue
        params = json.loads(message.payload)["params"]
        assert sorted(r["channel"] for r in out) == [0, 1]
        for reading in out:
            assert reading["ts"] == round(params["ts"] * 1000)
            assert reading["source"] == "shelly-gen2"
            component = params[f"em1:{reading['channel']}"]
            if "act_power" in component:
                assert reading["power_w"] == component["act_power"]
            counters = params.get(f"em1data:{reading['channel']}", {})
            if "total_act_energy" in counters:
                assert reading["energy_wh"] == counters["total_act_energy"]
    assert len(all_readings(decoded)) == 2 * DEVICES * ROUNDS == 2 * fleet.stats.data_messages


def test_gen2_three_phase_gives_three_readings_per_notification() -> None:
    config = FleetConfig(fmt=SimFormat.shelly_gen2_3em, devices=DEVICES, seed=2)
    _, decoded, refused = run(config)
    assert refused == []
    readings = all_readings(decoded)
    assert len(readings) == 3 * DEVICES * ROUNDS
    assert {r["channel"] for r in readings} == {0, 1, 2}
    assert all(r["power_w"] > 0 for r in readings)  # no PV: every phase draws


def test_gen1_cycles_become_one_reading_per_channel_and_round() -> None:
    config = FleetConfig(fmt=SimFormat.shelly_gen1, devices=DEVICES, seed=3)
    fleet, decoded, refused = run(config)
    assert refused == []
    readings = all_readings(decoded)
    assert len(readings) == 2 * DEVICES * ROUNDS
    sent: dict[tuple[str, int, str], list[float]] = {}
    for message, _ in decoded:
        parts = message.topic.split("/")
        if len(parts) == 5:
            sent.setdefault((parts[1], int(parts[3]), parts[4]), []).append(float(message.payload))
    got: dict[tuple[str, int], list[Reading]] = {}
    for r in sorted(readings, key=lambda r: r["ts"]):
        got.setdefault((r["device_id"], r["channel"]), []).append(r)
    for (device, channel), series in got.items():
        assert [r["power_w"] for r in series] == sent[(device, channel, "power")]
        assert [r["energy_wh"] for r in series] == sent[(device, channel, "total")]
        assert [r["returned_energy_wh"] for r in series] == sent[
            (device, channel, "total_returned")
        ]
    assert fleet.stats.status_messages == 2 * DEVICES  # online + announce


def test_gen1_minus_one_after_a_reboot_becomes_null_not_zero() -> None:
    config = FleetConfig(
        fmt=SimFormat.shelly_gen1, devices=DEVICES, seed=4, faults=Faults(reboot_rate=0.05)
    )
    fleet, decoded, refused = run(config)
    assert refused == []
    assert fleet.stats.reboots > 0
    readings = all_readings(decoded)
    assert len(readings) == 2 * DEVICES * ROUNDS
    blank = [r for r in readings if r.get("energy_wh") is None]
    assert len(blank) == 2 * fleet.stats.reboots


def test_generic_batches_decode_to_every_reading() -> None:
    for batch in (1, 5, 20):  # 20: the decoder's Arrow fast path
        config = FleetConfig(fmt=SimFormat.generic, devices=DEVICES, seed=5, batch=batch)
        _, decoded, refused = run(config)
        assert refused == []
        readings = all_readings(decoded)
        assert len(readings) == batch * DEVICES * ROUNDS
        for message, out in decoded[:-1]:
            doc = json.loads(message.payload)
            sent = doc if isinstance(doc, list) else [doc]
            assert [(round(s["ts"] * 1000), s["channel"], s["power_w"]) for s in sent] == [
                (r["ts"], r["channel"], r["power_w"]) for r in out
            ]


def test_csv_payloads_carry_the_generic_fleets_readings() -> None:
    """The simulator renders both through their descriptors: same readings, other payloads."""
    assert {"generic", "csv"} <= set(RENDERED_FORMATS)
    by_format = {}
    for fmt in ("generic", "csv"):
        config = FleetConfig(fmt=fmt, devices=DEVICES, seed=5, batch=4, pv_kwp=4.0)
        _, decoded, refused = run(config)
        assert refused == []
        by_format[fmt] = [{**r, "source": ""} for r in all_readings(decoded)]
        assert decoded[0][0].topic.endswith("/csv" if fmt == "csv" else "/readings")
    assert len(by_format["csv"]) == 4 * DEVICES * ROUNDS
    assert by_format["csv"] == by_format["generic"]


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_malformed_payloads_are_refused_and_nothing_else_is(fmt: str) -> None:
    faults = Faults(malformed_rate=0.1, duplicate_rate=0.05, late_rate=0.05, clock_skew_rate=0.5)
    batch = 5 if fmt in RENDERED_FORMATS else 1
    config = FleetConfig(fmt=fmt, devices=DEVICES, seed=6, faults=faults, batch=batch)
    fleet, _, refused = run(config)
    assert fleet.stats.malformed > 0
    assert all(message.kind == "malformed" for message, _ in refused)
    assert len(refused) == fleet.stats.malformed
    reasons = {exc.reason for _, exc in refused}
    expected = {"invalid-json", "invalid-csv", "unknown-field", "bad-type", "not-finite"}
    assert reasons <= expected | {"bad-timestamp", "bad-value"}


def test_duplicates_decode_to_the_same_reading_twice() -> None:
    config = FleetConfig(
        fmt=SimFormat.generic, devices=DEVICES, seed=7, faults=Faults(duplicate_rate=0.2)
    )
    fleet, decoded, _ = run(config)
    keys = [(r["device_id"], r["channel"], r["ts"]) for r in all_readings(decoded)]
    assert len(keys) - len(set(keys)) == fleet.stats.duplicates > 0

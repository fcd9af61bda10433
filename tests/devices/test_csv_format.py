"""The CSV-over-MQTT format (``wattlake/<id>/csv``), and the format table it joined with one line.

The format is one module (:mod:`wattlake.devices.csv_lines`) plus its line in
:mod:`wattlake.devices.formats`; these tests show the router, the identity rule and the
simulator's payload all take it from the table. Broker ACLs and provisioning: tests/gateway.
"""

from __future__ import annotations

import math

import pytest

from wattlake.devices import csv_lines, formats
from wattlake.devices.base import RawMessage
from wattlake.devices.identity import IDENTITY_MISMATCH, ROOTS, bound_identity, publisher
from wattlake.devices.router import ROUTES, DecoderRouter
from wattlake.errors import DecodeError

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]
TS_S = NOW // 1000


def message(payload: bytes, device_id: str = "logger-1") -> RawMessage:
    return RawMessage(f"wattlake/{device_id}/csv", payload, NOW)


def test_lines_become_readings_in_canonical_units() -> None:
    payload = (
        b"ts,channel,power_w,voltage_v,energy_wh,returned_energy_wh\n"
        b"1767225590,0,412.5,231.2,1203344.0,\n"
        b"1767225590,1,-96,,88120.5,12.25\n"
        b"2026-01-01T00:59:00+01:00,2,,,,\n"
    )
    readings = DecoderRouter().decode(message(payload))
    assert readings == [
        {
            "ts": (TS_S - 10) * 1000,
            "received_at": NOW,
            "device_id": "logger-1",
            "channel": 0,
            "source": "csv",
            "power_w": 412.5,
            "voltage_v": 231.2,
            "energy_wh": 1203344.0,
        },
        {
            "ts": (TS_S - 10) * 1000,
            "received_at": NOW,
            "device_id": "logger-1",
            "channel": 1,
            "source": "csv",
            "power_w": -96.0,
            "energy_wh": 88120.5,
            "returned_energy_wh": 12.25,
        },
        {
            "ts": NOW - 60_000,
            "received_at": NOW,
            "device_id": "logger-1",
            "channel": 2,
            "source": "csv",
        },
    ]


def test_absent_columns_take_their_defaults() -> None:
    (reading,) = DecoderRouter().decode(message(b"power_w\r\n7\r\n"))
    assert isinstance(reading, dict)
    assert (reading["ts"], reading["channel"], reading["device_id"]) == (NOW, 0, "logger-1")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "invalid-csv"),
        (b"ts,power_w\n", "invalid-csv"),
        (b"\xff\xfe,power_w\n", "invalid-csv"),
        (b"ts,power_w\n1767225600\n", "invalid-csv"),
        (b"ts,watts\n1767225600,5\n", "unknown-field"),
        (b"power_w,power_w\n1,2\n", "unknown-field"),
        (b"power_w\nlots\n", "bad-type"),
        (b"power_w\nnan\n", "not-finite"),
        (b"power_w\ninf\n", "not-finite"),
        (b"channel,power_w\n-1,5\n", "bad-type"),
        (b"channel,power_w\n40000,5\n", "bad-type"),
        (b"ts,power_w\n2026-01-01T00:00:00,5\n", "bad-timestamp"),
        (b"ts,power_w\n900000000,5\n", "bad-timestamp"),
    ],
)
def test_one_bad_line_refuses_the_message_with_one_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        DecoderRouter().decode(message(payload))
    assert caught.value.reason == reason


def test_a_line_naming_another_device_refuses_the_message() -> None:
    router = DecoderRouter()
    forged = b"device_id,power_w\nlogger-1,1\nlogger-2,99999\n"
    with pytest.raises(DecodeError) as caught:
        router.decode(message(forged))
    assert caught.value.reason == IDENTITY_MISMATCH and "'logger-2'" in str(caught.value)
    assert "logger-2" not in router.device_status()
    (own,) = router.decode(message(b"device_id,power_w\nlogger-1,1\n"))
    assert isinstance(own, dict) and own["device_id"] == "logger-1"


def test_the_identity_rule_and_the_routes_come_from_the_table() -> None:
    assert publisher("wattlake/logger-1/csv") == bound_identity("wattlake/logger-1/csv")
    assert publisher("wattlake/logger-1/csv") == "logger-1"
    assert {f.topic_root for f in formats.FORMATS.values()} - {""} == ROOTS
    assert (("wattlake", "+", "csv"), "csv", 1) in ROUTES
    # Literal roots first: a Gen2 device named "wattlake" cannot take the CSV topics.
    first_any = next(i for i, (levels, _, _) in enumerate(ROUTES) if levels[0] == "+")
    assert all(levels[0] == "+" for levels, _, _ in ROUTES[first_any:])
    assert DecoderRouter().format_for("wattlake/status/csv") == "csv"


def test_a_device_override_can_choose_the_format() -> None:
    router = DecoderRouter(formats="logger-9=csv")
    assert router.format_for("logger-9/csv") == "csv"  # a Gen2-style prefix: <id>/
    (reading,) = router.decode(RawMessage("logger-9/csv", b"power_w\n3\n", NOW))
    assert isinstance(reading, dict) and reading["device_id"] == "logger-9"


def test_the_simulator_payload_decodes_to_the_same_readings() -> None:
    readings = [
        {"ts": NOW - 1_500, "channel": 0, "power_w": 123.25, "energy_wh": 10.5},
        {"ts": NOW - 1_500, "channel": 1, "power_w": -4.0, "returned_energy_wh": 2.0},
    ]
    topic, payload = csv_lines.FORMAT.render("logger-1", readings)  # type: ignore[misc]
    decoded = DecoderRouter().decode(RawMessage(topic, payload, NOW))
    assert topic == "wattlake/logger-1/csv"
    assert [
        {k: v for k, v in r.items() if k not in ("received_at", "device_id", "source")}
        for r in decoded  # type: ignore[union-attr]
    ] == readings
    assert not any(isinstance(v, float) and math.isnan(v) for r in decoded for v in r.values())  # type: ignore[union-attr]

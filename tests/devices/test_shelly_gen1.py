"""Shelly Gen1 (EM, 3EM): cycles assembled into readings, units, unavailable values, status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.devices.shelly_gen1 import CYCLE_TIMEOUT_MS, ShellyGen1Decoder
from wattlake.errors import DecodeError
from wattlake.schema import Reading

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shelly"
T0 = 1_757_060_400_000  # receive time of the first message [ms]
EM = "shellies/shellyem-B8B7F1"


def fixture_messages(name: str, step_ms: int = 10) -> list[RawMessage]:
    """Return a JSONL fixture as messages received ``step_ms`` apart from T0."""
    lines = (FIXTURES / name).read_text().splitlines()
    return [
        RawMessage(doc["topic"], doc["payload"].encode(), T0 + i * step_ms)
        for i, doc in enumerate(json.loads(line) for line in lines)
    ]


def decode_all(decoder: ShellyGen1Decoder | DecoderRouter, messages: list[RawMessage]) -> list:
    out: list[Reading] = []
    for message in messages:
        out += decoder.decode(message)
    return out + decoder.drain()


def value(topic: str, payload: str, at_ms: int) -> RawMessage:
    return RawMessage(topic, payload.encode(), at_ms)


def test_shelly_em_fixture_gives_one_reading_per_channel() -> None:
    router = DecoderRouter()
    readings = decode_all(router, fixture_messages("gen1-shellyem.jsonl"))
    assert readings == [
        {
            "ts": T0,
            "received_at": T0,
            "device_id": "shellyem-B8B7F1",
            "channel": 0,
            "source": "shelly-gen1",
            "power_w": 1243.52,
            "reactive_power_var": -112.30,
            "voltage_v": 231.84,
            "pf": 0.99,
            "energy_wh": 912345.6,  # total [Wh] wins over energy (74617 Wmin since boot)
            "returned_energy_wh": 1520.4,
        },
        {
            "ts": T0 + 80,
            "received_at": T0 + 80,
            "device_id": "shellyem-B8B7F1",
            "channel": 1,
            "source": "shelly-gen1",
            "power_w": -350.10,
            "energy_wh": 1200.0,
            "returned_energy_wh": 40211.7,
        },
    ]


def test_shelly_3em_fixture_gives_three_phases() -> None:
    readings = decode_all(DecoderRouter(), fixture_messages("gen1-shellyem3.jsonl"))
    assert readings == [
        {
            "ts": T0,
            "received_at": T0,
            "device_id": "shellyem3-A1B2C3",
            "channel": 0,
            "source": "shelly-gen1",
            "power_w": 812.40,
            "current_a": 3.55,
            "voltage_v": 229.90,
            "pf": 0.98,
            "energy_wh": 15234.7,
            "returned_energy_wh": 0.0,
        },
        {
            "ts": T0 + 60,
            "received_at": T0 + 60,
            "device_id": "shellyem3-A1B2C3",
            "channel": 1,
            "source": "shelly-gen1",
            "power_w": 95.10,
        },
        {
            "ts": T0 + 70,
            "received_at": T0 + 70,
            "device_id": "shellyem3-A1B2C3",
            "channel": 2,
            "source": "shelly-gen1",
            "power_w": 2201.00,
        },
    ]


def test_fixture_status_topics_feed_device_status() -> None:
    router = DecoderRouter()
    decode_all(router, fixture_messages("gen1-shellyem.jsonl"))
    status = router.device_status()["shellyem-B8B7F1"]
    assert status.online is True
    assert status.format == "shelly-gen1"
    assert (status.model, status.ip, status.mac) == ("SHEM", "192.0.2.17", "C45BBEB8B7F1")
    assert status.fw == "20230913-114244/v1.14.0-gcb84623"
    assert status.last_seen_ms == T0 + 130


def test_a_repeated_quantity_starts_the_next_cycle() -> None:
    decoder = ShellyGen1Decoder()
    assert decoder.decode(value(f"{EM}/emeter/0/power", "100", T0)) == []
    assert decoder.decode(value(f"{EM}/emeter/0/voltage", "230", T0 + 5)) == []
    done = decoder.decode(value(f"{EM}/emeter/0/power", "200", T0 + 30_000))
    assert [(r["ts"], r["power_w"], r["voltage_v"]) for r in done] == [(T0, 100.0, 230.0)]
    rest = decoder.drain()
    assert [(r["ts"], r["power_w"]) for r in rest] == [(T0 + 30_000, 200.0)]
    assert "voltage_v" not in rest[0]
    assert decoder.drain() == []


def test_a_quiet_gap_ends_a_cycle() -> None:
    decoder = ShellyGen1Decoder()
    decoder.decode(value(f"{EM}/emeter/0/power", "100", T0))
    done = decoder.decode(value(f"{EM}/emeter/0/voltage", "230", T0 + CYCLE_TIMEOUT_MS))
    assert [(r["ts"], r.get("voltage_v")) for r in done] == [(T0, None)]
    assert [(r["ts"], r["voltage_v"]) for r in decoder.drain()] == [(T0 + CYCLE_TIMEOUT_MS, 230.0)]


def test_drain_with_a_time_returns_only_quiet_cycles() -> None:
    decoder = ShellyGen1Decoder()
    decoder.decode(value(f"{EM}/emeter/0/power", "1", T0))
    decoder.decode(value(f"{EM}/emeter/1/power", "2", T0 + 4_000))
    quiet = decoder.drain(T0 + CYCLE_TIMEOUT_MS)
    assert [(r["channel"], r["power_w"]) for r in quiet] == [(0, 1.0)]
    assert decoder.drain(T0 + CYCLE_TIMEOUT_MS) == []
    assert [(r["channel"], r["power_w"]) for r in decoder.drain()] == [(1, 2.0)]


def test_channels_and_devices_keep_separate_cycles() -> None:
    decoder = ShellyGen1Decoder()
    messages = [
        value(f"{EM}/emeter/0/power", "1", T0),
        value(f"{EM}/emeter/1/power", "2", T0 + 1),
        value("shellies/other/emeter/0/power", "3", T0 + 2),
        value(f"{EM}/emeter/0/voltage", "230", T0 + 3),
    ]
    readings = decode_all(decoder, messages)
    assert sorted((r["device_id"], r["channel"], r["power_w"]) for r in readings) == [
        ("other", 0, 3.0),
        ("shellyem-B8B7F1", 0, 1.0),
        ("shellyem-B8B7F1", 1, 2.0),
    ]
    assert next(r for r in readings if r["power_w"] == 1.0)["voltage_v"] == 230.0


def test_watt_minutes_become_watt_hours_without_total() -> None:
    decoder = ShellyGen1Decoder()
    decoder.decode(value(f"{EM}/emeter/0/energy", "74617", T0))
    decoder.decode(value(f"{EM}/emeter/0/returned_energy", "120", T0 + 1))
    [reading] = decoder.drain()
    assert reading["energy_wh"] == 74617 / 60
    assert reading["returned_energy_wh"] == 2.0


def test_total_is_preferred_over_energy() -> None:
    decoder = ShellyGen1Decoder()
    for i, (quantity, text) in enumerate(
        [("energy", "600"), ("total", "5000.5"), ("returned_energy", "60"), ("total_returned", "7")]
    ):
        decoder.decode(value(f"{EM}/emeter/0/{quantity}", text, T0 + i))
    [reading] = decoder.drain()
    assert (reading["energy_wh"], reading["returned_energy_wh"]) == (5000.5, 7.0)


def test_minus_one_after_a_reboot_is_null_not_zero() -> None:
    decoder = ShellyGen1Decoder()
    for i, quantity in enumerate(["total", "total_returned", "energy", "voltage", "current"]):
        decoder.decode(value(f"{EM}/emeter/0/{quantity}", "-1", T0 + i))
    decoder.decode(value(f"{EM}/emeter/0/power", "-1", T0 + 9))  # power is signed: a real -1 W
    [reading] = decoder.drain()
    for column in ("energy_wh", "returned_energy_wh", "voltage_v", "current_a"):
        assert column not in reading
    assert reading["power_w"] == -1.0


def test_unavailable_total_falls_back_to_energy() -> None:
    decoder = ShellyGen1Decoder()
    decoder.decode(value(f"{EM}/emeter/0/total", "-1", T0))
    decoder.decode(value(f"{EM}/emeter/0/energy", "600", T0 + 1))
    assert decoder.drain()[0]["energy_wh"] == 10.0


def test_online_and_announce_per_device() -> None:
    router = DecoderRouter()
    assert router.decode(value(f"{EM}/online", "false", T0)) == []
    announce = {"id": "shellyem-B8B7F1", "model": "SHEM", "fw_ver": "v1.14.0", "ip": "192.0.2.1"}
    assert router.decode(value(f"{EM}/announce", json.dumps(announce), T0 + 5)) == []
    status = router.device_status()["shellyem-B8B7F1"]
    assert (status.online, status.model, status.fw, status.last_seen_ms) == (
        False,
        "SHEM",
        "v1.14.0",
        T0 + 5,
    )


def test_other_gen1_topics_only_mark_the_device_seen() -> None:
    router = DecoderRouter()
    assert router.decode(value(f"{EM}/relay/0", "on", T0)) == []
    assert router.device_status()["shellyem-B8B7F1"].last_seen_ms == T0


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (f"{EM}/emeter/0/power", "12,5", "bad-type"),
        (f"{EM}/emeter/0/power", "", "bad-type"),
        (f"{EM}/emeter/0/power", "on", "bad-type"),
        (f"{EM}/emeter/0/power", "nan", "not-finite"),
        (f"{EM}/emeter/0/voltage", "inf", "not-finite"),
        (f"{EM}/emeter/0/power", "1e999", "not-finite"),
        (f"{EM}/emeter/0/frequency", "50", "unknown-quantity"),
        (f"{EM}/emeter/x/power", "1", "unknown-topic"),
        (f"{EM}/emeter/99999/power", "1", "unknown-topic"),
        (f"{EM}/nonsense", "1", "unknown-topic"),
        (f"{EM}/online", "maybe", "bad-type"),
        (f"{EM}/announce", "{not json", "invalid-json"),
        (f"{EM}/announce", "[1]", "bad-type"),
        (f"{EM}/announce", '{"id": "another"}', "identity-mismatch"),
        ("shellies/announce", '{"model": "SHEM"}', "bad-type"),
    ],
)
def test_bad_gen1_messages_are_refused_with_a_reason(topic: str, payload: str, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        DecoderRouter().decode(value(topic, payload, T0))
    assert caught.value.reason == reason


def test_a_refused_value_leaves_the_open_cycle_intact() -> None:
    decoder = ShellyGen1Decoder()
    decoder.decode(value(f"{EM}/emeter/0/power", "100", T0))
    with pytest.raises(DecodeError):
        decoder.decode(value(f"{EM}/emeter/0/voltage", "bad", T0 + 1))
    decoder.decode(value(f"{EM}/emeter/0/voltage", "230", T0 + 2))
    assert decoder.drain() == [
        {
            "ts": T0,
            "received_at": T0,
            "device_id": "shellyem-B8B7F1",
            "channel": 0,
            "source": "shelly-gen1",
            "power_w": 100.0,
            "voltage_v": 230.0,
        }
    ]

"""Shelly Gen2+ (Pro EM, Pro 3EM): notifications, status topics, per-minute data records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shelly"
NOW = 1_757_060_400_000  # receive time [ms], after every fixture's device time
PRO_EM = "shellyproem50-08f9e0e67204"
PRO_3EM = "shellypro3em-1234567890ab"


def fixture(name: str, device: str) -> RawMessage:
    return RawMessage(f"{device}/events/rpc", (FIXTURES / name).read_bytes(), NOW)


def meta(device: str, channel: int, ts: int) -> dict[str, Any]:
    return {
        "ts": ts,
        "received_at": NOW,
        "device_id": device,
        "channel": channel,
        "source": "shelly-gen2",
    }


def rpc(device: str, method: str, params: dict[str, Any]) -> RawMessage:
    doc = {"src": device, "dst": f"{device}/events", "method": method, "params": params}
    return RawMessage(f"{device}/events/rpc", json.dumps(doc).encode(), NOW)


def test_pro_em_notify_status_fixture() -> None:
    readings = DecoderRouter().decode(fixture("gen2-proem-notifystatus.json", PRO_EM))
    assert readings == [
        {
            **meta(PRO_EM, 0, 1_757_060_280_210),
            "power_w": 1150.3,
            "apparent_power_va": 1184.8,
            "voltage_v": 231.4,
            "current_a": 5.12,
            "pf": 0.97,
            "freq_hz": 50.0,
        },
        {
            **meta(PRO_EM, 1, 1_757_060_280_210),
            "power_w": -5080.3,
            "apparent_power_va": 5142.4,
            "voltage_v": 224.6,
            "current_a": 22.78,
            "pf": -0.99,
            "freq_hz": 50.0,
        },
    ]


def test_pro_em_counters_fixture() -> None:
    readings = DecoderRouter().decode(fixture("gen2-proem-em1data.json", PRO_EM))
    assert readings == [
        {**meta(PRO_EM, 0, 1_757_060_340_020), "energy_wh": 6644.90, "returned_energy_wh": 2595.26},
        {**meta(PRO_EM, 1, 1_757_060_340_020), "energy_wh": 1020.11, "returned_energy_wh": 88410.5},
    ]


def test_pro_3em_triphase_fixture_gives_one_reading_per_phase() -> None:
    readings = DecoderRouter().decode(fixture("gen2-pro3em-triphase.json", PRO_3EM))
    ts = 1_757_059_829_080
    assert readings == [
        {
            **meta(PRO_3EM, 0, ts),
            "power_w": 250.4,
            "apparent_power_va": 283.0,
            "voltage_v": 230.1,
            "current_a": 1.23,
            "pf": 0.88,
            "freq_hz": 50.0,
        },
        {
            **meta(PRO_3EM, 1, ts),
            "power_w": 95.0,
            "apparent_power_va": 117.0,
            "voltage_v": 229.4,
            "current_a": 0.51,
            "pf": 0.81,
            "freq_hz": 50.0,
        },
        {
            **meta(PRO_3EM, 2, ts),
            "power_w": -18.0,
            "apparent_power_va": 108.7,
            "voltage_v": 228.3,
            "current_a": 0.476,
            "pf": 0.55,
            "freq_hz": 50.0,
        },
    ]


def test_pro_3em_emdata_fixture_gives_counters_per_phase() -> None:
    readings = DecoderRouter().decode(fixture("gen2-pro3em-emdata.json", PRO_3EM))
    ts = 1_757_060_280_210
    assert readings == [
        {**meta(PRO_3EM, 0, ts), "energy_wh": 0.06, "returned_energy_wh": 0.0},
        {**meta(PRO_3EM, 1, ts), "energy_wh": 0.06, "returned_energy_wh": 0.01},
        {**meta(PRO_3EM, 2, ts), "energy_wh": 26289.44, "returned_energy_wh": 131881.85},
    ]


def test_notify_status_merges_onto_the_last_known_state() -> None:
    router = DecoderRouter()
    router.decode(rpc("d", "NotifyStatus", {"em1:0": {"act_power": 10, "voltage": 230}}))
    [reading] = router.decode(rpc("d", "NotifyStatus", {"em1:0": {"act_power": 20}}))
    assert (reading["power_w"], reading["voltage_v"], reading["ts"]) == (20.0, 230.0, NOW)


def test_notify_full_status_replaces_the_state() -> None:
    router = DecoderRouter()
    router.decode(rpc("d", "NotifyStatus", {"em1:0": {"act_power": 10, "voltage": 230}}))
    [reading] = router.decode(rpc("d", "NotifyFullStatus", {"em1:0": {"act_power": 20}}))
    assert "voltage_v" not in reading


def test_status_topic_of_a_single_phase_channel() -> None:
    status = {
        "id": 1,
        "act_power": 42.5,
        "voltage": 229.0,
        "current": 0.2,
        "calibration": "factory",
    }
    message = RawMessage(f"{PRO_EM}/status/em1:1", json.dumps(status).encode(), NOW)
    assert DecoderRouter().decode(message) == [
        {**meta(PRO_EM, 1, NOW), "power_w": 42.5, "voltage_v": 229.0, "current_a": 0.2}
    ]


def test_status_topics_of_a_three_phase_meter() -> None:
    router = DecoderRouter()
    em = {"id": 0, "a_act_power": 1.0, "b_act_power": 2.0, "c_act_power": 3.0, "ts": 1757060000}
    readings = router.decode(RawMessage(f"{PRO_3EM}/status/em:0", json.dumps(em).encode(), NOW))
    assert [(r["channel"], r["power_w"], r["ts"]) for r in readings] == [
        (0, 1.0, 1_757_060_000_000),
        (1, 2.0, 1_757_060_000_000),
        (2, 3.0, 1_757_060_000_000),
    ]
    emdata = {"id": 0, "a_total_act_energy": 5.0, "c_total_act_ret_energy": 7.5, "total_act": 5.0}
    message = RawMessage(f"{PRO_3EM}/status/emdata:0", json.dumps(emdata).encode(), NOW)
    assert router.decode(message) == [
        {**meta(PRO_3EM, 0, NOW), "energy_wh": 5.0},
        {**meta(PRO_3EM, 2, NOW), "returned_energy_wh": 7.5},
    ]
    counters = {"id": 0, "total_act_energy": 1.5, "total_act_ret_energy": 0.5}
    message = RawMessage(f"{PRO_EM}/status/em1data:0", json.dumps(counters).encode(), NOW)
    assert router.decode(message) == [
        {**meta(PRO_EM, 0, NOW), "energy_wh": 1.5, "returned_energy_wh": 0.5}
    ]


def test_status_of_a_non_meter_component_has_no_readings() -> None:
    message = RawMessage(f"{PRO_EM}/status/sys", b'{"mac": "08F9E0E67204"}', NOW)
    assert DecoderRouter().decode(message) == []


def test_online_topic_feeds_device_status() -> None:
    router = DecoderRouter()
    assert router.decode(RawMessage(f"{PRO_EM}/online", b"true", NOW)) == []
    status = router.device_status()[PRO_EM]
    assert (status.online, status.format, status.last_seen_ms) == (True, "shelly-gen2", NOW)


def data_event(component: str, keys: list[str], values: list[list[Any]], **extra: Any) -> dict:
    data = {"ts": 1_757_060_160, "period": 60, "keys": keys, "values": values}
    return {"component": component, "id": 0, "event": "data", "ts": 1757060280.5, "data": data}


def test_notify_event_em1data_records_backfill_with_their_own_times() -> None:
    keys = ["total_act_energy", "total_act_ret_energy", "avg_voltage", "avg_current", "max_act"]
    values = [[2.5, 0.5, 230.0, 1.0, 99.0], [1.0, 0.0, 231.0, None, 98.0], [None] * 5]
    message = rpc(
        PRO_EM,
        "NotifyEvent",
        {"ts": 1757060280.5, "events": [data_event("em1data:1", keys, values)]},
    )
    assert DecoderRouter().decode(message) == [
        # (2.5 - 0.5) Wh in 60 s is a mean of 120 W; a row of nulls yields nothing
        {
            **meta(PRO_EM, 1, 1_757_060_160_000),
            "power_w": 120.0,
            "voltage_v": 230.0,
            "current_a": 1.0,
        },
        {**meta(PRO_EM, 1, 1_757_060_220_000), "power_w": 60.0, "voltage_v": 231.0},
    ]


def test_notify_event_emdata_records_per_phase() -> None:
    keys = ["a_total_act_energy", "a_total_act_ret_energy", "b_total_act_energy", "c_avg_voltage"]
    event = data_event("emdata:0", keys, [[1.0, 0.0, 0.5, 229.5]])
    message = rpc(PRO_3EM, "NotifyEvent", {"ts": 1757060280.5, "events": [event]})
    ts = 1_757_060_160_000
    assert DecoderRouter().decode(message) == [
        {**meta(PRO_3EM, 0, ts), "power_w": 60.0},
        {**meta(PRO_3EM, 1, ts), "power_w": 30.0},
        {**meta(PRO_3EM, 2, ts), "voltage_v": 229.5},
    ]


def test_keys_may_sit_on_the_event() -> None:
    event = data_event("em1data:0", [], [[6.0]])
    del event["data"]["keys"]
    event["keys"] = ["total_act_energy"]
    message = rpc(PRO_EM, "NotifyEvent", {"ts": 1757060280.5, "events": [event]})
    assert [r["power_w"] for r in DecoderRouter().decode(message)] == [360.0]


def test_other_events_carry_no_readings() -> None:
    event = {"component": "switch:0", "id": 0, "event": "toggle", "ts": 1757060280.5}
    message = rpc(PRO_EM, "NotifyEvent", {"ts": 1757060280.5, "events": [event]})
    assert DecoderRouter().decode(message) == []


def bad_event(**changes: Any) -> RawMessage:
    event = data_event("em1data:0", ["total_act_energy"], [[1.0]])
    for key, change in changes.items():
        if key.startswith("data_"):
            event["data"][key.removeprefix("data_")] = change
        else:
            event[key] = change
    return rpc(PRO_EM, "NotifyEvent", {"ts": 1757060280.5, "events": [event]})


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (RawMessage(f"{PRO_EM}/events/rpc", b"{nope", NOW), "invalid-json"),
        (RawMessage(f"{PRO_EM}/events/rpc", b"[1, 2]", NOW), "bad-type"),
        (RawMessage(f"{PRO_EM}/events/rpc", b'{"method": "NotifyStatus"}', NOW), "bad-type"),
        (rpc(PRO_EM, "Switch.Set", {"id": 0}), "unknown-method"),
        (rpc(PRO_EM, "NotifyStatus", {"em1:0": {"act_power": "high"}}), "bad-type"),
        (rpc(PRO_EM, "NotifyStatus", {"em1:0": {"act_power": True}}), "bad-type"),
        (rpc(PRO_EM, "NotifyStatus", {"em1:0": [1]}), "bad-type"),
        (rpc(PRO_EM, "NotifyStatus", {"em1:x": {"act_power": 1}}), "unknown-component"),
        (rpc(PRO_EM, "NotifyStatus", {"pm1:0": {"apower": 1}}), "unknown-component"),
        (rpc(PRO_EM, "NotifyStatus", {"ts": 12.0, "em1:0": {"act_power": 1}}), "bad-timestamp"),
        (rpc(PRO_EM, "NotifyStatus", {"ts": 2e10, "em1:0": {"act_power": 1}}), "bad-timestamp"),
        (rpc(PRO_EM, "NotifyStatus", {"ts": "now", "em1:0": {"act_power": 1}}), "bad-type"),
        (
            RawMessage(
                f"{PRO_EM}/events/rpc",
                b'{"method":"NotifyStatus","params":{"em1:0":{"act_power":1e999}}}',
                NOW,
            ),
            "not-finite",
        ),
        (rpc(PRO_EM, "NotifyStatus", {"em1:0": {"act_power": 10**400}}), "not-finite"),
        (rpc(PRO_EM, "NotifyEvent", {"events": "x"}), "bad-type"),
        (bad_event(component="switch:0"), "unknown-component"),
        (bad_event(data=None), "bad-type"),
        (bad_event(data_keys=None), "bad-type"),
        (bad_event(data_values=[[1.0, 2.0]]), "bad-type"),
        (bad_event(data_period=0), "bad-type"),
        (bad_event(data_period=1e300, data_values=[[1.0], [2.0]]), "bad-type"),
        (rpc(PRO_EM, "NotifyStatus", {"ts": 1.8e305, "em1:0": {"act_power": 1}}), "bad-timestamp"),
        (bad_event(data_ts=2e10), "bad-timestamp"),
        (bad_event(data_values=[["x"]]), "bad-type"),
        (RawMessage(f"{PRO_EM}/status/em1:0", b"[]", NOW), "bad-type"),
        (RawMessage(f"{PRO_EM}/status/heater:0", b"{}", NOW), "unknown-component"),
        (RawMessage(f"{PRO_EM}/online", b"yes", NOW), "bad-type"),
    ],
)
def test_bad_gen2_messages_are_refused_with_a_reason(message: RawMessage, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        DecoderRouter().decode(message)
    assert caught.value.reason == reason

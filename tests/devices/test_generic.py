"""The generic JSON format: one reading or an array; exact values; every bad input refused."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from wattlake.devices.base import RawMessage
from wattlake.devices.generic import TABLE_MIN_READINGS
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError
from wattlake.schema import READING_SCHEMA, readings_to_table

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z [ms]
TOPIC = "wattlake/meter-7/readings"


def message(body: Any, topic: str = TOPIC) -> RawMessage:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawMessage(topic, payload, NOW)


def decode(body: Any, topic: str = TOPIC) -> Any:
    return DecoderRouter().decode(message(body, topic))


def test_one_reading_object() -> None:
    body = {"ts": 1767225000.5, "channel": 1, "power_w": 812.5, "energy_wh": 15234.7}
    assert decode(body) == [
        {
            "ts": 1_767_225_000_500,
            "received_at": NOW,
            "device_id": "meter-7",
            "channel": 1,
            "source": "generic",
            "power_w": 812.5,
            "energy_wh": 15234.7,
        }
    ]


def test_defaults_receive_time_and_channel_zero() -> None:
    [reading] = decode({"power_w": 5})
    assert (reading["ts"], reading["channel"], reading["power_w"]) == (NOW, 0, 5.0)


@pytest.mark.parametrize(
    ("text", "ts_ms"),
    [
        ("2025-12-31T23:50:00Z", 1_767_225_000_000),
        ("2026-01-01T00:50:00+01:00", 1_767_225_000_000),
        ("2025-12-31T18:50:00.250-05:00", 1_767_225_000_250),
    ],
)
def test_iso_timestamps_with_an_offset(text: str, ts_ms: int) -> None:
    assert decode({"ts": text, "power_w": 1})[0]["ts"] == ts_ms


def test_every_canonical_column() -> None:
    body = {
        "ts": 1767225000,
        "device_id": "meter-7",
        "channel": 2,
        "power_w": -1.5,
        "apparent_power_va": 2.0,
        "reactive_power_var": -0.5,
        "voltage_v": 230.0,
        "current_a": 0.1,
        "pf": -0.75,
        "freq_hz": 50.0,
        "energy_wh": 10.0,
        "returned_energy_wh": 20.0,
    }
    [reading] = decode(body)
    assert reading == {
        **{k: v for k, v in body.items() if k != "ts"},
        "ts": 1_767_225_000_000,
        "received_at": NOW,
        "source": "generic",
    }


def test_a_small_array_gives_reading_dicts_and_nulls_stay_absent() -> None:
    body = [{"ts": 1767225000 + i, "power_w": float(i), "voltage_v": None} for i in range(3)]
    readings = decode(body)
    assert [(r["ts"], r["power_w"]) for r in readings] == [
        (1_767_225_000_000, 0.0),
        (1_767_225_001_000, 1.0),
        (1_767_225_002_000, 2.0),
    ]
    assert all("voltage_v" not in r for r in readings)


def test_an_empty_array_is_no_readings() -> None:
    assert decode([]) == []


def batch(n: int) -> list[dict[str, Any]]:
    return [
        {
            "ts": 1767225000 + i * 0.5,
            "channel": i % 3,
            "power_w": 100.0 + i,
            **({"energy_wh": 5000.0 + i} if i % 2 else {}),
        }
        for i in range(n)
    ]


def test_a_large_array_is_an_arrow_table_in_the_canonical_schema() -> None:
    body = batch(100)
    table = decode(body)
    assert isinstance(table, pa.Table)
    assert table.schema == READING_SCHEMA
    assert table.num_rows == 100
    rows = table.to_pylist()
    assert rows[7]["ts"].timestamp() == 1767225003.5
    assert rows[7]["received_at"].timestamp() * 1000 == NOW
    assert (rows[7]["channel"], rows[7]["power_w"], rows[7]["energy_wh"]) == (1, 107.0, 5007.0)
    assert (rows[8]["energy_wh"], rows[8]["voltage_v"]) == (None, None)
    assert set(table.column("device_id").to_pylist()) == {"meter-7"}
    assert set(table.column("source").to_pylist()) == {"generic"}


def test_the_table_holds_the_same_readings_as_the_dict_path() -> None:
    body = batch(TABLE_MIN_READINGS)
    body[3]["ts"] = "2025-12-31T23:55:00+00:00"
    del body[4]["ts"]
    table = decode(body)
    assert isinstance(table, pa.Table)
    dicts = [r for part in body for r in decode(part)]
    assert table.equals(readings_to_table(dicts))


def test_an_array_without_times_uses_the_receive_time() -> None:
    table = decode([{"power_w": float(i)} for i in range(20)])
    assert {t.timestamp() * 1000 for t in table.column("ts").to_pylist()} == {NOW}


@pytest.mark.parametrize("size", [1, 3, TABLE_MIN_READINGS, 100])
@pytest.mark.parametrize(
    ("bad", "reason", "says"),
    [
        ({"power": 1.0}, "unknown-field", "power"),
        ({"received_at": 1767225000}, "unknown-field", "received_at"),
        ({"source": "x"}, "unknown-field", "source"),
        ({"power_w": "5"}, "bad-type", "power_w"),
        ({"power_w": True}, "bad-type", "power_w"),
        ({"channel": -1}, "bad-type", "channel"),
        ({"channel": 1.5}, "bad-type", "channel"),
        ({"channel": 40000}, "bad-type", "channel"),
        ({"device_id": "meter-8"}, "identity-mismatch", "meter-8"),
        ({"ts": 12}, "bad-timestamp", "ts"),
        ({"ts": 1867225000}, "bad-timestamp", "ts"),
        ({"ts": 1.8e305}, "bad-timestamp", "ts"),
        ({"ts": "yesterday"}, "bad-timestamp", "yesterday"),
        ({"ts": "2026-01-01T00:00:00"}, "bad-timestamp", "offset"),
        ({"ts": [1]}, "bad-type", "ts"),
    ],
)
def test_one_bad_reading_refuses_the_whole_message(
    size: int, bad: dict[str, Any], reason: str, says: str
) -> None:
    body = batch(size)
    body[size // 2].update(bad)
    with pytest.raises(DecodeError) as caught:
        decode(body if size > 1 else body[0])
    assert caught.value.reason == reason
    assert says in str(caught.value)


@pytest.mark.parametrize("size", [1, 100])
def test_numbers_beyond_float_range_are_not_finite(size: int) -> None:
    rows = ",".join('{"power_w": 1}' for _ in range(size - 1))
    payload = f'[{rows}{"," if rows else ""}{{"power_w": 1e999}}]'.encode()
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert caught.value.reason == "not-finite"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "invalid-json"),
        (b"{", "invalid-json"),
        (b"NaN", "invalid-json"),
        (b'{"power_w": NaN}', "invalid-json"),
        (b"42", "bad-type"),
        (b'"x"', "bad-type"),
        (b"[[1]]", "bad-type"),
        (b"[1, 2]", "bad-type"),
    ],
)
def test_payloads_that_are_not_readings(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert caught.value.reason == reason


@pytest.mark.parametrize("topic", ["wattlake//readings", "wattlake/x/reading", "wattlake/x/y/z"])
def test_topics_outside_the_format(topic: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode({"power_w": 1}, topic)
    assert caught.value.reason == "unknown-topic"


def test_generic_devices_appear_in_device_status() -> None:
    router = DecoderRouter()
    router.decode(message({"power_w": 1}))
    status = router.device_status()["meter-7"]
    assert (status.format, status.last_seen_ms, status.online) == ("generic", NOW, None)


def test_a_batch_of_empty_arrays_is_no_readings() -> None:
    decoded, failed = DecoderRouter().decode_many([message([]), message([])])
    assert failed == []
    assert sum(d.num_rows if isinstance(d, pa.Table) else len(d) for d in decoded) == 0

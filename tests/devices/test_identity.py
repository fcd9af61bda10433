"""The identity rule in the router: a message naming a device other than its publisher is
refused whole (``identity-mismatch``), in every format, and changes no device's state."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from wattlake.devices.base import RawMessage
from wattlake.devices.generic import TABLE_MIN_READINGS
from wattlake.devices.identity import IDENTITY_MISMATCH, bound_identity, check, publisher
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError
from wattlake.gateway.auth import publish_refusal
from wattlake.gateway.registry import Client

NOW = 1_767_225_600_000
TS_S = NOW // 1000


def gen2(topic_device: str, src: str | None, **em1: float) -> RawMessage:
    doc: dict[str, Any] = {"method": "NotifyStatus", "params": {"ts": TS_S, "em1:0": em1}}
    if src is not None:
        doc["src"] = src
    return RawMessage(f"{topic_device}/events/rpc", json.dumps(doc).encode(), NOW)


def refused(router: DecoderRouter, message: RawMessage) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        router.decode(message)
    assert caught.value.reason == IDENTITY_MISMATCH
    return caught.value


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("meter-a/events/rpc", "meter-a"),
        ("meter-a/status/em1:0", "meter-a"),
        ("shellies/em-1/emeter/0/power", "em-1"),
        ("shellies/em-1/em-2/emeter/0/power", "em-1"),
        ("wattlake/m-1/readings", "m-1"),
        ("home/m-1/readings", "home"),
        ("shellies/announce", None),
        ("wattlake/readings", None),
        ("single", None),
    ],
)
def test_the_publisher_is_the_level_the_broker_acl_pins(topic: str, expected: str | None) -> None:
    assert publisher(topic) == expected


def test_the_broker_acl_and_the_ingest_name_the_same_publisher() -> None:
    """The simulator's ACL check (role fleet) reads the topic with the same function."""
    fleet = Client("wattlake-simulator", "generic", "password", role="fleet")
    assert publish_refusal(fleet, "shellies/pro-sim0001/x/emeter/0/power") is None
    assert publish_refusal(fleet, "shellies/pro-1/pro-sim0001/emeter/0/power") == "foreign-topic"
    assert bound_identity("shellies/announce") is None
    assert bound_identity("wattlake/readings") == ""


def test_a_gen2_src_naming_another_device_is_refused_and_changes_nothing() -> None:
    router = DecoderRouter()
    error = refused(router, gen2("meter-a", "meter-b", act_power=9999.0, voltage=1.0))
    assert "'meter-b'" in str(error) and "'meter-a'" in str(error)
    assert "meter-b" not in router.device_status()
    # B's own partial notification does not inherit A's values (no state was kept for B).
    [reading] = router.decode(gen2("meter-b", "meter-b", act_power=5.0))
    assert reading["device_id"] == "meter-b" and "voltage_v" not in reading
    assert reading["power_w"] == 5.0
    # Honest messages, with or without src, are the publisher's.
    assert router.decode(gen2("meter-a", "meter-a", act_power=1.0))[0]["device_id"] == "meter-a"
    assert router.decode(gen2("meter-a", None, act_power=2.0))[0]["device_id"] == "meter-a"


def test_a_gen2_data_event_naming_another_device_is_refused() -> None:
    doc = {
        "src": "meter-b",
        "method": "NotifyEvent",
        "params": {"events": [{"component": "em1data:0", "event": "data", "ts": TS_S}]},
    }
    refused(DecoderRouter(), RawMessage("meter-a/events/rpc", json.dumps(doc).encode(), NOW))


def test_a_gen1_topic_naming_another_device_below_the_publisher_is_refused() -> None:
    router = DecoderRouter()
    refused(router, RawMessage("shellies/em-a/em-b/emeter/0/power", b"9999", NOW))
    assert router.drain() == []  # no cycle was opened for em-b
    router.decode(RawMessage("shellies/em-b/emeter/0/power", b"5", NOW))
    [reading] = router.drain()
    assert (reading["device_id"], reading["power_w"]) == ("em-b", 5.0)


def test_a_gen1_announce_names_its_publisher_or_is_refused() -> None:
    router = DecoderRouter()
    refused(router, RawMessage("shellies/em-a/announce", b'{"id": "em-b", "model": "X"}', NOW))
    assert "em-b" not in router.device_status()
    assert router.decode(RawMessage("shellies/em-a/announce", b'{"id": "em-a"}', NOW)) == []
    # shellies/announce names its device in the payload; the broker checked it.
    assert router.decode(RawMessage("shellies/announce", b'{"id": "em-b"}', NOW)) == []
    assert router.device_status()["em-b"].format == "shelly-gen1"


@pytest.mark.parametrize("size", [1, TABLE_MIN_READINGS])
def test_a_generic_reading_naming_another_device_is_refused(size: int) -> None:
    rows = [{"ts": TS_S + i, "power_w": 1.0} for i in range(size)]
    rows[-1]["device_id"] = "meter-b"
    message = RawMessage("wattlake/meter-a/readings", json.dumps(rows).encode(), NOW)
    error = refused(DecoderRouter(), message)
    assert "'meter-b'" in str(error) and "'meter-a'" in str(error)


@pytest.mark.parametrize("layout", ["array", "ndjson"])
def test_a_batch_message_naming_two_devices_is_refused_and_its_neighbours_kept(
    layout: str,
) -> None:
    def body(rows: list[dict[str, Any]]) -> bytes:
        if layout == "array":
            return json.dumps(rows).encode()
        return b"\n".join(json.dumps(r).encode() for r in rows)

    honest = [{"ts": TS_S + i, "power_w": 1.0, "device_id": "meter-a"} for i in range(20)]
    mixed = [{**r, "device_id": "meter-a" if i % 2 else "meter-b"} for i, r in enumerate(honest)]
    messages = [
        RawMessage("wattlake/meter-a/readings", body(honest), NOW),
        RawMessage("wattlake/meter-a/readings", body(mixed), NOW),
        RawMessage("wattlake/meter-c/readings", body([{"ts": TS_S, "power_w": 3.0}] * 2), NOW),
    ]
    decoded, failed = DecoderRouter().decode_many(messages)
    assert [(m, e.reason) for m, e in failed] == [(messages[1], IDENTITY_MISMATCH)]
    table = pa.concat_tables(
        d if isinstance(d, pa.Table) else pa.Table.from_pylist(d) for d in decoded
    )
    assert sorted(set(table["device_id"].to_pylist())) == ["meter-a", "meter-c"]
    assert table.num_rows == 22


def test_check_reads_tables_and_reading_lists() -> None:
    table = pa.table({"device_id": ["a", "a", "b"]})
    with pytest.raises(DecodeError, match="'b'"):
        check("a", "a/x", table)
    check("a", "a/x", table.slice(0, 2))
    check("a", "a/x", [])
    with pytest.raises(DecodeError):
        check("", "wattlake/readings", [{"device_id": "a"}])

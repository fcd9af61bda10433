"""Topic routes, per-device format overrides, payload limits, drain and device status."""

from __future__ import annotations

import pytest

from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter, parse_formats
from wattlake.errors import ConfigError, DecodeError

NOW = 1_767_225_600_000


@pytest.mark.parametrize(
    ("topic", "fmt"),
    [
        ("wattlake/meter-1/readings", "generic"),
        ("shellies/announce", "shelly-gen1"),
        ("shellies/shellyem-1/emeter/0/power", "shelly-gen1"),
        ("shellies/shellyem-1/online", "shelly-gen1"),
        ("shellies/shellyem-1/announce", "shelly-gen1"),
        ("shellies/shellyem-1/relay/0", "shelly-gen1"),
        ("shellyproem50-1/events/rpc", "shelly-gen2"),
        ("shellyproem50-1/status/em1:0", "shelly-gen2"),
        ("shellyproem50-1/online", "shelly-gen2"),
    ],
)
def test_default_routes(topic: str, fmt: str) -> None:
    assert DecoderRouter().format_for(topic) == fmt


@pytest.mark.parametrize(
    "topic", ["", "a", "a/b/c/d", "shellies", "x/events/other", "a/b/readings"]
)
def test_unknown_topics(topic: str) -> None:
    with pytest.raises(DecodeError) as caught:
        DecoderRouter().decode(RawMessage(topic, b"1", NOW))
    assert caught.value.reason == "unknown-topic"


def test_override_a_gen2_meter_under_a_gen1_style_prefix() -> None:
    """A Gen2 meter configured with the prefix ``shellies/<id>`` (as Gen1 devices use)."""
    rpc = (
        b'{"src":"plus-1","method":"NotifyStatus","params":{"ts":1767225000,'
        b'"em1:0":{"act_power":12.5}}}'
    )
    online = RawMessage("shellies/plus-1/online", b"true", NOW)
    events = RawMessage("shellies/plus-1/events/rpc", rpc, NOW)
    plain = DecoderRouter()
    plain.decode(online)
    assert plain.device_status()["plus-1"].format == "shelly-gen1"
    with pytest.raises(DecodeError):
        plain.decode(events)

    router = DecoderRouter(formats={"plus-1": "shelly-gen2"})
    router.decode(online)
    assert router.device_status()["plus-1"].format == "shelly-gen2"
    [reading] = router.decode(events)
    assert (reading["device_id"], reading["power_w"], reading["source"]) == (
        "plus-1",
        12.5,
        "shelly-gen2",
    )
    status = RawMessage("shellies/plus-1/status/em1:0", b'{"act_power": 3}', NOW)
    assert router.decode(status)[0]["power_w"] == 3.0


def test_override_a_generic_device_under_its_own_prefix() -> None:
    """Under ``<id>/`` (the prefix a broker grants it); under someone else's level, the topic
    belongs to that level's device, so naming sensor-9 there is an identity mismatch."""
    router = DecoderRouter(formats="sensor-9=generic")
    message = RawMessage("sensor-9/readings", b'{"power_w": 4}', NOW)
    assert router.decode(message)[0]["device_id"] == "sensor-9"
    with pytest.raises(DecodeError):
        DecoderRouter().decode(message)
    with pytest.raises(DecodeError) as caught:
        router.decode(RawMessage("home/sensor-9/readings", b'{"power_w": 4}', NOW))
    assert caught.value.reason == "identity-mismatch"
    assert "'sensor-9'" in str(caught.value) and "'home'" in str(caught.value)


def test_formats_setting_text() -> None:
    assert parse_formats(" a=generic, b = shelly-gen2 ,") == {"a": "generic", "b": "shelly-gen2"}
    assert parse_formats("") == {}
    with pytest.raises(ConfigError, match="device_id=format"):
        parse_formats("a:generic")
    with pytest.raises(ConfigError, match="unknown format 'shelly-gen9'"):
        DecoderRouter(formats={"a": "shelly-gen9"})


def test_formats_setting_is_registered() -> None:
    settings = Settings.load(environ={"WATTLAKE_DEVICES__FORMATS": "a=generic"})
    assert DecoderRouter(formats=settings["devices.formats"]).formats == {"a": "generic"}


def test_oversized_payloads_are_refused_before_decoding() -> None:
    router = DecoderRouter(max_payload_bytes=10)
    with pytest.raises(DecodeError) as caught:
        router.decode(RawMessage("wattlake/a/readings", b'{"power_w": 1.0}', NOW))
    assert caught.value.reason == "oversized-payload"
    assert router.decode(RawMessage("wattlake/a/readings", b"[]", NOW)) == []


def test_drain_returns_held_gen1_cycles() -> None:
    router = DecoderRouter()
    router.decode(RawMessage("shellies/em-1/emeter/0/power", b"5", NOW))
    assert router.drain(NOW + 1) == []
    [reading] = router.drain()
    assert (reading["device_id"], reading["power_w"]) == ("em-1", 5.0)

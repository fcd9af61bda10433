"""Shelly Gen1 energy meters (Shelly EM, Shelly 3EM): one value per MQTT topic.

A Gen1 meter publishes every quantity of a channel as its own message,
``shellies/<device-id>/emeter/<channel>/<quantity>``, with the number as plain text, once per
publish period (30 s by default), all quantities of a period in one burst. The decoder gathers
the values of one burst (a *cycle*) into one reading per (device, channel):

- a cycle ends when a quantity arrives that the open cycle already holds (the next period has
  begun), or when no value came for :data:`CYCLE_TIMEOUT_MS` (checked when the next value
  arrives and by :meth:`ShellyGen1Decoder.drain`, which the stream calls before every flush);
- the reading's ``ts`` and ``received_at`` are the receive time of the cycle's first value
  (Gen1 payloads carry no device time).

``energy``/``returned_energy`` count watt-minutes since boot; ``total``/``total_returned`` count Wh
and survive reboots, so they are preferred for ``energy_wh``/``returned_energy_wh``; a cycle
without ``total`` falls back to ``energy`` / 60. After a reboot the firmware may publish ``-1``
for a quantity it cannot measure yet: that becomes null, never zero (only for quantities that
cannot be negative; ``power``, ``reactive_power`` and ``pf`` are signed and kept as they are).

``shellies/<id>/online`` (the last will, ``true``/``false``) and ``shellies/announce`` or
``shellies/<id>/announce`` (a JSON document: id, model, mac, ip, fw_ver …) feed the device-status
registry and carry no readings; the other topics a Gen1 device publishes (relay, input …) carry
none either and only mark the device as seen.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

import msgspec

from wattlake.devices.base import RawMessage
from wattlake.devices.descriptor import DeviceFormat, Enrolment, Route
from wattlake.devices.status import StatusRegistry, parse_online
from wattlake.devices.validate import number_text
from wattlake.errors import DecodeError
from wattlake.schema import Reading

SOURCE: Final = "shelly-gen1"
ROOT: Final = "shellies"
# Longest silence inside one publish burst before its cycle counts as complete [ms].
CYCLE_TIMEOUT_MS: Final = 5_000
MAX_CHANNEL: Final = 32_767  # channel is int16 in the canonical schema
COMMON_CHANNELS: Final = {str(n): n for n in range(16)}  # skips parsing on the hot path


@dataclass(frozen=True, slots=True)
class Quantity:
    """How one Gen1 quantity maps onto a canonical column.

    ``divisor`` converts the device unit to the column unit (watt-minutes / 60 = Wh);
    ``minus_one_is_null`` marks quantities whose ``-1`` means "not available yet".
    """

    column: str
    divisor: float = 1.0
    minus_one_is_null: bool = False


# Gen1 quantity -> canonical column. Several quantities may feed one column: the first one in
# this order that has a value in the cycle wins (total before energy: Wh kept across reboots).
VARIABLE_MAP: Final = {
    "power": Quantity("power_w"),
    "reactive_power": Quantity("reactive_power_var"),
    "voltage": Quantity("voltage_v", minus_one_is_null=True),
    "current": Quantity("current_a", minus_one_is_null=True),
    "pf": Quantity("pf"),
    "total": Quantity("energy_wh", minus_one_is_null=True),
    "total_returned": Quantity("returned_energy_wh", minus_one_is_null=True),
    "energy": Quantity("energy_wh", divisor=60.0, minus_one_is_null=True),
    "returned_energy": Quantity("returned_energy_wh", divisor=60.0, minus_one_is_null=True),
}
# First topic level below shellies/<id>/ that Gen1 devices publish without meter readings.
STATUS_ONLY_TOPICS: Final = frozenset(
    {
        "relay",
        "input",
        "input_event",
        "longpush",
        "info",
        "status",
        "temperature",
        "overtemperature",
        "temperature_status",
        "ext_temperature",
        "ext_temperatures",
        "ext_humidity",
        "ext_switch",
        "sensor",
        "light",
        "color",
        "white",
        "roller",
        "command",
        "voltage",
        "loaderror",
        "overpower",
    }
)


@dataclass(slots=True)
class Cycle:
    """The values of one publish burst of one (device, channel), not yet emitted."""

    first_ms: int
    last_ms: int
    values: dict[str, float | None] = field(default_factory=dict)


class ShellyGen1Decoder:
    """Assemble Gen1 one-value-per-topic messages into readings, one per cycle and channel."""

    source = SOURCE

    def __init__(self, status: StatusRegistry | None = None) -> None:
        self.status = status or StatusRegistry()
        self._cycles: dict[tuple[str, int], Cycle] = {}

    def decode(self, message: RawMessage) -> list[Reading]:
        """Take one message; return the cycles it completes (usually none or one reading).

        Raises:
            DecodeError: ``unknown-topic`` for a topic outside the Gen1 layout,
                ``unknown-quantity`` for an emeter quantity the table does not know,
                ``bad-type``/``not-finite`` for a payload that is not a finite number,
                ``invalid-json``/``bad-type`` for a bad announce document.
        """
        parts = message.topic.split("/")
        at_ms = message.received_at_ms
        if len(parts) >= 4 and parts[-3] == "emeter":
            device_id = _device_id(parts[:-3], message.topic)
            return self._value(device_id, parts[-2], parts[-1], message)
        if parts[-1] == "announce" and len(parts) >= 2:
            self._announce(parts[:-1], message)
            return []
        if parts[-1] == "online" and len(parts) >= 3:
            device_id = _device_id(parts[:-1], message.topic)
            self.status.seen(device_id, SOURCE, at_ms, online=parse_online(message.payload))
            return []
        if len(parts) >= 3 and parts[0] == ROOT and parts[2] in STATUS_ONLY_TOPICS:
            self.status.seen(_device_id(parts[:2], message.topic), SOURCE, at_ms)
            return []
        raise DecodeError("unknown-topic", f"topic {message.topic!r} is not a Gen1 meter topic")

    def drain(self, now_ms: int | None = None) -> list[Reading]:
        """Return and forget the open cycles: all of them, or those quiet since ``now_ms``.

        A cycle is quiet when its last value is at least :data:`CYCLE_TIMEOUT_MS` older than
        ``now_ms`` [ms since the epoch]; None drains every cycle (before a final flush).
        """
        done = [
            key
            for key, cycle in self._cycles.items()
            if now_ms is None or now_ms - cycle.last_ms >= CYCLE_TIMEOUT_MS
        ]
        return [_reading(key, self._cycles.pop(key)) for key in done]

    def _value(
        self, device_id: str, channel_text: str, quantity: str, message: RawMessage
    ) -> list[Reading]:
        spec = VARIABLE_MAP.get(quantity)
        if spec is None:
            raise DecodeError("unknown-quantity", f"Gen1 emeter quantity {quantity!r} is unknown")
        channel = _channel(channel_text, message.topic)
        value: float | None = number_text(message.payload, quantity)
        if spec.minus_one_is_null and value == -1.0:
            value = None
        at_ms = message.received_at_ms
        self.status.seen(device_id, SOURCE, at_ms)
        key = (device_id, channel)
        cycle = self._cycles.get(key)
        out: list[Reading] = []
        if cycle is not None and (
            quantity in cycle.values or at_ms - cycle.last_ms >= CYCLE_TIMEOUT_MS
        ):
            out.append(_reading(key, cycle))
            cycle = None
        if cycle is None:
            cycle = self._cycles[key] = Cycle(at_ms, at_ms)
        cycle.values[quantity] = value
        cycle.last_ms = max(cycle.last_ms, at_ms)
        return out

    def _announce(self, prefix: list[str], message: RawMessage) -> None:
        try:
            doc = msgspec.json.decode(message.payload)
        except msgspec.DecodeError as exc:
            raise DecodeError("invalid-json", f"announce is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise DecodeError("bad-type", "announce is not a JSON object")
        body_id = doc.get("id")
        if body_id is not None and (not isinstance(body_id, str) or not body_id):
            raise DecodeError("bad-type", "announce id is not a device id")
        topic_id = _device_id(prefix, message.topic) if prefix != [ROOT] else None
        # The document's id is the device it names; the router's identity rule decides
        # whether the publisher may name it (status.announce refuses another device).
        device_id = body_id or topic_id
        if device_id is None:
            raise DecodeError("bad-type", "announce on shellies/announce has no id")
        self.status.announce(device_id, SOURCE, message.received_at_ms, doc)


def _device_id(prefix: list[str], topic: str) -> str:
    """Return the device id of a topic prefix: its last level (``shellies/<id>`` -> ``<id>``).

    Raises:
        DecodeError: ``unknown-topic`` when the prefix names no device.
    """
    device_id = prefix[-1] if prefix else ""
    if not device_id or (device_id == ROOT and len(prefix) == 1):
        raise DecodeError("unknown-topic", f"topic {topic!r} names no device")
    return device_id


def _channel(text: str, topic: str) -> int:
    """Return the channel number of an emeter topic level.

    Raises:
        DecodeError: ``unknown-topic`` when the level is not a channel number.
    """
    channel = COMMON_CHANNELS.get(text)
    if channel is not None:
        return channel
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > MAX_CHANNEL:
        raise DecodeError("unknown-topic", f"topic {topic!r} has no channel number")
    return int(text)


def _reading(key: tuple[str, int], cycle: Cycle) -> Reading:
    """Build the reading of a finished cycle through :data:`VARIABLE_MAP`."""
    device_id, channel = key
    reading: Reading = {
        "ts": cycle.first_ms,
        "received_at": cycle.first_ms,
        "device_id": device_id,
        "channel": channel,
        "source": SOURCE,
    }
    for quantity, spec in VARIABLE_MAP.items():
        value = cycle.values.get(quantity)
        if value is not None and spec.column not in reading:
            reading[spec.column] = value / spec.divisor
    return reading


# -- provisioning: the ``/settings`` parameters of the web page's "Advanced - Developer Settings"


def settings(enrolment: Enrolment, *, broker: str) -> dict[str, str]:
    """Return the Gen1 MQTT settings (``/settings`` parameters) for ``broker`` (``host:port``)."""
    device_id = enrolment.device_id
    return {
        "mqtt_enable": "true",
        "mqtt_server": broker,
        "mqtt_id": device_id,
        "mqtt_user": device_id,
        "mqtt_pass": enrolment.password,
        "mqtt_clean_session": "false",
    }


def settings_url(enrolment: Enrolment, *, broker: str) -> str:
    """Return the Gen1 settings URL that sets the MQTT connection."""
    query = urlencode(settings(enrolment, broker=broker))
    return f"http://{enrolment.device_address}/settings?{query}"


def instructions(enrolment: Enrolment) -> list[str]:
    """Return how to connect a Gen1 meter: its settings page, or one URL (no TLS)."""
    broker = f"{enrolment.broker_host}:{enrolment.plain_port}"
    url = settings_url(enrolment, broker=broker)
    return [
        f"Shelly Gen1 {enrolment.device_id}: Gen1 devices cannot use TLS. In the device's web",
        "page, Internet & Security -> Advanced - Developer Settings, enable MQTT and set:",
        *(f"  {k} = {v}" for k, v in settings(enrolment, broker=broker).items()),
        "or call the settings URL once:",
        f"  curl -sS {shlex.quote(url)}",
        "The broker must run its plain listener for Gen1 devices (see onboarding).",
    ]


FORMAT: Final = DeviceFormat(
    name="shelly-gen1",
    title="Shelly Gen1",
    routes=(
        Route("shellies/announce", None),  # the announce document names the device
        Route("shellies/+/#", 1),  # emeter/<ch>/<quantity>, online, announce, relay …
    ),
    decoder=ShellyGen1Decoder,
    instructions=instructions,
    topic_root="shellies",
    announce_topic="shellies/announce",
    read_topics=("shellies/command",),
    auth=("password",),
    plain_listener=True,
)

"""Shelly Gen2+ energy meters (Pro EM, EM Gen3, Pro 3EM) over MQTT JSON-RPC notifications.

Topic ``<prefix>/events/rpc`` carries ``NotifyStatus`` (changed keys only) and
``NotifyFullStatus`` (everything). Each component's keys are merged onto the last known state of
that component, so a notification with one changed key still yields a complete reading.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from wattlake.devices.base import RawMessage
from wattlake.devices.validate import number, timestamp_ms
from wattlake.errors import DecodeError
from wattlake.schema import Reading

SOURCE: Final = "shelly-gen2"

# Vendor key -> canonical column, for a single-phase channel (em1:N) and its counters.
EM1_MAP: Final = {
    "act_power": "power_w",
    "aprt_power": "apparent_power_va",
    "voltage": "voltage_v",
    "current": "current_a",
    "pf": "pf",
    "freq": "freq_hz",
}
EM1DATA_MAP: Final = {"total_act_energy": "energy_wh", "total_act_ret_energy": "returned_energy_wh"}
# Three-phase meters (em:0, emdata:0) prefix the same keys with the phase letter.
PHASES: Final = ("a", "b", "c")
EM_MAP: Final = {
    f"{p}_{key}": (ch, col) for ch, p in enumerate(PHASES) for key, col in EM1_MAP.items()
}
EMDATA_MAP: Final = {
    f"{p}_{key}": (ch, col) for ch, p in enumerate(PHASES) for key, col in EM1DATA_MAP.items()
}
NOTIFY_METHODS: Final = frozenset({"NotifyStatus", "NotifyFullStatus"})


class ShellyGen2Decoder:
    """Decode Gen2+ ``events/rpc`` notifications into readings, one per channel."""

    source = SOURCE

    def __init__(self) -> None:
        # (device_id, component) -> last known key/value state of that component
        self._state: dict[tuple[str, str], dict[str, Any]] = {}

    def decode(self, message: RawMessage) -> list[Reading]:
        """Return one reading per channel that the notification touches.

        Raises:
            DecodeError: invalid JSON, a wrong type, an unknown method or component.
        """
        try:
            doc = msgspec.json.decode(message.payload)
        except msgspec.DecodeError as exc:
            raise DecodeError("invalid-json", f"payload is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise DecodeError("bad-type", "payload is not a JSON object")
        method = doc.get("method")
        if method not in NOTIFY_METHODS:
            raise DecodeError("unknown-method", f"method {method!r} carries no readings")
        params = doc.get("params")
        if not isinstance(params, dict):
            raise DecodeError("bad-type", "params is not an object")
        device_id = doc.get("src") or message.topic.split("/", 1)[0]
        if not isinstance(device_id, str) or not device_id:
            raise DecodeError("bad-type", "src is not a device id")
        ts_ms = (
            timestamp_ms(params["ts"], message.received_at_ms)
            if "ts" in params
            else message.received_at_ms
        )
        by_channel: dict[int, Reading] = {}
        for component, changes in params.items():
            if component == "ts":
                continue
            if not isinstance(changes, dict):
                raise DecodeError("bad-type", f"{component} is not an object")
            kind, _, _ = component.partition(":")
            state = self._merge(device_id, component, changes, full=method == "NotifyFullStatus")
            for channel, column, value in _columns(component, kind, state):
                reading = by_channel.setdefault(channel, {"channel": channel})
                reading[column] = number(value, f"{component}.{column}")
        for reading in by_channel.values():
            reading.update(
                ts=ts_ms,
                received_at=message.received_at_ms,
                device_id=device_id,
                source=SOURCE,
            )
        return list(by_channel.values())

    def _merge(
        self, device_id: str, component: str, changes: dict[str, Any], *, full: bool
    ) -> dict[str, Any]:
        key = (device_id, component)
        state = {} if full else self._state.get(key, {})
        state = {**state, **changes}
        self._state[key] = state
        return state


def _columns(component: str, kind: str, state: dict[str, Any]) -> list[tuple[int, str, Any]]:
    """Map a component's state to (channel, column, value) triples; nulls are skipped."""
    out: list[tuple[int, str, Any]] = []
    if kind in ("em1", "em1data"):
        try:
            channel = int(component.partition(":")[2])
        except ValueError as exc:
            raise DecodeError("unknown-component", f"component {component!r}") from exc
        table = EM1_MAP if kind == "em1" else EM1DATA_MAP
        out = [(channel, col, state[k]) for k, col in table.items() if state.get(k) is not None]
    elif kind in ("em", "emdata"):
        table3 = EM_MAP if kind == "em" else EMDATA_MAP
        out = [(ch, col, state[k]) for k, (ch, col) in table3.items() if state.get(k) is not None]
    elif kind not in IGNORED_COMPONENTS:
        raise DecodeError("unknown-component", f"component {component!r} is not a meter")
    return out


# Components a meter reports that carry no energy readings.
IGNORED_COMPONENTS: Final = frozenset(
    {"sys", "wifi", "cloud", "mqtt", "ble", "eth", "ws", "temperature", "input", "switch", "ts"}
)

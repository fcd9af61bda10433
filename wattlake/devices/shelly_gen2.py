"""Shelly Gen2+ energy meters (Pro EM, EM Gen3, Pro 3EM) over MQTT.

Topics, below the device's MQTT prefix (the device id unless configured otherwise):

- ``<prefix>/events/rpc``: JSON-RPC notifications. ``NotifyStatus`` carries the changed keys of
  some components, ``NotifyFullStatus`` all of them; each component's keys are merged onto the
  last known state of that component, so a notification with one changed key still yields a
  complete reading. ``params.ts`` [s] is the device time. ``NotifyEvent`` carries events; those
  named ``data`` from ``emdata:N``/``em1data:N`` hold per-minute records of the meter's store,
  decoded into readings with their own times so they fill gaps (see :func:`record_readings`);
  other events carry no readings.
- ``<prefix>/status/<component>``: the component's whole status object (the same mapping tables;
  ``ts`` is the receive time unless the object has a ``ts`` [s]).
- ``<prefix>/online``: the last will, ``true``/``false``, for the device-status registry.
- ``<prefix>/rpc``: calls to the device (the refill's): no readings.
- ``<prefix>/wattlake/rpc``: answers to the ``EMData.GetData``/``EM1Data.GetData`` calls the
  gateway's refill makes after a gap (:mod:`wattlake.gateway.refill`); the call's ``id``
  carries the counters at the start of the asked interval, so the per-minute records become
  cumulative counter readings (source ``shelly-gen2-refill``) that continue the live ones
  exactly (see :func:`refill_readings`).

The device a notification names is its ``src``, else the last level of the prefix; the router
refuses one that names a device other than its publisher (``identity-mismatch``, see
:mod:`wattlake.devices.identity`). The status registry is told about the device before any
component state is kept for it, so such a message changes nothing.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from wattlake.devices.base import RawMessage
from wattlake.devices.descriptor import DeviceFormat, Enrolment, Route
from wattlake.devices.status import StatusRegistry, parse_online
from wattlake.devices.validate import number, timestamp_ms
from wattlake.errors import DecodeError
from wattlake.schema import Reading

SOURCE: Final = "shelly-gen2"
REFILL_SOURCE: Final = "shelly-gen2-refill"
# Prefix of the JSON-RPC id of a refill call: wattlake-refill/<component>/<start s>/<end s>/
# <import Wh>:<export Wh>[,<import Wh>:<export Wh> ...] (one pair per channel of the component).
REFILL_ID_PREFIX: Final = "wattlake-refill"
REFILL_TOPIC_LEVEL: Final = "wattlake"

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
EM_MAP: Final[dict[str, tuple[int | None, str]]] = {
    f"{p}_{key}": (ch, col) for ch, p in enumerate(PHASES) for key, col in EM1_MAP.items()
}
EMDATA_MAP: Final[dict[str, tuple[int | None, str]]] = {
    f"{p}_{key}": (ch, col) for ch, p in enumerate(PHASES) for key, col in EM1DATA_MAP.items()
}
# Component kind -> (vendor key -> (channel or None for the component's own id, column)).
COMPONENT_MAPS: Final[dict[str, dict[str, tuple[int | None, str]]]] = {
    "em1": {k: (None, col) for k, col in EM1_MAP.items()},
    "em1data": {k: (None, col) for k, col in EM1DATA_MAP.items()},
    "em": EM_MAP,
    "emdata": EMDATA_MAP,
}
# Per-minute data records (NotifyEvent "data", EMData/EM1Data.GetData): each row is one
# interval's statistics, not a counter. Record key (without phase prefix) -> column; the
# interval's import and export energy [Wh] become its mean power [W] (see record_readings).
RECORD_MAP: Final = {"avg_voltage": "voltage_v", "avg_current": "current_a"}
RECORD_IMPORT_KEY: Final = "total_act_energy"
RECORD_EXPORT_KEY: Final = "total_act_ret_energy"
RECORD_COMPONENTS: Final = {"em1data": (None,), "emdata": PHASES}
MAX_RECORD_PERIOD_S: Final = 86_400.0  # records are per minute; a day is already suspicious
NOTIFY_METHODS: Final = frozenset({"NotifyStatus", "NotifyFullStatus"})
EVENT_METHOD: Final = "NotifyEvent"
DATA_EVENT: Final = "data"
# Components a meter reports that carry no energy readings.
IGNORED_COMPONENTS: Final = frozenset(
    {
        "sys",
        "wifi",
        "cloud",
        "mqtt",
        "ble",
        "bthome",
        "eth",
        "ws",
        "temperature",
        "input",
        "switch",
        "script",
        "modbus",
        "ts",
    }
)
MAX_CHANNEL: Final = 32_767  # channel is int16 in the canonical schema


class ShellyGen2Decoder:
    """Decode Gen2+ notifications and status topics into readings, one per channel."""

    source = SOURCE

    def __init__(self, status: StatusRegistry | None = None) -> None:
        self.status = status or StatusRegistry()
        # (device_id, component) -> last known key/value state of that component
        self._state: dict[tuple[str, str], dict[str, Any]] = {}

    def state(self) -> list[list[Any]]:
        """Return the known state of every component, JSON-ready: ``[device_id, component,
        {key: value}]`` each (what a restarted decoder needs to decode the next changes)."""
        return [[device, component, values] for (device, component), values in self._state.items()]

    def restore(self, state: list[list[Any]]) -> None:
        """Take the component states that :meth:`state` returned (of an earlier decoder)."""
        for device_id, component, values in state:
            self._state[(str(device_id), str(component))] = dict(values)

    def decode(self, message: RawMessage) -> list[Reading]:
        """Return the readings in a Gen2 message (none for ``online`` and most events).

        Raises:
            DecodeError: ``unknown-topic``, ``invalid-json``, ``bad-type``, ``not-finite``,
                ``bad-timestamp``, ``unknown-method`` or ``unknown-component``.
        """
        parts = message.topic.split("/")
        if len(parts) >= 3 and parts[-2:] == ["events", "rpc"]:
            return self._rpc(parts[:-2], message)
        if len(parts) == 2 and parts[1] == "rpc":
            return []  # a call to the device (e.g. a refill's), not something it measured
        if len(parts) >= 3 and parts[-2:] == [REFILL_TOPIC_LEVEL, "rpc"]:
            device_id = _prefix_device(parts[:-2], message.topic)
            self.status.seen(device_id, SOURCE, message.received_at_ms)
            return refill_readings(device_id, _json_object(message.payload), message.received_at_ms)
        if len(parts) >= 3 and parts[-2] == "status":
            return self._status_topic(parts[:-2], parts[-1], message)
        if len(parts) >= 2 and parts[-1] == "online":
            device_id = _prefix_device(parts[:-1], message.topic)
            online = parse_online(message.payload)
            self.status.seen(device_id, SOURCE, message.received_at_ms, online=online)
            return []
        raise DecodeError("unknown-topic", f"topic {message.topic!r} is not a Gen2 topic")

    def _rpc(self, prefix: list[str], message: RawMessage) -> list[Reading]:
        doc = _json_object(message.payload)
        method = doc.get("method")
        params = doc.get("params")
        if not isinstance(params, dict):
            raise DecodeError("bad-type", "params is not an object")
        device_id = doc.get("src") or _prefix_device(prefix, message.topic)
        if not isinstance(device_id, str):
            raise DecodeError("bad-type", "src is not a device id")
        received = message.received_at_ms
        self.status.seen(device_id, SOURCE, received)
        if method == EVENT_METHOD:
            return self._events(device_id, params, received)
        if not isinstance(method, str) or method not in NOTIFY_METHODS:
            raise DecodeError("unknown-method", f"method {method!r:.60} carries no readings")
        ts_ms = timestamp_ms(params["ts"], received) if "ts" in params else received
        full = method == "NotifyFullStatus"
        components = {c: v for c, v in params.items() if c != "ts"}
        return self._readings(device_id, components, ts_ms, received, full=full)

    def _status_topic(
        self, prefix: list[str], component: str, message: RawMessage
    ) -> list[Reading]:
        device_id = _prefix_device(prefix, message.topic)
        doc = _json_object(message.payload)
        received = message.received_at_ms
        self.status.seen(device_id, SOURCE, received)
        ts_ms = timestamp_ms(doc["ts"], received) if "ts" in doc else received
        return self._readings(device_id, {component: doc}, ts_ms, received, full=True)

    def _readings(
        self,
        device_id: str,
        components: dict[str, Any],
        ts_ms: int,
        received_at_ms: int,
        *,
        full: bool,
    ) -> list[Reading]:
        """Merge each component onto its known state and map it to one reading per channel."""
        by_channel: dict[int, Reading] = {}
        for component, changes in components.items():
            if not isinstance(changes, dict):
                raise DecodeError("bad-type", f"{component} is not an object")
            table = _component_map(component)
            if table is None:
                continue
            state = self._merge(device_id, component, changes, full=full)
            own = _component_id(component)
            try:
                for key, (channel, column) in table.items():
                    value = state.get(key)
                    if value is None:
                        continue
                    reading = by_channel.get(own if channel is None else channel)
                    if reading is None:
                        reading = by_channel[own if channel is None else channel] = {}
                    reading[column] = number(value, key)
            except DecodeError as exc:
                raise DecodeError(exc.reason, f"{component}: {exc}") from exc
        for channel, reading in by_channel.items():
            reading.update(
                ts=ts_ms,
                received_at=received_at_ms,
                device_id=device_id,
                channel=channel,
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

    def _events(self, device_id: str, params: dict[str, Any], received_at_ms: int) -> list[Reading]:
        events = params.get("events")
        if not isinstance(events, list):
            raise DecodeError("bad-type", "NotifyEvent params.events is not a list")
        readings: list[Reading] = []
        for event in events:
            if not isinstance(event, dict):
                raise DecodeError("bad-type", "an event is not an object")
            if event.get("event") != DATA_EVENT:
                continue  # button presses, config changes …: no readings
            component = event.get("component")
            if not isinstance(component, str):
                raise DecodeError("bad-type", "a data event names no component")
            readings += record_readings(device_id, component, event, received_at_ms)
        return readings


def record_readings(
    device_id: str, component: str, event: dict[str, Any], received_at_ms: int
) -> list[Reading]:
    """Decode the per-minute records of an ``emdata``/``em1data`` ``data`` event into readings.

    Accepted shape (the record layout of ``EMData.GetData``/``EM1Data.GetData``)::

        {"component": "em1data:0", "event": "data", "ts": 1757060340.0,
         "data": {"keys": ["total_act_energy", "total_act_ret_energy", "avg_voltage", ...],
                  "ts": 1757060280, "period": 60,
                  "values": [[1.23, 0.0, 231.2, ...], ...]}}

    ``keys`` may sit in ``data`` or in the event. Row ``i`` of ``values`` covers the interval
    that starts at ``data.ts + i * period`` [s]; it becomes one reading per channel at that
    start whose ``power_w`` is the interval's mean power, ``(import - export) * 3600 / period``
    [W] (so integrating with the left rule gives back the device's energies exactly), with
    ``avg_voltage``/``avg_current`` as ``voltage_v``/``current_a`` (``period`` must be 0 < p <=
    86,400 s). Counters are not in records, so ``energy_wh`` stays null. Rows whose mapped
    values are all null yield nothing.

    Raises:
        DecodeError: ``unknown-component``, ``bad-type``, ``not-finite``, ``bad-timestamp``.
    """
    kind, _, _ = component.partition(":")
    phases = RECORD_COMPONENTS.get(kind)
    if phases is None:
        raise DecodeError("unknown-component", f"component {component!r} has no data records")
    own = _component_id(component)
    data = event.get("data")
    if not isinstance(data, dict):
        raise DecodeError("bad-type", f"{component} data event has no data object")
    keys = data.get("keys", event.get("keys"))
    values = data.get("values")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DecodeError("bad-type", f"{component} data record has no list of keys")
    if not isinstance(values, list):
        raise DecodeError("bad-type", f"{component} data record has no list of values")
    start_ms = timestamp_ms(data.get("ts"), received_at_ms)
    period_s = number(data.get("period"), "period")
    if not 0 < period_s <= MAX_RECORD_PERIOD_S:
        raise DecodeError("bad-type", f"{component} data period {period_s} s is out of range")
    index = {key: i for i, key in enumerate(keys)}
    readings: list[Reading] = []
    for row_number, row in enumerate(values):
        if not isinstance(row, list) or len(row) != len(keys):
            raise DecodeError("bad-type", f"{component} record {row_number} does not fit keys")
        ts_ms = start_ms + round(row_number * period_s * 1000)
        if ts_ms > received_at_ms + 24 * 3600 * 1000:
            raise DecodeError("bad-timestamp", f"{component} record {row_number} is in the future")
        for phase_index, phase in enumerate(phases):
            pre = "" if phase is None else f"{phase}_"
            channel = own if phase is None else phase_index

            def cell(key: str, pre: str = pre, row: list[Any] = row) -> float | None:
                at = index.get(pre + key)
                if at is None or row[at] is None:
                    return None
                return number(row[at], f"{component}.{pre}{key}")

            reading: Reading = {
                col: value for key, col in RECORD_MAP.items() if (value := cell(key)) is not None
            }
            imported, exported = cell(RECORD_IMPORT_KEY), cell(RECORD_EXPORT_KEY)
            if imported is not None or exported is not None:
                net_wh = (imported or 0.0) - (exported or 0.0)
                reading["power_w"] = net_wh * 3600.0 / period_s
            if not reading:
                continue
            reading.update(
                ts=ts_ms,
                received_at=received_at_ms,
                device_id=device_id,
                channel=channel,
                source=SOURCE,
            )
            readings.append(reading)
    return readings


@dataclass(frozen=True, slots=True)
class RefillCall:
    """What a refill call asks for, carried in its JSON-RPC ``id`` and read back from the answer.

    ``counters`` holds, per channel of ``component`` (phases a, b, c for ``emdata``), the
    device's (import, export) counters [Wh] at ``start_s``; records from ``start_s`` up to
    ``end_s`` [s] become readings.
    """

    component: str
    start_s: int
    end_s: int
    counters: tuple[tuple[float, float], ...]

    def call_id(self) -> str:
        """Return the JSON-RPC id that carries this call."""
        pairs = ",".join(f"{i!r}:{e!r}" for i, e in self.counters)
        return f"{REFILL_ID_PREFIX}/{self.component}/{self.start_s}/{self.end_s}/{pairs}"

    @classmethod
    def parse(cls, call_id: object) -> RefillCall:
        """Read a call id back.

        Raises:
            DecodeError: ``bad-type`` when it is not a refill call id.
        """
        try:
            prefix, component, start, end, pairs = str(call_id).split("/")
            if prefix != REFILL_ID_PREFIX or not isinstance(call_id, str):
                raise ValueError(prefix)
            counters = tuple(
                (float(i), float(e)) for i, e in (pair.split(":") for pair in pairs.split(","))
            )
            if not all(math.isfinite(v) for pair in counters for v in pair):
                raise ValueError(pairs)
            return cls(component, int(start), int(end), counters)
        except ValueError as exc:
            raise DecodeError("bad-type", f"{str(call_id)[:80]!r} is not a refill call id") from exc


def refill_readings(device_id: str, doc: dict[str, Any], received_at_ms: int) -> list[Reading]:
    """Decode the answer to a refill call into cumulative counter readings.

    Accepted shape (``EMData.GetData``/``EM1Data.GetData`` as documented by Shelly)::

        {"id": "wattlake-refill/em1data:0/1767225600/1767229200/1234.5:0.0",
         "src": "<device>", "dst": "<device>/wattlake",
         "result": {"keys": ["total_act_energy", "total_act_ret_energy", "avg_voltage", ...],
                    "data": [{"ts": 1767225600, "period": 60, "values": [[1.2, 0.0, 230.1], ...]}],
                    "next_record_ts": 1767229200}}

    Row ``i`` of a block covers [``ts + i*period``, ``ts + (i+1)*period``) [s]. Rows are taken in
    time order from the call's start; each becomes, per channel, a reading at the *end* of its
    interval with ``energy_wh``/``returned_energy_wh`` = the counters at the start plus every
    interval's import/export so far (so each refilled interval contributes exactly the energy
    the meter recorded for it, and a reading that lands on a live one's time carries the same
    counter), ``power_w`` the interval's mean power, ``voltage_v``/``current_a`` its averages.
    Readings at or after the call's end are left to the live data. An answer with ``error``
    (the device could not answer) yields nothing.

    Raises:
        DecodeError: ``bad-type``, ``not-finite``, ``bad-timestamp``, ``unknown-component``.
    """
    call = RefillCall.parse(doc.get("id"))
    result = doc.get("result")
    if result is None and "error" in doc:
        return []
    if not isinstance(result, dict):
        raise DecodeError("bad-type", "a refill answer has no result object")
    kind, _, _ = call.component.partition(":")
    phases = RECORD_COMPONENTS.get(kind)
    if phases is None or len(call.counters) != len(phases):
        raise DecodeError("unknown-component", f"{call.component!r} has no data records")
    own = _component_id(call.component)
    keys = result.get("keys")
    blocks = result.get("data")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DecodeError("bad-type", "a refill answer has no list of keys")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        raise DecodeError("bad-type", "a refill answer has no list of data blocks")
    index = {key: i for i, key in enumerate(keys)}
    rows: list[tuple[float, float, list[Any]]] = []
    for block in blocks:
        start_s = timestamp_ms(block.get("ts"), received_at_ms) / 1000.0
        period_s = number(block.get("period"), "period")
        if not 0 < period_s <= MAX_RECORD_PERIOD_S:
            raise DecodeError("bad-type", f"record period {period_s} s is out of range")
        values = block.get("values")
        if not isinstance(values, list):
            raise DecodeError("bad-type", "a data block has no list of values")
        for i, row in enumerate(values):
            if not isinstance(row, list) or len(row) != len(keys):
                raise DecodeError("bad-type", f"record {i} does not fit the keys")
            rows.append((start_s + i * period_s, period_s, row))
    rows.sort(key=lambda r: r[0])
    sums = [[imp, exp] for imp, exp in call.counters]
    readings: list[Reading] = []
    for row_start_s, period_s, row in rows:
        if row_start_s < call.start_s:
            continue
        end_s = row_start_s + period_s
        for phase_index, phase in enumerate(phases):
            pre = "" if phase is None else f"{phase}_"
            channel = own if phase is None else phase_index

            def cell(key: str, pre: str = pre, row: list[Any] = row) -> float | None:
                at = index.get(pre + key)
                if at is None or row[at] is None:
                    return None
                return number(row[at], f"{call.component}.{pre}{key}")

            imported = cell(RECORD_IMPORT_KEY) or 0.0
            exported = cell(RECORD_EXPORT_KEY) or 0.0
            sums[phase_index][0] += imported
            sums[phase_index][1] += exported
            if end_s >= call.end_s:
                continue
            reading: Reading = {
                col: value for key, col in RECORD_MAP.items() if (value := cell(key)) is not None
            }
            reading.update(
                ts=round(end_s * 1000),
                received_at=received_at_ms,
                device_id=device_id,
                channel=channel,
                power_w=(imported - exported) * 3600.0 / period_s,
                energy_wh=sums[phase_index][0],
                returned_energy_wh=sums[phase_index][1],
                source=REFILL_SOURCE,
            )
            readings.append(reading)
    return readings


def _json_object(payload: bytes) -> dict[str, Any]:
    """Return a payload that must be one JSON object.

    Raises:
        DecodeError: ``invalid-json`` or ``bad-type``.
    """
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.ValidationError as exc:  # valid JSON, but a number beyond float range
        raise DecodeError("not-finite", f"payload has a number out of range: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise DecodeError("invalid-json", f"payload is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DecodeError("bad-type", "payload is not a JSON object")
    return doc


def _component_map(component: str) -> dict[str, tuple[int | None, str]] | None:
    """Return the mapping table of a component, None for one without readings.

    Raises:
        DecodeError: ``unknown-component`` for a component that is neither.
    """
    kind, _, _ = component.partition(":")
    table = COMPONENT_MAPS.get(kind)
    if table is None and kind not in IGNORED_COMPONENTS:
        raise DecodeError("unknown-component", f"component {component!r} is not a meter")
    return table


def _component_id(component: str) -> int:
    """Return the instance id of ``kind:N`` (0 when there is none).

    Raises:
        DecodeError: ``unknown-component`` when N is not a channel number.
    """
    _, colon, text = component.partition(":")
    if not colon:
        return 0
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or int(text) > MAX_CHANNEL:
        raise DecodeError("unknown-component", f"component {component!r} has no instance id")
    return int(text)


def _prefix_device(prefix: list[str], topic: str) -> str:
    """Return the device id of a topic prefix: its last level.

    Raises:
        DecodeError: ``unknown-topic`` when the prefix is empty.
    """
    if not prefix or not prefix[-1]:
        raise DecodeError("unknown-topic", f"topic {topic!r} names no device")
    return prefix[-1]


# -- provisioning: the RPC calls that connect a device -------------------------------------------
# Written from Shelly's API documentation: ``Shelly.PutUserCA``, ``Shelly.PutTLSClientCert`` and
# ``Shelly.PutTLSClientKey`` take ``{"data": <PEM text or null>, "append": <bool>}``, PEM text
# sent in chunks; ``MQTT.SetConfig`` takes ``{"config": {...}}``; then ``Shelly.Reboot``. The
# simulator answers these calls and a test runs the printed commands against it.

# Shelly devices take PEM uploads in pieces; this many characters per call.
PEM_CHUNK_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One JSON-RPC call to a device's ``/rpc`` HTTP endpoint."""

    method: str
    params: dict[str, Any]

    def body(self, call_id: int) -> str:
        """Return the request body."""
        doc = {"id": call_id, "method": self.method, "params": self.params}
        return json.dumps(doc, separators=(",", ":"))


def pem_calls(method: str, pem: bytes) -> list[RpcCall]:
    """Return the calls that upload ``pem`` with ``method``, in chunks (first replaces)."""
    text = pem.decode()
    chunks = [text[i : i + PEM_CHUNK_CHARS] for i in range(0, len(text), PEM_CHUNK_CHARS)]
    return [
        RpcCall(method, {"data": chunk, "append": index > 0}) for index, chunk in enumerate(chunks)
    ]


def provisioning_calls(enrolment: Enrolment, *, broker: str) -> list[RpcCall]:
    """Return the RPC calls that connect a Gen2+ meter to ``broker`` (``host:port``)."""
    device_id = enrolment.device_id
    calls: list[RpcCall] = []
    if enrolment.ca_pem:
        calls += pem_calls("Shelly.PutUserCA", enrolment.ca_pem)
    config: dict[str, Any] = {
        "enable": True,
        "server": broker,
        "client_id": device_id,
        "topic_prefix": device_id,
        "ssl_ca": "user_ca.pem",
        "rpc_ntf": True,
        "status_ntf": False,
    }
    if enrolment.cert_pem:
        calls += pem_calls("Shelly.PutTLSClientCert", enrolment.cert_pem)
        calls += pem_calls("Shelly.PutTLSClientKey", enrolment.key_pem)
        config.update(use_client_cert=True, user=None, **{"pass": None})
    else:
        config.update(use_client_cert=False, user=device_id, **{"pass": enrolment.password})
    calls.append(RpcCall("MQTT.SetConfig", {"config": config}))
    calls.append(RpcCall("Shelly.Reboot", {}))
    return calls


def provisioning_commands(enrolment: Enrolment, *, broker: str) -> list[str]:
    """Return the calls as ``curl`` commands for the device at its address."""
    url = f"http://{enrolment.device_address}/rpc"
    return [
        f"curl -sS -X POST {shlex.quote(url)} -d {shlex.quote(call.body(n))}"
        for n, call in enumerate(provisioning_calls(enrolment, broker=broker), start=1)
    ]


def instructions(enrolment: Enrolment) -> list[str]:
    """Return what to run to connect a Gen2+ meter (over TLS; it reboots at the end)."""
    broker = f"{enrolment.broker_host}:{enrolment.tls_port}"
    return [
        f"Shelly Gen2+ {enrolment.device_id}: run these on a computer that reaches the device "
        f"at {enrolment.device_address} (the device reboots at the end):",
        *provisioning_commands(enrolment, broker=broker),
    ]


FORMAT: Final = DeviceFormat(
    name="shelly-gen2",
    title="Shelly Gen2+",
    routes=(
        Route("+/events/rpc", 0),
        Route("+/wattlake/rpc", 0),  # answers to refill calls
        Route("+/rpc", 0),  # calls to a device: no readings
        Route("+/status/+", 0),
        Route("+/online", 0),
    ),
    decoder=ShellyGen2Decoder,
    instructions=instructions,
)

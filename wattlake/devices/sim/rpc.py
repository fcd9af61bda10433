"""What simulated Shelly meters answer: per-minute records over MQTT RPC, provisioning over HTTP.

- :class:`MeterMemory`: a Gen2 meter's per-minute store (``EMData``/``EM1Data``): the import and
  export energy of each minute and its mean voltage and current, by device time. The simulator
  adds each measured interval to the minute it starts in (exact when samples fall on minute
  boundaries, as they do at the usual 1, 2, 5, 10, 15, 20, 30 or 60 s steps).
- :class:`FleetRpc`: answers JSON-RPC requests for a :class:`~wattlake.devices.sim.simulator.Fleet`:
  ``EMData.GetData``/``EM1Data.GetData`` (records from ``ts`` to ``end_ts``, at most
  ``MAX_RECORDS`` per answer, ``next_record_ts`` when there are more), ``GetRecords``, and the
  provisioning calls ``Shelly.PutUserCA``, ``Shelly.PutTLSClientCert``,
  ``Shelly.PutTLSClientKey``, ``MQTT.SetConfig``/``GetConfig``, ``Shelly.GetDeviceInfo``,
  ``Shelly.Reboot``; Gen1 ``/settings`` parameters are kept too.
- :class:`MqttResponder`: answers ``<id>/rpc`` requests on the broker, on ``<src>/rpc``.
- :class:`HttpRpcServer`: one device's local HTTP API (``POST /rpc``, ``GET /settings``), so a
  test can run the commands ``wattlake device add`` prints.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlsplit

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

RECORD_PERIOD_S: Final = 60
MAX_RECORDS: Final = 720  # per answer; more comes with next_record_ts
KEEP_MINUTES: Final = 7 * 24 * 60
PHASES: Final = ("a", "b", "c")
RECORD_KEYS: Final = ("total_act_energy", "total_act_ret_energy", "avg_voltage", "avg_current")


@dataclass(slots=True)
class _Minute:
    import_wh: list[float]
    export_wh: list[float]
    voltage_sum: list[float]
    current_sum: list[float]
    samples: list[int]


class MeterMemory:
    """Per-minute records of one meter, keyed by the minute's start in device time [s]."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.minutes: OrderedDict[int, _Minute] = OrderedDict()

    def _minute(self, device_ts_s: float) -> _Minute:
        start = math.floor(device_ts_s / RECORD_PERIOD_S) * RECORD_PERIOD_S
        minute = self.minutes.get(start)
        if minute is None:
            n = self.channels
            minute = self.minutes[start] = _Minute(
                [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n, [0] * n
            )
            while len(self.minutes) > KEEP_MINUTES:
                self.minutes.popitem(last=False)
        return minute

    def add_energy(
        self, device_ts_s: float, channel: int, import_wh: float, export_wh: float
    ) -> None:
        """Add an interval that starts at ``device_ts_s`` [s] to its minute [Wh]."""
        minute = self._minute(device_ts_s)
        minute.import_wh[channel] += import_wh
        minute.export_wh[channel] += export_wh

    def add_sample(
        self, device_ts_s: float, channel: int, voltage_v: float, current_a: float
    ) -> None:
        """Add a voltage [V] and current [A] sample to its minute's averages."""
        minute = self._minute(device_ts_s)
        minute.voltage_sum[channel] += voltage_v
        minute.current_sum[channel] += current_a
        minute.samples[channel] += 1

    def energy_wh(self, start_s: float, end_s: float, channel: int) -> tuple[float, float]:
        """Return the recorded (import, export) energy of minutes starting in [start, end) [Wh]."""
        imp = exp = 0.0
        for ts, minute in self.minutes.items():
            if start_s <= ts < end_s:
                imp += minute.import_wh[channel]
                exp += minute.export_wh[channel]
        return imp, exp

    def records(self, start_s: int, end_s: int) -> list[tuple[int, _Minute]]:
        """Return the recorded minutes starting in [start, end), in time order."""
        return [(ts, m) for ts, m in self.minutes.items() if start_s <= ts < end_s]


def _row(minute: _Minute, channels: list[int]) -> list[float | None]:
    row: list[float | None] = []
    for ch in channels:
        n = minute.samples[ch]
        row += [
            round(minute.import_wh[ch], 6),
            round(minute.export_wh[ch], 6),
            round(minute.voltage_sum[ch] / n, 2) if n else None,
            round(minute.current_sum[ch] / n, 3) if n else None,
        ]
    return row


@dataclass
class DeviceConfig:
    """What provisioning wrote to a simulated device."""

    user_ca: str = ""
    client_cert: str = ""
    client_key: str = ""
    mqtt: dict[str, Any] = field(default_factory=dict)
    gen1_settings: dict[str, str] = field(default_factory=dict)
    reboots: int = 0


class RpcError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class RpcDevice(Protocol):
    """What the RPC answers need of a simulated device: its id and its memory."""

    @property
    def device_id(self) -> str:
        """The device's id."""
        ...

    @property
    def memory(self) -> MeterMemory:
        """The device's per-minute records."""
        ...


class RpcFleet(Protocol):
    """What the RPC answers need of a fleet: its devices."""

    @property
    def devices(self) -> Sequence[RpcDevice]:
        """The fleet's devices."""
        ...


class FleetRpc:
    """Answer JSON-RPC calls made to the devices of a fleet."""

    def __init__(self, fleet: RpcFleet) -> None:
        self.fleet = fleet
        self.devices: dict[str, RpcDevice] = {d.device_id: d for d in fleet.devices}
        self.configs: dict[str, DeviceConfig] = {d: DeviceConfig() for d in self.devices}
        self.lock = threading.Lock()  # the fleet measures in another thread

    def answer(self, device_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Return the JSON-RPC answer of ``device_id`` to ``request``."""
        reply: dict[str, Any] = {"id": request.get("id"), "src": device_id}
        if "src" in request:
            reply["dst"] = request["src"]
        try:
            with self.lock:
                reply["result"] = self._call(
                    device_id, str(request.get("method")), request.get("params") or {}
                )
        except RpcError as exc:
            reply["error"] = {"code": exc.code, "message": str(exc)}
        return reply

    def _call(self, device_id: str, method: str, params: dict[str, Any]) -> Any:
        device = self.devices.get(device_id)
        if device is None:
            raise RpcError(-114, f"no device {device_id}")
        config = self.configs[device_id]
        put = {
            "Shelly.PutUserCA": "user_ca",
            "Shelly.PutTLSClientCert": "client_cert",
            "Shelly.PutTLSClientKey": "client_key",
        }
        if method in put:
            data = params.get("data")
            old = getattr(config, put[method]) if params.get("append") else ""
            setattr(config, put[method], old + (data or ""))
            return {"len": len(getattr(config, put[method]))}
        if method == "MQTT.SetConfig":
            config.mqtt.update(params.get("config") or {})
            return {"restart_required": True}
        if method == "MQTT.GetConfig":
            return dict(config.mqtt)
        if method == "Shelly.Reboot":
            config.reboots += 1
            return None
        if method == "Shelly.GetDeviceInfo":
            return {"id": device_id, "gen": 2, "model": "SPEM-002CEBEU50", "fw_id": "sim"}
        kind = {"EM1Data": "em1data", "EMData": "emdata"}.get(method.partition(".")[0])
        if kind is None or not hasattr(device, "memory"):
            raise RpcError(-114, f"method {method} not found")
        component_id = int(params.get("id", 0))
        if kind == "em1data":
            channels = [component_id]
            keys = list(RECORD_KEYS)
        else:
            channels = list(range(len(PHASES)))
            keys = [f"{p}_{k}" for p in PHASES for k in RECORD_KEYS]
        if any(ch >= device.memory.channels for ch in channels):
            raise RpcError(-105, f"no {kind}:{component_id}")
        minutes = device.memory.minutes
        if method.endswith(".GetRecords"):
            first = next(iter(minutes), None)
            blocks = (
                []
                if first is None
                else [{"ts": first, "period": RECORD_PERIOD_S, "records": len(minutes)}]
            )
            return {"data_blocks": blocks}
        if not method.endswith(".GetData"):
            raise RpcError(-114, f"method {method} not found")
        start = int(params.get("ts", 0))
        end = int(params.get("end_ts", 2**40))
        records = device.memory.records(start, end)
        out: dict[str, Any] = {"keys": keys, "data": []}
        if len(records) > MAX_RECORDS:
            out["next_record_ts"] = records[MAX_RECORDS][0]
            records = records[:MAX_RECORDS]
        block: dict[str, Any] | None = None
        for ts, minute in records:
            expected = (
                None if block is None else block["ts"] + RECORD_PERIOD_S * len(block["values"])
            )
            if block is None or ts != expected:
                block = {"ts": ts, "period": RECORD_PERIOD_S, "values": []}
                out["data"].append(block)
            block["values"].append(_row(minute, channels))
        return out


def answer_mqtt(rpc: FleetRpc, topic: str, payload: bytes | bytearray) -> tuple[str, bytes] | None:
    """Return the (topic, payload) answering an MQTT RPC call on ``<id>/rpc``, None if none."""
    device_id, _, rest = topic.partition("/")
    if rest != "rpc" or device_id not in rpc.devices:
        return None
    try:
        request = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(request, dict) or not isinstance(request.get("src"), str):
        return None
    return f"{request['src']}/rpc", json.dumps(rpc.answer(device_id, request)).encode()


class MqttResponder:
    """Answer ``<id>/rpc`` requests to a fleet's devices on the broker."""

    def __init__(
        self,
        rpc: FleetRpc,
        host: str,
        port: int,
        *,
        username: str = "",
        password: str = "",
        tls: Any = None,
    ) -> None:
        self.rpc = rpc
        self.host = host
        self.port = port
        self.answered = 0
        self._ready = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"wattlake-sim-rpc-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if username:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set_context(tls)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._ready.set()
        self._client.on_message = self._on_message

    def start(self, timeout_s: float = 15.0) -> MqttResponder:
        """Connect and subscribe; wait until subscribed."""
        self._client.connect(self.host, self.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError("the simulator's RPC responder could not subscribe")
        return self

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if not getattr(rc, "is_failure", False):
            client.subscribe("+/rpc", qos=1)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        reply = answer_mqtt(self.rpc, msg.topic, msg.payload)
        if reply is not None:
            self._client.publish(reply[0], reply[1], qos=1)
            self.answered += 1

    def stop(self) -> None:
        """Disconnect."""
        self._client.disconnect()
        self._client.loop_stop()


class HttpRpcServer:
    """The local HTTP API of one simulated device on ``127.0.0.1`` (``port`` 0: a free one)."""

    def __init__(self, rpc: FleetRpc, device_id: str, port: int = 0) -> None:
        self.rpc = rpc
        self.device_id = device_id
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:  # requests carry keys: log nothing
                pass

            def _send(self, status: int, doc: Any) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if urlsplit(self.path).path != "/rpc":
                    self._send(404, {"error": "not found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length))
                except ValueError:
                    self._send(400, {"error": "not JSON"})
                    return
                self._send(200, outer.rpc.answer(outer.device_id, request))

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path not in ("/settings", "/settings/mqtt"):
                    self._send(404, {"error": "not found"})
                    return
                with outer.rpc.lock:
                    settings = outer.rpc.configs[outer.device_id].gen1_settings
                    settings.update(dict(parse_qsl(parts.query)))
                    self._send(200, {k: v for k, v in settings.items() if k != "mqtt_pass"})

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sim-http-rpc", daemon=True
        )

    @property
    def address(self) -> str:
        """Return ``host:port`` (what ``device add --address`` takes)."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> HttpRpcServer:
        """Serve in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

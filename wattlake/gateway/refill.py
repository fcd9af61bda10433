"""Fill gaps in Gen2+ meter data from the meter's own per-minute records.

Shelly Gen2+ energy meters keep per-minute records (``EMData`` for three-phase ``emdata:0``,
``EM1Data`` for ``em1data:N``). :class:`Refiller` is an MQTT client beside the ingest: it
watches the devices' notifications for counter readings (``total_act_energy``,
``total_act_ret_energy``); when a device's counters come back after more than ``min_gap_s``
without any (the stack or the network was down), it asks the device, over MQTT RPC with
``src: "<id>/wattlake"`` (so the answer stays under the device's own prefix, which the broker
allows), for the records of the missing interval::

    <id>/rpc   {"id": "wattlake-refill/em1data:0/<start>/<end>/<import>:<export>",
                "src": "<id>/wattlake", "method": "EM1Data.GetData",
                "params": {"id": 0, "ts": <start>, "end_ts": <end>}}

The answer arrives on ``<id>/wattlake/rpc`` and takes the ingest's normal path (WAL, decoder,
lake): the decoder (:func:`wattlake.devices.shelly_gen2.refill_readings`) turns the records into
counter readings that continue the last counters before the gap, so every refilled minute
contributes exactly the energy the meter recorded and nothing is counted twice (readings that
fall on live ones' times carry the same counter). An answer that stops short (``next_record_ts``)
is followed by the next call, from the counters summed so far. The last counters of every
device are kept in ``state_file``, so a gap that spans a restart is found too.

Limits: the interval starts at the last counter reading before the gap; if that reading is not
on a record boundary (a real meter's notification comes a few seconds into the minute), the
first record also holds some energy from before it, at most one minute's worth.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import paho.mqtt.client as mqtt

from wattlake.devices.shelly_gen2 import RefillCall
from wattlake.gateway.mqtt import (
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
    BrokerAddress,
    Delivery,
    TlsOptions,
)
from wattlake.gateway.retry import RetryPolicy, reconnect_with

log = logging.getLogger(__name__)

MIN_GAP_S: Final = 180.0
# A gap longer than this is asked for only from its last part (the meter keeps ~60 days).
MAX_REFILL_S: Final = 30 * 24 * 3600
# An unanswered call is repeated after this long [s], doubling with jitter, at most this often.
ANSWER_WAIT_S: Final = 30.0
MAX_ATTEMPTS: Final = 4
SAVE_EVERY_S: Final = 5.0
COUNTER_KEYS: Final = {
    "em1data": ((None, "total_act_energy", "total_act_ret_energy"),),
    "emdata": tuple(
        (p, f"{p}_total_act_energy", f"{p}_total_act_ret_energy") for p in ("a", "b", "c")
    ),
}
METHODS: Final = {"em1data": "EM1Data.GetData", "emdata": "EMData.GetData"}


def retry_delay_s(attempt: int, base_s: float = ANSWER_WAIT_S, cap_s: float = 600.0) -> float:
    """Return the wait before retry ``attempt`` (1, 2, …) [s]: the one retry policy
    (:mod:`wattlake.gateway.retry`, exponential backoff with jitter) from ``base_s``."""
    return RetryPolicy(base_s, cap_s).delay_s(attempt)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A device component's counters at one time: where a refill starts from."""

    ts_s: float
    counters: tuple[tuple[float, float], ...]


def counters_in(params: dict[str, Any]) -> dict[str, tuple[tuple[float, float], ...]]:
    """Return the complete counters of each ``em1data``/``emdata`` component in ``params``."""
    out = {}
    for component, values in params.items():
        kind = component.partition(":")[0]
        keys = COUNTER_KEYS.get(kind)
        if keys is None or not isinstance(values, dict):
            continue
        pairs = []
        for _, imp_key, exp_key in keys:
            imp, exp = values.get(imp_key), values.get(exp_key)
            if not isinstance(imp, int | float) or not isinstance(exp, int | float):
                break
            pairs.append((float(imp), float(exp)))
        else:
            out[component] = tuple(pairs)
    return out


@dataclass
class _Pending:
    device_id: str
    call: RefillCall
    due_at: float
    attempt: int = 1


class Refiller:
    """Ask Gen2+ meters for the records of gaps in their data (see the module docstring)."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        state_file: Path,
        min_gap_s: float = MIN_GAP_S,
        username: str = "",
        password: str = "",
        tls: TlsOptions | None = None,
    ) -> None:
        self.address = address
        self.state_file = Path(state_file)
        self.min_gap_s = min_gap_s
        self.anchors: dict[tuple[str, str], Anchor] = self._load()
        self.pending: dict[str, _Pending] = {}
        self.calls = 0
        self.answers = 0
        self._lock = threading.Lock()
        self._saved_at = 0.0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"wattlake-refill-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
        )
        if username:
            self._client.username_pw_set(username, password)
        if address.tls:
            self._client.tls_set_context((tls or TlsOptions()).context())
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self._ready.set()
        self._client.on_message = self._on_message
        reconnect_with(self._client, RetryPolicy(RECONNECT_FIRST_S, RECONNECT_MAX_S))

    # -- state -------------------------------------------------------------------------------
    def _load(self) -> dict[tuple[str, str], Anchor]:
        try:
            doc = json.loads(self.state_file.read_text(encoding="utf-8"))
            return {
                (d, c): Anchor(float(ts), tuple((float(i), float(e)) for i, e in pairs))
                for d, c, ts, pairs in doc["anchors"]
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("the refill state %s cannot be read; starting without it", self.state_file)
            return {}

    def save(self) -> None:
        """Write the last counters of every device (atomically)."""
        with self._lock:
            doc = {
                "anchors": [
                    [d, c, a.ts_s, [list(p) for p in a.counters]]
                    for (d, c), a in sorted(self.anchors.items())
                ]
            }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, self.state_file)
        self._saved_at = time.monotonic()

    # -- MQTT --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> Refiller:
        """Connect and subscribe to notifications and refill answers.

        Raises:
            TimeoutError: the broker did not grant the subscriptions in time.
        """
        self._client.connect(self.address.host, self.address.port, keepalive=30)
        self._client.loop_start()
        if not self._ready.wait(timeout_s):
            self._client.loop_stop()
            raise TimeoutError("the refill could not subscribe at the broker")
        self._timer = threading.Thread(target=self._retry_loop, name="refill-retry", daemon=True)
        self._timer.start()
        return self

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("the broker refused the refill client: %s", rc)
            return
        client.subscribe([("+/events/rpc", 1), ("+/wattlake/rpc", 1)])

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(doc, dict):
            return
        device_id = msg.topic.split("/")[0]
        if msg.topic.endswith("/wattlake/rpc"):
            self.on_answer(device_id, doc)
            return
        params = doc.get("params")
        if not isinstance(params, dict):
            return
        ts = params.get("ts")
        if not isinstance(ts, int | float) or not math.isfinite(ts):
            return
        for component, counters in counters_in(params).items():
            self.observe(device_id, component, float(ts), counters)
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    # -- the logic ---------------------------------------------------------------------------
    def observe(
        self, device_id: str, component: str, ts_s: float, counters: tuple[tuple[float, float], ...]
    ) -> RefillCall | None:
        """Record a counter reading; after a gap, ask for the records in it and return the call."""
        with self._lock:
            last = self.anchors.get((device_id, component))
            if last is not None and ts_s <= last.ts_s:
                return None  # late or repeated: the anchor stays the newest reading
            self.anchors[(device_id, component)] = Anchor(ts_s, counters)
        if last is None or ts_s - last.ts_s <= self.min_gap_s:
            return None
        start = max(last.ts_s, ts_s - MAX_REFILL_S)
        if start != last.ts_s:
            return None  # too old for the meter's memory; nothing exact to continue from
        call = RefillCall(component, math.floor(last.ts_s), math.ceil(ts_s), last.counters)
        self.ask(device_id, call)
        return call

    def ask(self, device_id: str, call: RefillCall, attempt: int = 1) -> None:
        """Publish the refill call to the device."""
        kind, _, number = call.component.partition(":")
        request = {
            "id": call.call_id(),
            "src": f"{device_id}/wattlake",
            "method": METHODS[kind],
            "params": {"id": int(number or 0), "ts": call.start_s, "end_ts": call.end_s},
        }
        with self._lock:
            due_at = time.monotonic() + retry_delay_s(attempt, cap_s=ANSWER_WAIT_S * 8)
            self.pending[call.call_id()] = _Pending(device_id, call, due_at, attempt)
            self.calls += 1
        log.info(
            "asking %s for its %s records from %d to %d (attempt %d)",
            device_id,
            call.component,
            call.start_s,
            call.end_s,
            attempt,
        )
        self._client.publish(f"{device_id}/rpc", json.dumps(request), qos=1)

    def on_answer(self, device_id: str, doc: dict[str, Any]) -> None:
        """Take an answer: done, or ask for the rest from the counters summed so far."""
        call_id = doc.get("id")
        with self._lock:
            pending = self.pending.pop(str(call_id), None)
        if pending is None:
            return
        self.answers += 1
        result = doc.get("result")
        if not isinstance(result, dict):
            log.warning("%s could not answer the refill call: %s", device_id, doc.get("error"))
            return
        next_ts = result.get("next_record_ts")
        if not isinstance(next_ts, int | float) or next_ts >= pending.call.end_s:
            return
        sums = [list(pair) for pair in pending.call.counters]
        keys = result.get("keys") or []
        index = {k: i for i, k in enumerate(keys)}
        kind = pending.call.component.partition(":")[0]
        for block in result.get("data") or []:
            for row in block.get("values") or []:
                for n, (_, imp_key, exp_key) in enumerate(COUNTER_KEYS[kind]):
                    for j, key in enumerate((imp_key, exp_key)):
                        value = row[index[key]] if key in index else None
                        sums[n][j] += float(value or 0.0)
        follow = RefillCall(
            pending.call.component,
            int(next_ts),
            pending.call.end_s,
            tuple((i, e) for i, e in sums),
        )
        self.ask(device_id, follow)

    def _retry_loop(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            with self._lock:
                due = [p for p in self.pending.values() if now >= p.due_at]
            for p in due:
                with self._lock:
                    self.pending.pop(p.call.call_id(), None)
                if p.attempt < MAX_ATTEMPTS:
                    self.ask(p.device_id, p.call, p.attempt + 1)
                else:
                    log.warning(
                        "%s did not answer the refill of %s; giving up",
                        p.device_id,
                        p.call.component,
                    )

    def idle(self) -> bool:
        """Return True when no call waits for its answer."""
        with self._lock:
            return not self.pending

    # -- the Source protocol (gateway/source.py) ---------------------------------------------
    # The refill's answers reach the lake through the ingest's own MQTT subscription, so
    # nothing of the refill is on the worker's intake: nothing to acknowledge or refuse.
    def close(self) -> None:
        """Ask no new gap (a stop begins); answers still on their way arrive."""
        self._stop.set()

    def ack(self, deliveries: list[Delivery]) -> None:
        """Nothing to acknowledge (the answers arrive through the MQTT source)."""

    def refuse(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Return ``deliveries`` unchanged (none are the refill's)."""
        return deliveries

    def describe(self) -> str:
        """Return what the refill watches."""
        return (
            f"gap refill over MQTT RPC at {self.address.host}:{self.address.port} "
            f"({len(self.anchors)} meter channel(s) known)"
        )

    def stop(self) -> None:
        """Save the state and disconnect."""
        self._stop.set()
        try:
            self.save()
        except OSError:
            log.warning("cannot write the refill state %s", self.state_file)
        self._client.disconnect()
        self._client.loop_stop()

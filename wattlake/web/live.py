"""Live power: the web process subscribes to the broker itself (independent of lake flushes)
and pushes each new value to browsers as server-sent events.

Messages are decoded by the same :class:`~wattlake.devices.router.DecoderRouter` as the ingest,
so every device format shows up live; the latest power per device channel is kept in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as mqtt
import pyarrow as pa

from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError
from wattlake.gateway.mqtt import (
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
    BrokerAddress,
    TlsOptions,
    new_client,
)
from wattlake.gateway.retry import RetryPolicy, reconnect_with

log = logging.getLogger(__name__)


class LivePower:
    """The latest power of every device channel, fed by an MQTT subscription."""

    def __init__(
        self,
        broker_url: str | None,
        *,
        topics: list[str],
        username: str = "",
        password: str = "",
        tls: TlsOptions | None = None,
        formats: str = "",
    ) -> None:
        self.broker_url = broker_url
        self.topics = topics
        self.latest: dict[tuple[str, int], dict[str, Any]] = {}
        self.version = 0
        self._router = DecoderRouter(formats=formats)
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._client: mqtt.Client | None = None
        self.connected = False
        self._username, self._password, self._tls = username, password, tls

    @classmethod
    def from_settings(cls, settings: Settings, broker_url: str | None) -> LivePower:
        """Return a live feed with the ingest's broker credentials and topics."""
        return cls(
            broker_url,
            topics=[t.strip() for t in settings["ingest.topics"].split(",") if t.strip()],
            username=settings["ingest.username"],
            password=settings["ingest.password"],
            tls=TlsOptions(
                settings["ingest.tls_ca_file"],
                settings["ingest.tls_cert_file"],
                settings["ingest.tls_key_file"],
                settings["ingest.tls_insecure"],
            ),
            formats=settings["devices.formats"],
        )

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself); nothing without a broker."""
        if not self.broker_url:
            return
        address = BrokerAddress.parse(self.broker_url)
        client = new_client(f"wattlake-web-{uuid.uuid4().hex[:8]}", clean_start=True)
        if self._username:
            client.username_pw_set(self._username, self._password or None)
        if address.tls:
            client.tls_set_context((self._tls or TlsOptions()).context())
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        reconnect_with(client, RetryPolicy(RECONNECT_FIRST_S, RECONNECT_MAX_S))  # one policy
        client.connect_async(address.host, address.port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        """Disconnect."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            log.warning("the broker refused the live view's connection: %s", rc)
            return
        self.connected = True
        client.subscribe([(t, 0) for t in self.topics])

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _reason: Any, _p: Any) -> None:
        self.connected = False

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        received_ms = time.time_ns() // 1_000_000
        try:
            decoded = self._router.decode(RawMessage(msg.topic, bytes(msg.payload), received_ms))
        except DecodeError:
            return  # the ingest keeps it as a dead letter; the live view just skips it
        readings = decoded.to_pylist() if isinstance(decoded, pa.Table) else decoded
        changed = False
        with self._lock:
            for r in readings:
                if r.get("power_w") is None:
                    continue
                ts = r["ts"]
                ts_ms = int(ts.timestamp() * 1000) if hasattr(ts, "timestamp") else int(ts)
                key = (str(r["device_id"]), int(r["channel"]))
                old = self.latest.get(key)
                if old is not None and old["ts_ms"] > ts_ms:
                    continue
                self.latest[key] = {
                    "device_id": key[0],
                    "channel": key[1],
                    "power_w": round(float(r["power_w"]), 2),
                    "ts_ms": ts_ms,
                    "received_ms": received_ms,
                }
                changed = True
            if changed:
                self.version += 1
                waiters = list(self._waiters)
        if changed:
            for loop, event in waiters:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)

    def snapshot(self) -> list[dict[str, Any]]:
        """Return the latest value of every device channel."""
        with self._lock:
            return sorted(self.latest.values(), key=lambda v: (v["device_id"], v["channel"]))

    async def events(self, keepalive_s: float = 15.0) -> AsyncIterator[str]:
        """Yield server-sent events: the whole snapshot at once, then on every change."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            self._waiters.add(waiter)
        try:
            yield f"data: {json.dumps(self.snapshot())}\n\n"
            while True:
                try:
                    await asyncio.wait_for(event.wait(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                event.clear()
                yield f"data: {json.dumps(self.snapshot())}\n\n"
        finally:
            with self._lock:
                self._waiters.discard(waiter)

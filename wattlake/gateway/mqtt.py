"""Receive device messages from an MQTT broker with paho-mqtt and hand them on in batches."""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from wattlake.devices.base import RawMessage
from wattlake.errors import BrokerError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker is and how to reach it."""

    host: str
    port: int
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse ``mqtt://host:port`` or ``mqtts://host:port``.

        Raises:
            UsageError: the URL is not an MQTT URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UsageError(
                f"Broker URL {url!r} is not of the form mqtt://HOST:PORT or mqtts://HOST:PORT."
            )
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as exc:
            raise UsageError(f"Broker URL {url!r} has an invalid port.") from exc
        return cls(parts.hostname, port, parts.scheme == "mqtts")


@dataclass(frozen=True, slots=True)
class Delivery:
    """A received message and what is needed to acknowledge it to the broker."""

    message: RawMessage
    mid: int
    qos: int


def new_client(client_id: str, *, clean_start: bool) -> mqtt.Client:
    """Return a paho MQTT 3.1.1 client with the callback API version 2."""
    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_start,
        protocol=mqtt.MQTTv311,
    )


class MqttSource:
    """Subscribe to topics and queue every message as a :class:`Delivery`.

    The consumer takes batches with :meth:`take`; paho's network loop runs in its own thread.
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        topics: list[str],
        qos: int = 1,
        client_id: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.topics = topics
        self.qos = qos
        self.client_id = client_id or f"wattlake-ingest-{uuid.uuid4().hex[:8]}"
        # A fixed client id keeps a persistent session: the broker queues while we are away.
        self._client = new_client(self.client_id, clean_start=client_id is None)
        if tls_context is not None:
            self._client.tls_set_context(tls_context)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._connected = threading.Event()

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect and subscribe, waiting until the broker has accepted us.

        Raises:
            BrokerError: the broker cannot be reached.
        """
        try:
            self._client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:
            raise BrokerError(
                f"Cannot reach the MQTT broker at {self.address.host}:{self.address.port}: {exc}; "
                "check --broker and that the broker runs."
            ) from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self._client.loop_stop()
            raise BrokerError(
                f"The MQTT broker at {self.address.host}:{self.address.port} did not accept "
                f"the connection within {timeout_s:.0f} s."
            )

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            log.error("broker refused the connection: %s", rc)
            return
        client.subscribe([(topic, self.qos) for topic in self.topics])
        self._connected.set()

    def _on_disconnect(
        self, _c: object, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("lost the MQTT broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received_at_ms = time.time_ns() // 1_000_000
        self._queue.put(
            Delivery(RawMessage(msg.topic, bytes(msg.payload), received_at_ms), msg.mid, msg.qos)
        )

    def take(self, max_items: int = 10_000, timeout_s: float = 0.1) -> list[Delivery]:
        """Return up to ``max_items`` queued deliveries, waiting up to ``timeout_s`` for one."""
        try:
            first = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < max_items:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

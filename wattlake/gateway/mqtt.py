"""Receive device messages from an MQTT broker with paho-mqtt and hand them on in batches."""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wattlake.devices.base import RawMessage
from wattlake.errors import BrokerError, ConfigError, UsageError
from wattlake.gateway import paho_compat
from wattlake.gateway.retry import RetryPolicy, reconnect_with

log = logging.getLogger(__name__)

# Waits between reconnects to a lost broker [s] (gateway/retry.py: doubling, jittered).
RECONNECT_FIRST_S: Final = 1.0
RECONNECT_MAX_S: Final = 30.0


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
    """A received message and what is needed to acknowledge it to the broker.

    ``connection`` counts the MQTT connections of the source, from 1; a delivery that did not
    come over MQTT (e.g. an HTTP publish) has 0, so no PUBACK is ever sent for it.
    """

    message: RawMessage
    mid: int
    qos: int
    connection: int


Intake = queue.SimpleQueue[Delivery]
"""Where sources put deliveries for the worker: one queue shared by every source."""


def take(intake: Intake, max_items: int = 10_000, timeout_s: float = 0.1) -> list[Delivery]:
    """Return up to ``max_items`` deliveries from ``intake``, waiting up to ``timeout_s`` [s]
    for the first one (an empty list if none came)."""
    try:
        first = intake.get(timeout=timeout_s)
    except queue.Empty:
        return []
    batch = [first]
    while len(batch) < max_items:
        try:
            batch.append(intake.get_nowait())
        except queue.Empty:
            break
    return batch


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How to reach a broker over TLS (``mqtts://``)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """Return a client TLS context: the system's CAs unless ``ca_file`` is given.

        Raises:
            ConfigError: a certificate or key file cannot be used.
        """
        try:
            context = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"Cannot use the CA file {self.ca_file}: {reason}.") from exc
        try:
            if self.cert_file:
                context.load_cert_chain(self.cert_file, self.key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"Cannot use the TLS client certificate: {exc}.") from exc
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def new_client(client_id: str, *, clean_start: bool, mqtt5: bool = False) -> mqtt.Client:
    """Return a paho client (MQTT 3.1.1, or 5 with ``mqtt5``) with the callback API version 2."""
    if mqtt5:
        return mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
    return mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_start,
        protocol=mqtt.MQTTv311,
    )


class MqttSource:
    """Subscribe to topics and queue every message as a :class:`Delivery`, unacknowledged.

    QoS 1 messages are acknowledged (PUBACK) only when the owner calls :meth:`ack`, after it has
    made them durable; until then the broker keeps them and sends them again after a reconnect.
    Unacknowledged messages also bound memory: the broker sends at most ``max_inflight`` of
    them. A fixed ``client_id`` keeps a persistent session, so the broker queues messages while
    the worker is away. paho's network loop runs in its own thread; the consumer takes batches
    from :attr:`intake` with :func:`take` (a queue it may share with other sources).
    """

    def __init__(
        self,
        address: BrokerAddress,
        *,
        topics: list[str],
        qos: int = 1,
        client_id: str | None = None,
        mqtt5: bool = True,
        shared_group: str = "",
        session_expiry_s: int = 7 * 24 * 3600,
        max_inflight: int = 1000,
        username: str = "",
        password: str = "",
        tls: TlsOptions | None = None,
        intake: Intake | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if shared_group and not mqtt5:
            raise UsageError("Shared subscriptions (--shared-group) need an MQTT 5 broker.")
        if shared_group and ("/" in shared_group or "+" in shared_group or "#" in shared_group):
            raise UsageError(f"Shared group {shared_group!r} must not contain '/', '+' or '#'.")
        self.address = address
        self.topics = [f"$share/{shared_group}/{t}" for t in topics] if shared_group else topics
        self.qos = qos
        self.persistent = client_id is not None
        self.client_id = client_id or f"wattlake-ingest-{uuid.uuid4().hex[:8]}"
        self.mqtt5 = mqtt5
        self.session_expiry_s = session_expiry_s
        self.max_inflight = max_inflight
        self._client = new_client(self.client_id, clean_start=not self.persistent, mqtt5=mqtt5)
        self._client.manual_ack_set(True)
        self._client.max_inflight_messages_set(max_inflight)
        if username:
            self._client.username_pw_set(username, password or None)
        if address.tls:
            self._client.tls_set_context((tls or TlsOptions()).context())
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        reconnect_with(self._client, retry or RetryPolicy(RECONNECT_FIRST_S, RECONNECT_MAX_S))
        self.intake: Intake = queue.SimpleQueue() if intake is None else intake
        self._subscribed = threading.Event()
        self._refused: str | None = None
        self._connection = 0
        self._received = False

    def start(self, timeout_s: float = 15.0) -> None:
        """Connect and subscribe, waiting until the broker has granted the subscription.

        Raises:
            BrokerError: the broker cannot be reached, refuses us or the subscription.
        """
        where = f"{self.address.host}:{self.address.port}"
        properties = None
        if self.mqtt5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
            properties.ReceiveMaximum = self.max_inflight
        try:
            self._client.connect(
                self.address.host,
                self.address.port,
                keepalive=30,
                clean_start=not self.persistent if self.mqtt5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
        except (OSError, ssl.SSLError) as exc:
            raise BrokerError(
                f"Cannot reach the MQTT broker at {where}: {exc}; "
                "check --broker (and the TLS options) and that the broker runs."
            ) from exc
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self._subscribed.wait(0.05):
            if self._received:
                break  # a resumed session: the broker sends what it kept before the SUBACK
            if self._refused is not None or time.monotonic() > deadline:
                self._client.loop_stop()
                raise BrokerError(
                    f"The MQTT broker at {where} "
                    + (
                        f"refused us: {self._refused}."
                        if self._refused
                        else f"did not grant the subscription within {timeout_s:.0f} s."
                    )
                )

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if getattr(rc, "is_failure", False):
            self._refused = str(rc)
            log.error("the MQTT broker refused the connection: %s", rc)
            return
        self._connection += 1
        client.subscribe([(topic, self.qos) for topic in self.topics])

    def _on_subscribe(
        self, _c: object, _u: object, _mid: int, reason_codes: list[Any], _p: object
    ) -> None:
        refused = [str(code) for code in reason_codes if getattr(code, "is_failure", False)]
        if refused:
            self._refused = f"subscription to {self.topics} refused ({', '.join(refused)})"
            log.error("the MQTT broker %s", self._refused)
            return
        self._subscribed.set()

    def _on_disconnect(
        self, _c: object, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("lost the MQTT broker (%s); reconnecting", reason)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received_at_ms = time.time_ns() // 1_000_000
        self._received = True
        self.intake.put(
            Delivery(
                RawMessage(msg.topic, bytes(msg.payload), received_at_ms),
                msg.mid,
                msg.qos,
                self._connection,
            )
        )

    def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge ``deliveries`` to the broker (PUBACK for QoS 1).

        Messages received on an earlier connection are not acknowledged: the broker has sent
        them again on the new one, and their packet ids may now name other messages.
        """
        current = self._connection
        mids = [d.mid for d in deliveries if d.qos == 1 and d.connection == current]
        if not mids:
            return
        # One write for the whole batch instead of a socket wake-up and a send per message.
        paho_compat.send_pubacks(self._client, mids)

    def close(self) -> None:
        """Nothing to do: at a stop the worker still takes what the broker holds (the drain)."""

    def refuse(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Return ``deliveries`` whole: the worker holds and retries them (nothing is
        acknowledged, so the broker keeps them too)."""
        return deliveries

    def describe(self) -> str:
        """Return the broker and topics this source subscribes to."""
        scheme = "mqtts" if self.address.tls else "mqtt"
        where = f"{scheme}://{self.address.host}:{self.address.port}"
        return f"MQTT {where} ({', '.join(self.topics)}) as {self.client_id}"

    def stop(self) -> None:
        """Disconnect and stop the network thread; unacknowledged messages stay with the broker."""
        self._client.disconnect()
        self._client.loop_stop()

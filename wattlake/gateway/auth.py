"""Who may connect to the embedded broker and what each client may publish and read.

:class:`WattlakeAuthPlugin` is an amqtt 0.12 plugin (authentication and topic filtering in one,
so both see the same registry). The rules are pure functions (:func:`publish_refusal`,
:func:`may_subscribe`), shared with the Mosquitto ACL writer, so both brokers enforce the same:

- A device identifies itself with a certificate issued by the project CA (its SAN URI names
  the device; the serial must be the one registered) or with its id and password; either way
  its MQTT client id must be its device id. Nobody connects anonymously.
- Without TLS, only clients on this machine (loopback) may connect, except Gen1 devices
  registered for the plain listener (they cannot do TLS).
- A device publishes and subscribes only below its own prefix, which its format's descriptor
  (:mod:`wattlake.devices.formats`) gives: ``<id>/`` (Gen2, its own RPC topics included),
  ``shellies/<id>/`` (Gen1), ``wattlake/<id>/`` (generic, CSV); besides, a format's announce
  topic (``shellies/announce``) with the device's own id in the payload, and its extra read
  topics (``shellies/command``). A client of a format wattlake does not know may do nothing.
- The ingest (role ``service``) reads everything and publishes only RPC requests
  (``<id>/rpc``); the simulator (role ``fleet``) publishes for simulated devices only
  (ids ``<model>-sim<n>``), never in a real device's name.
- Refused publishes are counted by device and reason; a revoked client is disconnected within
  a second and refused from then on; failed logins are throttled per client address, so
  password checks (argon2, deliberately slow) cannot be used to exhaust the CPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from amqtt.contexts import Action, BaseContext
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wattlake.devices.formats import FORMATS
from wattlake.devices.identity import ANNOUNCE_TOPICS, publisher
from wattlake.gateway.ca import DEFAULT_DOMAIN, identity_of
from wattlake.gateway.registry import Client, Registry, argon2_verify

log = logging.getLogger(__name__)

# Failed logins from one address within THROTTLE_WINDOW_S [s] before it is refused unheard.
# The device ids a simulator (role ``fleet``) may publish for: simulated meters only
# (``devices/sim/simulator.py`` names them ``<model>-sim<n>``), never a real device.
SIMULATED_ID: Final = re.compile(r"[a-z0-9]+-sim[0-9]{4,}")
THROTTLE_FAILURES: Final = 5
THROTTLE_WINDOW_S: Final = 60.0
# How often the registry is checked for revocations, and last-seen times written [s].
WATCH_EVERY_S: Final = 1.0
SEEN_WRITE_EVERY_S: Final = 10.0


def _levels(topic: str) -> list[str]:
    return topic.split("/")


def publish_refusal(client: Client, topic: str, payload: bytes | None = None) -> str | None:
    """Return why ``client`` may not publish ``payload`` on ``topic``, None if it may.

    ``payload`` matters only for ``shellies/announce`` (its ``id`` must be the publisher's);
    None there means the payload is unknown, which is refused.
    """
    if not client.active:
        return "revoked"
    parts = _levels(topic)
    if client.role == "service":
        return None if len(parts) == 2 and parts[1] == "rpc" else "not-an-rpc-request"
    if client.role == "fleet":
        device = _publisher_named(parts, payload)
        return None if device is not None and SIMULATED_ID.fullmatch(device) else "foreign-topic"
    device_format = FORMATS.get(client.format)
    if device_format is None:
        return "foreign-topic"
    if device_format.announce_topic and topic == device_format.announce_topic:
        return None if _announce_id(payload) == client.client_id else "announce-mismatch"
    return None if device_format.owns(client.client_id, topic) else "foreign-topic"


def _publisher_named(parts: list[str], payload: bytes | None) -> str | None:
    """Return the device a topic (or a Gen1 announce's payload) publishes for, if any: the
    same level the ingest binds readings to (:func:`wattlake.devices.identity.publisher`)."""
    topic = "/".join(parts)
    return _announce_id(payload) if topic in ANNOUNCE_TOPICS else publisher(topic)


def _announce_id(payload: bytes | None) -> str | None:
    if payload is None:
        return None
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    value = doc.get("id") if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def may_subscribe(client: Client, topic_filter: str) -> bool:
    """Return True when ``client`` may subscribe to ``topic_filter`` (and read what matches)."""
    if not client.active:
        return False
    if client.role == "service":
        return True
    parts = _levels(topic_filter)
    if client.role == "fleet":
        return len(parts) == 2 and parts[1] == "rpc"
    device_format = FORMATS.get(client.format)
    if device_format is None:
        return False
    return (
        device_format.owns(client.client_id, topic_filter)
        or topic_filter in device_format.read_topics
    )


def may_receive(client: Client, topic: str) -> bool:
    """Return True when a message on ``topic`` may be delivered to ``client``."""
    return may_subscribe(client, topic)


def is_loopback(address: str | None) -> bool:
    """Return True for a loopback client address (the plain listener's own machine)."""
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Figures:
    """What the plugin refused, for ``/metrics``."""

    refused_publishes: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused_subscriptions: Counter[str] = field(default_factory=Counter)
    failed_logins: Counter[str] = field(default_factory=Counter)
    logins: int = 0
    disconnected_revoked: int = 0


class SecurityCollector(Collector):
    """Turn a broker's :class:`Figures` into Prometheus metrics at collection time."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        """Yield the broker's security counters."""
        f = self.figures
        publishes = CounterMetricFamily(
            "wattlake_broker_refused_publishes",
            "Publishes the broker refused, by client and reason",
            labels=["device", "reason"],
        )
        for (device, reason), count in sorted(f.refused_publishes.items()):
            publishes.add_metric([device, reason], count)
        yield publishes
        subscriptions = CounterMetricFamily(
            "wattlake_broker_refused_subscriptions",
            "Subscriptions the broker refused, by client",
            labels=["device"],
        )
        for device, count in sorted(f.refused_subscriptions.items()):
            subscriptions.add_metric([device], count)
        yield subscriptions
        logins = CounterMetricFamily(
            "wattlake_broker_failed_logins",
            "Connections the broker refused, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(f.failed_logins.items()):
            logins.add_metric([reason], count)
        yield logins
        yield CounterMetricFamily(
            "wattlake_broker_logins", "Connections the broker accepted", value=f.logins
        )
        yield GaugeMetricFamily(
            "wattlake_broker_revoked_disconnects",
            "Connected clients disconnected because they were revoked",
            value=f.disconnected_revoked,
        )


def metrics_text(figures: Figures) -> str:
    """Return ``figures`` in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SecurityCollector(figures))
    return generate_latest(registry).decode()


class WattlakeAuthPlugin(BaseAuthPlugin, BaseTopicPlugin):
    """Authenticate broker clients from the device registry and enforce per-device topics."""

    @dataclass
    class Config:
        """Where the registry is and the trust domain of device certificates."""

        security_dir: str = ""
        domain: str = DEFAULT_DOMAIN
        throttle_failures: int = THROTTLE_FAILURES
        throttle_window_s: float = THROTTLE_WINDOW_S

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        config: Any = self.context.config
        self.registry = Registry(Path(config.security_dir))
        self.domain: str = config.domain
        self.throttle_failures: int = config.throttle_failures
        self.throttle_window_s: float = config.throttle_window_s
        self.figures = Figures()
        self._failures: dict[str, deque[float]] = {}
        self._verified: dict[str, bytes] = {}  # client id -> keyed digest of argon2 hash + password
        self._cache_key = secrets.token_bytes(32)
        self._identities: dict[str, str] = {}  # MQTT client id -> registered client id
        self._announces: dict[str, bytes] = {}  # client id -> payload of its last shellies/announce
        self._seen: dict[str, int] = {}
        self._watcher: asyncio.Task[None] | None = None

    # -- authentication ----------------------------------------------------------------------
    async def authenticate(self, *, session: Session) -> bool | None:
        """Return True when the session's certificate or password names an active client."""
        address = session.remote_address or "?"
        if self._throttled(address):
            self.figures.failed_logins["throttled"] += 1
            log.warning("refused a connection from %s: too many failed logins", address)
            return False
        try:
            client, reason = await self._identify(session)
        except Exception:  # a registry that cannot be read must refuse, not crash the broker
            log.exception("cannot check a connection from %s against the registry", address)
            client, reason = None, "registry-unreadable"
        if client is None:
            self._failed(address, reason)
            log.warning(
                "refused client id %r from %s: %s", (session.client_id or "")[:64], address, reason
            )
            return False
        self._identities[session.client_id or ""] = client.client_id
        self._seen[client.client_id] = int(time.time() * 1000)
        self.figures.logins += 1
        self._ensure_watcher()
        log.info("client %s connected from %s (%s)", client.client_id, address, client.auth)
        return True

    async def _identify(self, session: Session) -> tuple[Client | None, str]:
        """Return the registered client a session proves to be, or None and why not."""
        tls = session.ssl_object is not None
        der = session.ssl_object.getpeercert(binary_form=True) if session.ssl_object else None
        if der:
            cert = x509.load_der_x509_certificate(der)
            device_id = identity_of(cert, self.domain)
            client = self.registry.get(device_id) if device_id else None
            if client is None or client.auth != "cert":
                return None, "unknown-certificate"
            if not client.active:
                return None, "revoked"
            if client.serial != format(cert.serial_number, "x"):
                return None, "replaced-certificate"
            if session.client_id != client.client_id:
                return None, "client-id-mismatch"
            return client, ""
        if not session.username:
            return None, "anonymous"
        client = self.registry.get(session.username)
        if client is None or client.auth != "password":
            return None, "unknown-user"
        if not client.active:
            return None, "revoked"
        if not tls and not is_loopback(session.remote_address) and not client.plain:
            return None, "plain-not-allowed"
        if client.role == "device" and session.client_id != client.client_id:
            return None, "client-id-mismatch"
        if client.role != "device" and self.registry.get(session.client_id or "") is not None:
            return None, "client-id-taken"
        if not await self._password_ok(client, session.password or ""):
            return None, "bad-password"
        return client, ""

    async def _password_ok(self, client: Client, password: str) -> bool:
        digest = hmac.digest(
            self._cache_key, client.argon2.encode() + b"\0" + password.encode(), hashlib.sha256
        )
        known = self._verified.get(client.client_id)
        if known is not None and hmac.compare_digest(known, digest):
            return True  # verified before with this hash: reconnects cost no argon2
        if not await asyncio.to_thread(argon2_verify, password, client.argon2):
            return False
        self._verified[client.client_id] = digest
        return True

    def _throttled(self, address: str) -> bool:
        failures = self._failures.get(address)
        if not failures:
            return False
        horizon = time.monotonic() - self.throttle_window_s
        while failures and failures[0] < horizon:
            failures.popleft()
        return len(failures) >= self.throttle_failures

    def _failed(self, address: str, reason: str) -> None:
        self.figures.failed_logins[reason] += 1
        if len(self._failures) > 10_000:
            self._failures.clear()  # bounded memory under a scan from many addresses
        self._failures.setdefault(address, deque(maxlen=self.throttle_failures)).append(
            time.monotonic()
        )

    # -- topics ------------------------------------------------------------------------------
    def _client(self, session: Session | None) -> Client | None:
        if session is None:
            return None
        registered = self._identities.get(session.client_id or "")
        return self.registry.get(registered) if registered else None

    async def on_broker_message_received(self, *, client_id: str, message: Any) -> None:
        """Keep the payload of an announce (``shellies/announce``) for the publish check."""
        # amqtt fires this event before it filters the publish (and runs it first, it has no
        # await); a payload not seen here is refused, so the check fails closed.
        if message is not None and message.topic in ANNOUNCE_TOPICS:
            self._announces[client_id] = bytes(message.data)

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        """Return True when the session's client may do ``action`` on ``topic``."""
        client = self._client(session)
        name = client.client_id if client else "unknown"
        if topic is None:
            return False
        if action == Action.PUBLISH:
            payload = None
            if topic in ANNOUNCE_TOPICS and session is not None:
                payload = self._announces.pop(session.client_id or "", None)
            reason = publish_refusal(client, topic, payload) if client else "unknown-client"
            if reason is not None:
                self.figures.refused_publishes[(name, reason)] += 1
                log.warning("refused a publish by %s on %r: %s", name, topic[:200], reason)
                return False
            return True
        if action == Action.SUBSCRIBE:
            if client is not None and may_subscribe(client, topic):
                return True
            self.figures.refused_subscriptions[name] += 1
            log.warning("refused a subscription by %s to %r", name, topic[:200])
            return False
        return client is not None and may_receive(client, topic)

    # -- revocation and last seen ------------------------------------------------------------
    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="wattlake-registry-watch"
            )

    async def _watch(self) -> None:
        last_seen_write = time.monotonic()
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            try:
                await self.disconnect_revoked()
                if self._seen and time.monotonic() - last_seen_write >= SEEN_WRITE_EVERY_S:
                    self.flush_seen()
                    last_seen_write = time.monotonic()
            except Exception:  # keep watching: a bad registry write must not end revocation
                log.exception("checking the registry for revoked clients failed")

    def flush_seen(self) -> None:
        """Write the last-seen times gathered since the last write."""
        seen, self._seen = self._seen, {}
        if seen:
            self.registry.record_seen(seen)

    async def disconnect_revoked(self) -> int:
        """Disconnect every connected client that is no longer active; return how many."""
        broker = getattr(self.context, "_broker_instance", None)
        if broker is None:
            return 0
        clients = self.registry.clients()
        dropped = 0
        for mqtt_id, (session, handler) in list(broker.sessions.items()):
            registered = self._identities.get(mqtt_id)
            if registered is None or not session.transitions.is_connected():
                continue
            client = clients.get(registered)
            if client is not None and client.active:
                continue
            self._identities.pop(mqtt_id, None)
            self._verified.pop(registered, None)
            log.warning("disconnecting %s: it was revoked", registered)
            await handler.stop()
            dropped += 1
        self.figures.disconnected_revoked += dropped
        return dropped

    async def close(self) -> None:
        """Stop watching the registry and write the last-seen times."""
        if self._watcher is not None:
            self._watcher.cancel()
        try:
            self.flush_seen()
        except OSError:
            log.warning("cannot write the last-seen times of broker clients")


@dataclass(frozen=True, slots=True)
class BrokerSecurity:
    """How the embedded broker authenticates: the registry and its listeners.

    The plain listener (``EmbeddedBroker.host``, loopback by default) also requires
    credentials. ``tls_port`` 0 picks a free port. ``gen1_plain_host`` opens a second plain
    listener on the home network for Gen1 devices registered for it (off when empty).
    """

    security_dir: Path
    tls_host: str = "0.0.0.0"
    tls_port: int = 8883
    gen1_plain_host: str = ""
    gen1_plain_port: int = 1883

    def registry(self) -> Registry:
        """Return the registry the broker checks clients against."""
        return Registry(self.security_dir)


GEN1_PLAIN_WARNING: Final = (
    "the plain MQTT listener on %s:%s is open to the network for Gen1 devices: their "
    "passwords and readings cross the network unencrypted, and anyone on it can read them"
)


def listener_config(security: BrokerSecurity, plain_bind: str, tls_port: int) -> dict[str, Any]:
    """Return the amqtt listeners and plugin configuration for ``security``."""
    ca = security.registry().ca
    listeners: dict[str, Any] = {
        "default": {"type": "tcp", "bind": plain_bind, "max_connections": -1},
        "tls": {
            "type": "tcp",
            "bind": f"{security.tls_host}:{tls_port}",
            "max_connections": -1,
            "ssl": True,
            "cafile": str(ca.ca_file),
            "certfile": str(ca.broker_cert_file),
            "keyfile": str(ca.broker_key_file),
        },
    }
    if security.gen1_plain_host:
        log.warning(GEN1_PLAIN_WARNING, security.gen1_plain_host, security.gen1_plain_port)
        listeners["gen1"] = {
            "type": "tcp",
            "bind": f"{security.gen1_plain_host}:{security.gen1_plain_port}",
            "max_connections": -1,
        }
    plugin = f"{WattlakeAuthPlugin.__module__}.{WattlakeAuthPlugin.__name__}"
    return {
        "listeners": listeners,
        "plugins": {plugin: {"security_dir": str(security.security_dir), "domain": ca.domain}},
    }

"""MQTT clients for the security tests: connect with or without TLS and credentials."""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from wattlake.gateway.ca import CertificateAuthority


def tls_context(ca_file: Path, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Return a client context that trusts ``ca_file`` and presents ``cert`` (cert, key)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


@dataclass
class Conn:
    """A connected (or refused) test client and what it received."""

    client: mqtt.Client
    connected: bool
    reason: str = ""
    received: list[tuple[str, bytes]] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        """Publish and wait until the broker acknowledged it."""
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)

    def subscribe(self, topic: str) -> int:
        """Subscribe and return the granted QoS (128: refused)."""
        granted: list[int] = []
        done = threading.Event()

        def on_subscribe(_c: object, _u: object, _m: object, codes: list, _p: object) -> None:
            granted.extend(int(getattr(c, "value", c)) for c in codes)
            done.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic, qos=1)
        done.wait(5)
        return granted[0] if granted else -1


def connect(
    port: int,
    *,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
) -> Conn:
    """Connect to ``127.0.0.1:port``; a refused connection returns ``connected`` False."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
    )
    if username is not None:
        client.username_pw_set(username, password)
    if tls is not None:
        client.tls_set_context(tls)
    conn = Conn(client, False)
    answered = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        conn.connected = not getattr(rc, "is_failure", False)
        conn.reason = str(rc)
        answered.set()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        conn.received.append((msg.topic, bytes(msg.payload)))

    def on_disconnect(_c: object, _u: object, _f: object, _rc: object, _p: object) -> None:
        conn.disconnected.set()
        answered.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.on_disconnect = on_disconnect
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        conn.reason = f"{type(exc).__name__}: {exc}"
        return conn
    client.loop_start()
    answered.wait(timeout_s)
    if not conn.connected:
        client.loop_stop()
    return conn


def other_ca_cert(root: Path) -> tuple[Path, Path]:
    """Return a device certificate and key issued by a CA that is not the project's."""
    other = CertificateAuthority(root)
    other.init(hosts=[], ips=[])
    other.issue_device("meter-a")
    return other.device_files("meter-a")


def wait_until(predicate: object, timeout_s: float = 5.0) -> bool:
    """Wait until ``predicate()`` is true; return whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(predicate())  # type: ignore[operator]

"""The cost of the embedded broker's security: connection set-up and ingest rate, TLS beside plain.

Runs, on one machine, in one run (compare ratios: the machine is shared):

1. connection set-up [connections/s]: connect, CONNACK, disconnect, one after the other, to
   - an anonymous plain broker (the baseline: today's demo broker),
   - the secured broker's plain listener with a password (the first login of a client costs one
     argon2 check, ~0.2 s; later ones are served from the broker's cache),
   - the secured broker's TLS listener with a project client certificate;
2. ingest rate [messages/s]: one device publishes N QoS 1 messages as fast as the broker
   acknowledges them, one subscriber (the ingest's role) receives them: anonymous plain vs a
   certificate device over TLS to a password-authenticated reader;
3. the topic rule itself: :func:`wattlake.gateway.auth.publish_refusal` per call [µs].

    .venv/bin/python bench/bench_tls.py [--messages 5000] [--connections 100]
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import best_of
from wattlake.gateway.auth import BrokerSecurity, publish_refusal
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.registry import INGEST_ID, Registry


def client(
    port: int,
    client_id: str,
    *,
    user: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> mqtt.Client:
    """Return a connected paho client (network loop running)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if user:
        c.username_pw_set(user, password)
    if tls:
        c.tls_set_context(tls)
    c.max_inflight_messages_set(1000)
    connected = threading.Event()
    c.on_connect = lambda *_a: connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{client_id} could not connect")
    return c


def connect_rate(n: int, **kwargs: object) -> float:
    """Return connections per second for ``n`` sequential connect/disconnect cycles."""
    started = time.perf_counter()
    for _ in range(n):
        c = client(**kwargs)  # type: ignore[arg-type]
        c.disconnect()
        c.loop_stop()
    return n / (time.perf_counter() - started)


def ingest_rate(
    port_pub: int, port_sub: int, n: int, *, pub: dict[str, object], sub: dict[str, object]
) -> float:
    """Return messages per second received by a subscriber while a device publishes ``n``."""
    got = threading.Event()
    count = [0]

    def on_message(*_a: object) -> None:
        count[0] += 1
        if count[0] >= n:
            got.set()

    reader = client(port_sub, "bench-reader", **sub)  # type: ignore[arg-type]
    reader.on_message = on_message
    done = threading.Event()
    reader.on_subscribe = lambda *_a: done.set()
    reader.subscribe("#", qos=1)
    done.wait(10)
    device = client(port_pub, pub.pop("client_id"), **pub)  # type: ignore[arg-type]
    payload = b'{"method":"NotifyStatus","params":{"ts":1767225600,"em1:0":{"act_power":1.5}}}'
    started = time.perf_counter()
    infos = [
        device.publish(f"{device._client_id.decode()}/events/rpc", payload, qos=1) for _ in range(n)
    ]
    got.wait(300)
    elapsed = time.perf_counter() - started
    for info in infos[-10:]:
        info.wait_for_publish(5)
    for c in (device, reader):
        c.disconnect()
        c.loop_stop()
    return count[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    registry = Registry(tmp / "security")
    registry.ca.init(hosts=[], ips=["127.0.0.1"])
    registry.add("meter-1", auth="cert")
    password = registry.add("meter-2", auth="password").password
    ingest = registry.service_password()
    cert = registry.ca.device_files("meter-1")
    tls = ssl.create_default_context(cafile=str(registry.ca.ca_file))
    tls.load_cert_chain(str(cert[0]), str(cert[1]))
    tls_no_cert = ssl.create_default_context(cafile=str(registry.ca.ca_file))

    anonymous = EmbeddedBroker().start()
    secured = EmbeddedBroker(
        security=BrokerSecurity(registry.root, tls_host="127.0.0.1", tls_port=0)
    )
    secured.start()
    try:
        n = args.connections
        rows = [
            ("plain, anonymous (baseline)", connect_rate(n, port=anonymous.port, client_id="x")),
            (
                "plain, password (cached after the first)",
                connect_rate(
                    n, port=secured.port, client_id="meter-2", user="meter-2", password=password
                ),
            ),
            (
                "TLS, password",
                connect_rate(
                    n,
                    port=secured.tls_port,
                    client_id="meter-2",
                    user="meter-2",
                    password=password,
                    tls=tls_no_cert,
                ),
            ),
            (
                "TLS, client certificate",
                connect_rate(n, port=secured.tls_port, client_id="meter-1", tls=tls),
            ),
        ]
        print(f"connection set-up, {n} sequential connections")
        base = rows[0][1]
        for name, rate in rows:
            print(f"  {name:45s} {rate:8.1f} conn/s  {rate / base:5.2f}x")
        m = args.messages
        plain = ingest_rate(anonymous.port, anonymous.port, m, pub={"client_id": "meter-1"}, sub={})
        secure = ingest_rate(
            secured.tls_port,
            secured.port,
            m,
            pub={"client_id": "meter-1", "tls": tls},
            sub={"user": INGEST_ID, "password": ingest},
        )
        print(f"ingest rate, {m} QoS 1 messages, one device, one reader")
        print(f"  {'plain, anonymous (baseline)':45s} {plain:8.0f} msg/s  1.00x")
        name = "TLS device, password reader, topic rules"
        print(f"  {name:45s} {secure:8.0f} msg/s  {secure / plain:5.2f}x")
        client_obj = registry.get("meter-1")
        assert client_obj is not None
        calls = 100_000
        seconds = best_of(
            3, lambda: [publish_refusal(client_obj, "meter-1/events/rpc") for _ in range(calls)]
        )
        print(f"topic rule publish_refusal: {seconds / calls * 1e6:.2f} µs per publish")
        figures = secured.auth_plugin.figures  # type: ignore[union-attr]
        print(f"(broker logins {figures.logins}, refused {dict(figures.failed_logins)})")
    finally:
        anonymous.stop()
        secured.stop()


if __name__ == "__main__":
    main()

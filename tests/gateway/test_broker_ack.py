"""The embedded broker acknowledges a QoS 1 publish only once its subscribers have their copies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from wattlake.gateway.auth import BrokerSecurity
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.registry import INGEST_ID, Registry

METER = "pw-gen2"
TOPIC = f"{METER}/events/rpc"


def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Publisher:
    """A paho client that publishes QoS 1 and records which messages were acknowledged."""

    def __init__(self, broker: Broker) -> None:
        self.acked: set[int] = set()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=METER, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(METER, broker.meter_password)
        self.connacks: list[str] = []
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connacks.append(str(rc))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked.add(mid)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        return self.client.publish(topic, payload, qos=qos).mid

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    """A paho client that subscribes at QoS 1 and acknowledges only when told to (the ingest
    acknowledges after its WAL sync)."""

    def __init__(self, broker: Broker) -> None:
        self.received: list[tuple[int, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="ingest",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.username_pw_set(INGEST_ID, broker.ingest_password)
        self.client.manual_ack_set(True)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("#", 1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        # A resumed session gets what the broker kept for it before the SUBACK (amqtt waits
        # for those acknowledgements first), as the ingest's MQTT source knows.
        assert _until(lambda: subscribed.is_set() or bool(self.received))

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.received.append((msg.mid, bytes(msg.payload)))

    def ack_all(self) -> list[bytes]:
        with self.lock:
            taken, self.received = self.received, []
        for mid, _payload in taken:
            self.client.ack(mid, 1)
        return [payload for _mid, payload in taken]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Broker:
    """The secured embedded broker as ``up`` runs it, waiting for the ingest's subscription
    (amqtt keeps no session for anonymous clients, which is every client without security)."""

    host: str
    port: int
    meter_password: str
    ingest_password: str


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    registry = Registry(tmp_path / "security")
    registry.ca.init(hosts=[], ips=[])
    meter_password = registry.add(METER, auth="password").password
    security = BrokerSecurity(registry.root, tls_host="127.0.0.1", tls_port=0)
    with EmbeddedBroker(security=security, durable_subscriber="ingest") as running:
        yield Broker(running.host, running.port, meter_password, registry.service_password())


def test_a_qos1_publish_is_acknowledged_only_after_the_subscriber_acknowledged_its_copy(
    broker: Broker,
) -> None:
    ingest = Subscriber(broker)
    meter = Publisher(broker)
    try:
        mids = [meter.publish(TOPIC, f"m{i}".encode()) for i in range(20)]
        assert _until(lambda: len(ingest.received) == 20)
        time.sleep(0.3)  # room for a PUBACK that should not come
        assert not meter.acked  # the broker has them, the subscriber has not acknowledged
        assert ingest.ack_all() == [f"m{i}".encode() for i in range(20)]
        assert _until(lambda: meter.acked == set(mids))
    finally:
        meter.close()
        ingest.close()


def test_a_meter_is_refused_until_the_ingest_has_subscribed(broker: Broker) -> None:
    """Before the ingest subscribes, a publish would reach nobody: the broker answers
    "server unavailable" and the meter comes back once the ingest is there."""
    meter = Publisher(broker)
    try:
        assert _until(lambda: len(meter.connacks) >= 1)
        assert meter.connacks[0] == "Server unavailable"
        ingest = Subscriber(broker)
        try:
            assert _until(lambda: "Success" in meter.connacks)
            mid = meter.publish(TOPIC, b"first")
            assert _until(lambda: len(ingest.received) == 1)
            assert ingest.ack_all() == [b"first"]
            assert _until(lambda: mid in meter.acked)
        finally:
            ingest.close()
    finally:
        meter.close()


def test_a_copy_the_ingest_left_unacknowledged_waits_for_its_return(
    broker: Broker,
) -> None:
    ingest = Subscriber(broker)
    meter = Publisher(broker)
    try:
        mid = meter.publish(TOPIC, b"while-away")
        assert _until(lambda: len(ingest.received) == 1)
        ingest.client.disconnect()  # gone without acknowledging
        ingest.client.loop_stop()
        later = meter.publish(TOPIC, b"after")  # queued for the away session
        time.sleep(0.3)
        assert not meter.acked
        back = Subscriber(broker)
        try:
            assert _until(lambda: len(back.received) == 2)
            assert sorted(back.ack_all()) == [b"after", b"while-away"]
            assert _until(lambda: meter.acked == {mid, later})
        finally:
            back.close()
    finally:
        meter.close()


def test_publishes_nobody_keeps_are_acknowledged_at_once(broker: Broker) -> None:
    """A publish the topic rules refuse, and QoS 0, are as before: nothing to wait for."""
    ingest = Subscriber(broker)
    meter = Publisher(broker)
    try:
        refused = meter.publish("another-meter/events/rpc", b"x")
        assert _until(lambda: refused in meter.acked)
        meter.publish(TOPIC, b"qos0", qos=0)
        assert _until(lambda: len(ingest.received) == 1)  # QoS 0: passed on, nothing owed
    finally:
        meter.close()
        ingest.close()


def test_without_security_the_ingest_session_is_kept_too() -> None:
    """amqtt keeps no session for anonymous clients (all of them, without security): the
    ingest's is kept all the same, so a copy it left unacknowledged waits for its return."""
    with EmbeddedBroker(durable_subscriber="ingest") as running:
        broker = Broker(running.host, running.port, "any", "any")
        ingest = Subscriber(broker)
        meter = Publisher(broker)
        try:
            mid = meter.publish(TOPIC, b"while-away")
            assert _until(lambda: len(ingest.received) == 1)
            ingest.close()  # gone without acknowledging
            time.sleep(1.5)  # amqtt's session monitor drops anonymous sessions every second
            assert not meter.acked
            back = Subscriber(broker)
            try:
                assert _until(lambda: len(back.received) == 1)
                assert back.ack_all() == [b"while-away"]
                assert _until(lambda: mid in meter.acked)
            finally:
                back.close()
        finally:
            meter.close()

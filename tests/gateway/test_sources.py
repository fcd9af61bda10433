"""One Source protocol the ingest worker consumes, and one retry policy for every reconnect."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.gateway.security_helpers import wait_until
from tests.stream.support import expected_keys, lake_keys, reading_message
from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.http import HttpSource
from wattlake.gateway.mqtt import BrokerAddress, Delivery, Intake, MqttSource
from wattlake.gateway.refill import Refiller, retry_delay_s
from wattlake.gateway.retry import Backoff, RetryPolicy, reconnect_with
from wattlake.gateway.source import Source
from wattlake.stream.ingest import IngestWorker


class ListSource:
    """A source of a fixed list of messages (as a file import is): all on the intake at start,
    done once every one was acknowledged."""

    def __init__(self, intake: Intake, messages: list[tuple[str, bytes]]) -> None:
        self.intake = intake
        self.messages = messages
        self.acked = 0
        self.closed = self.stopped = False

    def start(self) -> None:
        now_ms = time.time_ns() // 1_000_000
        for topic, payload in self.messages:
            self.intake.put(Delivery(RawMessage(topic, payload, now_ms), 0, 0, 0))

    def close(self) -> None:
        self.closed = True

    def stop(self) -> None:
        self.stopped = True

    def ack(self, deliveries: list[Delivery]) -> None:
        self.acked += sum(1 for d in deliveries if d.connection == 0)

    def refuse(self, deliveries: list[Delivery]) -> list[Delivery]:
        return deliveries

    def describe(self) -> str:
        return f"a list of {len(self.messages)} message(s)"


def test_every_gateway_source_follows_the_protocol(tmp_path: Path) -> None:
    address = BrokerAddress.parse("mqtt://127.0.0.1:1")
    settings = Settings.load(
        overrides={
            "data_dir": str(tmp_path),
            "ingest.http_listen": "127.0.0.1:0",
            "ingest.http_token": "t",
        },
        environ={},
    )
    sources = [
        MqttSource(address, topics=["#"]),
        HttpSource.from_settings(settings, intake=Intake(), taking=lambda: True),
        Refiller(address, state_file=tmp_path / "refill.json"),
        ListSource(Intake(), []),
    ]
    for source in sources:
        assert isinstance(source, Source), type(source).__name__
        assert source.describe() and "password" not in source.describe()


def test_the_worker_takes_from_every_source_it_is_given(tmp_path: Path) -> None:
    """A source added to the worker feeds its intake; the worker makes each message durable,
    acknowledges it to that source and writes it to the lake, beside the MQTT source."""
    data_dir = tmp_path / "lake"
    with EmbeddedBroker(port=0) as broker:
        settings = Settings.load(
            overrides={"data_dir": str(data_dir), "stream.flush_interval_s": 0.2}, environ={}
        )
        worker = IngestWorker(settings, broker.url, client_id="sources", mqtt5=False, drain=True)
        extra = ListSource(worker.intake, [reading_message(i) for i in range(50)])
        worker.add_source(extra)
        assert [type(s).__name__ for s in worker.sources] == ["MqttSource", "ListSource"]
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        try:
            assert worker.ready.wait(60)
            assert wait_until(lambda: extra.acked == 50, 60)
        finally:
            stop.set()
            thread.join(120)
    assert extra.closed and extra.stopped
    _, rows, keys = lake_keys(data_dir)
    assert keys == expected_keys(50) and rows == 50


def test_the_retry_policy_doubles_up_to_its_limit_with_jitter() -> None:
    policy = RetryPolicy(first_s=0.5, max_s=4.0)
    assert [policy.ceiling_s(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.ceiling_s(10_000) == 4.0  # no overflow after many failures
    rng = random.Random(7)
    for attempt in range(1, 8):
        delays = [policy.delay_s(attempt, rng) for _ in range(200)]
        ceiling = policy.ceiling_s(attempt)
        assert all(ceiling * (1 - policy.jitter) <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jittered: clients that failed together spread out
    assert RetryPolicy(1.0, 8.0, jitter=0.0).delay_s(3) == 4.0
    # The refill's retries follow the same policy.
    assert all(15.0 <= retry_delay_s(1) <= 30.0 for _ in range(100))


def test_a_backoff_waits_then_forgets_after_a_success() -> None:
    backoff = Backoff(RetryPolicy(first_s=0.2, max_s=0.4, jitter=0.0))
    assert backoff.due()
    assert backoff.failed() == pytest.approx(0.2)
    assert not backoff.due()
    assert backoff.failed() == pytest.approx(0.4)
    assert backoff.failed() == pytest.approx(0.4)
    time.sleep(0.45)
    assert backoff.due()
    backoff.reset()
    assert backoff.failures == 0 and backoff.failed() == pytest.approx(0.2)


def test_a_client_reconnects_to_a_restarted_broker_as_the_policy_says() -> None:
    broker = EmbeddedBroker(port=0).start()
    port = broker.port
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="retry-test")
    connects: list[float] = []
    client.on_connect = lambda *_a: connects.append(time.monotonic())
    reconnect_with(client, RetryPolicy(first_s=0.2, max_s=0.4))
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        assert wait_until(lambda: len(connects) == 1, 30)
        broker.stop()
        lost_at = time.monotonic()
        time.sleep(4.0)  # failed attempts, each at most 0.4 s apart (paho alone: at 1, 3, 7 s)
        broker = EmbeddedBroker(port=port).start()
        started_at = time.monotonic()
        assert wait_until(lambda: len(connects) == 2, 30)
        assert connects[1] > lost_at
        # paho alone would wait 1, 2, 4 … s (up to 120); the policy caps the wait at 0.4 s.
        assert connects[1] - started_at < 0.4 + 1.0  # one wait, plus a loaded machine's slack
    finally:
        client.disconnect()
        client.loop_stop()
        broker.stop()


def test_the_embedded_brokers_subscriptions_may_change_while_a_broadcast_walks_them() -> None:
    """amqtt walks its subscriptions across awaits while a disconnect deletes filters; the walk
    must not fail with "dictionary changed size during iteration" (seen at demo stops)."""
    from wattlake.gateway.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        subscriptions = broker._broker._subscriptions
        subscriptions.update({"a/#": [], "b/#": [], "c/#": []})
        walked = []
        for topic, _ in subscriptions.items():  # as amqtt's _run_broadcast walks them
            walked.append(topic)
            subscriptions.pop("c/#", None)  # a client disconnected meanwhile
            subscriptions["d/#"] = []  # another subscribed
        for topic in subscriptions:  # as amqtt's retained-message walk does
            del subscriptions[topic]
        assert walked == ["a/#", "b/#", "c/#"] and not subscriptions

"""The embedded broker with security: identities, listeners, topic rules, revocation, logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gateway.security_helpers import Conn, connect, other_ca_cert, tls_context, wait_until
from wattlake.gateway.auth import BrokerSecurity
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.registry import INGEST_ID, Registry


@dataclass
class Secured:
    broker: EmbeddedBroker
    registry: Registry
    secrets: dict[str, str]
    tmp: Path

    @property
    def ca_file(self) -> Path:
        return self.registry.ca.ca_file

    def cert(self, device_id: str) -> tuple[Path, Path]:
        return self.registry.ca.device_files(device_id)

    def tls(self, device_id: str | None = None) -> object:
        return tls_context(self.ca_file, self.cert(device_id) if device_id else None)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    registry = Registry(tmp_path / "security")
    registry.ca.init(hosts=[], ips=[])
    secrets = {
        "meter-a": "",
        "meter-b": "",
        "gen1-a": registry.add("gen1-a", fmt="shelly-gen1", auth="password", plain=True).password,
        "pw-gen2": registry.add("pw-gen2", auth="password").password,
        INGEST_ID: registry.service_password(),
    }
    registry.add("meter-a", auth="cert")
    registry.add("meter-b", auth="cert")
    security = BrokerSecurity(registry.root, tls_host="127.0.0.1", tls_port=0)
    broker = EmbeddedBroker(security=security).start()
    try:
        yield Secured(broker, registry, secrets, tmp_path)
    finally:
        broker.stop()


def _ingest(s: Secured) -> Conn:
    conn = connect(
        s.broker.port, client_id="ingest-1", username=INGEST_ID, password=s.secrets[INGEST_ID]
    )
    assert conn.connected, conn.reason
    assert conn.subscribe("#") == 1
    return conn


def test_anonymous_clients_are_refused_on_both_listeners(secured: Secured) -> None:
    plain = connect(secured.broker.port, client_id="anon")
    assert not plain.connected
    tls = connect(secured.broker.tls_port, client_id="anon", tls=secured.tls())  # type: ignore[arg-type]
    assert not tls.connected
    figures = secured.broker.auth_plugin.figures  # type: ignore[union-attr]
    assert figures.failed_logins["anonymous"] == 2


def test_a_certificate_from_another_ca_is_refused_on_both_listeners(secured: Secured) -> None:
    foreign = other_ca_cert(secured.tmp / "other")
    context = tls_context(secured.ca_file, foreign)
    tls = connect(secured.broker.tls_port, client_id="meter-a", tls=context)
    assert not tls.connected  # the server ends the TLS handshake: not our CA
    plain = connect(secured.broker.port, client_id="meter-a", tls=context)
    assert not plain.connected  # the plain listener speaks no TLS at all
    assert secured.broker.auth_plugin.figures.logins == 0  # type: ignore[union-attr]


def test_project_certificates_and_passwords_are_accepted(secured: Secured) -> None:
    a = connect(secured.broker.tls_port, client_id="meter-a", tls=secured.tls("meter-a"))  # type: ignore[arg-type]
    assert a.connected, a.reason
    wrong_id = connect(secured.broker.tls_port, client_id="meter-b", tls=secured.tls("meter-a"))  # type: ignore[arg-type]
    assert not wrong_id.connected  # the client id must be the certificate's device id
    pw = connect(
        secured.broker.tls_port,
        client_id="pw-gen2",
        username="pw-gen2",
        password=secured.secrets["pw-gen2"],
        tls=secured.tls(),  # type: ignore[arg-type]
    )
    assert pw.connected, pw.reason
    bad = connect(secured.broker.port, client_id="pw-gen2", username="pw-gen2", password="guess")
    assert not bad.connected
    a.close()
    pw.close()


def test_device_a_publishing_on_b_topic_is_refused_and_counted(secured: Secured) -> None:
    ingest = _ingest(secured)
    a = connect(secured.broker.tls_port, client_id="meter-a", tls=secured.tls("meter-a"))  # type: ignore[arg-type]
    assert a.connected, a.reason
    a.publish(
        "meter-b/events/rpc", b'{"method":"NotifyStatus","params":{"em1:0":{"act_power":1e5}}}'
    )
    a.publish("meter-a/events/rpc", b'{"method":"NotifyStatus","params":{}}')
    a.publish("wattlake/meter-b/readings", b'{"power_w":100000}')
    assert wait_until(lambda: len(ingest.received) >= 1)
    assert [t for t, _ in ingest.received] == ["meter-a/events/rpc"]
    figures = secured.broker.auth_plugin.figures  # type: ignore[union-attr]
    # The broker handles the third publish after the second reached the ingest: wait for it.
    assert wait_until(lambda: figures.refused_publishes[("meter-a", "foreign-topic")] == 2)
    assert [t for t, _ in ingest.received] == ["meter-a/events/rpc"]
    assert a.subscribe("#") == 128 and a.subscribe("meter-b/rpc") == 128
    assert a.subscribe("meter-a/rpc") == 1
    text = secured.broker.metrics_text()
    assert (
        'wattlake_broker_refused_publishes_total{device="meter-a",reason="foreign-topic"} 2.0'
        in text
    )
    a.close()
    ingest.close()


def test_gen1_announce_must_carry_the_publisher_id(secured: Secured) -> None:
    ingest = _ingest(secured)
    g = connect(
        secured.broker.port,
        client_id="gen1-a",
        username="gen1-a",
        password=secured.secrets["gen1-a"],
    )
    assert g.connected, g.reason
    g.publish("shellies/announce", json.dumps({"id": "gen1-b"}))
    g.publish("shellies/gen1-b/emeter/0/power", b"100000")
    g.publish("shellies/announce", json.dumps({"id": "gen1-a"}))
    g.publish("shellies/gen1-a/emeter/0/power", b"12.5")
    assert wait_until(lambda: len(ingest.received) >= 2)
    assert [t for t, _ in ingest.received] == [
        "shellies/announce",
        "shellies/gen1-a/emeter/0/power",
    ]
    figures = secured.broker.auth_plugin.figures  # type: ignore[union-attr]
    assert figures.refused_publishes[("gen1-a", "announce-mismatch")] == 1
    assert figures.refused_publishes[("gen1-a", "foreign-topic")] == 1
    g.close()
    ingest.close()


def test_a_revoked_device_is_disconnected_and_refused(secured: Secured) -> None:
    a = connect(secured.broker.tls_port, client_id="meter-a", tls=secured.tls("meter-a"))  # type: ignore[arg-type]
    assert a.connected, a.reason
    cert_file, key_file = secured.cert("meter-a")
    kept = (secured.tmp / "kept.pem", secured.tmp / "kept.key")
    kept[0].write_bytes(cert_file.read_bytes())
    kept[1].write_bytes(key_file.read_bytes())
    Registry(secured.registry.root).revoke("meter-a")  # as `wattlake device revoke` would
    assert a.disconnected.wait(5)
    a.client.loop_stop()
    again = connect(
        secured.broker.tls_port, client_id="meter-a", tls=tls_context(secured.ca_file, kept)
    )
    assert not again.connected
    assert secured.broker.auth_plugin.figures.failed_logins["revoked"] == 1  # type: ignore[union-attr]


def test_failed_logins_are_throttled_per_address(secured: Secured) -> None:
    for _ in range(5):
        assert not connect(
            secured.broker.port, client_id="pw-gen2", username="pw-gen2", password="guess"
        ).connected
    right = connect(
        secured.broker.port,
        client_id="pw-gen2",
        username="pw-gen2",
        password=secured.secrets["pw-gen2"],
    )
    assert not right.connected  # refused unheard while the address is throttled
    figures = secured.broker.auth_plugin.figures  # type: ignore[union-attr]
    assert figures.failed_logins["bad-password"] == 5
    assert figures.failed_logins["throttled"] == 1


def test_logs_hold_no_password_key_or_token(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provisioned = secured.registry.add("late", auth="password")
    cert = secured.registry.add("late-cert", auth="cert")
    ok = connect(
        secured.broker.port, client_id="late", username="late", password=provisioned.password
    )
    assert ok.connected
    connect(secured.broker.port, client_id="late", username="late", password="wrong-guess-123")
    tls = connect(secured.broker.tls_port, client_id="late-cert", tls=secured.tls("late-cert"))  # type: ignore[arg-type]
    assert tls.connected
    ok.close()
    tls.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "late" in logged  # the capture did see the connections
    for secret in (
        provisioned.password,
        "wrong-guess-123",
        secured.secrets[INGEST_ID],
        *[line for line in cert.issued.key_pem.decode().splitlines() if "-----" not in line],  # type: ignore[union-attr]
    ):
        assert secret not in logged

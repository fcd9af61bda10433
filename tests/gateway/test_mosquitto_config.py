"""The Mosquitto configuration written from the registry enforces the embedded broker's rules."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need, quiet_ports, wait_for_port
from tests.gateway.security_helpers import Conn, connect, other_ca_cert, tls_context, wait_until
from wattlake.gateway.mosquitto import MosquittoPorts, write_config
from wattlake.gateway.registry import INGEST_ID, Registry


@dataclass
class Mosq:
    ports: MosquittoPorts
    registry: Registry
    secrets: dict[str, str]
    tmp: Path


@pytest.fixture
def mosq(tmp_path: Path) -> Iterator[Mosq]:
    binary = need("mosquitto")
    registry = Registry(tmp_path / "security")
    registry.ca.init(hosts=[], ips=[])
    registry.add("meter-a", auth="cert")
    registry.add("meter-b", auth="cert")
    registry.add("gone", auth="cert")
    gone = registry.ca.device_files("gone")
    kept = (tmp_path / "gone.pem", tmp_path / "gone.key")
    kept[0].write_bytes(gone[0].read_bytes())
    kept[1].write_bytes(gone[1].read_bytes())
    registry.revoke("gone")
    secrets = {
        "pw-gen2": registry.add("pw-gen2", auth="password").password,
        INGEST_ID: registry.service_password(),
    }
    tls_port, password_port, plain_port = quiet_ports(3)  # three distinct ports
    ports = MosquittoPorts(tls_port=tls_port, password_port=password_port, plain_port=plain_port)
    conf = write_config(registry, tmp_path / "mosquitto", ports)
    # Running as root, Mosquitto would switch to its own user, which cannot read 0600 files.
    conf.write_text(conf.read_text() + "\nuser root\n")
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        for port in (ports.tls_port, ports.password_port, ports.plain_port):
            wait_for_port(port)
        yield Mosq(ports, registry, secrets, tmp_path)
    finally:
        process.terminate()
        process.wait(10)


def _tls(m: Mosq, device_id: str | None = None) -> object:
    cert = m.registry.ca.device_files(device_id) if device_id else None
    return tls_context(m.registry.ca.ca_file, cert)


def test_mosquitto_refuses_anonymous_and_foreign_ca_clients(mosq: Mosq) -> None:
    assert not connect(mosq.ports.plain_port, client_id="anon").connected
    assert not connect(mosq.ports.password_port, client_id="anon", tls=_tls(mosq)).connected  # type: ignore[arg-type]
    assert not connect(mosq.ports.tls_port, client_id="anon", tls=_tls(mosq)).connected  # type: ignore[arg-type]
    foreign = tls_context(mosq.registry.ca.ca_file, other_ca_cert(mosq.tmp / "other"))
    assert not connect(mosq.ports.tls_port, client_id="meter-a", tls=foreign).connected
    assert not connect(mosq.ports.plain_port, client_id="meter-a", tls=foreign).connected


def test_mosquitto_refuses_a_revoked_certificate(mosq: Mosq) -> None:
    kept = tls_context(mosq.registry.ca.ca_file, (mosq.tmp / "gone.pem", mosq.tmp / "gone.key"))
    assert not connect(mosq.ports.tls_port, client_id="gone", tls=kept).connected


def test_mosquitto_ties_topics_to_the_identity(mosq: Mosq) -> None:
    ingest = connect(
        mosq.ports.plain_port,
        client_id="ingest-1",
        username=INGEST_ID,
        password=mosq.secrets[INGEST_ID],
    )
    assert ingest.connected, ingest.reason
    ingest.subscribe("#")
    a: Conn = connect(mosq.ports.tls_port, client_id="meter-a", tls=_tls(mosq, "meter-a"))  # type: ignore[arg-type]
    assert a.connected, a.reason
    a.publish("meter-b/events/rpc", b'{"method":"NotifyStatus","params":{}}')
    a.publish("wattlake/meter-b/readings", b'{"power_w":100000}')
    a.publish("meter-a/events/rpc", b'{"method":"NotifyStatus","params":{}}')
    pw = connect(
        mosq.ports.password_port,
        client_id="pw-gen2",
        username="pw-gen2",
        password=mosq.secrets["pw-gen2"],
        tls=_tls(mosq),  # type: ignore[arg-type]
    )
    assert pw.connected, pw.reason
    pw.publish("meter-a/events/rpc", b"{}")
    pw.publish("pw-gen2/online", b"true")
    assert wait_until(lambda: len(ingest.received) >= 2)
    assert wait_until(lambda: False, 0.5) is False  # give refused messages time to arrive
    assert sorted(t for t, _ in ingest.received) == ["meter-a/events/rpc", "pw-gen2/online"]
    # The device reads only its own topics; the ingest may ask it for records.
    assert a.subscribe("meter-a/rpc") == 1
    ingest.publish("meter-a/rpc", b'{"id":1,"method":"EMData.GetRecords"}')
    ingest.publish("meter-b/rpc", b'{"id":2,"method":"EMData.GetRecords"}')
    assert wait_until(lambda: any(t == "meter-a/rpc" for t, _ in a.received))
    wrong = connect(
        mosq.ports.password_port,
        client_id="pw-gen2",
        username="pw-gen2",
        password="guess",
        tls=_tls(mosq),  # type: ignore[arg-type]
    )
    assert not wrong.connected
    for conn in (a, pw, ingest):
        conn.close()

"""Every reading is bound to the meter that sent it, end to end.

Device A, authenticated with its own certificate (Gen1: its password; Gen1 cannot do TLS
certificates) and publishing on its own topics with ``mosquitto_pub``, sends payloads that name
device B. The broker lets them through (the topics are A's) and the ingest refuses each as a
dead letter ``identity-mismatch`` with its raw bytes: nothing is stored under B, nor under A,
and ``/metrics`` counts them by publisher. Honest payloads are stored. Both broker kinds: the
embedded broker with security on, and Mosquitto with the configuration ``broker-config
mosquitto`` writes. Then HTTP ingest with a device credential and with an ingest token.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Mosquitto, free_port, need, wait_for_port
from tests.gateway.test_http_ingest import TOKEN, post
from tests.stream.support import (
    no_ingest_left_running,  # noqa: F401 - an autouse fixture
    start_worker,
    wait_until,
)
from tests.web.test_metrics import value
from wattlake.config import Settings
from wattlake.gateway.auth import BrokerSecurity
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.mosquitto import MosquittoPorts, write_config
from wattlake.gateway.registry import INGEST_ID, Registry
from wattlake.gateway.tokens import TokenStore
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.stream.ingest import IngestWorker
from wattlake.web.app import create_app

TS_S = 1_767_225_600  # 2026-01-01T00:00:00Z
MISMATCH = "identity-mismatch"


@dataclass
class SecureBroker:
    """A broker with wattlake's rules: where devices and the ingest connect, and who exists."""

    kind: str
    registry: Registry
    cert_port: int  # TLS, devices with a certificate
    password_port: int  # TLS, devices with a password
    ingest_url: str  # the ingest, with its password, on this machine
    secrets: dict[str, str] = field(default_factory=dict)

    def start_ingest(
        self, data_dir: Path
    ) -> tuple[IngestWorker, threading.Event, threading.Thread]:
        """Run an ingest worker for this broker in a thread, as ``up`` (embedded: MQTT 3.1.1)
        or ``ingest --broker`` (Mosquitto: MQTT 5) would."""
        settings = {
            "data_dir": str(data_dir),
            "stream.flush_interval_s": 0.2,
            "ingest.username": INGEST_ID,
            "ingest.password": self.registry.service_password(),
        }
        worker = IngestWorker(
            Settings.load(overrides=settings, environ={}),
            self.ingest_url,
            client_id="ingest-identity",
            mqtt5=self.kind == "mosquitto",
        )
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,))
        thread.start()
        assert worker.ready.wait(30)
        return worker, stop, thread

    def publish(self, device_id: str, topic: str, payload: bytes) -> None:
        """Publish ``payload`` on ``topic`` as ``device_id`` with ``mosquitto_pub`` (QoS 1)."""
        ca = self.registry.ca
        command = [need("mosquitto_pub"), "-h", "127.0.0.1", "--cafile", str(ca.ca_file)]
        command += ["-i", device_id, "-t", topic, "-q", "1", "-s"]
        if device_id in self.secrets:
            command += ["-p", str(self.password_port), "-u", device_id, "-P"]
            command.append(self.secrets[device_id])
        else:
            cert, key = ca.device_files(device_id)
            command += ["-p", str(self.cert_port), "--cert", str(cert), "--key", str(key)]
        done = subprocess.run(command, input=payload, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()


def _registry(root: Path) -> tuple[Registry, dict[str, str]]:
    registry = Registry(root)
    registry.ca.init(hosts=[], ips=[])
    for device_id, fmt in (("meter-a", "shelly-gen2"), ("gen-a", "generic"), ("csv-a", "csv")):
        registry.add(device_id, fmt=fmt, auth="cert")
    registry.service_password()  # the ingest's, registered before the broker reads the registry
    return registry, {"em-a": registry.add("em-a", fmt="shelly-gen1", auth="password").password}


@pytest.fixture(params=["embedded", "mosquitto"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SecureBroker]:
    registry, secrets = _registry(tmp_path / "security")
    if request.param == "embedded":
        security = BrokerSecurity(registry.root, tls_host="127.0.0.1", tls_port=0)
        embedded = EmbeddedBroker(security=security).start()
        try:
            yield SecureBroker(
                "embedded",
                registry,
                embedded.tls_port,
                embedded.tls_port,
                f"mqtt://127.0.0.1:{embedded.port}",
                secrets,
            )
        finally:
            embedded.stop()
        return
    ports = MosquittoPorts(tls_port=free_port(), password_port=free_port(), plain_port=free_port())
    conf = write_config(registry, tmp_path / "mosquitto", ports)
    if os.geteuid() == 0:  # as root Mosquitto would switch to a user who cannot read 0600 files
        conf.write_text(conf.read_text() + "\nuser root\n")
    process = subprocess.Popen(
        [need("mosquitto"), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        for port in (ports.tls_port, ports.password_port, ports.plain_port):
            wait_for_port(port)
        yield SecureBroker(
            "mosquitto",
            registry,
            ports.tls_port,
            ports.password_port,
            f"mqtt://127.0.0.1:{ports.plain_port}",
            secrets,
        )
    finally:
        process.terminate()
        process.wait(10)


def gen2(src: str, power_w: float, second: int) -> bytes:
    params = {"ts": TS_S + second, "em1:0": {"act_power": power_w, "voltage": 230.0}}
    return json.dumps({"src": src, "method": "NotifyStatus", "params": params}).encode()


# (format, publisher, topic, payload): each names a device other than its publisher.
FORGED = [
    ("shelly-gen2", "meter-a", "meter-a/events/rpc", gen2("meter-b", 99_999.0, 1)),
    ("shelly-gen1", "em-a", "shellies/em-a/announce", b'{"id": "em-b", "model": "SHEM"}'),
    ("shelly-gen1", "em-a", "shellies/em-a/em-b/emeter/0/power", b"99999"),
    (
        "generic",
        "gen-a",
        "wattlake/gen-a/readings",
        b'{"device_id": "gen-b", "ts": 1767225601, "power_w": 99999}',
    ),
    (  # one message whose readings name two devices: A's and B's
        "generic",
        "gen-a",
        "wattlake/gen-a/readings",
        json.dumps(
            [
                {"device_id": "gen-a" if i % 2 else "gen-b", "ts": TS_S + 10 + i, "power_w": 99999}
                for i in range(20)
            ]
        ).encode(),
    ),
    (  # CSV over MQTT: a line naming another device in its device_id column
        "csv",
        "csv-a",
        "wattlake/csv-a/csv",
        b"ts,device_id,power_w\n1767225601,csv-a,1\n1767225601,csv-b,99999\n",
    ),
]
# (publisher, topic, payload): on another device's topic; both brokers drop it (the ACL).
FOREIGN = [("csv-a", "wattlake/csv-b/csv", b"ts,power_w\n1767225603,55555\n")]
HONEST = [
    ("meter-a", "meter-a/events/rpc", gen2("meter-a", 12.5, 2)),
    ("em-a", "shellies/em-a/emeter/0/power", b"5"),
    ("gen-a", "wattlake/gen-a/readings", b'{"device_id": "gen-a", "ts": 1767225602, "power_w": 7}'),
    ("csv-a", "wattlake/csv-a/csv", b"ts,channel,power_w\n1767225602,0,3\n"),
]


def lake_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    con = connect(Lake.open(str(data_dir)))
    try:
        return con.sql(sql).fetchall()
    finally:
        con.close()


def raw(base64_text: object) -> bytes:
    """Return the raw bytes a dead letter kept."""
    return base64.b64decode(str(base64_text))


def metrics_of(data_dir: Path) -> str:
    settings = Settings.load(overrides={"data_dir": str(data_dir)}, environ={})
    read = TokenStore(data_dir / "tokens.json").create("read")[0]
    client = TestClient(create_app(settings))
    return client.get("/metrics", headers={"Authorization": f"Bearer {read}"}).text


def test_a_payload_naming_another_device_is_a_dead_letter_in_every_format(
    broker: SecureBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "lake"
    worker, stop, thread = broker.start_ingest(data_dir)
    try:
        for device_id, topic, payload in FOREIGN:
            broker.publish(device_id, topic, payload)
        for _, device_id, topic, payload in FORGED:
            broker.publish(device_id, topic, payload)
        for device_id, topic, payload in HONEST:
            broker.publish(device_id, topic, payload)
        count = "SELECT count(*) FROM dead_letters"
        wait_until(lambda: lake_rows(data_dir, count) == [(len(FORGED),)], 60, "dead letters")
        wait_until(lambda: worker.figures().messages >= len(FORGED) + len(HONEST), 60, "all")
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()

    readings = lake_rows(data_dir, "SELECT device_id, power_w FROM readings ORDER BY ALL")
    expected = [("csv-a", 3.0), ("em-a", 5.0), ("gen-a", 7.0), ("meter-a", 12.5)]
    assert readings == expected, broker.kind
    letters = lake_rows(
        data_dir, "SELECT topic, error_code, error_message, raw_base64 FROM dead_letters"
    )
    assert sorted((t, raw(p)) for t, _, _, p in letters) == sorted(
        (topic, payload) for _, _, topic, payload in FORGED
    )
    assert {code for _, code, _, _ in letters} == {MISMATCH}
    for topic, _, message, payload in letters:
        forged = {"meter-a": "meter-b", "gen-a": "gen-b", "em-a": "em-b", "csv-a": "csv-b"}
        publisher = next(d for _, d, t, p in FORGED if (t, p) == (topic, raw(payload)))
        assert repr(forged[publisher]) in message and repr(publisher) in message

    metrics = metrics_of(data_dir)
    assert value(metrics, "wattlake_identity_mismatches", device="meter-a") == 1
    assert value(metrics, "wattlake_identity_mismatches", device="em-a") == 2
    assert value(metrics, "wattlake_identity_mismatches", device="gen-a") == 2
    assert value(metrics, "wattlake_identity_mismatches", device="csv-a") == 1
    assert value(metrics, "wattlake_dead_letters", reason=MISMATCH) == len(FORGED)


def basic(device_id: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{device_id}:{password}".encode()).decode()


def test_http_with_a_device_credential_may_only_name_that_device(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "security")
    pw_a = registry.add("pw-a", fmt="generic", auth="password").password
    registry.add("pw-b", fmt="generic", auth="password")
    data_dir = tmp_path / "lake"
    settings = {
        "ingest.http_listen": "127.0.0.1:0",
        "ingest.http_token": TOKEN,
        "security.dir": str(registry.root),
    }
    worker, stop, thread = start_worker(mosquitto.url, data_dir, **settings)
    try:
        assert worker.http is not None
        url = worker.http.url
        as_a = basic("pw-a", pw_a)
        forged = b'[{"device_id": "pw-a", "power_w": 1}, {"device_id": "pw-b", "power_w": 99999}]'
        answers = {
            "forged": post(url, "wattlake/pw-a/readings", forged, authorization=as_a),
            "foreign": post(url, "wattlake/pw-b/readings", b'{"power_w": 9}', authorization=as_a),
            "wrong": post(
                url, "wattlake/pw-a/readings", b"{}", authorization=basic("pw-a", "guess")
            ),
            "honest": post(
                url,
                "wattlake/pw-a/readings",
                b'{"device_id": "pw-a", "ts": 1767225600, "power_w": 3}',
                authorization=as_a,
            ),
            # An ingest token is trusted like the ingest: any device's topic, as before.
            "token": post(url, "wattlake/pw-b/readings", b'{"ts": 1767225600, "power_w": 4}'),
        }
        count = "SELECT count(*) FROM readings"
        wait_until(lambda: lake_rows(data_dir, count) == [(2,)], 60, "the readings")
        wait_until(lambda: worker.figures().dead_letters >= 1, 60, "the dead letter")
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    status = {name: answer.status for name, answer in answers.items()}
    assert status == {"forged": 200, "foreign": 403, "wrong": 401, "honest": 200, "token": 200}
    assert "pw-a" in answers["foreign"].body["error"]
    readings = lake_rows(data_dir, "SELECT device_id, power_w FROM readings ORDER BY ALL")
    assert readings == [("pw-a", 3.0), ("pw-b", 4.0)]
    letters = lake_rows(data_dir, "SELECT topic, error_code, raw_base64 FROM dead_letters")
    assert [(t, c, raw(p)) for t, c, p in letters] == [("wattlake/pw-a/readings", MISMATCH, forged)]

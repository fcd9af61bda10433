"""`wattlake up` with a device provisioned by `device add`: TLS, identity, stop, and a kill -9
that loses nothing acknowledged."""

from __future__ import annotations

import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import quiet_ports, wait_for_port
from tests.gateway.security_helpers import Conn, tls_context
from wattlake.devices.sim.rpc import FleetRpc, HttpRpcServer
from wattlake.devices.sim.simulator import Fleet, FleetConfig

WATTLAKE = str(Path(sys.executable).with_name("wattlake"))
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass
class Home:
    env: dict[str, str]
    data_dir: Path
    tmp: Path
    plain_port: int
    tls_port: int

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [WATTLAKE, *args, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert not check or done.returncode == 0, done.stderr
        return done

    def up(self) -> subprocess.Popen[str]:
        log = open(self.tmp / "up.log", "a")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [WATTLAKE, "up", "--no-web", "--data-dir", str(self.data_dir)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: kill -9 takes the whole tree
        )
        wait_for_port(self.tls_port, 60)
        wait_for_port(self.plain_port, 60)
        return process

    def query(self, sql: str) -> list[dict[str, object]]:
        out = self.run("query", sql, "--format", "json")
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    plain_port, tls_port = quiet_ports(2)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")},
        "WATTLAKE_SECURITY__DIR": str(tmp_path / "security"),
        "WATTLAKE_BROKER__PORT": str(plain_port),
        "WATTLAKE_BROKER__TLS_PORT": str(tls_port),
        "WATTLAKE_BROKER__TLS_HOST": "127.0.0.1",
        "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "1",
    }
    h = Home(env, tmp_path / "lake", tmp_path, plain_port, tls_port)
    h.run("ca", "init", "--ip", "127.0.0.1")
    yield h


def _provision(home: Home, fleet: Fleet, *, max_inflight: int = 20) -> tuple[Conn, str]:
    """Run `device add`'s printed commands against the simulated device; connect it as told
    (with at most ``max_inflight`` QoS 1 messages unacknowledged)."""
    device_id = fleet.devices[0].device_id
    rpc = FleetRpc(fleet)
    http = HttpRpcServer(rpc, device_id).start()
    try:
        out = home.run("device", "add", device_id, "--address", http.address)
        commands = [line for line in out.stdout.splitlines() if line.startswith("curl ")]
        assert len(commands) >= 5
        for command in commands:
            answer = subprocess.run(
                shlex.split(command), capture_output=True, text=True, check=True
            )
            assert "error" not in json.loads(answer.stdout), answer.stdout
    finally:
        http.stop()
    config = rpc.configs[device_id]
    assert config.reboots == 1 and config.mqtt["use_client_cert"] is True
    assert config.mqtt["ssl_ca"] == "user_ca.pem"
    files = home.tmp / "device"
    files.mkdir()
    for name, text in (
        ("ca.pem", config.user_ca),
        ("crt.pem", config.client_cert),
        ("key.pem", config.client_key),
    ):
        (files / name).write_text(text)
    host, port = config.mqtt["server"].rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) == home.tls_port  # the device is told broker.tls_port
    context = tls_context(files / "ca.pem", (files / "crt.pem", files / "key.pem"))
    deadline = time.monotonic() + 60
    while True:
        conn = _connect(int(port), config.mqtt["client_id"], context, max_inflight)
        # Refused as "server unavailable" until the ingest has subscribed: a device tries again.
        if conn.connected or "unavailable" not in conn.reason or time.monotonic() > deadline:
            return conn, device_id
        conn.close()
        time.sleep(0.2)


def _connect(port: int, client_id: str, tls: ssl.SSLContext, max_inflight: int) -> Conn:
    """Connect a device as :func:`connect` does, with ``max_inflight`` set before it connects."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311
    )
    client.tls_set_context(tls)
    client.max_inflight_messages_set(max_inflight)
    conn = Conn(client, False)
    answered = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        conn.connected = not getattr(rc, "is_failure", False)
        conn.reason = str(rc)
        answered.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *_args: answered.set()
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    answered.wait(10)
    return conn


def _rounds(fleet: Fleet, first: int, count: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(first, first + count):
        out += [(m.topic, m.payload) for m in fleet.round(T0 + i, 1.0)]
    return out


def test_a_provisioned_gen2_meter_reaches_the_lake_over_tls_under_its_identity(home: Home) -> None:
    fleet = Fleet(FleetConfig(devices=1, seed=5))
    process = home.up()
    try:
        conn, device_id = _provision(home, fleet)
        assert conn.connected, conn.reason
        for topic, payload in _rounds(fleet, 0, 30):
            conn.publish(topic, payload)
        conn.publish("shellyproem50-other/events/rpc", b'{"method":"NotifyStatus","params":{}}')
        conn.close()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (home.tmp / "up.log").read_text()
        stop_s = time.monotonic() - started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert stop_s < 45
    rows = home.query("SELECT device_id, count(*) AS n FROM readings GROUP BY device_id")
    assert rows == [{"device_id": device_id, "n": 60}]  # 30 notifications x 2 channels
    metrics = (home.data_dir / "wal" / "broker.prom").read_text()
    assert f'device="{device_id}",reason="foreign-topic"' in metrics
    listed = home.run("device", "list", "--format", "json").stdout.splitlines()
    row = next(r for r in map(json.loads, listed) if r["device_id"] == device_id)
    assert row["auth"] == "cert" and row["last_seen"].startswith("20")


@dataclass
class KillRun:
    rate_per_s: float  # reached: acknowledged messages per second until the kill
    acked: int
    stored: int
    lost: int


def _kill_9_run(home: Home, rate_per_s: float | None) -> KillRun:
    """Publish QoS 1 at ``rate_per_s`` (None: as fast as acknowledgements come back, at most
    ``WINDOW`` unacknowledged), kill -9 `up`'s process group after 4 s, restart it (the WAL
    is replayed), and compare the readings in the lake with what the device was told was taken.
    """
    window = 500
    fleet = Fleet(FleetConfig(devices=1, seed=6))
    process = home.up()
    sent: list[tuple[float, mqtt.MQTTMessageInfo]] = []
    acked_count = 0
    acked_lock = threading.Lock()

    def on_publish(*_args: object) -> None:
        nonlocal acked_count
        with acked_lock:
            acked_count += 1

    try:
        conn, _device_id = _provision(home, fleet, max_inflight=window)
        assert conn.connected, conn.reason
        conn.client.on_publish = on_publish
        messages = [
            (topic, payload, json.loads(payload)["params"]["ts"])
            for topic, payload in _rounds(fleet, 0, 40_000 if rate_per_s is None else 2_000)
            if payload.startswith(b"{")
        ]
        started = time.monotonic()
        killed_at = started + 4.0
        killer = threading.Timer(4.0, lambda: os.killpg(process.pid, signal.SIGKILL))
        killer.start()
        for n, (topic, payload, ts) in enumerate(messages):
            if time.monotonic() > started + 5.0 or process.poll() is not None:
                break
            if rate_per_s is None:
                while n - acked_count >= window and time.monotonic() < started + 5.0:
                    time.sleep(0.0005)
            sent.append((ts, conn.client.publish(topic, payload, qos=1)))
            if rate_per_s is not None:
                delay = started + (n + 1) / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        killer.join()
        process.wait(10)
        conn.client.loop_stop()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    acked = {ts for ts, info in sent if info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published()}
    again = home.up()  # replays the write-ahead log
    again.send_signal(signal.SIGTERM)
    assert again.wait(120) == 0, (home.tmp / "up.log").read_text()
    rows = home.query("SELECT DISTINCT epoch(ts) AS ts FROM readings")
    stored = {float(row["ts"]) for row in rows}  # type: ignore[arg-type]
    return KillRun(len(acked) / (killed_at - started), len(acked), len(stored), len(acked - stored))


def _report(run: KillRun, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\nkill -9 at {target}: reached {run.rate_per_s:.0f} msg/s, acknowledged "
            f"{run.acked}, stored {run.stored}, lost {run.lost}"
        )


def test_kill_9_of_the_whole_tree_loses_nothing_acknowledged(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """A steady 200 messages/s, kill -9 of `up` and its children, restart: every message the
    device was told was taken is in the lake."""
    run = _kill_9_run(home, 200.0)
    _report(run, "200 msg/s", capsys)
    assert run.acked > 200  # the machine is shared: the rate is a target, not a promise
    assert run.lost == 0


def test_kill_9_at_the_highest_rate_loses_nothing_acknowledged(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    """As fast as the broker acknowledges (500 messages in flight), then kill -9."""
    run = _kill_9_run(home, None)
    _report(run, "the highest rate", capsys)
    assert run.acked > 200
    assert run.lost == 0

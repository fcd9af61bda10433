"""The whole path: meter payloads over a real broker, through ingest, into the lake, out by SQL."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Mosquitto
from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.lake.storage import Lake
from wattlake.lake.tables import local_path, scan_files
from wattlake.schema import DEAD_LETTERS_TABLE, READINGS_TABLE
from wattlake.stream.ingest import IngestWorker
from wattlake.stream.wal import read_segment


def wattlake(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "wattlake", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def query_json(data_dir: Path, sql: str) -> list[dict[str, object]]:
    out = wattlake("query", sql, "--format", "json", "--data-dir", str(data_dir)).stdout
    return [json.loads(line) for line in out.splitlines()]


def publish_all(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 1 and wait until the broker has acknowledged every message."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="e2e-publisher")
    client.connect(host, int(port))
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(timeout=10)
    client.disconnect()
    client.loop_stop()


PROBE = (
    "probe-device/events/rpc",
    b'{"src":"probe-device","method":"NotifyStatus","params":{"em1:0":{"act_power":1}}}',
)


class RunningIngest:
    """An ingest worker in a thread that has provably subscribed (a probe went through)."""

    def __init__(self, url: str, data_dir: Path) -> None:
        settings = Settings.load(overrides={"data_dir": str(data_dir)}, environ={})
        # amqtt speaks MQTT 3.1.1 only; Mosquitto gets MQTT 5 like production workers.
        embedded = EmbeddedBroker.serves(url)
        self.worker = IngestWorker(settings, url, mqtt5=not embedded, drain=True)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.worker.run, args=(self.stop,))
        self.thread.start()
        assert self.worker.ready.wait(15)
        deadline = time.monotonic() + 15
        while self.worker.figures().readings == 0:
            assert time.monotonic() < deadline, "the ingest never received the probe"
            publish_all(url, [PROBE])
            time.sleep(0.2)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def fixture_messages(fixtures_dir: Path) -> list[tuple[str, bytes]]:
    messages = []
    for path in sorted((fixtures_dir / "shelly").glob("gen2-*.json")):
        doc = json.loads(path.read_text())
        messages.append((f"{doc['src']}/events/rpc", json.dumps(doc).encode()))
    return messages


BAD_JSON = b'{"src": "shellyproem50-bad", "method": "NotifyStatus", "params": {'
BAD_TYPE = (
    b'{"src":"shellyproem50-bad","method":"NotifyStatus","params":{"em1:0":{"act_power":"x"}}}'
)


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A real broker: Mosquitto started by the suite, or wattlake's embedded amqtt broker."""
    if request.param == "mosquitto":
        mosquitto: Mosquitto = request.getfixturevalue("mosquitto")
        yield mosquitto.url
    else:
        with EmbeddedBroker(port=0) as broker:
            yield broker.url


def test_fixtures_flow_into_readings_and_bad_payloads_into_dead_letters(
    broker_url: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    data_dir = tmp_path / "lake"
    ingest = RunningIngest(broker_url, data_dir)
    messages = fixture_messages(fixtures_dir)
    publish_all(broker_url, [messages[0], ("shellyproem50-bad/events/rpc", BAD_JSON)])
    # The ingest keeps going after bad input: what follows it still arrives.
    publish_all(broker_url, [*messages[1:], ("shellyproem50-bad/events/rpc", BAD_TYPE)])
    deadline = time.monotonic() + 15
    while ingest.worker.figures().dead_letters < 2 or ingest.worker.figures().readings < 11:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ingest.finish()

    rows = query_json(
        data_dir,
        "SELECT device_id, channel, epoch_ms(ts) AS ts_ms, power_w, energy_wh, "
        "returned_energy_wh, voltage_v, source FROM readings "
        "WHERE device_id <> 'probe-device' ORDER BY device_id, ts_ms, channel",
    )
    # 3 phases of the Pro 3EM power + 3 phases of its counters; 2 channels x 2 of the Pro EM.
    assert len(rows) == 10
    proem_power = [r for r in rows if r["ts_ms"] == 1757060280210 and r["power_w"] is not None]
    assert [(r["channel"], r["power_w"], r["voltage_v"]) for r in proem_power] == [
        (0, 1150.3, 231.4),
        (1, -5080.3, 224.6),
    ]
    phase_c = [
        r for r in rows if r["device_id"] == "shellypro3em-1234567890ab" and r["channel"] == 2
    ]
    assert [
        (r["ts_ms"], r["power_w"], r["energy_wh"], r["returned_energy_wh"]) for r in phase_c
    ] == [
        (1757059829080, -18.0, None, None),
        (1757060280210, None, 26289.44, 131881.85),
    ]
    assert {r["source"] for r in rows} == {"shelly-gen2"}

    letters = query_json(
        data_dir, "SELECT error_code, topic, raw_base64 FROM dead_letters ORDER BY error_code"
    )
    assert [(d["error_code"], d["topic"]) for d in letters] == [
        ("bad-type", "shellyproem50-bad/events/rpc"),
        ("invalid-json", "shellyproem50-bad/events/rpc"),
    ]
    assert base64.b64decode(str(letters[0]["raw_base64"])) == BAD_TYPE
    assert base64.b64decode(str(letters[1]["raw_base64"])) == BAD_JSON
    # kept in table dead_letters (its data files are Parquet in the lake folder)
    assert scan_files(Lake.open(str(data_dir)), DEAD_LETTERS_TABLE)


def test_demo_runs_for_its_duration_and_leaves_a_queryable_lake(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-lake"
    started = time.monotonic()
    result = wattlake(
        "demo", "--devices", "2", "--duration", "3", "--interval", "0.2",
        "--broker-port", "0", "--data-dir", str(data_dir),
    )  # fmt: skip
    assert time.monotonic() - started < 60
    assert "stopped:" in result.stderr
    rows = query_json(
        data_dir,
        "SELECT device_id, channel, count(*) AS n, min(power_w) AS p FROM readings GROUP BY ALL "
        "ORDER BY ALL",
    )
    assert [(r["device_id"], r["channel"]) for r in rows] == [
        ("shellyproem50-sim0000", 0),
        ("shellyproem50-sim0000", 1),
        ("shellyproem50-sim0001", 0),
        ("shellyproem50-sim0001", 1),
    ]
    assert all(int(str(r["n"])) >= 5 for r in rows)
    # home-0 draws power on both channels (home-1 has PV: its solar channel is 0 at night).
    assert all(float(str(r["p"])) > 0 for r in rows if r["device_id"].endswith("0000"))
    sites = (data_dir / "wattlake.toml").read_text()
    assert '[sites."home-0"]' in sites and '[sites."home-1"]' in sites
    plan = scan_files(Lake.open(str(data_dir)), READINGS_TABLE)
    assert plan, "demo committed no data file to table readings"
    assert all(Path(local_path(t.file.file_path)).is_file() for t in plan)  # in the lake folder
    assert all(local_path(t.file.file_path).startswith(str(data_dir)) for t in plan)
    assert not list(data_dir.rglob("*.tmp")), "a temporary file was left in the lake"


def demo_command(data_dir: Path, *extra: str, devices: int = 2) -> list[str]:
    """Return the command line of a demo on a free port, publishing every 0.1 s."""
    return [
        sys.executable,
        "-m",
        "wattlake",
        "demo",
        "--devices",
        str(devices),
        "--interval",
        "0.1",
        "--broker-port",
        "0",
        "--data-dir",
        str(data_dir),
        *extra,
    ]


def test_ctrl_c_stops_the_demo_with_every_buffer_flushed(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    process = subprocess.Popen(demo_command(data_dir, devices=1), stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # the demo says where to look once everything runs
        if "Stop with Ctrl-C" in line:
            break
    time.sleep(1.5)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    published = int(re.search(r"messages published \((\d+) data", rest).group(1))  # type: ignore[union-attr]
    rows = query_json(data_dir, "SELECT count(*) AS n FROM readings")
    # Every published message (two channels each) is in the lake: the buffer was flushed.
    assert rows == [{"n": 2 * published}]


def wal_messages(data_dir: Path, *, closed_only: bool = False) -> list[RawMessage]:
    """Return the messages in the demo's WAL (what its ingest acknowledged); ``closed_only``
    leaves out the newest segment (while the ingest runs, it may be half written)."""
    segments = sorted((data_dir / "wal" / "ingest").glob("*.wal"))
    if closed_only:
        segments = segments[:-1]
    return [m for path in segments for chunk in read_segment(path) for m in chunk]


def test_a_demo_killed_with_sigkill_delivers_what_it_acknowledged_on_the_next_start(
    tmp_path: Path,
) -> None:
    """The embedded-broker path has the WAL too: kill -9, start again, nothing acknowledged lost."""
    data_dir = tmp_path / "lake"
    no_early_flush = {**os.environ, "WATTLAKE_STREAM__FIRST_FLUSH_S": "0"}
    process = subprocess.Popen(
        demo_command(data_dir), stderr=subprocess.PIPE, text=True, env=no_early_flush
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "Stop with Ctrl-C" in line:
            break
    # Killed once the WAL holds a few dozen messages (not after a fixed sleep: on a loaded
    # machine the simulator's login and first rounds took longer than the 2 s once allowed).
    deadline = time.monotonic() + 60
    while len(wal_messages(data_dir, closed_only=True)) < 40 and time.monotonic() < deadline:
        time.sleep(0.1)
    process.kill()
    process.wait()
    # No flush happened yet (every 60 s): what was acknowledged is in the WAL only.
    acknowledged = wal_messages(data_dir)
    assert len(acknowledged) >= 40
    router = DecoderRouter()
    expected = {
        (r["device_id"], r["channel"], r["ts"]) for m in acknowledged for r in router.decode(m)
    }

    again = wattlake(*demo_command(data_dir, "--duration", "1")[3:])
    assert "replaying" in again.stderr
    rows = query_json(
        data_dir,
        "SELECT device_id, channel, epoch_ms(ts) AS ts, count(*) OVER () AS n FROM readings",
    )
    keys = {(r["device_id"], r["channel"], r["ts"]) for r in rows}
    assert expected <= keys, f"{len(expected - keys)} acknowledged readings lost"

"""``wattlake simulate`` as a user runs it: against a real Mosquitto, and with bad options."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.conftest import Mosquitto
from wattlake.cli import main


def wattlake(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattlake", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


class Collector:
    """A paho subscriber on ``#`` that counts what arrives."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-collector")
        self.client.on_connect = lambda c, *_: c.subscribe("#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append((m.topic, m.payload))
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def wait_for(self, n: int, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # and nothing more arrives

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize(
    ("fmt", "extra", "topic_shapes"),
    [
        (
            "shelly-gen1",
            ["--duplicate-rate", "0.05", "--reboot-rate", "0.02"],
            {"shellies/+/emeter/+/+", "shellies/+/online", "shellies/+/announce"},
        ),
        ("shelly-gen2", ["--late-rate", "0.1", "--late-s", "1"], {"+/events/rpc", "+/online"}),
        ("generic", ["--batch", "10", "--malformed-rate", "0.1"], {"wattlake/+/readings"}),
    ],
)
def test_simulate_publishes_what_it_reports(
    mosquitto: Mosquitto, fmt: str, extra: list[str], topic_shapes: set[str]
) -> None:
    collector = Collector(mosquitto.url)
    try:
        result = wattlake(
            "simulate", "--broker", mosquitto.url, "--devices", "3", "--rate", "100",
            "--count", "30", "--format", fmt, "--seed", "1", "--report", "json", *extra,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        collector.wait_for(stats["messages"])
    finally:
        collector.close()
    assert len(collector.messages) == stats["messages"]  # QoS 1: every one arrives
    assert stats["rounds"] == 30
    assert "published" in result.stderr and "injected" in result.stderr

    def shape(topic: str) -> str:
        parts = topic.split("/")
        keep = {"shellies", "emeter", "online", "announce", "events", "rpc", "wattlake", "readings"}
        return "/".join(p if p in keep else "+" for p in parts)

    shapes = Counter(shape(t) for t, _ in collector.messages)
    assert set(shapes) == topic_shapes
    devices = {
        t.split("/")[1 if t.startswith(("shellies/", "wattlake/")) else 0]
        for t, _ in collector.messages
    }
    assert len(devices) == 3
    if fmt == "shelly-gen1":
        assert shapes["shellies/+/emeter/+/+"] == 3 * 30 * 16 + stats["duplicates"]
    if fmt == "generic":
        assert sum(1 for _, p in collector.messages if p.startswith(b"[")) >= 3 * 30 * 0.8


def test_backfill_publishes_history_with_device_time_first(mosquitto: Mosquitto) -> None:
    collector = Collector(mosquitto.url)
    try:
        result = wattlake(
            "simulate", "--broker", mosquitto.url, "--devices", "2", "--rate", "50",
            "--count", "5", "--backfill-days", "1", "--backfill-interval", "300",
            "--start", "2026-03-01T12:00:00Z", "--report", "json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        stats = json.loads(result.stdout)
        collector.wait_for(stats["messages"])
    finally:
        collector.close()
    assert stats["rounds"] == 288 + 5  # a day in 5-minute rounds, then 5 live rounds
    times = [
        json.loads(p)["params"]["ts"] for t, p in collector.messages if t.endswith("/events/rpc")
    ]
    start = 1772366400.0  # 2026-03-01T12:00:00Z
    assert min(times) == start - 86400
    assert max(times) == pytest.approx(start + 4 * 0.02)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--format", "shelly-gen1", "--backfill-days", "1"], "device time"),
        (["--format", "shelly-gen2", "--batch", "10"], "several readings"),
        (["--format", "shelly-gen9"], "--format"),
        (["--reboot-rate", "1.5"], "--reboot-rate"),
        (["--late-rate", "0.6", "--duplicate-rate", "0.6"], "together"),
        (["--rate", "0"], "--rate"),
        (["--devices", "0"], "--devices"),
        (["--start", "yesterday"], "--start"),
        (["--report", "xml"], "--report"),
    ],
)
def test_bad_options_exit_2_with_one_sentence(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process for speed: every one of these fails before any signal handler or connection.
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--broker", "mqtt://127.0.0.1:9", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    assert words in err


def test_a_bad_broker_url_exits_2_and_an_absent_broker_exits_1() -> None:
    bad = wattlake("simulate", "--broker", "http://example.org")
    assert bad.returncode == 2 and "mqtt://HOST:PORT" in bad.stderr
    absent = wattlake("simulate", "--broker", "mqtt://127.0.0.1:9", "--count", "1")
    assert absent.returncode == 1 and "Cannot reach the MQTT broker" in absent.stderr
    assert "Traceback" not in absent.stderr


def test_demo_backfills_history_days_before_going_live(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    started_s = time.time()
    result = wattlake(
        "demo", "--devices", "1", "--duration", "2", "--interval", "0.2",
        "--history-days", "0.25", "--broker-port", "0", "--data-dir", str(data_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "0.25 day(s) of history" in " ".join(result.stderr.split())  # rich wraps lines
    summary = " ".join(result.stderr.split())
    published = int(re.search(r"\((\d+) data", summary).group(1))  # type: ignore[union-attr]
    out = wattlake(
        "query", "SELECT count(*) AS n, epoch(min(ts)) AS first_s FROM readings",
        "--format", "json", "--data-dir", str(data_dir),
    )  # fmt: skip
    row = json.loads(out.stdout)
    assert row["n"] == 2 * published  # every data notification: both channels
    assert published >= 360 + 5  # 6 h of one round a minute, then live rounds
    assert started_s - 0.25 * 86400 - 60 <= row["first_s"] <= started_s - 0.25 * 86400 + 60


def test_the_lake_holds_what_the_simulator_says_it_sent(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from wattlake.config import Settings
    from wattlake.devices.sim.simulator import Faults, FleetConfig, SimFormat, Simulator
    from wattlake.gateway.mqtt import BrokerAddress
    from wattlake.query.engine import connect
    from wattlake.stream.ingest import IngestWorker

    settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
    worker = IngestWorker(settings, mosquitto.url, drain=True)
    stop = threading.Event()
    ingest = threading.Thread(target=worker.run, args=(stop,))
    ingest.start()
    try:
        assert worker.ready.wait(15)
        faults = Faults(
            duplicate_rate=0.1,
            late_rate=0.05,
            late_s=0.05,
            malformed_rate=0.1,
            offline_rate=0.02,
            offline_s=0.05,
            clock_skew_rate=0.4,
        )
        config = FleetConfig(fmt=SimFormat.generic, devices=5, seed=8, faults=faults, pv_kwp=3)
        simulator = Simulator(
            BrokerAddress.parse(mosquitto.url), config=config, interval_s=0.005, count=60
        )
        simulator.run()
        stats = simulator.stats
        deadline = time.monotonic() + 20
        while worker.figures().messages < stats.messages:
            assert time.monotonic() < deadline, "the ingest did not receive every message"
            time.sleep(0.05)
    finally:
        stop.set()
        ingest.join(30)
    assert stats.malformed and stats.duplicates and stats.late and stats.offline_gaps
    con = connect(worker.lake)
    raw = con.execute("SELECT count(*) FROM raw_readings").fetchone()
    unique = con.execute("SELECT count(*) FROM readings").fetchone()
    letters = con.execute("SELECT count(*) FROM dead_letters").fetchone()
    assert letters == (stats.malformed,)
    assert raw == (stats.data_messages - stats.malformed,)  # one reading per message
    assert unique == (stats.data_messages - stats.malformed - stats.duplicates,)


def test_speed_stretches_device_time_and_duration_stops_at_qos_0(mosquitto: Mosquitto) -> None:
    from wattlake.devices.sim.simulator import FleetConfig, SimFormat, Simulator
    from wattlake.gateway.mqtt import BrokerAddress

    collector = Collector(mosquitto.url)
    try:
        simulator = Simulator(
            BrokerAddress.parse(mosquitto.url),
            config=FleetConfig(fmt=SimFormat.generic, devices=2, seed=1),
            interval_s=0.02,
            speed=60.0,
            duration_s=1.0,
            qos=0,
            start_s=1_780_000_000.0,
        )
        started = time.monotonic()
        simulator.run()
        assert 0.9 < time.monotonic() - started < 3.0
        collector.wait_for(simulator.published)
    finally:
        collector.close()
    rounds = simulator.stats.rounds
    assert 25 <= rounds <= 51  # 50 rounds a second, for one second
    times = sorted({json.loads(p)["ts"] for _, p in collector.messages})
    assert times[0] == 1_780_000_000.0
    assert times[1] - times[0] == pytest.approx(0.02 * 60 * 2)  # 2 channels: a sample per 2 rounds
    assert len(collector.messages) >= 0.9 * simulator.published  # QoS 0 may lose a few


def test_the_payload_choices_are_every_format_the_simulator_speaks() -> None:
    from wattlake.cli.simulate import Payload
    from wattlake.devices.sim.simulator import FORMAT_NAMES

    assert [p.value for p in Payload] == list(FORMAT_NAMES)

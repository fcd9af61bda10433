"""Nothing lost at any stop of the demo: Ctrl-C mid-backfill, mid-live, twice; counted exactly.

The demo runs as a user runs it, in its own process, with one addition: a small wrapper records
every message its simulator published that the (real, embedded) broker acknowledged. Decoding
those gives exactly the readings that must be in ``readings`` after the stop.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter

RECORDING_DEMO = """
import atexit, base64, json, sys
import wattlake.devices.sim.simulator as simulator

record_path = sys.argv.pop(1)
sent = []
original_run = simulator.Simulator.run


def run(self):
    publish = self._client.publish

    def recording_publish(topic, payload, qos=0, *args, **kwargs):
        info = publish(topic, payload, qos, *args, **kwargs)
        sent.append((topic, payload, info))
        return info

    self._client.publish = recording_publish
    return original_run(self)


def write_record():
    with open(record_path, "w") as out:
        for topic, payload, info in sent:
            if info.is_published():  # the broker acknowledged it (QoS 1)
                out.write(json.dumps([topic, base64.b64encode(payload).decode()]) + "\\n")


simulator.Simulator.run = run
atexit.register(write_record)
from wattlake.cli import main

main(sys.argv[1:])
"""


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_demo_left_running() -> Iterator[None]:
    """Whatever happens in a test, no demo it started outlives it."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def start_demo(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Path, Path]:
    script = tmp_path / "recording_demo.py"
    script.write_text(RECORDING_DEMO)
    record = tmp_path / "published.jsonl"
    data_dir = tmp_path / "lake"
    command = [sys.executable, str(script), str(record), "demo", "--no-web", "--broker-port", "0"]
    command += ["--data-dir", str(data_dir), *args]
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env={**environment, **(env or {})}
    )
    STARTED.append(process)
    assert process.stderr is not None
    for line in process.stderr:  # the demo says how to stop it once everything runs
        if "Stop with Ctrl-C" in line:
            return process, record, data_dir
    process.wait(10)
    raise AssertionError(f"the demo did not start (exit code {process.returncode})")


def published_keys(record: Path) -> set[tuple[str, int, int]]:
    """Return (device_id, channel, ts [ms]) of every reading in the acknowledged messages."""
    import base64

    router = DecoderRouter()
    keys: set[tuple[str, int, int]] = set()
    for line in record.read_text().splitlines():
        topic, payload = json.loads(line)
        message = RawMessage(topic, base64.b64decode(payload), time.time_ns() // 1_000_000)
        decoded, _ = router.decode_many([message])
        for item in decoded:
            rows = item.to_pylist() if not isinstance(item, list) else item
            keys |= {(r["device_id"], r["channel"], _ms(r["ts"])) for r in rows}
    keys |= {(r["device_id"], r["channel"], _ms(r["ts"])) for r in router.drain()}
    return keys


def _ms(ts: object) -> int:
    return ts if isinstance(ts, int) else int(ts.timestamp() * 1000)  # type: ignore[attr-defined]


def lake_keys(data_dir: Path) -> tuple[int, set[tuple[str, int, int]]]:
    """Return (rows in the readings view, their distinct keys)."""
    done = subprocess.run(
        [sys.executable, "-m", "wattlake", "query", "--format", "json", "--data-dir", str(data_dir),
         "SELECT device_id, channel, epoch_ms(ts) AS ts FROM readings"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return len(rows), {(r["device_id"], r["channel"], r["ts"]) for r in rows}


def test_ctrl_c_mid_backfill_delivers_every_published_reading(tmp_path: Path) -> None:
    process, record, data_dir = start_demo(
        tmp_path, "--devices", "3", "--history-days", "30", "--interval", "0.5"
    )
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 0, rest
    assert "Traceback" not in rest
    expected = published_keys(record)
    # Mid-backfill indeed: 30 days of 3 devices every minute would be 129,600 messages.
    assert 1000 < len(record.read_text().splitlines()) < 129_600
    rows, keys = lake_keys(data_dir)
    assert keys == expected, f"{len(expected - keys)} published readings are not in the lake"
    assert rows == len(expected)


def test_an_ingest_slower_than_the_broker_loses_nothing(tmp_path: Path) -> None:
    """The ingest stops acknowledging for seconds at a time (its WAL is full until the next
    flush, every 7 s): the broker keeps and resends what it sent (amqtt alone forgets a
    message that is not acknowledged within 5 s)."""
    slow = {
        "WATTLAKE_STREAM__WAL_MAX_BYTES": str(4 * 1024 * 1024),
        "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "7",
        "WATTLAKE_STREAM__FIRST_FLUSH_S": "0",
    }
    process, record, data_dir = start_demo(
        tmp_path, "--devices", "3", "--history-days", "30", env=slow
    )
    time.sleep(8)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 0, rest
    expected = published_keys(record)
    rows, keys = lake_keys(data_dir)
    assert keys == expected, f"{len(expected - keys)} published readings are not in the lake"
    assert rows == len(expected)


def test_ctrl_c_mid_live_delivers_every_published_reading(tmp_path: Path) -> None:
    process, record, data_dir = start_demo(tmp_path, "--devices", "5", "--interval", "0.02")
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
    assert process.returncode == 0, rest
    expected = published_keys(record)
    assert len(expected) > 500
    rows, keys = lake_keys(data_dir)
    assert keys == expected, f"{len(expected - keys)} published readings are not in the lake"
    assert rows == len(expected)
    assert re.search(r"stopped: \d+ messages published", rest)


@pytest.mark.parametrize("gap_s", [0.05, 1.5])
def test_a_second_ctrl_c_quits_at_once_and_says_where_the_rest_is(
    tmp_path: Path, gap_s: float
) -> None:
    process, _, data_dir = start_demo(tmp_path, "--devices", "3", "--history-days", "30")
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    time.sleep(gap_s)  # while the simulator stops, or while the ingest drains
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, rest = process.communicate(timeout=60)
    assert time.monotonic() - started < 15
    assert process.returncode == 1, rest
    assert "Traceback" not in rest
    message = [line for line in rest.splitlines() if "write-ahead log at" in line]
    assert message, rest
    assert str(data_dir / "wal" / "ingest") in message[0]

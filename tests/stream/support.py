"""Shared by the stream tests: an ingest process, a QoS 1 publisher, lake counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import paho.mqtt.client as mqtt
import pytest

from wattlake.config import Settings
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.stream.ingest import IngestWorker

BASE_TS_S = 1_767_225_600  # 2026-01-01T00:00:00Z
DEVICES = 10


def reading_message(index: int) -> tuple[str, bytes]:
    """Return message ``index``: one reading, unique (device, ts), power = index."""
    device = f"shellyproem50-dur{index % DEVICES:02d}"
    doc = {
        "src": device,
        "method": "NotifyStatus",
        "params": {"ts": BASE_TS_S + index // DEVICES, "em1:0": {"act_power": float(index)}},
    }
    return f"{device}/events/rpc", json.dumps(doc).encode()


def expected_keys(count: int) -> set[tuple[str, int]]:
    """Return the (device_id, ts in ms) of messages 0..count-1."""
    return {
        (f"shellyproem50-dur{i % DEVICES:02d}", (BASE_TS_S + i // DEVICES) * 1000)
        for i in range(count)
    }


def lake_keys(data_dir: Path) -> tuple[int, int, set[tuple[str, int]]]:
    """Return (rows in raw files, rows in the readings view, keys in the view)."""
    con = connect(Lake.open(str(data_dir)))
    [(raw,)] = con.sql("SELECT count(*) FROM raw_readings").fetchall()
    rows = con.sql("SELECT device_id, epoch_ms(ts) FROM readings").fetchall()
    con.close()
    return int(raw), len(rows), {(d, int(t)) for d, t in rows}


class Publisher:
    """Publish messages at QoS 1 from a thread, counting what the broker acknowledged."""

    def __init__(
        self, url: str, messages: list[tuple[str, bytes]], *, name: str, max_inflight: int = 200
    ) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.messages = messages
        self.infos: list[mqtt.MQTTMessageInfo] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Publisher:
        self.thread.start()
        return self

    def _run(self) -> None:
        for topic, payload in self.messages:
            self.infos.append(self.client.publish(topic, payload, qos=1))

    @property
    def sent(self) -> int:
        return len(self.infos)

    def acknowledged(self) -> int:
        return sum(1 for info in list(self.infos) if info.is_published())

    def wait(self, timeout_s: float = 120) -> None:
        self.thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        for info in self.infos:
            info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        assert self.acknowledged() == len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class IngestProcess:
    """``wattlake ingest`` as a user runs it, in its own process."""

    running: ClassVar[list[IngestProcess]] = []

    def __init__(
        self,
        url: str,
        data_dir: Path,
        log_path: Path,
        *,
        client_id: str = "durability-test",
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        wrap: Callable[[list[str]], list[str]] = lambda command: command,
    ) -> None:
        self.log_path = log_path
        command = [sys.executable, "-m", "wattlake", "ingest", "--broker", url]
        command += ["--client-id", client_id, "--data-dir", str(data_dir), *args]
        environment = {**os.environ, "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "0.5", **(env or {})}
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            wrap(command), stdout=self.log, stderr=subprocess.STDOUT, env=environment
        )
        IngestProcess.running.append(self)

    @classmethod
    def kill_all(cls) -> None:
        """Kill what a failed test left running."""
        while cls.running:
            process = cls.running.pop().process
            if process.poll() is None:
                process.kill()
                process.wait()

    def wait_subscribed(self, timeout_s: float = 30) -> IngestProcess:
        deadline = time.monotonic() + timeout_s
        while b"subscribed to" not in self.log_path.read_bytes():
            assert self.process.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, self.log_path.read_text()
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self, timeout_s: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self.log.close()

    def text(self) -> str:
        return self.log_path.read_text()


def start_worker(
    url: str,
    data_dir: Path,
    *,
    client_id: str = "inproc",
    shared_group: str = "",
    **settings: object,
) -> tuple[IngestWorker, threading.Event, threading.Thread]:
    """Run an ingest worker in a thread (flushing every 0.2 s) until its stop event is set."""
    values = {"data_dir": str(data_dir), "stream.flush_interval_s": 0.2, **settings}
    worker = IngestWorker(
        Settings.load(overrides=values, environ={}),
        url,
        client_id=client_id,
        shared_group=shared_group,
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    assert worker.ready.wait(30)
    return worker, stop, thread


@pytest.fixture(autouse=True)
def no_ingest_left_running() -> Iterator[None]:
    """Whatever happens in a test, no ingest process outlives it."""
    yield
    IngestProcess.kill_all()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)

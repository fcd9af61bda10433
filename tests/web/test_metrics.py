"""``/metrics`` after a real ingest run: messages by device format, readings committed, flush
and commit latency histograms, the WAL's oldest message, scheduled job runs and failures.

A real Mosquitto and a real ingest worker (with its lake writer process); the figures are read
through the API with a ``read`` token, as Prometheus would.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import Mosquitto
from tests.stream.support import (
    Publisher,
    no_ingest_left_running,  # noqa: F401 - an autouse fixture
    reading_message,
    start_worker,
    wait_until,
)
from wattlake.config import Settings
from wattlake.devices.router import DecoderRouter
from wattlake.gateway.tokens import TokenStore
from wattlake.stack import JobLoop
from wattlake.stream.ingest import jobs_metrics_file
from wattlake.web.app import create_app

GOOD = 300
BAD = 4


def value(metrics: str, name: str, **labels: str) -> float:
    """Return the sample ``name{labels}`` of a Prometheus text (labels in any order)."""
    for line in metrics.splitlines():
        if line.startswith("#") or not line.startswith(name + "{"):
            continue
        sample, number = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', sample[len(name) :]))
        if sample.split("{")[0] == name and found == labels:
            return float(number)
    raise AssertionError(f"no sample {name}{labels} in /metrics")


def test_metrics_after_a_real_ingest_run(mosquitto: Mosquitto, tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    worker, stop, thread = start_worker(mosquitto.url, data_dir)
    messages = [reading_message(i) for i in range(GOOD)]
    # Broken JSON on a device's topic: dead letters of that device's format.
    messages += [(messages[0][0], b"{not json") for _ in range(BAD)]
    publisher = Publisher(mosquitto.url, messages, name="metrics-pub").start()
    publisher.wait()
    publisher.close()
    wait_until(lambda: worker.figures().rows_written >= GOOD, 60, "every reading committed")
    wait_until(lambda: worker.figures().dead_letters >= BAD, 60, "the dead letters")
    # Jobs on a schedule, as up and demo run them: one that works and one that fails.
    settings = Settings.load(overrides={"data_dir": str(data_dir)}, environ={})
    jobs = JobLoop(
        settings,
        {"rollup": 0.3, "no-such-job": 0.3},
        metrics_file=jobs_metrics_file(worker.wal.directory),
    ).start()
    wait_until(lambda: jobs.runs["rollup"] >= 1 and jobs.failures["no-such-job"] >= 1, 60, "jobs")
    jobs.stop()
    jobs.write_metrics()
    oldest_age_while_idle = worker.figures().wal_oldest_age_s
    stop.set()
    thread.join(60)
    assert not thread.is_alive()

    read = TokenStore(data_dir / "tokens.json").create("read")[0]
    client = TestClient(create_app(settings))
    assert client.get("/metrics").status_code == 401
    metrics = client.get("/metrics", headers={"Authorization": f"Bearer {read}"}).text

    fmt = DecoderRouter().format_for(messages[0][0])
    s = {"stream": "ingest"}
    assert value(metrics, "wattlake_ingest_messages_received_total", **s, format=fmt) == GOOD + BAD
    assert value(metrics, "wattlake_ingest_messages_accepted_total", **s, format=fmt) == GOOD
    assert value(metrics, "wattlake_ingest_rows_written_total", **s) == GOOD  # committed
    for histogram in ("flush_seconds", "commit_latency_seconds"):
        name = f"wattlake_ingest_{histogram}"
        flushes = value(metrics, f"{name}_count", **s)
        assert flushes >= 1
        assert value(metrics, f"{name}_bucket", **s, le="+Inf") == flushes
        assert value(metrics, f"{name}_sum", **s) > 0
    # Everything was committed and the WAL emptied: no message waits (checked before the stop
    # too, while the worker ran: its open segment may hold nothing or the last seconds).
    assert value(metrics, "wattlake_ingest_wal_oldest_age_seconds", **s) == 0
    assert oldest_age_while_idle < 60
    assert value(metrics, "wattlake_job_runs_total", job="rollup") >= 1
    assert value(metrics, "wattlake_job_failures_total", job="no-such-job") >= 1
    assert value(metrics, "wattlake_job_failures_total", job="rollup") == 0


def test_the_wal_oldest_age_is_the_first_waiting_message(tmp_path: Path) -> None:
    """A WAL holding a message that arrived 90 s ago reports 90 s (no worker running)."""
    from wattlake.devices.base import RawMessage
    from wattlake.stream.ingest import IngestWorker

    settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
    worker = IngestWorker(settings, "mqtt://127.0.0.1:1")
    worker.wal.open()
    try:
        assert worker.wal_oldest_age_s() == 0
        arrived = time.time_ns() // 1_000_000 - 90_000
        worker.wal.append([RawMessage("t", b"x", arrived), RawMessage("t", b"y", arrived + 5)])
        worker.wal.sync()
        assert 90 <= worker.wal_oldest_age_s() < 100
    finally:
        worker.wal.close()

"""Nothing acknowledged is lost, nothing is counted twice: kill -9, an unwritable lake, a full disk.

Every test runs a real Mosquitto and real ingest workers; the publisher is a plain QoS 1 client.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, tiny_disk_command
from tests.stream.support import (
    IngestProcess,
    Publisher,
    expected_keys,
    lake_keys,
    no_ingest_left_running,  # noqa: F401 - an autouse fixture
    reading_message,
    start_worker,
    wait_until,
)
from wattlake.lake.storage import TABLES_DIR


def wal_segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal" / "ingest").glob("*.wal"))


def test_sigkill_mid_stream_then_restart_gives_every_reading_exactly_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    count = 30_000
    data_dir = tmp_path / "lake"
    env = {"WATTLAKE_STREAM__FLUSH_INTERVAL_S": "2"}
    first = IngestProcess(mosquitto.url, data_dir, tmp_path / "ingest-1.log", env=env)
    first.wait_subscribed()
    publisher = Publisher(mosquitto.url, [reading_message(i) for i in range(count)], name="p1")
    publisher.start()
    wait_until(lambda: publisher.acknowledged() >= count // 3, 120, "a third published")
    # Kill while the WAL holds acknowledged messages that no lake file has yet.
    wait_until(lambda: any(p.stat().st_size > 100 for p in wal_segments(data_dir)), 60, "WAL")
    first.kill()
    # While no worker runs, the broker keeps the messages for the persistent session.
    wait_until(lambda: publisher.acknowledged() >= count // 2, 120, "half published")
    second = IngestProcess(mosquitto.url, data_dir, tmp_path / "ingest-2.log", env=env)
    second.wait_subscribed()
    publisher.wait()
    publisher.close()
    wait_until(lambda: lake_keys(data_dir)[1] >= count, 180, "every reading in the lake")
    assert second.stop() == 0, second.text()

    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert view_rows == count
    assert keys == expected_keys(count)
    assert raw_rows >= count  # at-least-once below, exactly once in `readings`
    assert wal_segments(data_dir) == [], "committed segments are deleted"
    assert "Traceback" not in first.text() + second.text()
    replayed = re.search(r"(\d+) replayed from the WAL", second.text())
    assert replayed and int(replayed.group(1)) > 0, second.text()


def test_an_unwritable_lake_keeps_data_in_the_wal_stops_acking_at_its_limit_then_catches_up(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = 3_000
    data_dir = tmp_path / "lake"
    data_dir.mkdir()
    blocker = data_dir / TABLES_DIR
    blocker.write_text("a file where the tables' folder should be: every lake write fails")
    worker, stop, thread = start_worker(
        mosquitto.url, data_dir, **{"stream.wal_max_bytes": 150_000, "stream.retry_max_s": 0.5}
    )
    messages = [reading_message(i) for i in range(count)]
    first = Publisher(mosquitto.url, messages[:300], name="p2a")
    first.start().wait()
    wait_until(lambda: not worker.health.lake_ok, 30, "the first failed flush")
    # From now on messages only go to the WAL (acknowledged, not read by the writer) until
    # its limit.
    publisher = Publisher(mosquitto.url, messages[300:], name="p2b")
    publisher.start().wait()
    wait_until(lambda: not worker.health.acknowledging, 60, "the WAL limit")
    first.close()
    assert not worker.health.lake_ok
    assert "cannot write to the lake" in worker.health.last_error
    assert 300 < worker.health.acked < count, "past the limit the broker keeps the rest"
    assert worker.figures().messages <= 300, "while the lake is down, the writer reads no more"
    time.sleep(1)
    assert worker.health.acked < count
    assert worker.wal.total_bytes >= 150_000
    assert "cannot write to the lake" in caplog.text and "no longer taking messages" in caplog.text
    metrics = (data_dir / "wal" / "ingest" / "metrics.prom").read_text()
    assert 'wattlake_ingest_lake_writable{stream="ingest"} 0.0' in metrics
    assert 'wattlake_ingest_acknowledging{stream="ingest"} 0.0' in metrics

    blocker.unlink()
    wait_until(lambda: lake_keys(data_dir)[1] >= count, 120, "the lake to catch up")
    wait_until(lambda: worker.health.lake_ok and worker.health.acknowledging, 30, "health")
    stop.set()
    thread.join(30)
    publisher.close()
    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert (view_rows, keys) == (count, expected_keys(count))
    assert raw_rows == count, "a lake that was only down writes nothing twice"
    assert "takes writes again" in caplog.text
    figures = worker.figures()
    assert figures.messages == figures.acknowledged == count, "each message read once"
    assert figures.rows_written == count
    metrics = (data_dir / "wal" / "ingest" / "metrics.prom").read_text()
    assert 'wattlake_ingest_lake_writable{stream="ingest"} 1.0' in metrics
    assert f'wattlake_ingest_readings_total{{stream="ingest"}} {float(count)}' in metrics
    assert wal_segments(data_dir) == []


def test_a_full_disk_is_reported_and_the_next_start_delivers_everything(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    count = 3_000
    data_dir = tmp_path / "lake"
    tables_dir = data_dir / TABLES_DIR
    tables_dir.mkdir(parents=True)
    # The tables' folder (data and metadata files) and the catalog are on a full file system:
    # no Parquet file, metadata file or catalog row fits. The WAL (in the lake folder, outside
    # the tables' folder) is on a disk with room.
    env = {
        "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "60",
        "WATTLAKE_STREAM__BUFFER_MAX_ROWS": "1000",
        "WATTLAKE_CATALOG__URI": f"sqlite:///{tables_dir / 'catalog.db'}",
    }
    full = IngestProcess(
        mosquitto.url,
        data_dir,
        tmp_path / "ingest-full.log",
        env=env,
        wrap=lambda command: tiny_disk_command(tables_dir, "64k", command, full=True),
    )
    full.wait_subscribed()
    publisher = Publisher(mosquitto.url, [reading_message(i) for i in range(count)], name="p3")
    publisher.start().wait()
    # A flush (1,000 readings) fails; the catalog's database is the first thing it cannot
    # write (SQLite: "database or disk is full"; a data or metadata file: "No space left on
    # device").
    wait_until(lambda: "cannot write to the lake" in full.text(), 60, "the failed flush")
    assert full.stop() == 1
    text = " ".join(full.text().split())  # the console wraps long lines
    assert re.search(r"disk is full|No space left on device", text), text
    assert "stay in the WAL" in text and "the next start of the ingest delivers them" in text
    assert "Traceback" not in text
    assert wal_segments(data_dir), "the acknowledged messages wait in the WAL"

    after = IngestProcess(mosquitto.url, data_dir, tmp_path / "ingest-after.log")
    after.wait_subscribed()
    wait_until(lambda: lake_keys(data_dir)[1] >= count, 120, "the replay")
    assert after.stop() == 0
    publisher.close()
    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert (view_rows, keys) == (count, expected_keys(count))
    assert raw_rows == count, "nothing reached the full disk, so the replay writes each once"

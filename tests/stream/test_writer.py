"""The lake writer: closed WAL segments in order, torn tails, a lake that stays down at exit,
and a writer (or its ingest worker) killed with SIGKILL."""

from __future__ import annotations

import json
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Mosquitto
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
from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.stream.wal import WriteAheadLog, segment_number
from wattlake.stream.writer import LakeWriter, WriterReport

RECEIVED_MS = 1_767_225_600_000


def write_segments(wal_dir: Path, sizes: list[int]) -> list[Path]:
    """Write one closed segment per entry of ``sizes`` (messages each); return them."""
    wal = WriteAheadLog(wal_dir)
    wal.open()
    segments, index = [], 0
    for size in sizes:
        messages = []
        for _ in range(size):
            topic, payload = reading_message(index)
            messages.append(RawMessage(topic, payload, RECEIVED_MS))
            index += 1
        wal.append(messages)
        wal.sync()
        closed = wal.rotate()
        assert closed is not None
        segments.append(closed)
    wal.close()
    return segments


def run_writer(
    data_dir: Path, wal_dir: Path, closed_through: int, **more: Any
) -> list[WriterReport]:
    """Run a writer in this process until it has written what is closed; return its reports."""
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    commands.put({"stop": True})
    reports: list[WriterReport] = []
    values = {"data_dir": str(data_dir), **more}
    LakeWriter(
        Settings.load(overrides=values, environ={}),
        wal_dir,
        closed_through,
        commands,
        reports.append,
    ).run()
    return reports


def test_the_writer_delivers_closed_segments_once_and_deletes_them(tmp_path: Path) -> None:
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    segments = write_segments(wal_dir, [300, 200, 500])
    # A torn last record, as a crash mid-append leaves it: never synced, never acknowledged.
    with segments[-1].open("ab") as tail:
        tail.write(b"\x01\x02\x03")
    wal_bytes = sum(segment.stat().st_size for segment in segments)
    reports = run_writer(data_dir, wal_dir, segment_number(segments[-1]))

    last = reports[-1]
    assert last.finished and last.lake_ok
    assert (last.messages, last.readings, last.replayed, last.rows_written) == (1000,) * 4
    assert last.deleted_bytes == wal_bytes
    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert (raw_rows, view_rows, keys) == (1000, 1000, expected_keys(1000))
    assert list(wal_dir.glob("*.wal")) == []
    assert (wal_dir / f"{segments[-1].name}.corrupt").exists(), "the torn segment is kept"


def test_the_writer_reads_only_closed_segments(tmp_path: Path) -> None:
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    segments = write_segments(wal_dir, [100, 100, 100])
    reports = run_writer(data_dir, wal_dir, segment_number(segments[1]))
    assert reports[-1].messages == 200
    assert list(wal_dir.glob("*.wal")) == [segments[2]], "the open one stays for the worker"


def test_a_lake_still_down_at_exit_leaves_everything_in_the_wal(tmp_path: Path) -> None:
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    data_dir.mkdir()
    (data_dir / "tables").write_text("a file where the tables/ folder should be")
    segments = write_segments(wal_dir, [100, 100])
    reports = run_writer(data_dir, wal_dir, segment_number(segments[-1]))

    last = reports[-1]
    assert last.finished and not last.lake_ok
    assert "cannot write to the lake" in last.last_error
    assert last.rows_written == 0
    assert sorted(wal_dir.glob("*.wal")) == segments


def test_a_killed_writer_is_replaced_and_nothing_is_lost(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = 6_000
    data_dir = tmp_path / "lake"
    worker, stop, thread = start_worker(mosquitto.url, data_dir)
    publisher = Publisher(mosquitto.url, [reading_message(i) for i in range(count)], name="pk")
    publisher.start()
    wait_until(lambda: worker.figures().readings > 0, 30, "the writer at work")
    first_pid = worker.writer.pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    publisher.wait()
    wait_until(lambda: lake_keys(data_dir)[1] >= count, 60, "every reading")
    stop.set()
    thread.join(30)
    publisher.close()

    assert worker.writer.pid != first_pid
    assert "the lake writer stopped unexpectedly" in caplog.text
    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert (view_rows, keys) == (count, expected_keys(count))
    assert raw_rows >= count
    assert list((data_dir / "wal" / "ingest").glob("*.wal")) == []


def children(pid: int) -> list[int]:
    """Return the ids of the processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_the_writer_dies_with_a_killed_ingest_process(mosquitto: Mosquitto, tmp_path: Path) -> None:
    ingest = IngestProcess(mosquitto.url, tmp_path / "lake", tmp_path / "ingest.log")
    ingest.wait_subscribed()
    [writer] = children(ingest.process.pid)
    ingest.kill()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{writer}").exists() and "Z" not in _state(writer):
        assert time.monotonic() < deadline, "the writer outlived its ingest process"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_a_restarted_writer_decodes_gen2_changes_onto_the_state_before_the_restart(
    tmp_path: Path,
) -> None:
    """A Gen2 NotifyStatus carries only what changed; a writer that starts again (after a stop
    or a kill -9) replays such a message onto the component state the last commit left, not
    onto nothing: a notification that changed no value still gives its readings."""
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    topic, src = "shellyproem50-sim0000/events/rpc", "shellyproem50-sim0000"

    def notify(method: str, ts: int, em1: dict[str, Any]) -> RawMessage:
        doc = {"src": src, "method": method, "params": {"ts": ts, "em1:0": {"id": 0, **em1}}}
        return RawMessage(topic, json.dumps(doc).encode(), RECEIVED_MS + 10_000)

    t0 = RECEIVED_MS // 1000
    wal = WriteAheadLog(wal_dir)
    wal.open()
    wal.append(
        [
            notify("NotifyFullStatus", t0, {"act_power": 74.6, "voltage": 230.1}),
            notify("NotifyStatus", t0 + 1, {"voltage": 229.4}),
        ]
    )
    first = wal.rotate()
    wal.append([notify("NotifyStatus", t0 + 2, {}), notify("NotifyStatus", t0 + 3, {"pf": 0.8})])
    second = wal.rotate()
    wal.close()
    assert first is not None and second is not None

    run_writer(data_dir, wal_dir, segment_number(first))  # commits the first segment
    run_writer(data_dir, wal_dir, segment_number(second))  # a new writer replays the second
    con = connect(Lake.open(str(data_dir)))
    rows = con.sql("SELECT epoch(ts), power_w, voltage_v FROM readings ORDER BY ts").fetchall()
    con.close()
    assert rows == [
        (t0, 74.6, 230.1),
        (t0 + 1, 74.6, 229.4),
        (t0 + 2, 74.6, 229.4),
        (t0 + 3, 74.6, 229.4),
    ]

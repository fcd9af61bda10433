"""Exactly once: a lake writer killed with SIGKILL at each step of a commit adds no duplicate
and loses no reading; the next writer resumes after the WAL position the last commit recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stream.support import expected_keys, lake_keys
from tests.stream.test_writer import run_writer, write_segments
from wattlake import faults
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE
from wattlake.stream.wal import segment_number

CHILD = """
import queue, sys
from pathlib import Path
from wattlake.config import Settings
from wattlake.stream.writer import LakeWriter
data_dir, wal_dir, closed, rows = sys.argv[1:5]
commands = queue.SimpleQueue()
commands.put({"stop": True})
settings = Settings.load(
    overrides={"data_dir": data_dir, "stream.buffer_max_rows": int(rows)}, environ={}
)
LakeWriter(settings, Path(wal_dir), int(closed), commands, lambda report: None).run()
"""


def kill_writer_at(step: str, data_dir: Path, wal_dir: Path, closed: int, rows: int) -> None:
    env = {**os.environ, faults.CRASH_ENV: step}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_dir), str(wal_dir), str(closed), str(rows)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


@pytest.mark.parametrize(
    ("step", "flush_rows", "commits_before_crash"),
    [
        ("files-written", 150, 0),
        ("commit-in-flight", 150, 0),
        ("commit-done", 150, 1),  # the first flush covers segment 1 and half of the rest
        ("wal-partly-trimmed", 1_000_000, 1),  # one flush covers all three segments
    ],
)
def test_a_writer_killed_at_each_step_leaves_every_reading_once(
    tmp_path: Path, step: str, flush_rows: int, commits_before_crash: int
) -> None:
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    segments = write_segments(wal_dir, [100, 100, 100])
    closed = segment_number(segments[-1])

    kill_writer_at(step, data_dir, wal_dir, closed, flush_rows)
    table = tables.open_table(Lake.open(str(data_dir)), READINGS_TABLE)
    committed = 0 if table.current_snapshot() is None else len(list(tables.ancestors(table)))
    assert committed == commits_before_crash
    assert list(wal_dir.glob("*.wal")), "the crash left segments in the WAL"

    reports = run_writer(data_dir, wal_dir, closed, **{"stream.buffer_max_rows": flush_rows})
    assert reports[-1].finished and reports[-1].lake_ok
    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert (raw_rows, view_rows) == (300, 300), "every reading exactly once in the table's files"
    assert keys == expected_keys(300)
    assert list(wal_dir.glob("*.wal")) == []


def test_a_wal_folder_emptied_and_restarted_is_not_mistaken_for_the_committed_one(
    tmp_path: Path,
) -> None:
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    first = write_segments(wal_dir, [50])
    run_writer(data_dir, wal_dir, segment_number(first[-1]))
    assert list(wal_dir.glob("*.wal")) == []
    # The folder is empty, so numbering starts again at 1 with new messages (50..99 would
    # collide in (device, ts) with the test's message numbering, so these are 100 new ones).
    again = write_segments(wal_dir, [100])
    assert again[0].name == first[0].name
    run_writer(data_dir, wal_dir, segment_number(again[-1]))
    raw_rows, _, _ = lake_keys(data_dir)
    assert raw_rows == 150

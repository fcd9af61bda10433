"""``jobs run migrate``: the Hive-style lake (raw, curated and errors folders, millisecond
timestamps, float64 values) into the Iceberg tables, resumable after a kill, refusing bad files
in one sentence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from wattlake.devices.base import RawMessage
from wattlake.errors import BadInputError
from wattlake.jobs import JOBS
from wattlake.jobs.migrate import LEGACY_DIR, MIGRATED_PROPERTY, legacy_files, migrate
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.schema import READINGS_TABLE, RECEIVE_LAG_COLUMN, readings_to_table
from wattlake.stream.deadletters import DeadLetter

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
MEASURED = {
    "power_w": 1234.56,
    "apparent_power_va": 1300.01,
    "reactive_power_var": -98.76,
    "voltage_v": 231.07,
    "current_a": 5.341,
    "pf": 0.951,
    "freq_hz": 49.987,
    "energy_wh": 123456789.125,
    "returned_energy_wh": 42.001,
}


def old_readings(first_ms: int, count: int, device: str, step_ms: int = 10_000) -> pa.Table:
    """Readings as the old lake stored them: ms timestamps, float64 values at resolution."""
    rows = []
    for i in range(count):
        ts = first_ms + i * step_ms
        values = {k: round(v + i * 0.01, 2) if k != "pf" else v for k, v in MEASURED.items()}
        rows.append({"ts": ts, "received_at": ts + 7, "device_id": device, "channel": i % 2,
                     "source": "shelly-gen2", **values})  # fmt: skip
    return readings_to_table(rows)


def write_parquet(lake: Lake, relative: str, table: pa.Table) -> None:
    lake.fs.create_dir(lake.path(relative).rsplit("/", 1)[0], recursive=True)
    pq.write_table(table, lake.path(relative), filesystem=lake.fs)


def dead_letter_lines(count: int, first_ms: int) -> bytes:
    letters = [
        DeadLetter(RawMessage(f"m{i}/events/rpc", b"{bad" + bytes([200 + i]), first_ms + i),
                   "invalid-json", f"bad JSON {i}", attempts=1 + i % 2)
        for i in range(count)
    ]  # fmt: skip
    return b"".join(json.dumps(d.to_record("mqtt")).encode() + b"\n" for d in letters)


def build_old_lake(lake: Lake) -> pa.Table:
    """Write a lake in the old layout; return every reading it holds (each once)."""
    parts = []
    for hour in range(3):  # raw: three hourly files of 2026-01-01
        part = old_readings(T0 + hour * HOUR, 40, "m1")
        write_parquet(
            lake, f"raw/readings/date=2026-01-01/hour={hour:02d}/part-{hour}.parquet", part
        )
        parts.append(part)
    curated = old_readings(T0 + 24 * HOUR, 120, "m2")  # curated: a compacted 2026-01-02
    write_parquet(lake, "curated/readings/date=2026-01-02/part-0.parquet", curated)
    parts.append(curated)
    older = old_readings(T0 + 48 * HOUR, 10, "m3").drop_columns(["pf", "freq_hz", "source"])
    write_parquet(lake, "raw/readings/date=2026-01-03/hour=00/old-version.parquet", older)
    parts.append(older.append_column("source", pa.array(["migrated"] * 10)))
    lake.write_bytes("errors/invalid-json/date=2026-01-01/mqtt-1.jsonl", dead_letter_lines(3, T0))
    return pa.concat_tables(parts, promote_options="default")


def assert_migrated(lake: Lake, expected: pa.Table) -> None:
    """Every old reading and dead letter is in the tables exactly once, values exact."""
    con = connect(lake)
    stored = con.sql("SELECT * FROM raw_readings ORDER BY device_id, ts").to_arrow_table()
    assert stored.num_rows == expected.num_rows  # none twice, none lost
    order = [("device_id", "ascending"), ("ts", "ascending")]
    want = expected.sort_by(order)
    assert stored["ts"].cast(pa.int64()).to_pylist() == [
        t * 1000 for t in want["ts"].cast(pa.int64()).to_pylist()
    ]  # milliseconds became microseconds
    for name in (*MEASURED, "device_id", "channel", "source"):
        assert stored[name].to_pylist() == want[name].to_pylist(), name
    # Receive times exact (files without one got ts), stored as lags: the new form.
    assert stored["received_at"].cast(pa.int64()).to_pylist() == [
        t * 1000 for t in want["received_at"].fill_null(want["ts"]).cast(pa.int64()).to_pylist()
    ]
    for task in tables.scan_files(lake, READINGS_TABLE):
        data = pq.read_table(tables.local_path(task.file.file_path), filesystem=lake.fs)
        assert data["received_at"].null_count == data.num_rows
        assert data[RECEIVE_LAG_COLUMN].null_count == 0
    letters = con.sql(
        "SELECT error_code, arrival_ms, stream, attempts FROM dead_letters ORDER BY arrival_ms"
    ).fetchall()
    assert letters == [("invalid-json", T0 + i, "mqtt", 1 + i % 2) for i in range(3)]
    payloads = con.sql("SELECT raw_base64 FROM dead_letters ORDER BY arrival_ms").fetchall()
    assert payloads[2][0] == "e2JhZMo="  # b"{bad\xca": the bytes kept, not the text
    assert legacy_files(lake) == []
    assert lake.list_files(LEGACY_DIR)  # the old files moved aside, not deleted


def test_the_old_layout_moves_into_the_tables(lake: Lake) -> None:
    assert "migrate" in JOBS
    expected = build_old_lake(lake)
    rows = migrate(lake, files_per_commit=2)
    assert {r["table"]: (r["files_migrated"], r["rows"]) for r in rows} == {
        "readings": (5, expected.num_rows),
        "dead_letters": (1, 3),
    }
    assert_migrated(lake, expected)
    snapshots = tables.open_table(lake, READINGS_TABLE).snapshots()
    assert len(snapshots) == 3  # five files, two per commit
    named = [json.loads(s.summary.additional_properties[MIGRATED_PROPERTY]) for s in snapshots]
    assert sum(len(n) for n in named) == 5
    assert migrate(lake) == []  # nothing left to do


CRASH_SCRIPT = """
import sys
from wattlake.jobs.migrate import migrate
from wattlake.lake.storage import Lake
migrate(Lake.open(sys.argv[1], s3_endpoint_url=sys.argv[2]), files_per_commit=2)
"""


@pytest.mark.parametrize("step", ["migrate-files-written", "migrate-committed", "migrate-moving"])
def test_a_killed_migration_resumes_without_duplicates(lake: Lake, step: str) -> None:
    expected = build_old_lake(lake)
    url = lake.root if lake.is_local else f"s3://{lake.root}"
    env = {**os.environ, "WATTLAKE_TEST_CRASH_AT": step}
    done = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, url, lake.s3_endpoint_url],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert legacy_files(lake)  # it died mid-way
    migrate(lake, files_per_commit=2)
    assert_migrated(lake, expected)


def test_a_value_outside_its_decimal_is_refused_in_one_sentence(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    good = old_readings(T0, 5, "m1")
    write_parquet(lake, "curated/readings/date=2026-01-01/a.parquet", good)
    day2 = T0 + 86_400_000
    bad = readings_to_table(
        [{"ts": day2, "received_at": day2, "device_id": "m1", "channel": 0, "power_w": 3e10,
          "source": "x"}]
    )  # fmt: skip
    write_parquet(lake, "curated/readings/date=2026-01-02/b.parquet", bad)
    with pytest.raises(BadInputError) as caught:
        migrate(lake, files_per_commit=1)
    message = str(caught.value)
    assert "date=2026-01-02/b.parquet" in message and "does not fit" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence
    # the batch before it stays migrated; the bad file stays where it was
    assert connect(lake).sql("SELECT count(*) FROM raw_readings").fetchall() == [(5,)]
    assert [f.relative for f in legacy_files(lake)] == [
        "curated/readings/date=2026-01-02/b.parquet"
    ]


def test_an_unreadable_file_is_refused_through_the_cli(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    lake.write_bytes("raw/readings/date=2026-01-01/hour=00/broken.parquet", b"not parquet")
    done = subprocess.run(
        [sys.executable, "-m", "wattlake", "jobs", "run", "migrate",
         "--data-dir", str(tmp_path / "lake")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.parquet" in lines[0] and "not a readable Parquet" in lines[0]
    assert "Traceback" not in done.stderr


def test_a_damaged_dead_letter_line_is_refused_with_its_line(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    lines = dead_letter_lines(2, T0) + b'{"error_code": "x"}\n'
    lake.write_bytes("errors/invalid-json/date=2026-01-01/broken.jsonl", lines)
    with pytest.raises(BadInputError, match=r"broken\.jsonl: line 3 is not a dead-letter record"):
        migrate(lake)
    assert connect(lake).sql("SELECT count(*) FROM dead_letters").fetchall() == [(0,)]

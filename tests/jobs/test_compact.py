"""Compaction: raw files of a day become one sorted, deduplicated curated file; nothing is lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq

from wattlake.jobs.compact import compact
from wattlake.lake.storage import CURATED_READINGS, RAW_READINGS, Lake
from wattlake.query.engine import connect
from wattlake.schema import readings_to_table

DAY1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400_000


def reading(device: str, ts_ms: int, power_w: float, received_ms: int) -> dict[str, object]:
    return {"ts": ts_ms, "received_at": received_ms, "device_id": device, "channel": 0,
            "power_w": power_w, "source": "generic"}  # fmt: skip


def write_raw(lake: Lake, day: str, name: str, rows: list[dict[str, object]]) -> None:
    lake.write_table(f"{RAW_READINGS}/date={day}/hour=00/{name}.parquet", readings_to_table(rows))


def all_readings(lake: Lake) -> list[tuple[object, ...]]:
    return connect(lake).sql("SELECT * FROM readings ORDER BY ALL").fetchall()


def test_compaction_keeps_every_reading_once_and_sorts(lake: Lake) -> None:
    write_raw(lake, "2026-01-01", "a", [reading("m2", DAY1 + 5, 2.0, DAY1 + 9),
                                        reading("m1", DAY1 + 7, 1.0, DAY1 + 9)])  # fmt: skip
    write_raw(lake, "2026-01-01", "b", [reading("m1", DAY1 + 7, 1.0, DAY1 + 99),
                                        reading("m1", DAY1 + 3, 3.0, DAY1 + 9)])  # fmt: skip
    write_raw(lake, "2026-01-02", "c", [reading("m1", DAY2, 4.0, DAY2 + 1)])
    before = all_readings(lake)
    assert len(before) == 4

    results = compact(lake)

    assert [(r.date, r.files_read, r.rows_read, r.rows_written) for r in results] == [
        ("2026-01-01", 2, 4, 3),
        ("2026-01-02", 1, 1, 1),
    ]
    assert lake.list_files(RAW_READINGS) == []
    assert all_readings(lake) == before
    day1 = lake.list_files(f"{CURATED_READINGS}/date=2026-01-01")
    assert len(day1) == 1
    with lake.fs.open_input_file(day1[0]) as fh:
        table = pq.read_table(fh)
    assert list(zip(table["device_id"].to_pylist(), table["power_w"].to_pylist(), strict=True)) == [
        ("m1", 3.0),
        ("m1", 1.0),
        ("m2", 2.0),
    ]
    # The earliest received copy of the duplicate is the one kept.
    assert connect(lake).sql(
        "SELECT epoch_ms(received_at) FROM readings WHERE device_id = 'm1' AND power_w = 1"
    ).fetchall() == [(DAY1 + 9,)]


def test_late_data_is_merged_into_the_curated_day(lake: Lake) -> None:
    write_raw(lake, "2026-01-01", "a", [reading("m1", DAY1, 1.0, DAY1)])
    compact(lake)
    write_raw(lake, "2026-01-01", "late", [reading("m1", DAY1 + 60_000, 2.0, DAY2),
                                           reading("m1", DAY1, 1.0, DAY2)])  # fmt: skip
    (result,) = compact(lake)
    assert (result.files_read, result.rows_read, result.rows_written) == (2, 3, 2)
    assert len(lake.list_files(CURATED_READINGS)) == 1
    assert [r[4] for r in all_readings(lake)] == [1.0, 2.0]  # power_w


def test_only_the_days_asked_for_are_compacted(lake: Lake) -> None:
    write_raw(lake, "2026-01-01", "a", [reading("m1", DAY1, 1.0, DAY1)])
    write_raw(lake, "2026-01-02", "b", [reading("m1", DAY2, 1.0, DAY2)])
    assert [r.date for r in compact(lake, dates=["2026-01-02"])] == ["2026-01-02"]
    assert len(lake.list_files(RAW_READINGS)) == 1


def test_jobs_run_compact_from_the_command_line(tmp_path: object) -> None:
    lake = Lake.open(str(tmp_path) + "/lake")
    write_raw(lake, "2026-01-01", "a", [reading("m1", DAY1, 1.0, DAY1)] * 2)
    cmd = [sys.executable, "-m", "wattlake", "jobs", "run", "compact", "--format", "json",
           "--data-dir", lake.root]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout)
    assert (row["date"], row["rows_read"], row["duplicates_removed"]) == ("2026-01-01", 2, 1)
    bad = subprocess.run([*cmd[:5], "shrink"], capture_output=True, text=True)
    assert bad.returncode == 2 and "There is no job 'shrink'" in bad.stderr
    bad_date = subprocess.run([*cmd, "--date", "yesterday"], capture_output=True, text=True)
    assert bad_date.returncode == 2 and "not a date" in bad_date.stderr

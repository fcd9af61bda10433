"""Compaction of table ``readings``: one sorted, deduplicated file per day, replacing exactly
the files it read, in one snapshot per day."""

from __future__ import annotations

import pyarrow.parquet as pq

from wattlake.jobs.compact import compact
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.schema import READINGS_TABLE, readings_to_table

DAY1 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY2 = DAY1 + 86_400_000


def reading(device: str, ts_ms: int, power_w: float, received_ms: int) -> dict[str, object]:
    return {"ts": ts_ms, "received_at": received_ms, "device_id": device, "channel": 0,
            "power_w": power_w, "source": "generic"}  # fmt: skip


def append(lake: Lake, rows: list[dict[str, object]]) -> None:
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))


def all_readings(lake: Lake) -> list[tuple[object, ...]]:
    return connect(lake).sql("SELECT * FROM readings ORDER BY ALL").fetchall()


def files_by_day(lake: Lake) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for task in tables.scan_files(lake, READINGS_TABLE):
        out.setdefault(int(task.file.partition[0]), []).append(task.file.file_path)
    return out


def test_compaction_keeps_every_reading_once_and_sorts(lake: Lake) -> None:
    append(lake, [reading("m2", DAY1 + 5, 2.0, DAY1 + 9), reading("m1", DAY1 + 7, 1.0, DAY1 + 9)])
    append(lake, [reading("m1", DAY1 + 7, 1.0, DAY1 + 99), reading("m1", DAY1 + 3, 3.0, DAY1 + 9),
                  reading("m1", DAY2, 4.0, DAY2 + 1)])  # fmt: skip
    before = all_readings(lake)
    assert len(before) == 4

    results = compact(lake)

    assert [(r.date, r.files_read, r.rows_read, r.rows_written) for r in results] == [
        ("2026-01-01", 2, 4, 3)
    ]
    assert all_readings(lake) == before
    day1 = files_by_day(lake)[20454]
    assert len(day1) == 1
    table = pq.read_table(tables.local_path(day1[0]), filesystem=lake.fs)
    assert list(
        zip(table["device_id"].to_pylist(), table["ts"].to_pylist(), strict=True)
    ) == sorted(zip(table["device_id"].to_pylist(), table["ts"].to_pylist(), strict=True))
    # The earliest received copy of the duplicate is the one kept, in the files too.
    assert connect(lake).sql(
        "SELECT epoch_ms(received_at) FROM raw_readings WHERE device_id = 'm1' AND power_w = 1"
    ).fetchall() == [(DAY1 + 9,)]
    history = tables.open_table(lake, READINGS_TABLE).snapshots()
    assert history[-1].summary is not None
    assert history[-1].summary.additional_properties["wattlake.compacted-day"] == "2026-01-01"


def test_a_file_appended_during_compaction_survives(tmp_path: object) -> None:
    lake = Lake.open(f"{tmp_path}/lake")
    append(lake, [reading("m1", DAY1, 1.0, DAY1)])
    append(lake, [reading("m1", DAY1 + 10_000, 2.0, DAY1)])
    real_commit = tables.commit

    def commit_after_late_data(*args: object, **kwargs: object) -> object:
        tables.commit = real_commit  # type: ignore[assignment]
        append(lake, [reading("m1", DAY1 + 20_000, 3.0, DAY2)])  # lands while compacting
        return real_commit(*args, **kwargs)  # type: ignore[arg-type]

    tables.commit = commit_after_late_data  # type: ignore[assignment]
    try:
        (result,) = compact(lake)
    finally:
        tables.commit = real_commit  # type: ignore[assignment]
    assert result.files_read == 2
    assert [r[4] for r in all_readings(lake)] == [1.0, 2.0, 3.0]
    assert len(files_by_day(lake)[20454]) == 2  # the compacted file and the late one


def test_only_the_days_asked_for_are_compacted(lake: Lake) -> None:
    append(lake, [reading("m1", DAY1, 1.0, DAY1), reading("m1", DAY2, 1.0, DAY2)])
    append(lake, [reading("m1", DAY1, 1.0, DAY1), reading("m1", DAY2, 1.0, DAY2)])
    assert [r.date for r in compact(lake, dates=["2026-01-02"])] == ["2026-01-02"]
    assert [len(f) for _, f in sorted(files_by_day(lake).items())] == [2, 1]


def test_each_snapshot_of_a_compaction_replaces_whole_days(lake: Lake) -> None:
    days = [DAY1 + k * 86_400_000 for k in range(5)]
    for part in range(3):
        append(lake, [reading("m1", day + part, 1.0, day + 9) for day in days])
    before = all_readings(lake)
    table = tables.open_table(lake, READINGS_TABLE)
    first_new = len(table.snapshots())
    results = compact(lake)
    assert [r.rows_read for r in results] == [3] * 5
    assert all_readings(lake) == before
    table = tables.open_table(lake, READINGS_TABLE)
    listed = []
    for snapshot in table.snapshots()[first_new:]:
        assert snapshot.summary is not None
        dates = snapshot.summary.additional_properties["wattlake.compacted-day"].split(",")
        listed += dates
        # Every file the snapshot removed belongs to a day it names, and all of that day's.
        assert int(snapshot.summary.additional_properties["deleted-data-files"]) == 3 * len(dates)
        assert int(snapshot.summary.additional_properties["added-data-files"]) == len(dates)
    assert listed == [r.date for r in results]
    assert [len(f) for _, f in sorted(files_by_day(lake).items())] == [1] * 5

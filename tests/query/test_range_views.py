"""Views pruned to a range of days from a table's kept scan plan (what the web server uses)."""

from __future__ import annotations

from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import ViewFilter, connect
from wattlake.schema import READINGS_TABLE, readings_to_table

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _append_days(lake: Lake, days: int) -> None:
    """One data file per day: a reading every hour, and a copy of the first (received later)."""
    for day in range(days):
        rows = [
            {"ts": T0 + day * DAY + h * 3_600_000, "received_at": T0 + day * DAY + h * 3_600_000,
             "device_id": "m1", "channel": 0, "power_w": 100.0 * day + h, "source": "generic"}
            for h in range(24)
        ]  # fmt: skip
        rows.append({**rows[0], "received_at": rows[0]["received_at"] + 5, "power_w": -1.0})
        tables.append(lake, READINGS_TABLE, readings_to_table(rows))


def _stored_rows(con: object) -> int:
    """The rows of the files a view reads (whole days: 25 stored rows each)."""
    return int(con.execute("SELECT count(*) FROM raw_readings_stored").fetchall()[0][0])  # type: ignore[attr-defined]


def test_a_range_view_reads_only_its_days_and_gives_the_same_rows(lake: Lake) -> None:
    _append_days(lake, 5)
    query = (
        "SELECT ts, power_w FROM readings WHERE ts >= make_timestamptz(?::BIGINT * 1000) "
        "AND ts < make_timestamptz(?::BIGINT * 1000) ORDER BY ts"
    )
    # From 12:00 of day 1 to 06:00 of day 3: days 1, 2 and 3.
    start, end = T0 + DAY + DAY // 2, T0 + 3 * DAY + DAY // 4
    whole = connect(lake)
    snapshot = tables.open_table(lake, READINGS_TABLE).current_snapshot()
    assert snapshot is not None
    ids = {READINGS_TABLE: snapshot.snapshot_id}
    pruned = connect(lake, view_filter=ViewFilter(start, end), snapshot_ids=ids, keep_plans=True)
    expected = whole.execute(query, [start, end]).fetchall()
    assert len(expected) == 12 + 24 + 6
    assert pruned.execute(query, [start, end]).fetchall() == expected
    # Duplicates removed as in the whole view: the first copy (received first) of day 2.
    assert (100.0 * 2) in [p for _, p in expected] and -1.0 not in [p for _, p in expected]
    assert _stored_rows(whole) == 5 * 25
    assert _stored_rows(pruned) == 3 * 25  # the files of days 1, 2 and 3 only

    # The plan is kept per snapshot: a later append is not in the pinned view, and a view at
    # the new snapshot sees it.
    _append_days(lake, 6)
    again = connect(lake, view_filter=ViewFilter(start, end), snapshot_ids=ids, keep_plans=True)
    assert again.execute(query, [start, end]).fetchall() == expected
    newer = tables.open_table(lake, READINGS_TABLE).current_snapshot()
    assert newer is not None
    now = connect(
        lake,
        view_filter=ViewFilter(T0 + 5 * DAY, T0 + 6 * DAY),
        snapshot_ids={READINGS_TABLE: newer.snapshot_id},
        keep_plans=True,
    )
    assert now.execute(query, [T0 + 5 * DAY, T0 + 6 * DAY]).fetchall()[0] == (
        now.execute("SELECT make_timestamptz(?::BIGINT * 1000)", [T0 + 5 * DAY]).fetchone()[0],  # type: ignore[index]
        500.0,
    )


def test_a_table_with_no_snapshot_pinned_reads_as_empty(lake: Lake) -> None:
    _append_days(lake, 1)
    con = connect(lake, snapshot_ids={READINGS_TABLE: None}, keep_plans=True)
    assert con.sql("SELECT count(*) FROM readings").fetchall() == [(0,)]


def test_small_tables_held_in_memory_read_as_their_files(lake: Lake) -> None:
    """The rollups of a small fleet are read from memory by a long-running process: the same
    rows as the files give, a day rewritten by the rollup job read again, the old one gone."""
    from wattlake.jobs.rollup import run_rollup
    from wattlake.schema import ENERGY_15MIN_TABLE, POWER_1H_TABLE, POWER_1MIN_TABLE

    queries = [
        f"SELECT * FROM {name} ORDER BY ALL"
        for name in (ENERGY_15MIN_TABLE, POWER_1MIN_TABLE, POWER_1H_TABLE)
    ]
    _append_days(lake, 3)
    run_rollup(lake)
    for _ in range(2):
        files = connect(lake)
        kept = connect(lake, keep_plans=True)
        for query in queries:
            expected = files.execute(query).fetchall()
            assert expected
            assert kept.execute(query).fetchall() == expected
        # A later reading on day 1: the rollup job rewrites days 0 to 2.
        late = {"ts": T0 + DAY + 1_000, "received_at": T0 + DAY + 1_000, "device_id": "m1",
                "channel": 0, "power_w": 5000.0, "source": "generic"}  # fmt: skip
        tables.append(lake, READINGS_TABLE, readings_to_table([late]))
        run_rollup(lake)
    assert connect(lake, keep_plans=True).execute(
        f"SELECT max(max_power_w) FROM {POWER_1H_TABLE}"
    ).fetchall() == [(5000.0,)]

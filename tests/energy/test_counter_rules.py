"""Counter edge cases against hand-derived answers (issue 12): range edges, partial counters,
outliers, resets with power, honest coverage. Each value here was wrong before the fix (the old
figure is in the comment)."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.query.readings import bracketed_readings
from wattlake.query.reports import energy_rows
from wattlake.schema import readings_to_table

UTC = zone("UTC")
M = 60_000
H = 3_600_000
DAY = parse_time_ms("2026-06-01", UTC)
WH_PER_MIN = 1000.0 / 60.0  # 1 kW for one minute


def reading(ts: int, *, power: float | None = None, counter: float | None = None) -> dict:
    row: dict[str, object] = {
        "ts": ts,
        "received_at": ts,
        "device_id": "m",
        "channel": 0,
        "source": "generic",
    }
    if power is not None:
        row["power_w"] = power
    if counter is not None:
        row["energy_wh"] = counter
    return row


def day_rows(rows: list[dict], every: str = "day") -> list[dict]:
    edges = bucket_edges_ms(DAY, DAY + 24 * H, every, UTC)
    out, _ = energy_rows(readings_to_table(rows), edges, UTC)
    return out


def minute_day(counter_of: callable, *, power: bool = True) -> list[dict]:  # type: ignore[valid-type]
    """1 kW all day, a reading a minute from 00:00 to 24:00 inclusive."""
    return [
        reading(DAY + i * M, power=1000.0 if power else None, counter=counter_of(i))
        for i in range(24 * 60 + 1)
    ]


def test_range_edges_bracket_the_readings() -> None:
    # A counter read once an hour at hh:30, 1 kWh an hour, from 20:30 the day before to 03:30
    # the day after; the query from 00:00 to 24:00 needs 23:30 and 00:30 to get the full day.
    # Before: readings only max_gap_s (300 s) beyond the range, so 23 000 Wh.
    rows = [reading(DAY + k * H + 30 * M, counter=10_000.0 + 1000.0 * k) for k in range(-4, 28)]
    con = duckdb.connect()
    con.register("readings", readings_to_table(rows))
    table = bracketed_readings(con, DAY, DAY + 24 * H)
    assert table.num_rows == 26  # 24 inside, plus 23:30 before and 00:30 after
    edges = bucket_edges_ms(DAY, DAY + 24 * H, "day", UTC)
    (row,) = energy_rows(table, edges, UTC)[0]
    assert row["import_wh"] == 24_000.0
    # every step is an hour long, far beyond max_gap_s: all of it is interpolated
    assert (row["coverage"], row["interpolated_wh"]) == (0.0, 24_000.0)


def test_bracketing_keeps_the_nearest_counter_reading_and_other_devices_out() -> None:
    rows = [
        reading(DAY - 5 * H, counter=100.0),
        reading(DAY - 1 * H, power=50.0),  # nearer, but without a counter
        reading(DAY + H, counter=1100.0),
        reading(DAY + 30 * H, counter=9000.0),
    ]
    other = dict(rows[0], device_id="other")
    con = duckdb.connect()
    con.register("readings", readings_to_table([*rows, other]))
    table = bracketed_readings(con, DAY, DAY + 24 * H, device_ids=["m"])
    assert table["ts"].cast("int64").to_pylist() == [r["ts"] for r in rows]


def test_a_counter_that_stops_is_continued_by_power() -> None:
    # Counter until 12:00, power all day at 1 kW: 24 000 Wh (before: 12 000).
    rows = minute_day(lambda i: 5000.0 + i * WH_PER_MIN if i <= 720 else None)
    (row,) = day_rows(rows)
    assert row["import_wh"] == 24_000.0
    assert row["method"] == "counter+trapezoid"
    assert row["coverage"] == 1.0


def test_a_counter_that_appears_late_is_preceded_by_power() -> None:
    # Counter from 06:00 only: 6 h of power, 18 h of counter = 24 000 Wh (before: 18 000).
    rows = minute_day(lambda i: 5000.0 + i * WH_PER_MIN if i >= 360 else None)
    (row,) = day_rows(rows)
    assert row["import_wh"] == 24_000.0


def test_a_reset_with_power_uses_power_for_its_interval() -> None:
    # The counter restarts from 5 Wh at 10:00; the minute across the reset is 1 kW of power:
    # 24 000 Wh (before: 24 000 - 16.667 = 23 983.333).
    rows = minute_day(lambda i: i * WH_PER_MIN if i < 600 else 5.0 + (i - 600) * WH_PER_MIN)
    (row,) = day_rows(rows)
    assert row["import_wh"] == 24_000.0
    assert row["counter_minus_power_wh"] == 0.0


def test_a_reset_without_power_still_counts_nothing_across_it() -> None:
    rows = minute_day(
        lambda i: i * WH_PER_MIN if i < 600 else 5.0 + (i - 600) * WH_PER_MIN, power=False
    )
    (row,) = day_rows(rows)
    assert row["import_wh"] == pytest.approx(24_000.0 - WH_PER_MIN, abs=1e-3)


def test_an_outlier_that_comes_back_is_not_billed() -> None:
    # No power; one reading at 12:00 is 400 Wh high, the next one is back on the line.
    # 400 Wh in a minute is under the 60 kW cap, so before it was billed and the step after it
    # taken for a reset: 24 383.333 Wh. Now: 24 000.
    rows = minute_day(lambda i: i * WH_PER_MIN + (400.0 if i == 720 else 0.0), power=False)
    (row,) = day_rows(rows)
    assert row["import_wh"] == 24_000.0


def test_a_lasting_jump_is_judged_against_power() -> None:
    # The counter jumps by 500 Wh at 12:00 and stays there; the power says 1 kW. 516.7 Wh in a
    # minute is under the 60 kW cap (before: 24 500), but far above the 16.7 Wh of the power
    # samples: the step counts the power's energy instead. Now: 24 000.
    rows = minute_day(lambda i: i * WH_PER_MIN + (500.0 if i >= 720 else 0.0))
    (row,) = day_rows(rows)
    assert row["import_wh"] == 24_000.0


def test_coverage_is_readings_no_further_apart_than_max_gap() -> None:
    # A counter read at 00:00 and 06:00 only: six hours of interpolated energy, not measured.
    # Before: coverage 1.0 in every hour and no interpolated column.
    rows = [reading(DAY, counter=0.0), reading(DAY + 6 * H, counter=6000.0)]
    edges = bucket_edges_ms(DAY, DAY + 6 * H, "hour", UTC)
    out, _ = energy_rows(readings_to_table(rows), edges, UTC)
    assert [r["import_wh"] for r in out] == [1000.0] * 6
    assert [r["coverage"] for r in out] == [0.0] * 6
    assert [r["interpolated_wh"] for r in out] == [1000.0] * 6
    assert [r["gap_s"] for r in out] == [3600.0] * 6


def test_a_power_gap_bridged_linearly_is_interpolated() -> None:
    # 1 kW at 00:00, 00:01, then nothing until 01:01 (a one-hour gap), then 01:02.
    ts = [DAY, DAY + M, DAY + 61 * M, DAY + 62 * M]
    rows = [reading(t, power=1000.0) for t in ts]
    edges = np.array([DAY, DAY + 62 * M], dtype=np.int64)
    out, _ = energy_rows(readings_to_table(rows), edges, UTC, gap_policy="linear")
    (row,) = out
    assert row["import_wh"] == pytest.approx(62 * WH_PER_MIN)
    assert row["interpolated_wh"] == 1000.0
    assert row["coverage"] == pytest.approx(2 / 62, abs=1e-4)


def export_hour(step_wh: float) -> list[dict]:
    """A PV channel exporting 3 kW steadily for an hour, a reading a minute: the power samples
    say -3000 W, the import counter stands still at 800 Wh, the export counter rises by
    ``step_wh`` a minute from 10 000 Wh."""
    return [
        dict(
            reading(DAY + i * M, power=-3000.0, counter=800.0),
            returned_energy_wh=10_000.0 + i * step_wh,
        )
        for i in range(61)
    ]


def test_an_export_counter_is_judged_against_export_power() -> None:
    # The export counter steps 52 Wh a minute while the instantaneous samples say 50 Wh:
    # export_wh is the counter's 60 x 52 = 3120 Wh exactly. Before: the export counter was
    # judged against the import-only power (0 Wh), every 52 Wh step was refused as a lasting
    # jump and the power gave 3000 Wh.
    edges = np.array([DAY, DAY + H], dtype=np.int64)
    (row,), (result,) = energy_rows(readings_to_table(export_hour(52.0)), edges, UTC)
    assert (row["import_wh"], row["export_wh"]) == (0.0, 3120.0)
    assert row["method"] == "counter"
    assert result.events == ()
    # A step far above the export power is still refused: 500 Wh in the minute from 00:30
    # (the counter stays 448 Wh higher) counts the power's 50 Wh for that minute instead:
    # 59 x 52 + 50 = 3118 Wh.
    rows = export_hour(52.0)
    for r in rows[31:]:
        r["returned_energy_wh"] += 448.0
    (row,), (result,) = energy_rows(readings_to_table(rows), edges, UTC)
    assert row["export_wh"] == 3118.0
    assert [e.kind for e in result.events] == ["spike"]

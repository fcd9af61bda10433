"""A range the rollups cannot answer whole: rollups up to a quarter-hour, readings after it
(``rollups.energy_with_recent``), equal to the raw path over the whole range to float rounding."""

from __future__ import annotations

import importlib.util
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from wattlake.energy.buckets import bucket_edges_ms, local_midnight_ms, zone
from wattlake.jobs.rollup import ArrowReadings, compute_days
from wattlake.lake.freshness import DAY_MS
from wattlake.query.energy import READINGS, RECENT, ROLLUPS, EnergySources, energy_with_recent
from wattlake.query.readings import series_from_readings

_spec = importlib.util.spec_from_file_location(
    "_rollup_helpers", Path(__file__).resolve().parent / "test_rollups.py"
)
assert _spec is not None and _spec.loader is not None
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)


def _sources(
    readings: pa.Table, stale_from_day: int | None, asked: list[tuple[str, int, int]]
) -> EnergySources:
    """Rollups computed from ``readings``, reported stale (None) for ranges whose margin day
    reaches ``stale_from_day``, as lake_sources does when the ingest wrote to that day."""

    def rollups(a: int, b: int, device: str | None) -> pa.Table | None:
        asked.append(("rollups", a, b))
        if stale_from_day is not None and (b - 1) // DAY_MS + 1 >= stale_from_day:
            return None
        days = range(a // DAY_MS, -(-b // DAY_MS))
        return compute_days(ArrowReadings(readings), list(days)).energy_15min

    def raw(a: int, b: int, device: str | None) -> pa.Table:
        asked.append(("readings", a, b))
        return readings

    return EnergySources(rollups=rollups, readings=raw)


@pytest.mark.parametrize("every", ["hour", "day"])
def test_a_range_ending_now_reads_only_its_recent_part(every: str) -> None:
    tz = zone("Europe/Warsaw")
    first = date(2026, 3, 28)  # the 23-hour 29th, counters with a reset, gaps
    readings = _helpers._readings(first, 3, "Europe/Warsaw")
    start_ms = local_midnight_ms(first, tz)
    now_ms = start_ms + 2 * DAY_MS + 13 * 3_600_000 + 123_456  # not a quarter-hour
    edges = bucket_edges_ms(start_ms, now_ms, every, tz)
    raw = series_from_readings(readings, edges)
    # Fresh rollups: they answer up to the last quarter-hour, readings the last minutes.
    asked: list[tuple[str, int, int]] = []
    results, source = energy_with_recent(_sources(readings, None, asked), edges)
    assert source == RECENT
    split = now_ms // 900_000 * 900_000
    assert asked == [("rollups", start_ms, split), ("readings", split, now_ms)]
    _helpers._assert_same(results, raw)
    # The ingest wrote to the last UTC day since: rollups until the day before it.
    asked = []
    today = (now_ms - 1) // DAY_MS
    results, source = energy_with_recent(_sources(readings, today, asked), edges)
    assert source == RECENT
    assert asked[-1] == ("readings", (today - 1) * DAY_MS, now_ms)
    _helpers._assert_same(results, raw)
    assert {r.method for r in raw} >= {"counter", "trapezoid"}


def test_aligned_ranges_and_stale_rollups() -> None:
    tz = zone("UTC")
    first = date(2026, 3, 28)
    readings = _helpers._readings(first, 3, "UTC")
    start_ms = local_midnight_ms(first, tz)
    edges = bucket_edges_ms(start_ms, start_ms + 3 * DAY_MS, "day", tz)
    raw = series_from_readings(readings, edges)
    asked: list[tuple[str, int, int]] = []
    results, source = energy_with_recent(_sources(readings, None, asked), edges)
    assert source == ROLLUPS and [a[0] for a in asked] == ["rollups"]
    _helpers._assert_same(results, raw)
    # The last day written to: the days before it from rollups, that day from readings.
    last = (start_ms + 3 * DAY_MS) // DAY_MS
    asked = []
    results, source = energy_with_recent(_sources(readings, last, asked), edges)
    assert source == RECENT
    assert asked[-1] == ("readings", start_ms + 2 * DAY_MS, start_ms + 3 * DAY_MS)
    _helpers._assert_same(results, raw)
    # Nothing fresh: the raw path, or nothing at all without the fallback.
    asked = []
    results, source = energy_with_recent(_sources(readings, 0, asked), edges)
    assert source == READINGS and asked[-1][0] == "readings"
    _helpers._assert_same(results, raw)
    results, source = energy_with_recent(_sources(readings, 0, []), edges, fallback=False)
    assert (results, source) == ([], READINGS)


def test_a_bucket_cut_by_the_split_adds_both_parts() -> None:
    tz = zone("UTC")
    readings = _helpers._readings(date(2026, 3, 28), 2, "UTC")
    start_ms = local_midnight_ms(date(2026, 3, 28), tz)
    end_ms = start_ms + DAY_MS + 10 * 3_600_000 + 1_000
    edges = np.array([start_ms, end_ms], dtype=np.int64)  # one bucket: today so far
    results, source = energy_with_recent(_sources(readings, None, []), edges)
    assert source == RECENT
    _helpers._assert_same(results, series_from_readings(readings, edges))

"""Rollups and raw readings give the same energy (to 1e-9 relative) over gaps, resets and DST."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from wattlake.energy.buckets import bucket_edges_ms, local_midnight_ms, zone
from wattlake.energy.series import SeriesEnergy
from wattlake.jobs.rollup import ArrowReadings, compute_days
from wattlake.lake.freshness import DAY_MS
from wattlake.query.energy import EnergySources, energy_over_edges
from wattlake.query.readings import series_from_readings
from wattlake.query.rollups import aligned, series_from_rollups

_MS = pa.timestamp("ms", tz="UTC")


def _series(
    device: str,
    channel: int,
    start_ms: int,
    end_ms: int,
    step_ms: int,
    seed: int,
    *,
    counters: bool,
    gaps: list[tuple[int, int]],
    reset_at_ms: int | None = None,
    spike_at_ms: int | None = None,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = np.arange(start_ms, end_ms, step_ms, dtype=np.int64) + rng.integers(0, 3, 1)[0] * 10
    hours = (ts / 3_600_000.0) % 24
    power = 600 + 400 * np.sin(hours / 24 * 2 * np.pi) - 1800 * np.exp(-((hours - 12) ** 2) / 6)
    power = np.round(power + rng.normal(0, 30, ts.size), 1)
    dt_h = np.diff(ts, prepend=ts[0]) / 3_600_000.0
    prev = np.concatenate(([power[0]], power[:-1]))
    imported = 10_000 + np.cumsum(np.maximum((prev + power) / 2, 0) * dt_h)
    exported = 500 + np.cumsum(np.maximum(-(prev + power) / 2, 0) * dt_h)
    if reset_at_ms is not None:
        after = ts >= reset_at_ms
        imported[after] -= imported[after][0] - 3.0  # the meter restarts near zero
    if spike_at_ms is not None:
        imported[np.searchsorted(ts, spike_at_ms)] += 900.0  # one outlier reading
    keep = np.ones(ts.size, dtype=np.bool_)
    for a, b in gaps:
        keep &= (ts < a) | (ts >= b)
    nan = np.full(ts.size, np.nan)
    return {
        "ts": ts[keep],
        "device_id": np.full(int(keep.sum()), device, dtype=object),
        "channel": np.full(int(keep.sum()), channel, dtype=np.int16),
        "power_w": power[keep],
        "energy_wh": np.round(imported, 2)[keep] if counters else nan[keep],
        "returned_energy_wh": np.round(exported, 2)[keep] if counters else nan[keep],
    }


def _table(parts: list[dict[str, np.ndarray]]) -> pa.Table:
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return pa.table(
        {
            "ts": pa.array(cols["ts"], _MS),
            "device_id": pa.array(cols["device_id"], pa.string()),
            "channel": pa.array(cols["channel"], pa.int16()),
            "power_w": pa.array(cols["power_w"], pa.float64()),
            "energy_wh": pa.array(cols["energy_wh"], pa.float64(), from_pandas=True),
            "returned_energy_wh": pa.array(
                cols["returned_energy_wh"], pa.float64(), from_pandas=True
            ),
        }
    )


def _readings(first: date, days: int, tz_name: str) -> pa.Table:
    """Readings from a day before ``first`` to a day after the last local day, in ``tz_name``."""
    tz = zone(tz_name)
    t0 = local_midnight_ms(first, tz) - DAY_MS
    t1 = t0 + (days + 2) * DAY_MS
    h = 3_600_000
    m = 60_000
    return _table(
        [
            # counters + power, a reset, an outlier, a 20-minute gap and a 2-hour gap that
            # crosses local midnight
            _series(
                "meter-a",
                0,
                t0,
                t1,
                10_000,
                1,
                counters=True,
                gaps=[(t0 + 30 * h + 7 * m, t0 + 30 * h + 27 * m), (t0 + 47 * h, t0 + 49 * h)],
                reset_at_ms=t0 + 60 * h + 13 * m,
                spike_at_ms=t0 + 40 * h + 5 * m,
            ),
            # power only, exporting at noon
            _series(
                "meter-a", 1, t0, t1, 10_000, 2, counters=False, gaps=[(t0 + 70 * h, t0 + 71 * h)]
            ),
            # a slower meter with a gap over the DST change and samples off the quarter-hours
            _series(
                "meter-b",
                0,
                t0 + 7_000,
                t1,
                30_000,
                3,
                counters=True,
                gaps=[(t0 + 50 * h + 5 * m, t0 + 52 * h + 50 * m)],
            ),
        ]
    )


def _assert_same(rollup: list[SeriesEnergy], raw: list[SeriesEnergy]) -> None:
    assert [(r.series.device_id, r.series.channel) for r in rollup] == [
        (r.series.device_id, r.series.channel) for r in raw
    ]
    for a, b in zip(rollup, raw, strict=True):
        for name in ("import_wh", "export_wh", "covered_s", "interpolated_wh"):
            x, y = getattr(a, name), getattr(b, name)
            if y is None:
                continue
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, err_msg=name)
        if b.counter_minus_power_wh is None:
            assert a.counter_minus_power_wh is None
        else:
            assert a.counter_minus_power_wh is not None
            np.testing.assert_allclose(
                a.counter_minus_power_wh, b.counter_minus_power_wh, rtol=1e-9, atol=1e-9
            )
        assert a.method == b.method


@pytest.mark.parametrize(
    ("tz_name", "first"),
    [
        ("Europe/Warsaw", date(2026, 3, 28)),  # 23-hour day on the 29th
        ("Europe/Warsaw", date(2026, 10, 24)),  # 25-hour day on the 25th
        ("Asia/Kathmandu", date(2026, 3, 28)),  # +05:45
    ],
)
@pytest.mark.parametrize("every", ["15min", "hour", "day", "month"])
def test_rollups_and_readings_agree(tz_name: str, first: date, every: str) -> None:
    tz = zone(tz_name)
    readings = _readings(first, 3, tz_name)
    start_ms = local_midnight_ms(first, tz)
    end_ms = start_ms + 3 * DAY_MS + 3_600_000 * (1 if first.month == 10 else 0)
    edges = bucket_edges_ms(start_ms, end_ms, every, tz)
    assert aligned(edges)
    days = range(start_ms // DAY_MS, -(-end_ms // DAY_MS))
    rollups = compute_days(ArrowReadings(readings), list(days)).energy_15min
    raw = series_from_readings(readings, edges)
    assert {r.method for r in raw} >= {"counter", "trapezoid"}
    assert any(r.covered_s.sum() < np.diff(edges).sum() / 1000 for r in raw)  # gaps are there
    _assert_same(series_from_rollups(rollups, edges), raw)


def test_unaligned_ranges_read_readings() -> None:
    tz = zone("Europe/Warsaw")
    readings = _readings(date(2026, 3, 28), 1, "Europe/Warsaw")
    start_ms = local_midnight_ms(date(2026, 3, 28), tz)
    calls: list[str] = []

    def rollups(a: int, b: int, device: str | None) -> pa.Table:
        calls.append("rollups")
        days = range(a // DAY_MS, -(-b // DAY_MS))
        return compute_days(ArrowReadings(readings), list(days)).energy_15min

    def raw(a: int, b: int, device: str | None) -> pa.Table:
        calls.append("readings")
        return readings

    sources = EnergySources(rollups=rollups, readings=raw)
    quarter = bucket_edges_ms(start_ms, start_ms + DAY_MS, "hour", tz)
    _, source = energy_over_edges(sources, quarter)
    assert source == "rollups"
    shifted = quarter + 60_000  # a minute past each hour: not a quarter-hour
    _, source = energy_over_edges(sources, shifted)
    assert source == "readings"
    assert calls == ["rollups", "readings"]


def test_stale_rollups_fall_back_to_readings() -> None:
    readings = _readings(date(2026, 3, 28), 1, "UTC")
    sources = EnergySources(rollups=lambda a, b, d: None, readings=lambda a, b, d: readings)
    start = local_midnight_ms(date(2026, 3, 28), zone("UTC"))
    results, source = energy_over_edges(sources, np.array([start, start + DAY_MS]))
    assert source == "readings"
    assert len(results) == 3


def test_energy_buckets_on_a_lake_reads_rollups_when_fresh(tmp_path: Path) -> None:
    from wattlake.config import Settings
    from wattlake.jobs.rollup import run_rollup
    from wattlake.lake import tables
    from wattlake.lake.storage import Lake
    from wattlake.query.energy import energy_buckets
    from wattlake.schema import READINGS_TABLE

    settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
    lake = Lake.from_settings(settings)
    tz = zone("Europe/Warsaw")
    first = date(2026, 3, 28)
    readings = _readings(first, 2, "Europe/Warsaw")
    received = readings["ts"]
    full = readings.append_column("received_at", received).append_column(
        "source", pa.array(["generic"] * readings.num_rows)
    )
    tables.append(lake, READINGS_TABLE, full)
    start_ms = local_midnight_ms(first, tz)
    end_ms = start_ms + 2 * DAY_MS - 3_600_000  # the 28th and the 23-hour 29th
    _, before, source = energy_buckets(settings, None, start_ms, end_ms, "hour", tz)
    assert source == "readings"  # no rollups yet
    run_rollup(lake)
    edges, after, source = energy_buckets(settings, None, start_ms, end_ms, "hour", tz)
    assert source == "rollups"
    _assert_same(after, before)
    _, one, _ = energy_buckets(settings, "meter-b", start_ms, end_ms, "day", tz)
    assert [r.series.device_id for r in one] == ["meter-b"]
    # New readings make the rollups stale for their days: the raw path answers again.
    late = full.slice(0, 10).set_column(
        full.schema.get_field_index("device_id"), "device_id", pa.array(["late"] * 10)
    )
    tables.append(lake, READINGS_TABLE, late)
    _, _, source = energy_buckets(settings, None, start_ms, end_ms, "day", tz)
    assert source == "readings"
    assert edges.size == 48  # 24 + 23 hours

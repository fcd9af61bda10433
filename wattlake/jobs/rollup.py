"""Rollups: energy per 15 minutes and power statistics per minute and hour, kept up to date.

``energy_15min`` holds, per device and channel and UTC quarter-hour, what the raw energy path
(:func:`wattlake.query.energy.series_energy`, over the kernels in :mod:`wattlake.energy`) gives for
that bucket: import, export, interpolated energy, covered time, counter minus power energy and the
method. Because that path splits every interval exactly at bucket edges, a sum of quarter-hours
is the energy of any longer bucket whose edges fall on quarter-hours, so ``energy``, ``cost`` and
``pv`` can read rollups instead of readings (:mod:`wattlake.query.rollups`). ``power_1min`` and
``power_1h`` hold min, max and mean power per device, channel and period, for charts.

A UTC day is the unit of work. To compute a day the job reads the readings of the day and of
``reach`` on each side (a day by default), so an interval that crosses midnight, a counter step
across a gap and the outlier checks around the edges see the same readings as a query over the
day would. A gap longer than the reach is not bridged by rollups (the raw path bridges any gap).

Incremental runs (:func:`run_rollup`) recompute only days touched by readings committed since the
last run: the days of the data files added to table ``readings`` by every snapshot after the one
recorded in the rollup table's newest snapshot summary (property ``wattlake.readings-snapshot``),
widened by the reach. Late data for an old day recomputes that day and its neighbours. Each run
overwrites the affected day partitions of each rollup table in one commit, so a crash leaves either
the old rollups or the new ones, and running twice changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.energy.rollup import HOUR_MS, MINUTE_MS, QUARTER_HOUR_MS, power_stats
from wattlake.query.energy import series_energy, split_series

DAY_MS: Final = 86_400_000
# Snapshot summary property of a rollup table: the readings snapshot its contents reflect.
READINGS_SNAPSHOT_PROPERTY: Final = "wattlake.readings-snapshot"
# Columns of the readings the rollups need.
READING_COLUMNS: Final = (
    "ts",
    "device_id",
    "channel",
    "power_w",
    "energy_wh",
    "returned_energy_wh",
)
_MS_TS: Final = pa.timestamp("ms", tz="UTC")
_US_TS: Final = pa.timestamp("us", tz="UTC")

IntArray = npt.NDArray[np.int64]

ENERGY_15MIN_SCHEMA: Final = pa.schema(
    [
        pa.field("start", _US_TS, nullable=False),
        pa.field("device_id", pa.string()),
        pa.field("channel", pa.int32()),
        pa.field("site", pa.string()),
        pa.field("role", pa.string()),
        pa.field("import_wh", pa.float64()),
        pa.field("export_wh", pa.float64()),
        pa.field("interpolated_wh", pa.float64()),
        pa.field("coverage_s", pa.float64()),
        pa.field("samples", pa.int64()),
        pa.field("counter_minus_power_wh", pa.float64()),
        pa.field("method", pa.string()),
    ]
)
POWER_STATS_SCHEMA: Final = pa.schema(
    [
        pa.field("start", _US_TS, nullable=False),
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("channel", pa.int32(), nullable=False),
        pa.field("min_power_w", pa.float64()),
        pa.field("max_power_w", pa.float64()),
        pa.field("mean_power_w", pa.float64()),
        pa.field("samples", pa.int64()),
    ]
)


@dataclass(frozen=True, slots=True)
class RollupOptions:
    """Settings of the energy computation, the same as the raw path's.

    ``max_gap_s`` [s] and ``max_power_w`` [W] as in ``energy.*``; ``reach_ms`` [ms] how far
    beyond a day its readings are read (a whole number of days).
    """

    max_gap_s: float = 300.0
    max_power_w: float = 60_000.0
    reach_ms: int = DAY_MS

    @classmethod
    def from_settings(cls, settings: Any) -> RollupOptions:
        """Return the options the raw energy path uses under ``settings``."""
        return cls(
            max_gap_s=float(settings["energy.max_gap_s"]),
            max_power_w=float(settings["energy.max_power_w"]),
        )


class ReadingsSource(Protocol):
    """Where the job reads readings from: the lake's ``readings`` table, or a table in tests."""

    def read(self, start_ms: int, end_ms: int) -> pa.Table:
        """Return readings with ``start_ms <= ts < end_ms`` (at least :data:`READING_COLUMNS`)."""
        ...


@dataclass(frozen=True, slots=True)
class ArrowReadings:
    """Readings held in one Arrow table (tests, benchmarks)."""

    table: pa.Table

    def read(self, start_ms: int, end_ms: int) -> pa.Table:
        """Return the readings with ``start_ms <= ts < end_ms``."""
        ts = self.table["ts"].cast(_MS_TS).cast(pa.int64())
        mask = pc.and_(pc.greater_equal(ts, start_ms), pc.less(ts, end_ms))
        return self.table.filter(mask)


def _with_ms_ts(readings: pa.Table) -> pa.Table:
    """Return ``readings`` with ``ts`` in milliseconds, the unit the energy path works in."""
    index = readings.schema.get_field_index("ts")
    ts = readings["ts"]
    if ts.type != _MS_TS:
        readings = readings.set_column(index, "ts", ts.cast(_MS_TS))
    return readings


def _us(start_ms: IntArray) -> pa.Array:
    return pa.array(start_ms * 1000, pa.int64()).cast(_US_TS)


def energy_15min(
    readings: pa.Table, start_ms: int, end_ms: int, options: RollupOptions = RollupOptions()
) -> pa.Table:
    """Return the energy of every series of ``readings`` per UTC quarter-hour in [start, end).

    ``readings`` should reach beyond the range by ``options.reach_ms`` so edge intervals are
    whole. One row per series and quarter-hour, for every series with readings in the table.

    Raises:
        ValueError: the range does not start and end on quarter-hours.
    """
    if start_ms % QUARTER_HOUR_MS or end_ms % QUARTER_HOUR_MS or end_ms <= start_ms:
        raise ValueError("rollup ranges start and end on UTC quarter-hours")
    edges = np.arange(start_ms, end_ms + 1, QUARTER_HOUR_MS, dtype=np.int64)
    n = edges.size - 1
    columns: dict[str, list[Any]] = {name: [] for name in ENERGY_15MIN_SCHEMA.names}
    for series in split_series(_with_ms_ts(readings)):
        result = series_energy(
            series,
            edges,
            method="auto",
            max_gap_s=options.max_gap_s,
            max_power_w=options.max_power_w,
        )
        inside = (series.ts_ms >= start_ms) & (series.ts_ms < end_ms)
        inside &= np.isfinite(series.power_w)
        bucket = (series.ts_ms[inside] - start_ms) // QUARTER_HOUR_MS
        interpolated = getattr(result, "interpolated_wh", None)
        columns["start"].append(edges[:-1])
        columns["device_id"].append(np.full(n, series.device_id, dtype=object))
        columns["channel"].append(np.full(n, series.channel, dtype=np.int32))
        columns["import_wh"].append(result.import_wh)
        columns["export_wh"].append(result.export_wh)
        columns["interpolated_wh"].append(
            np.zeros(n) if interpolated is None else np.asarray(interpolated)
        )
        columns["coverage_s"].append(result.covered_s)
        columns["samples"].append(np.bincount(bucket, minlength=n).astype(np.int64))
        diff = result.counter_minus_power_wh
        columns["counter_minus_power_wh"].append(np.full(n, np.nan) if diff is None else diff)
        columns["method"].append(np.full(n, result.method, dtype=object))
    if not columns["start"]:
        return ENERGY_15MIN_SCHEMA.empty_table()
    start = np.concatenate(columns["start"])
    diff_all = np.concatenate(columns["counter_minus_power_wh"])
    arrays = {
        "start": _us(start),
        "device_id": pa.array(np.concatenate(columns["device_id"]), pa.string()),
        "channel": pa.array(np.concatenate(columns["channel"]), pa.int32()),
        "site": pa.nulls(start.size, pa.string()),
        "role": pa.nulls(start.size, pa.string()),
        "counter_minus_power_wh": pa.array(diff_all, pa.float64(), mask=np.isnan(diff_all)),
        "method": pa.array(np.concatenate(columns["method"]), pa.string()),
    }
    for name in ("import_wh", "export_wh", "interpolated_wh", "coverage_s", "samples"):
        arrays[name] = pa.array(np.concatenate(columns[name]))
    return pa.table([arrays[f.name] for f in ENERGY_15MIN_SCHEMA], schema=ENERGY_15MIN_SCHEMA)


def power_periods(readings: pa.Table, start_ms: int, end_ms: int, period_ms: int) -> pa.Table:
    """Return min, max and mean power per series and UTC period in [start, end).

    Only periods with at least one finite power sample get a row.
    """
    readings = _with_ms_ts(readings)
    columns: dict[str, list[Any]] = {name: [] for name in POWER_STATS_SCHEMA.names}
    for series in split_series(readings):
        lo, hi = np.searchsorted(series.ts_ms, [start_ms, end_ms])
        stats = power_stats(series.ts_ms[lo:hi], series.power_w[lo:hi], period_ms)
        k = stats.start_ms.size
        columns["start"].append(stats.start_ms)
        columns["device_id"].append(np.full(k, series.device_id, dtype=object))
        columns["channel"].append(np.full(k, series.channel, dtype=np.int32))
        columns["min_power_w"].append(stats.min_w)
        columns["max_power_w"].append(stats.max_w)
        columns["mean_power_w"].append(stats.mean_w)
        columns["samples"].append(stats.samples)
    if not columns["start"]:
        return POWER_STATS_SCHEMA.empty_table()
    arrays = [
        _us(np.concatenate(columns["start"])),
        pa.array(np.concatenate(columns["device_id"]), pa.string()),
        *(
            pa.array(np.concatenate(columns[f.name]), f.type)
            for f in POWER_STATS_SCHEMA
            if f.name not in ("start", "device_id")
        ),
    ]
    return pa.table(arrays, schema=POWER_STATS_SCHEMA)


@dataclass(frozen=True, slots=True)
class RollupTables:
    """The three rollups of a set of days."""

    energy_15min: pa.Table
    power_1min: pa.Table
    power_1h: pa.Table


def day_runs(days: Iterable[int]) -> list[tuple[int, int]]:
    """Return runs of consecutive days as (first, last + 1), days counted since the epoch."""
    ordered = sorted(set(days))
    runs = []
    for _, group in itertools.groupby(enumerate(ordered), key=lambda x: x[1] - x[0]):
        block = [d for _, d in group]
        runs.append((block[0], block[-1] + 1))
    return runs


def compute_days(
    source: ReadingsSource,
    days: Sequence[int],
    options: RollupOptions = RollupOptions(),
    *,
    days_per_read: int = 7,
) -> RollupTables:
    """Return the rollups of the UTC ``days`` (days since the epoch), reading from ``source``.

    Consecutive days are read together, ``days_per_read`` at a time plus the reach on each side.
    """
    energy: list[pa.Table] = []
    minutes: list[pa.Table] = []
    hours: list[pa.Table] = []
    for first, stop in day_runs(days):
        for a in range(first, stop, days_per_read):
            b = min(a + days_per_read, stop)
            start_ms, end_ms = a * DAY_MS, b * DAY_MS
            readings = source.read(start_ms - options.reach_ms, end_ms + options.reach_ms)
            energy.append(energy_15min(readings, start_ms, end_ms, options))
            minutes.append(power_periods(readings, start_ms, end_ms, MINUTE_MS))
            hours.append(power_periods(readings, start_ms, end_ms, HOUR_MS))

    def concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
        return pa.concat_tables(tables) if tables else schema.empty_table()

    return RollupTables(
        concat(energy, ENERGY_15MIN_SCHEMA),
        concat(minutes, POWER_STATS_SCHEMA),
        concat(hours, POWER_STATS_SCHEMA),
    )

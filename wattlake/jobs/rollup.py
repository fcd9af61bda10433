"""Rollups: energy per 15 minutes and power statistics per minute and hour, kept up to date.

The rollup tables are those of :data:`wattlake.schema.TABLES` with a rollup spec (kind of
aggregate, bucket length); this job computes each kind with its kernel (:data:`KERNELS`).
``energy_15min`` holds, per device and channel and UTC quarter-hour, what the raw energy path
(:func:`wattlake.energy.series.series_energy`, over the kernels in :mod:`wattlake.energy`) gives for
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
last run: the days of the data files added to table ``readings`` after the snapshot recorded in the
rollup table's newest snapshot summary (properties ``wattlake.readings-snapshot`` and
``wattlake.readings-sequence``: a data file keeps the sequence number of the commit that added it
when ``maintain`` expires that snapshot), widened by the reach. Late data for an old day recomputes
that day and its neighbours. Each run overwrites the affected day partitions of each rollup table in
one commit, so a crash leaves either the old rollups or the new ones, and running twice changes
nothing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from wattlake.energy.rollup import power_stats
from wattlake.energy.series import Series, SeriesEnergy, series_energies, site_energy, split_series
from wattlake.energy.sites import Site
from wattlake.jobs.compact import deduplicate, merge_order
from wattlake.lake import tables
from wattlake.lake.freshness import (
    DAY_MS,
    SITES_PROPERTY,
    days_added_since,
    file_day,
    readings_mark,
    reflected_sequence,
    site_hash,
)
from wattlake.lake.storage import Lake
from wattlake.progress import ProgressCallback, no_progress
from wattlake.schema import (
    ENERGY_BUCKETS_STORED,
    ENERGY_ROLLUP,
    POWER_ROLLUP,
    POWER_STATS_STORED,
    READINGS_TABLE,
    RECEIVE_LAG_COLUMN,
    ROLLUPS,
    SERIES_COLUMNS,
    TABLES,
    RollupKind,
)

_MS_TS: Final = pa.timestamp("ms", tz="UTC")
_US_TS: Final = pa.timestamp("us", tz="UTC")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

ENERGY_SCHEMA: Final = ENERGY_BUCKETS_STORED
POWER_STATS_SCHEMA: Final = POWER_STATS_STORED


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
        """Return readings with ``start_ms <= ts < end_ms`` (at least :data:`SERIES_COLUMNS`)."""
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


def _series(readings: pa.Table | Sequence[Series]) -> Sequence[Series]:
    """Return the series of ``readings`` (ms times), split once for all the rollups of a read."""
    if isinstance(readings, pa.Table):
        return split_series(_with_ms_ts(readings))
    return readings


def _us(start_ms: IntArray) -> pa.Array:
    return pa.array(start_ms * 1000, pa.int64()).cast(_US_TS)


def _check_range(start_ms: int, end_ms: int, bucket_ms: int) -> None:
    """Raise ValueError unless [start, end) is whole buckets of ``bucket_ms`` [ms], a whole
    number of which make a day."""
    if DAY_MS % bucket_ms or start_ms % bucket_ms or end_ms % bucket_ms or end_ms <= start_ms:
        raise ValueError(f"rollup ranges start and end on UTC buckets of {bucket_ms} ms")


def energy_buckets(
    readings: pa.Table | Sequence[Series],
    start_ms: int,
    end_ms: int,
    bucket_ms: int,
    options: RollupOptions = RollupOptions(),
) -> pa.Table:
    """Return the energy of every series of ``readings`` per UTC bucket of ``bucket_ms`` [ms]
    in [start, end) (``readings`` a table, or its series as :func:`_series` splits it).

    ``readings`` should reach beyond the range by ``options.reach_ms`` so edge intervals are
    whole. One row per series and bucket, for every series with readings in the table.

    Raises:
        ValueError: the range does not start and end on buckets.
    """
    _check_range(start_ms, end_ms, bucket_ms)
    columns: dict[str, list[Any]] = {name: [] for name in ENERGY_SCHEMA.names}
    day_edges = [start_ms, *range((start_ms // DAY_MS + 1) * DAY_MS, end_ms, DAY_MS), end_ms]
    quarters = {
        a: np.arange(a, b + 1, bucket_ms, dtype=np.int64) for a, b in itertools.pairwise(day_edges)
    }
    parts: list[tuple[Series, int, int]] = []
    for series in _series(readings):
        # Each day sees exactly the readings within the reach of its edges, whichever days were
        # read together, so a day's rollup does not depend on how the job batched its reads.
        for a, b in itertools.pairwise(day_edges):
            lo, hi = np.searchsorted(series.ts_ms, [a - options.reach_ms, b + options.reach_ms])
            if hi == lo:
                continue
            part = Series(
                series.device_id,
                series.channel,
                series.ts_ms[lo:hi],
                series.power_w[lo:hi],
                series.energy_wh[lo:hi],
                series.returned_energy_wh[lo:hi],
            )
            parts.append((part, a, b))
    results = series_energies(  # a thread per core
        [p for p, _, _ in parts],
        [quarters[a] for _, a, _ in parts],
        max_gap_s=options.max_gap_s,
        max_power_w=options.max_power_w,
    )
    for (part, a, b), result in zip(parts, results, strict=True):
        _append_day(columns, part, a, b, quarters[a], result, bucket_ms)
    if not columns["start"]:
        return ENERGY_SCHEMA.empty_table()
    start = np.concatenate(columns["start"])
    diff_all = np.concatenate(columns["counter_minus_power_wh"])
    arrays = {
        "start": _us(start),
        "device_id": pa.array(np.concatenate(columns["device_id"]), pa.string()),
        "channel": pa.array(np.concatenate(columns["channel"]), pa.int32()),
        # Device rows leave site and role empty; site rows (to come) name them.
        "site": pa.array(np.full(start.size, "", dtype=object), pa.string()),
        "role": pa.array(np.full(start.size, "", dtype=object), pa.string()),
        "counter_minus_power_wh": pa.array(diff_all, pa.float64(), mask=np.isnan(diff_all)),
        "method": pa.array(np.concatenate(columns["method"]), pa.string()),
    }
    for name in ("import_wh", "export_wh", "interpolated_wh", "coverage_s", "samples"):
        arrays[name] = pa.array(np.concatenate(columns[name]))
    return pa.table([arrays[f.name] for f in ENERGY_SCHEMA], schema=ENERGY_SCHEMA)


def _append_day(
    columns: dict[str, list[Any]],
    series: Series,
    start_ms: int,
    end_ms: int,
    edges: IntArray,
    result: SeriesEnergy,
    bucket_ms: int,
) -> None:
    """Append the buckets of ``bucket_ms`` [ms] (``edges``) of one series in [start, end), whose
    energy is ``result``, to ``columns``."""
    n = edges.size - 1
    inside = (series.ts_ms >= start_ms) & (series.ts_ms < end_ms) & np.isfinite(series.power_w)
    bucket = (series.ts_ms[inside] - start_ms) // bucket_ms
    interpolated = result.interpolated_wh
    columns["start"].append(edges[:-1])
    columns["device_id"].append(np.full(n, series.device_id, dtype=object))
    columns["channel"].append(np.full(n, series.channel, dtype=np.int32))
    columns["import_wh"].append(result.import_wh)
    columns["export_wh"].append(result.export_wh)
    columns["interpolated_wh"].append(np.zeros(n) if interpolated is None else interpolated)
    columns["coverage_s"].append(result.covered_s)
    columns["samples"].append(np.bincount(bucket, minlength=n).astype(np.int64))
    diff = result.counter_minus_power_wh
    columns["counter_minus_power_wh"].append(np.full(n, np.nan) if diff is None else diff)
    columns["method"].append(np.full(n, result.method, dtype=object))


def site_buckets(
    readings: pa.Table,
    sites: Sequence[Site],
    start_ms: int,
    end_ms: int,
    bucket_ms: int,
    options: RollupOptions = RollupOptions(),
) -> pa.Table:
    """Return the energy balance of every site per UTC bucket of ``bucket_ms`` [ms] in
    [start, end).

    The raw path's :func:`wattlake.energy.series.site_energy` over each day's buckets, from
    the readings within ``options.reach_ms`` of the day. Rows have ``device_id`` and ``channel``
    null, ``site`` and ``role`` set; per role (Wh):

    * ``grid``: ``import_wh`` grid import, ``export_wh`` grid export;
    * ``solar``: ``import_wh`` production; ``battery``: ``import_wh`` charge, ``export_wh``
      discharge;
    * ``consumption``, ``untracked`` and ``circuit:<name>``: ``import_wh`` that energy
      (a circuit's import minus export).

    ``coverage_s`` is the lowest coverage of the site's channels times the bucket length,
    ``interpolated_wh`` the site's interpolated energy, and ``method`` the phase netting of the
    bucket; both the same on every role row of a bucket.

    Raises:
        ValueError: the range does not start and end on buckets.
    """
    _check_range(start_ms, end_ms, bucket_ms)
    readings = _with_ms_ts(readings)
    ts = readings["ts"].cast(pa.int64())
    parts: list[dict[str, Any]] = []
    day_edges = [start_ms, *range((start_ms // DAY_MS + 1) * DAY_MS, end_ms, DAY_MS), end_ms]
    for site in sites:
        mine = pc.is_in(readings["device_id"], pa.array(site.device_ids, pa.string()))
        for a, b in itertools.pairwise(day_edges):
            window = pc.and_(
                mine,
                pc.and_(
                    pc.greater_equal(ts, a - options.reach_ms), pc.less(ts, b + options.reach_ms)
                ),
            )
            part = readings.filter(window)
            if part.num_rows == 0:
                continue
            edges = np.arange(a, b + 1, bucket_ms, dtype=np.int64)
            energy = site_energy(
                part, site, edges, max_gap_s=options.max_gap_s, max_power_w=options.max_power_w
            )
            parts.append(_site_rows(site.name, energy, edges))
    if not parts:
        return ENERGY_SCHEMA.empty_table()
    columns = {f.name: [v for p in parts for v in p[f.name]] for f in ENERGY_SCHEMA}
    arrays = {
        name: (
            _us(np.asarray(values, dtype=np.int64))
            if name == "start"
            else pa.array(values, ENERGY_SCHEMA.field(name).type)
        )
        for name, values in columns.items()
    }
    return pa.table([arrays[f.name] for f in ENERGY_SCHEMA], schema=ENERGY_SCHEMA)


def _site_rows(name: str, energy: Any, edges: IntArray) -> dict[str, list[Any]]:
    """Return the role rows of one site's balance over ``edges`` as columns."""
    b = energy.balance
    n = edges.size - 1
    zero = np.zeros(n)
    roles: list[tuple[str, FloatArray, FloatArray]] = [
        ("grid", b.grid_import_wh, b.grid_export_wh),
        ("solar", b.solar_wh, zero),
        ("battery", b.battery_charge_wh, b.battery_discharge_wh),
        ("consumption", b.consumption_wh, zero),
        ("untracked", b.untracked_wh, zero),
        *((f"circuit:{c}", wh, zero) for c, wh in b.circuits_wh.items()),
    ]
    coverage_s = np.asarray(energy.coverage, dtype=np.float64) * (np.diff(edges) / 1000.0)
    columns: dict[str, list[Any]] = {f.name: [] for f in ENERGY_SCHEMA}
    for role, imp, exp in roles:
        columns["start"].extend(edges[:-1].tolist())
        columns["device_id"].extend([None] * n)
        columns["channel"].extend([None] * n)
        columns["site"].extend([name] * n)
        columns["role"].extend([role] * n)
        columns["import_wh"].extend(np.asarray(imp, dtype=np.float64).tolist())
        columns["export_wh"].extend(np.asarray(exp, dtype=np.float64).tolist())
        columns["interpolated_wh"].extend(np.asarray(energy.interpolated_wh).tolist())
        columns["coverage_s"].extend(coverage_s.tolist())
        columns["samples"].extend([0] * n)
        columns["counter_minus_power_wh"].extend([None] * n)
        columns["method"].extend(list(energy.phase_netting))
    return columns


def power_periods(
    readings: pa.Table | Sequence[Series], start_ms: int, end_ms: int, period_ms: int
) -> pa.Table:
    """Return min, max and mean power per series and UTC period in [start, end) (``readings``
    a table, or its series as :func:`_series` splits it).

    Only periods with at least one finite power sample get a row.
    """
    columns: dict[str, list[Any]] = {name: [] for name in POWER_STATS_SCHEMA.names}
    for series in _series(readings):
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


# What computes each kind of rollup (:class:`wattlake.schema.RollupSpec`): a function of the
# series of a read, the range [start, end) [ms UTC], the bucket length [ms] and the options.
Kernel = Callable[[Sequence[Series], int, int, int, RollupOptions], pa.Table]
KERNELS: Final[dict[RollupKind, Kernel]] = {
    ENERGY_ROLLUP: energy_buckets,
    POWER_ROLLUP: lambda series, start_ms, end_ms, bucket_ms, _: power_periods(
        series, start_ms, end_ms, bucket_ms
    ),
}
ROLLUP_TABLES: Final = tuple(ROLLUPS)
# The energy rollup also holds the balance of each configured site (rows with ``site`` and
# ``role`` set) and records the sites' configuration; there is exactly one.
(SITES_TABLE,) = (name for name, spec in ROLLUPS.items() if spec.kind == ENERGY_ROLLUP)


@dataclass(frozen=True, slots=True)
class RollupTables:
    """The rollups of a set of days, by table name: ``result["power_1h"]``, or as an
    attribute, ``result.power_1h``."""

    by_table: Mapping[str, pa.Table]

    def __getitem__(self, name: str) -> pa.Table:
        """Return the rows of rollup table ``name``."""
        return self.by_table[name]

    def __getattr__(self, name: str) -> pa.Table:
        if name.startswith("_") or name == "by_table":
            raise AttributeError(name)
        try:
            return self.by_table[name]
        except KeyError:
            raise AttributeError(name) from None


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
    sites: Sequence[Site] = (),
    devices: bool = True,
    on_progress: ProgressCallback | None = None,
) -> RollupTables:
    """Return the rollups of the UTC ``days`` (days since the epoch), reading from ``source``:
    per device and channel (unless ``devices`` is false: then ``energy_15min`` only, with
    ``sites`` alone), and per site of ``sites`` in ``energy_15min``.

    Consecutive days are read together, ``days_per_read`` at a time plus the reach on each side;
    ``on_progress(done, total)`` counts the days computed, once per read.
    """
    parts: dict[str, list[pa.Table]] = {name: [] for name in ROLLUPS}
    report = on_progress or no_progress
    total = len(set(days))
    done = 0
    report(done, total)
    for first, stop in day_runs(days):
        for a in range(first, stop, days_per_read):
            b = min(a + days_per_read, stop)
            start_ms, end_ms = a * DAY_MS, b * DAY_MS
            readings = source.read(start_ms - options.reach_ms, end_ms + options.reach_ms)
            if sites:
                bucket_ms = ROLLUPS[SITES_TABLE].bucket_ms
                rows = site_buckets(readings, sites, start_ms, end_ms, bucket_ms, options)
                parts[SITES_TABLE].append(rows)
            if devices:
                series = _series(readings)  # split once for all the rollups
                for name, spec in ROLLUPS.items():
                    kernel = KERNELS[spec.kind]
                    parts[name].append(kernel(series, start_ms, end_ms, spec.bucket_ms, options))
            done += b - a
            report(done, total)

    return RollupTables(
        {
            name: pa.concat_tables(rows) if rows else TABLES[name].schema.empty_table()
            for name, rows in parts.items()
        }
    )


# -- the incremental job over the lake's tables --------------------------------------------------


@dataclass(frozen=True, slots=True)
class TableReadings:
    """Readings of the lake's ``readings`` table, read from the data files of a pruned scan."""

    lake: Lake
    snapshot_id: int | None = None

    def read(self, start_ms: int, end_ms: int) -> pa.Table:
        """Return the readings with ``start_ms <= ts < end_ms`` (float64 values, µs ts)."""
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

        # pyiceberg's predicates take (term, literal); its stubs declare pydantic fields.
        lower = GreaterThanOrEqual("ts", start_ms * 1000)  # type: ignore[call-arg, arg-type]
        upper = LessThan("ts", end_ms * 1000)  # type: ignore[call-arg, arg-type]
        window = And(lower, upper)
        tasks = tables.scan_files(self.lake, READINGS_TABLE, window, snapshot_id=self.snapshot_id)
        if any(task.delete_files for task in tasks):
            whole = tables.read_table(self.lake, READINGS_TABLE, window)
            return whole.select(list(SERIES_COLUMNS))
        paths = [tables.local_path(task.file.file_path) for task in tasks]
        if not paths:
            empty = TABLES[READINGS_TABLE].schema.empty_table()
            return tables.from_stored(empty.select(list(SERIES_COLUMNS)))
        stored = TABLES[READINGS_TABLE].schema
        ts_type = stored.field("ts").type
        lo = pa.scalar(start_ms * 1000, pa.int64()).cast(ts_type)
        hi = pa.scalar(end_ms * 1000, pa.int64()).cast(ts_type)
        # (The table's schema: a file written before a column existed reads it as null.)
        dataset = pads.dataset(paths, schema=stored, format="parquet", filesystem=self.lake.fs)
        table = dataset.to_table(
            columns=[*SERIES_COLUMNS, *COPY_COLUMNS],
            filter=(pads.field("ts") >= lo) & (pads.field("ts") < hi),
        )
        return tables.from_stored(without_copies(table).select(list(SERIES_COLUMNS)))


# What decides which copy of a reading counts: the earliest received, then the first source by
# name, as the views, the raw path and compaction keep it.
COPY_COLUMNS: Final = ("received_at", RECEIVE_LAG_COLUMN, "source")


def without_copies(stored: pa.Table) -> pa.Table:
    """Return stored readings as they are when sorted by device, channel and ts with no two of
    the same (device_id, channel, ts) (a compacted day), else each once, the copy the views
    keep, sorted (two copies of a reading can differ: a device resending a corrected value)."""
    if stored.num_rows < 2 or merge_order(stored, [stored.num_rows]) is not None:
        return stored  # (as one file: in order, no reading twice)
    return deduplicate(stored)


@dataclass(frozen=True, slots=True)
class RollupRun:
    """What one run of the rollup job did."""

    readings_snapshot: int | None
    days: tuple[int, ...]
    rows: dict[str, int]

    def as_row(self) -> dict[str, object]:
        """Return the run as a row for the CLI."""
        first = str(np.datetime64(self.days[0], "D")) if self.days else None
        last = str(np.datetime64(self.days[-1], "D")) if self.days else None
        return {
            "readings_snapshot": self.readings_snapshot,
            "days": len(self.days),
            "first_day": first,
            "last_day": last,
            **{f"{name}_rows": n for name, n in self.rows.items()},
        }


def _all_days(lake: Lake, snapshot_id: int) -> set[int]:
    tasks = tables.scan_files(lake, READINGS_TABLE, snapshot_id=snapshot_id)
    return {file_day(task.file) for task in tasks}


def _replace_days(
    lake: Lake, name: str, days: set[int], rows: pa.Table, properties: dict[str, str]
) -> None:
    """Replace the day partitions ``days`` of rollup table ``name`` by ``rows``, in one commit."""
    table = tables.open_table(lake, name)
    removed = []
    if table.current_snapshot() is not None:
        removed = [task.file for task in table.scan().plan_files() if file_day(task.file) in days]
    added = tables.write_data_files(table, name, tables.to_stored(name, rows))
    tables.commit(table, added, removed=removed, properties=properties)


def _widen(days: Iterable[int], options: RollupOptions) -> set[int]:
    reach_days = -(-options.reach_ms // DAY_MS)
    return {d + k for d in days for k in range(-reach_days, reach_days + 1)}


def _kept_rows(lake: Lake, days: set[int], drop_sites: set[str]) -> pa.Table:
    """Return the rows of the sites table (``energy_15min``) of ``days`` except those of sites
    ``drop_sites``."""
    table = tables.open_table(lake, SITES_TABLE)
    if table.current_snapshot() is None or not days:
        return ENERGY_SCHEMA.empty_table()
    tasks = [t for t in table.scan().plan_files() if file_day(t.file) in days]
    if not tasks:
        return ENERGY_SCHEMA.empty_table()
    if any(t.delete_files for t in tasks):
        rows = tables.read_table(lake, SITES_TABLE)
        day = rows["start"].cast(pa.int64()).to_numpy() // (DAY_MS * 1000)
        rows = rows.filter(pa.array(np.isin(day, sorted(days))))
    else:
        paths = [tables.local_path(t.file.file_path) for t in tasks]
        rows = pads.dataset(paths, format="parquet", filesystem=lake.fs).to_table()
    rows = rows.select(ENERGY_SCHEMA.names).cast(ENERGY_SCHEMA)
    dropped = pc.is_in(rows["site"], pa.array(sorted(drop_sites), pa.string()))
    return rows.filter(pc.invert(dropped))


def run_rollup(
    lake: Lake,
    options: RollupOptions = RollupOptions(),
    *,
    full: bool = False,
    sites: Mapping[str, Site] | None = None,
    on_progress: ProgressCallback | None = None,
) -> RollupRun:
    """Bring the rollup tables up to date with the readings table; return what was done.

    Recomputes the days touched by readings committed since the last run (every day with
    readings on the first run, after expired history, or with ``full``), widened by the reach,
    and replaces those days of each rollup table in one commit that records the readings
    snapshot it reflects. ``energy_15min`` also holds the balance of every site of ``sites``;
    its commits record a hash of each site's configuration, and a site whose configuration
    changed (or that was added or removed) is recomputed over every day with readings, its
    rows alone replaced. Running again without new readings or site changes does nothing.
    ``on_progress(done, total)`` counts the days computed (the total is known once the changed
    days are).

    Raises:
        StorageError: the lake or catalog could not be read or written; the rollup tables keep
            their previous contents.
    """
    sites = dict(sites or {})
    report = on_progress or no_progress
    report(0, None)
    wanted = {name: site_hash(site) for name, site in sorted(sites.items())}
    readings = tables.open_table(lake, READINGS_TABLE)
    current = readings.current_snapshot()
    if current is None:
        report(0, 0)
        return RollupRun(None, (), {})
    targets = {name: tables.open_table(lake, name) for name in ROLLUP_TABLES}
    processed = {name: reflected_sequence(readings, t) for name, t in targets.items()}
    stale = {name for name, since in processed.items() if since != current.sequence_number}
    recorded = json.loads(tables.last_property(targets[SITES_TABLE], SITES_PROPERTY) or "{}")
    changed = {n for n in {*wanted, *recorded} if wanted.get(n) != recorded.get(n)}
    if full:
        changed = set(wanted) | set(recorded)
    if not stale and not full and not changed:
        report(0, 0)
        return RollupRun(current.snapshot_id, (), {})
    committing = set(ROLLUP_TABLES) if full else set(stale)
    if changed:
        committing.add(SITES_TABLE)
    touched: set[int] = set()
    all_days: set[int] | None = None
    for name in ROLLUP_TABLES if full else sorted(stale):
        added = None if full else days_added_since(readings, processed[name])
        if added is None:
            all_days = _all_days(lake, current.snapshot_id)
            touched = all_days
            break
        touched |= added
    days = _widen(touched, options)
    source = TableReadings(lake, current.snapshot_id)
    site_days: set[int] = set()
    if changed:
        if all_days is None:
            all_days = _all_days(lake, current.snapshot_id)
        site_days = _widen(all_days, options) - days
    total = len(days) + len(site_days)
    result = compute_days(
        source,
        sorted(days),
        options,
        sites=list(sites.values()),
        on_progress=lambda done, _: report(done, total),
    )
    energy = result[SITES_TABLE]
    if changed:
        again = [sites[n] for n in sorted(changed) if n in sites]
        recomputed = compute_days(
            source,
            sorted(site_days),
            options,
            sites=again,
            devices=False,
            on_progress=lambda done, _: report(len(days) + done, total),
        )
        kept = _kept_rows(lake, site_days, changed)
        energy = pa.concat_tables([energy, kept, recomputed[SITES_TABLE]])
    properties = readings_mark(readings, current)
    outputs = {**result.by_table, SITES_TABLE: energy}
    for name in ROLLUP_TABLES:
        if name not in committing:
            continue
        if name == SITES_TABLE:
            props = {**properties, SITES_PROPERTY: json.dumps(wanted, sort_keys=True)}
            _replace_days(lake, name, days | site_days, outputs[name], props)
        else:
            _replace_days(lake, name, days, outputs[name], properties)
    return RollupRun(
        current.snapshot_id,
        tuple(sorted(days | site_days)),
        {n: t.num_rows for n, t in outputs.items()},
    )


def run(
    settings: Any,
    *,
    full: bool = False,
    on_progress: ProgressCallback | None = None,
    **_: Any,
) -> list[dict[str, object]]:
    """Run the rollup job over the lake of ``settings``, with the sites of its
    ``wattlake.toml`` (``[sites.*]``); ``on_progress`` counts days."""
    from wattlake.energy.sites import parse_sites

    sites = parse_sites(settings.tables.get("sites", {}))
    done = run_rollup(
        Lake.from_settings(settings),
        RollupOptions.from_settings(settings),
        full=full,
        sites=sites,
        on_progress=on_progress,
    )
    return [done.as_row()] if done.days else []

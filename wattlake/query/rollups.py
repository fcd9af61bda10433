"""Energy per bucket from rollups when they can answer, from raw readings otherwise.

One choice, made in :func:`energy_over_edges`: when every bucket edge falls on a UTC quarter-hour
(true of 15-minute, hourly, daily and monthly buckets in every zone whose offset is a multiple of
15 minutes, and of any range given as such dates or times) and table ``energy_15min`` is up to date
for the range, the quarter-hours of each series are summed into the buckets; otherwise the readings
are integrated (:func:`wattlake.query.energy.series_energy`). Both return one
:class:`~wattlake.query.energy.SeriesEnergy` per device channel, and the rollups hold exactly what
that function gives per quarter-hour, so the two agree to float rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms
from wattlake.energy.rollup import QUARTER_HOUR_MS
from wattlake.query.energy import Series, SeriesEnergy, series_energy, split_series

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
_MS_TS: Final = pa.timestamp("ms", tz="UTC")
_EMPTY_I: Final = np.zeros(0, dtype=np.int64)
_EMPTY_F: Final = np.zeros(0, dtype=np.float64)
_ROLLUP_COLUMNS: Final = [
    "start",
    "device_id",
    "channel",
    "import_wh",
    "export_wh",
    "interpolated_wh",
    "coverage_s",
    "counter_minus_power_wh",
    "method",
]


def aligned(edges_ms: npt.ArrayLike) -> bool:
    """Return whether every edge is a UTC quarter-hour, so rollups can answer."""
    edges = np.asarray(edges_ms, dtype=np.int64)
    return bool(edges.size >= 2 and not np.any(edges % QUARTER_HOUR_MS))


def _label(methods: list[str]) -> str:
    parts = {part for m in methods for part in m.split("+") if part}
    return "+".join(sorted(parts))


def series_from_rollups(
    rows: pa.Table, edges_ms: npt.ArrayLike, *, channel: int | None = None
) -> list[SeriesEnergy]:
    """Sum ``energy_15min`` rows into the buckets between ``edges_ms``, one result per series.

    ``rows`` must hold every quarter-hour of [first edge, last edge) that the rollup job
    computed; quarter-hours outside the range are ignored.

    Raises:
        ValueError: an edge is not a UTC quarter-hour.
    """
    edges = np.asarray(edges_ms, dtype=np.int64)
    if not aligned(edges):
        raise ValueError("rollups answer only buckets whose edges are UTC quarter-hours")
    if rows.num_rows == 0:
        return []
    if channel is not None:
        rows = rows.filter(pc.equal(rows["channel"], channel))
    rows = rows.sort_by(
        [("device_id", "ascending"), ("channel", "ascending"), ("start", "ascending")]
    )
    start = np.asarray(rows["start"].cast(_MS_TS).cast(pa.int64()).to_numpy(), dtype=np.int64)
    device = rows["device_id"].to_pylist()
    chan = np.asarray(rows["channel"].to_numpy(), dtype=np.int64)
    n = edges.size - 1
    bucket = np.searchsorted(edges, start, side="right") - 1
    keep = (start >= edges[0]) & (start < edges[-1])

    def values(name: str) -> FloatArray:
        column = rows[name].cast(pa.float64()).fill_null(np.nan)
        return np.asarray(column.to_numpy(), dtype=np.float64)

    imp, exp, cov = values("import_wh"), values("export_wh"), values("coverage_s")
    interp = values("interpolated_wh")
    diff = values("counter_minus_power_wh")
    method = rows["method"].to_pylist()
    new_series = np.ones(start.size, dtype=np.bool_)
    new_series[1:] = (chan[1:] != chan[:-1]) | np.array(
        [a != b for a, b in zip(device[1:], device[:-1], strict=True)], dtype=np.bool_
    )
    bounds = [*np.flatnonzero(new_series).tolist(), start.size]
    results = []
    for a, b in itertools.pairwise(bounds):
        sel = np.flatnonzero(keep[a:b]) + a
        if sel.size == 0:
            continue
        idx = bucket[sel]

        def total(v: FloatArray, idx: IntArray = idx, sel: IntArray = sel) -> FloatArray:
            return np.bincount(idx, weights=v[sel], minlength=n).astype(np.float64)

        has_diff = not np.all(np.isnan(diff[sel]))
        series = Series(device[a], int(chan[a]), _EMPTY_I, _EMPTY_F, _EMPTY_F, _EMPTY_F)
        results.append(
            SeriesEnergy(
                series,
                total(imp),
                total(exp),
                total(cov),
                _label([method[i] for i in sel]),
                total(np.nan_to_num(diff)) if has_diff else None,
                (),
                total(interp),
            )
        )
    return results


def series_from_readings(
    readings: pa.Table,
    edges_ms: npt.ArrayLike,
    *,
    channel: int | None = None,
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
) -> list[SeriesEnergy]:
    """Integrate readings into the buckets between ``edges_ms``: the raw path."""
    edges = np.asarray(edges_ms, dtype=np.int64)
    if readings.num_rows and readings["ts"].type != _MS_TS:
        readings = readings.set_column(
            readings.schema.get_field_index("ts"), "ts", readings["ts"].cast(_MS_TS)
        )
    return [
        series_energy(s, edges, method="auto", max_gap_s=max_gap_s, max_power_w=max_power_w)
        for s in split_series(readings, channel=channel)
    ]


@dataclass(frozen=True, slots=True)
class EnergySources:
    """Where :func:`energy_over_edges` reads from.

    ``rollups(start_ms, end_ms, device_id)`` returns the ``energy_15min`` rows of the range, or
    None when the rollups are not up to date for it; ``readings(start_ms, end_ms, device_id)``
    returns the readings the raw path needs for the range (with its margins).
    """

    rollups: Callable[[int, int, str | None], pa.Table | None]
    readings: Callable[[int, int, str | None], pa.Table]
    max_gap_s: float = 300.0
    max_power_w: float = 60_000.0


def energy_over_edges(
    sources: EnergySources,
    edges_ms: npt.ArrayLike,
    *,
    device_id: str | None = None,
    channel: int | None = None,
) -> tuple[list[SeriesEnergy], str]:
    """Return the energy of each series in the buckets between ``edges_ms``, and its source.

    The source is ``rollups`` when every edge is a UTC quarter-hour and the rollups are up to
    date for the range, else ``readings``.
    """
    edges = np.asarray(edges_ms, dtype=np.int64)
    start_ms, end_ms = int(edges[0]), int(edges[-1])
    if aligned(edges):
        rows = sources.rollups(start_ms, end_ms, device_id)
        if rows is not None:
            return series_from_rollups(rows, edges, channel=channel), "rollups"
    readings = sources.readings(start_ms, end_ms, device_id)
    results = series_from_readings(
        readings,
        edges,
        channel=channel,
        max_gap_s=sources.max_gap_s,
        max_power_w=sources.max_power_w,
    )
    return results, "readings"


def lake_sources(settings: Settings) -> EnergySources:
    """Return the lake's rollups and readings as :class:`EnergySources`.

    Rollups count as up to date for a range when table ``energy_15min`` reflects the readings
    table's current snapshot, or when no readings snapshot since the one it reflects added data
    to a day within a day of the range.
    """
    from wattlake.jobs.rollup import DAY_MS, READINGS_SNAPSHOT_PROPERTY, days_added_since
    from wattlake.lake import tables
    from wattlake.lake.storage import Lake
    from wattlake.query.energy import SERIES_COLUMNS, load_readings
    from wattlake.schema import ENERGY_15MIN_TABLE, READINGS_TABLE

    lake = Lake.from_settings(settings)

    def rollups(start_ms: int, end_ms: int, device_id: str | None) -> pa.Table | None:
        energy = tables.open_table(lake, ENERGY_15MIN_TABLE)
        done = tables.last_property(energy, READINGS_SNAPSHOT_PROPERTY)
        if done is None:
            return None
        readings = tables.open_table(lake, READINGS_TABLE)
        added = days_added_since(readings, int(done))
        if added is None:
            return None
        first, last = start_ms // DAY_MS - 1, (end_ms - 1) // DAY_MS + 1
        if any(first <= d <= last for d in added):
            return None
        tasks = tables.scan_files(lake, ENERGY_15MIN_TABLE)
        days = range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1)
        paths = [tables.local_path(t.file.file_path) for t in tasks if t.file.partition[0] in days]
        if any(t.delete_files for t in tasks) or not paths:
            return None if not paths and tasks else tables.read_table(lake, ENERGY_15MIN_TABLE)
        dataset = pads.dataset(paths, format="parquet", filesystem=lake.fs)
        wanted = pads.field("site") == ""  # device rows (site rows name a site instead)
        if device_id is not None:
            wanted = wanted & (pads.field("device_id") == device_id)
        return dataset.to_table(columns=_ROLLUP_COLUMNS, filter=wanted)

    def readings(start_ms: int, end_ms: int, device_id: str | None) -> pa.Table:
        devices = None if device_id is None else [device_id]
        return load_readings(settings, start_ms, end_ms, device_ids=devices, columns=SERIES_COLUMNS)

    return EnergySources(
        rollups=rollups,
        readings=readings,
        max_gap_s=float(settings["energy.max_gap_s"]),
        max_power_w=float(settings["energy.max_power_w"]),
    )


def energy_buckets(
    settings: Settings,
    device_id: str | None,
    start_ms: int,
    end_ms: int,
    every: str,
    tz: ZoneInfo,
    *,
    channel: int | None = None,
) -> tuple[IntArray, list[SeriesEnergy], str]:
    """Return the bucket edges of [start, end) by ``every`` in ``tz``, the energy of each series
    in them, and whether it came from ``rollups`` or ``readings``.

    Raises:
        UsageError: ``every`` is unknown or the range is empty.
    """
    edges = bucket_edges_ms(start_ms, end_ms, every, tz)
    results, source = energy_over_edges(
        lake_sources(settings), edges, device_id=device_id, channel=channel
    )
    return edges, results, source

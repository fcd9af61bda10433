"""Energy from the lake's readings: the raw path, one of the two sources of
:mod:`wattlake.query.energy` (the other is :mod:`wattlake.query.rollups`; neither imports the
other).

Readings of a range are read bracketed (the last reading before it and the first after it per
series and kind, so intervals crossing its edges count), straight from the data files of the
Iceberg scan plan (:mod:`wattlake.query.raw`) or through the ``readings`` view when the table has
delete files, and integrated by :mod:`wattlake.energy.series`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from wattlake.energy.series import (
    Series,
    SeriesEnergy,
    SiteEnergy,
    series_energies,
    series_energy,
    site_energy,
    split_series,
)
from wattlake.errors import NoDataError
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.query.raw import read_bracketed, read_series
from wattlake.query.reports import CostReport, cost_report, one_channel
from wattlake.query.sites import energy_options
from wattlake.schema import READING_SCHEMA, SERIES_COLUMNS

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from wattlake.config import Settings
    from wattlake.energy.sites import Site
    from wattlake.energy.tariffs import Tariff

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_S: Final = "make_timestamptz($start::BIGINT * 1000)"


_E: Final = "make_timestamptz($end::BIGINT * 1000)"


_BRACKETED_SQL: Final = f"""
WITH picked AS (
    SELECT * FROM readings WHERE $devices IS NULL OR list_contains($devices, device_id)
),
brackets AS (
    SELECT device_id, channel,
        max(ts) FILTER (WHERE ts < {_S}) AS before_any,
        max(ts) FILTER (WHERE ts < {_S} AND isfinite(power_w)) AS before_power,
        max(ts) FILTER (WHERE ts < {_S} AND energy_wh >= 0) AS before_import,
        max(ts) FILTER (WHERE ts < {_S} AND returned_energy_wh >= 0) AS before_export,
        min(ts) FILTER (WHERE ts >= {_E}) AS after_any,
        min(ts) FILTER (WHERE ts >= {_E} AND isfinite(power_w)) AS after_power,
        min(ts) FILTER (WHERE ts >= {_E} AND energy_wh >= 0) AS after_import,
        min(ts) FILTER (WHERE ts >= {_E} AND returned_energy_wh >= 0) AS after_export
    FROM picked GROUP BY device_id, channel
)
SELECT * FROM (
    SELECT * FROM picked WHERE ts >= {_S} AND ts < {_E}
    UNION ALL
    SELECT p.* FROM picked p JOIN brackets b
        ON p.device_id = b.device_id AND p.channel = b.channel
    WHERE p.ts IN (b.before_any, b.before_power, b.before_import, b.before_export,
                   b.after_any, b.after_power, b.after_import, b.after_export)
)
ORDER BY device_id, channel, ts
"""


def bracketed_readings(
    con: duckdb.DuckDBPyConnection,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
) -> pa.Table:
    """Return the readings in [start, end) and, per device channel, the nearest on each side.

    However far the nearest reading before ``start_ms`` and the first at or after ``end_ms`` are
    (of any kind, and of power, import counter and export counter each), they are included, so
    the steps that cross the edges are there and the gap rules decide what they are worth.

    Parameters
    ----------
    con : duckdb connection
        With a ``readings`` view, e.g. :func:`wattlake.query.engine.connect`.
    start_ms, end_ms : int
        Range [ms UTC].
    device_ids : sequence of str, optional
        Only these devices (default: every device).
    """
    params = {
        "start": int(start_ms),
        "end": int(end_ms),
        "devices": None if device_ids is None else list(device_ids),
    }
    table = con.sql(_BRACKETED_SQL, params=params).to_arrow_table()
    return table.cast(READING_SCHEMA, safe=False)


def load_readings(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Return :func:`lake_readings` of the lake of ``settings``."""
    lake = Lake.from_settings(settings)
    return lake_readings(lake, start_ms, end_ms, device_ids=device_ids, columns=columns)


def lake_readings(
    lake: Lake,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Return the lake's readings for [start, end), bracketed (see :func:`bracketed_readings`),
    with ``columns`` only if given (e.g. :data:`SERIES_COLUMNS`, all that :func:`split_series`
    reads).

    Read from the data files directly (:func:`wattlake.query.raw.read_bracketed`), or
    through the ``readings`` view when the table has delete files.
    """
    table = read_bracketed(lake, start_ms, end_ms, device_ids=device_ids, columns=columns)
    if table is None:
        table = bracketed_readings(connect(lake), start_ms, end_ms, device_ids=device_ids)
        if columns is not None:
            table = table.select([c for c in table.column_names if c in columns])
    return table


def lake_series(
    lake: Lake,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
) -> list[Series]:
    """Return the lake's readings for [start, end), bracketed, as one series per device channel:
    what :func:`split_series` makes of :func:`lake_readings` with :data:`SERIES_COLUMNS`, read
    straight into numpy arrays (:func:`wattlake.query.raw.read_series`) unless the table has
    delete files.
    """
    series = read_series(lake, start_ms, end_ms, device_ids=device_ids)
    if series is None:
        table = lake_readings(lake, start_ms, end_ms, device_ids=device_ids, columns=SERIES_COLUMNS)
        series = split_series(table)
    return series


_MS_TS: Final = pa.timestamp("ms", tz="UTC")


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
    series = split_series(readings, channel=channel)
    return series_energies(series, edges, max_gap_s=max_gap_s, max_power_w=max_power_w)


def site_energy_from_readings(
    settings: Settings,
    site: Site,
    edges_ms: npt.ArrayLike,
    *,
    method: str = "auto",
    gap_policy: str = "skip",
) -> SiteEnergy:
    """Return the balance of ``site`` per bucket between ``edges_ms`` from its readings."""
    edges = np.asarray(edges_ms, dtype=np.int64)
    table = load_readings(settings, int(edges[0]), int(edges[-1]), device_ids=site.device_ids)
    max_gap_s, max_power_w = energy_options(settings)
    return site_energy(
        table,
        site,
        edges,
        method=method,
        max_gap_s=max_gap_s,
        max_power_w=max_power_w,
        gap_policy=gap_policy,
    )


def cost_from_readings(
    settings: Settings,
    tariff: Tariff,
    tz: ZoneInfo,
    start_ms: int,
    end_ms: int,
    *,
    site: Site | None = None,
    device_id: str | None = None,
    channel: int | None = None,
    method: str = "auto",
    shift_share: float | None = None,
) -> CostReport:
    """Return cost rows with coverage, the gaps and warnings of [start, end) under ``tariff``
    from the readings: of the grid channels of ``site``, else of each device channel."""
    devices = site.device_ids if site else ([device_id] if device_id else None)
    table = load_readings(settings, start_ms, end_ms, device_ids=devices)
    max_gap_s, max_power_w = energy_options(settings)
    return cost_report(
        table,
        tariff,
        start_ms,
        end_ms,
        tz,
        site=site,
        channel=channel,
        method=method,
        max_gap_s=max_gap_s,
        max_power_w=max_power_w,
        shift_share=shift_share,
        min_coverage=float(settings["cost.min_coverage"]),
    )


def hourly_from_readings(
    settings: Settings,
    edges: IntArray,
    *,
    site: Site | None = None,
    device_id: str | None = None,
    channel: int | None = None,
) -> tuple[FloatArray, FloatArray]:
    """Return consumption and solar production per hour between ``edges`` (whole UTC hours)
    from the readings [Wh]; see :func:`wattlake.query.energy.hourly_energy`.

    Raises:
        UsageError: several devices, or several channels of the device and no ``channel``.
        NoDataError: no readings in the range.
    """
    first_ms, last_ms = int(edges[0]), int(edges[-1])
    max_gap_s, max_power_w = energy_options(settings)
    if site is not None:
        table = load_readings(settings, first_ms, last_ms, device_ids=site.device_ids)
        if table.num_rows == 0:
            raise NoDataError(f"The lake has no readings of site {site.name} in this range.")
        energy = site_energy(table, site, edges, max_gap_s=max_gap_s, max_power_w=max_power_w)
        seen = energy.coverage > 0
        consumption = np.where(seen, energy.balance.consumption_wh, np.nan)
        solar = np.where(seen, energy.balance.solar_wh, np.nan)
        return consumption, solar
    table = load_readings(
        settings, first_ms, last_ms, device_ids=[device_id] if device_id else None
    )
    series = split_series(table, channel=channel)
    if not series:
        which = f"device {device_id}" if device_id else "any device"
        if channel is not None:
            which += f" channel {channel}"
        raise NoDataError(f"The lake has no readings of {which} in this range.")
    one_channel(series)
    result = series_energy(series[0], edges, max_gap_s=max_gap_s, max_power_w=max_power_w)
    consumption = np.where(result.covered_s > 0, result.import_wh, np.nan)
    return consumption, np.full(edges.size - 1, np.nan)

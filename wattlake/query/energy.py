"""Energy and cost from lake readings: glue between Arrow tables and the numpy energy kernel.

A *series* is one (device, channel). Readings may arrive unsorted and with exact duplicates on
(device_id, channel, ts); the first copy wins. Each series is integrated on its own, then the
channels of a device are **summed** (a Shelly EM's two channels measure two different circuits, so
their sum is the device's energy); pass ``channel`` to take one channel only.

Method ``auto`` (the default) takes a channel's energy from its cumulative counters
(``energy_wh`` for import, ``returned_energy_wh`` for export) when it has at least two readings of
them, shaped in time by its power samples, and otherwise integrates ``power_w`` with the
trapezoid rule. ``trapezoid``, ``left`` and ``right`` always integrate power.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.energy.buckets import format_local
from wattlake.energy.counters import CounterEvent, clean_counter, counter_buckets
from wattlake.energy.integrate import METHODS, integrate_power
from wattlake.energy.tariffs import (
    EnergyOverEdges,
    Tariff,
    TariffCost,
    tariff_cost,
    tariff_segments,
)
from wattlake.errors import UsageError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ENERGY_METHODS: Final[tuple[str, ...]] = ("auto", *METHODS)
ENERGY_COLUMNS: Final[tuple[str, ...]] = (
    "device_id",
    "start",
    "end",
    "import_wh",
    "export_wh",
    "net_wh",
    "coverage",
    "gap_s",
    "method",
    "channels",
    "counter_minus_power_wh",
)


@dataclass(frozen=True, slots=True)
class Series:
    """The readings of one device channel, sorted by time without duplicates."""

    device_id: str
    channel: int
    ts_ms: IntArray
    power_w: FloatArray
    energy_wh: FloatArray
    returned_energy_wh: FloatArray


def _float_column(table: pa.Table, name: str) -> FloatArray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    column = table[name].cast(pa.float64()).fill_null(np.nan)
    return np.asarray(column.to_numpy(), dtype=np.float64)


def split_series(table: pa.Table, *, channel: int | None = None) -> list[Series]:
    """Sort readings, drop exact duplicates and cut them into one series per device channel.

    Raises:
        UsageError: the table lacks ``ts``, ``device_id`` or ``channel``.
    """
    missing = {"ts", "device_id", "channel"} - set(table.column_names)
    if missing:
        raise UsageError(f"Readings lack column(s) {', '.join(sorted(missing))}.")
    if channel is not None:
        table = table.filter(pc.equal(table["channel"], channel))
    if table.num_rows == 0:
        return []
    table = table.sort_by(
        [("device_id", "ascending"), ("channel", "ascending"), ("ts", "ascending")]
    )
    encoded = pc.dictionary_encode(table["device_id"]).combine_chunks()
    names = encoded.dictionary.to_pylist()
    dev = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    ch = np.asarray(table["channel"].to_numpy(), dtype=np.int64)
    ts = np.asarray(table["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64)
    power = _float_column(table, "power_w")
    energy = _float_column(table, "energy_wh")
    returned = _float_column(table, "returned_energy_wh")
    new_series = np.ones(ts.size, dtype=np.bool_)
    new_series[1:] = (dev[1:] != dev[:-1]) | (ch[1:] != ch[:-1])
    duplicate = np.zeros(ts.size, dtype=np.bool_)
    duplicate[1:] = ~new_series[1:] & (ts[1:] == ts[:-1])
    keep = ~duplicate
    starts = np.flatnonzero(new_series[keep])
    dev, ch, ts = dev[keep], ch[keep], ts[keep]
    power, energy, returned = power[keep], energy[keep], returned[keep]
    bounds = [*starts.tolist(), ts.size]
    return [
        Series(names[dev[a]], int(ch[a]), ts[a:b], power[a:b], energy[a:b], returned[a:b])
        for a, b in itertools.pairwise(bounds)
    ]


@dataclass(frozen=True, slots=True)
class SeriesEnergy:
    """Energy of one series per bucket, with the method used and anomalies found."""

    series: Series
    import_wh: FloatArray
    export_wh: FloatArray
    covered_s: FloatArray
    method: str
    counter_minus_power_wh: FloatArray | None
    events: tuple[CounterEvent, ...] = field(default=())


def series_energy(
    series: Series,
    edges_ms: IntArray,
    *,
    method: str = "auto",
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
    gap_policy: str = "skip",
) -> SeriesEnergy:
    """Return the energy of one series in each bucket between ``edges_ms``.

    Raises:
        UsageError: ``method`` is unknown.
    """
    if method not in ENERGY_METHODS:
        raise UsageError(f"Unknown method {method!r}; use one of {', '.join(ENERGY_METHODS)}.")
    power_method = "trapezoid" if method == "auto" else method
    n_buckets = edges_ms.size - 1
    has_power = int(np.isfinite(series.power_w).sum()) >= 2
    power = None
    if has_power:
        power = integrate_power(
            series.ts_ms,
            series.power_w,
            edges_ms,
            method=power_method,
            max_gap_s=max_gap_s,
            gap_policy=gap_policy,
        )
    use_counter = method == "auto" and int(np.isfinite(series.energy_wh).sum()) >= 2
    if not use_counter:
        if power is None:
            zeros = np.zeros(n_buckets)
            return SeriesEnergy(series, zeros, zeros.copy(), zeros.copy(), power_method, None)
        return SeriesEnergy(
            series, power.import_wh, power.export_wh, power.covered_s, power_method, None
        )

    shape_ts = series.ts_ms if has_power else None
    shape_w = series.power_w if has_power else None
    imported = clean_counter(series.ts_ms, series.energy_wh, max_power_w=max_power_w)
    import_b = counter_buckets(
        imported, edges_ms, power_ts_ms=shape_ts, power_w=shape_w, max_gap_s=max_gap_s
    )
    events = list(imported.events)
    if int(np.isfinite(series.returned_energy_wh).sum()) >= 2:
        returned = clean_counter(series.ts_ms, series.returned_energy_wh, max_power_w=max_power_w)
        export_wh = counter_buckets(
            returned,
            edges_ms,
            power_ts_ms=shape_ts,
            power_w=shape_w,
            export=True,
            max_gap_s=max_gap_s,
        ).energy_wh
        events.extend(returned.events)
    elif power is not None:
        export_wh = power.export_wh
    else:
        export_wh = np.zeros(n_buckets)
    diff = import_b.energy_wh - power.import_wh if power is not None else None
    return SeriesEnergy(
        series, import_b.energy_wh, export_wh, import_b.covered_s, "counter", diff, tuple(events)
    )


def _round(value: float, digits: int) -> float:
    return round(float(value), digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def energy_rows(
    table: pa.Table,
    edges_ms: IntArray,
    tz: ZoneInfo,
    *,
    method: str = "auto",
    channel: int | None = None,
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
    gap_policy: str = "skip",
) -> tuple[list[dict[str, Any]], list[SeriesEnergy]]:
    """Return one row per device and bucket, and the per-series results behind them.

    Each row: ``device_id``, ``start`` and ``end`` (ISO 8601 with the local offset; start
    inclusive, end exclusive), ``import_wh``, ``export_wh``, ``net_wh`` [Wh], ``coverage`` (the
    lowest of the device's channels, 0–1), ``gap_s`` (the most uncovered time of its channels
    [s]), ``method``, ``channels`` and ``counter_minus_power_wh`` (counter energy minus power
    energy where both exist [Wh], else null).

    Raises:
        UsageError: ``method`` is unknown.
    """
    results = [
        series_energy(
            s,
            edges_ms,
            method=method,
            max_gap_s=max_gap_s,
            max_power_w=max_power_w,
            gap_policy=gap_policy,
        )
        for s in split_series(table, channel=channel)
    ]
    labels = [format_local(int(e), tz) for e in edges_ms]
    bucket_s = np.diff(edges_ms).astype(np.float64) / 1000.0
    rows: list[dict[str, Any]] = []
    for device_id, group in _by_device(results):
        imp = np.sum([r.import_wh for r in group], axis=0)
        exp = np.sum([r.export_wh for r in group], axis=0)
        covered = np.min([r.covered_s for r in group], axis=0)
        diffs = [r.counter_minus_power_wh for r in group if r.counter_minus_power_wh is not None]
        diff = np.sum(diffs, axis=0) if diffs else None
        method_label = "+".join(sorted({r.method for r in group}))
        channels = ",".join(str(r.series.channel) for r in group)
        for j in range(edges_ms.size - 1):
            coverage = covered[j] / bucket_s[j] if bucket_s[j] > 0 else 0.0
            rows.append(
                {
                    "device_id": device_id,
                    "start": labels[j],
                    "end": labels[j + 1],
                    "import_wh": _round(imp[j], 3),
                    "export_wh": _round(exp[j], 3),
                    "net_wh": _round(imp[j] - exp[j], 3),
                    "coverage": _round(coverage, 4),
                    "gap_s": _round(bucket_s[j] - covered[j], 3),
                    "method": method_label,
                    "channels": channels,
                    "counter_minus_power_wh": None if diff is None else _round(diff[j], 3),
                }
            )
    return rows, results


def _by_device(results: Sequence[SeriesEnergy]) -> Iterator[tuple[str, list[SeriesEnergy]]]:
    groups: dict[str, list[SeriesEnergy]] = {}
    for r in results:
        groups.setdefault(r.series.device_id, []).append(r)
    yield from groups.items()


def segment_energy(
    series: Sequence[Series],
    *,
    method: str = "auto",
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
) -> EnergyOverEdges:
    """Return a function that sums import and export of all ``series`` over given edges [Wh].

    The function has the shape :func:`wattlake.energy.tariffs.compare_tariffs` expects.
    """

    def over(edges_ms: IntArray) -> tuple[FloatArray, FloatArray]:
        imp = np.zeros(edges_ms.size - 1)
        exp = np.zeros(edges_ms.size - 1)
        for s in series:
            r = series_energy(
                s, edges_ms, method=method, max_gap_s=max_gap_s, max_power_w=max_power_w
            )
            imp += r.import_wh
            exp += r.export_wh
        return imp, exp

    return over


def table_cost(
    table: pa.Table,
    tariff: Tariff,
    start_ms: int,
    end_ms: int,
    *,
    method: str = "auto",
    channel: int | None = None,
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
) -> TariffCost:
    """Return the cost of all readings in ``table`` over [start, end) under ``tariff``.

    Raises:
        UsageError: bad method, or the tariff has no prices for the range.
    """
    over = segment_energy(
        split_series(table, channel=channel),
        method=method,
        max_gap_s=max_gap_s,
        max_power_w=max_power_w,
    )
    segments = tariff_segments(tariff, start_ms, end_ms)
    imp, exp = over(segments.edges_ms)
    return tariff_cost(tariff, segments, imp, exp)

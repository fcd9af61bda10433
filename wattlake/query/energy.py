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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.energy.buckets import format_local
from wattlake.energy.counters import (
    CleanCounter,
    CounterEvent,
    PowerReference,
    clean_counter,
    counter_buckets,
    power_reference,
)
from wattlake.energy.integrate import METHODS, integrate_power
from wattlake.energy.tariffs import (
    EnergyOverEdges,
    Tariff,
    TariffCost,
    tariff_cost,
    tariff_segments,
)
from wattlake.errors import UsageError
from wattlake.schema import READING_SCHEMA

if TYPE_CHECKING:
    from wattlake.config import Settings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ENERGY_METHODS: Final[tuple[str, ...]] = ("auto", *METHODS)
ENERGY_COLUMNS: Final[tuple[str, ...]] = (
    "device_id",
    "channel",
    "start",
    "end",
    "import_wh",
    "export_wh",
    "net_wh",
    "coverage",
    "gap_s",
    "interpolated_wh",
    "method",
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
    """Energy of one series per bucket, with the method used and anomalies found.

    ``covered_s`` is the time of each bucket backed by readings no further apart than
    ``max_gap_s`` [s]; ``interpolated_wh`` the import and export energy in the rest [Wh].
    """

    series: Series
    import_wh: FloatArray
    export_wh: FloatArray
    covered_s: FloatArray
    method: str
    counter_minus_power_wh: FloatArray | None
    events: tuple[CounterEvent, ...] = field(default=())
    interpolated_wh: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class _CounterPlan:
    """One cleaned counter and where on a timeline it counts."""

    clean: CleanCounter
    long_step: npt.NDArray[np.bool_]

    def bounds(self) -> IntArray:
        """Return the instants where counting starts or stops or a long step begins or ends."""
        t = self.clean.ts_ms
        special = np.flatnonzero(~self.clean.counts | self.long_step)
        return np.concatenate((t[[0, -1]], t[special], t[special + 1]))

    def classify(self, mid_ms: FloatArray) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Return, per segment midpoint, whether the counter counts there and by a long step."""
        t = self.clean.ts_ms
        k = np.searchsorted(t, mid_ms, side="right") - 1
        inside = (k >= 0) & (k <= t.size - 2)
        kk = np.where(inside, k, 0)
        counting = inside & self.clean.counts[kk]
        return counting, counting & self.long_step[kk]


def _plan(
    ts_ms: IntArray,
    counter_wh: FloatArray,
    *,
    max_power_w: float,
    max_gap_ms: float,
    reference: PowerReference | None,
) -> _CounterPlan | None:
    clean = clean_counter(ts_ms, counter_wh, max_power_w=max_power_w, power=reference)
    if clean.ts_ms.size < 2:
        return None
    return _CounterPlan(clean, np.diff(clean.ts_ms) > max_gap_ms)


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

    With method ``auto`` a cumulative counter wins wherever it counts: between its first and last
    accepted reading, except across a reset or a lasting jump. Everywhere else (before a counter
    appears, after it stops, across a reset) the power samples give the energy. Coverage is the
    time backed by readings no further apart than ``max_gap_s``: a counter step that short, or
    power samples that close; energy in the rest is also reported as ``interpolated_wh``.

    Raises:
        UsageError: ``method`` is unknown.
    """
    if method not in ENERGY_METHODS:
        raise UsageError(f"Unknown method {method!r}; use one of {', '.join(ENERGY_METHODS)}.")
    power_method = "trapezoid" if method == "auto" else method
    edges = np.asarray(edges_ms, dtype=np.int64)
    n_buckets = edges.size - 1
    max_gap_ms = max_gap_s * 1000.0
    ts = series.ts_ms
    has_power = int(np.isfinite(series.power_w).sum()) >= 2
    auto = method == "auto"
    use_import = auto and int(np.isfinite(series.energy_wh).sum()) >= 2
    use_export = auto and int(np.isfinite(series.returned_energy_wh).sum()) >= 2
    if n_buckets <= 0:
        zeros = np.zeros(0)
        return SeriesEnergy(series, zeros, zeros, zeros, power_method, None, (), zeros)

    reference = power_reference(ts, series.power_w, max_gap_s=max_gap_s) if has_power else None
    events: list[CounterEvent] = []
    plans: list[_CounterPlan | None] = [None, None]
    for i, (wanted, values) in enumerate(
        ((use_import, series.energy_wh), (use_export, series.returned_energy_wh))
    ):
        if wanted:
            plan = _plan(
                ts, values, max_power_w=max_power_w, max_gap_ms=max_gap_ms, reference=reference
            )
            if plan is not None:
                events.extend(plan.clean.events)
            plans[i] = plan

    # Refine the buckets at every instant where the source or the coverage can change, so each
    # refined segment is wholly counted or not, and wholly covered or not.
    bounds = [edges]
    if has_power:
        finite = np.isfinite(series.power_w)
        pts = ts[finite] if not finite.all() else ts
        gaps = np.flatnonzero(np.diff(pts) > max_gap_ms)
        bounds.extend((pts[[0, -1]], pts[gaps], pts[gaps + 1]))
    for plan in plans:
        if plan is not None:
            bounds.append(plan.bounds())
    if len(bounds) > 1:
        refined = np.unique(np.concatenate(bounds))
        refined = refined[(refined >= edges[0]) & (refined <= edges[-1])]
    else:
        refined = edges
    seg_ms = np.diff(refined).astype(np.float64)
    mid = refined[:-1] + seg_ms * 0.5

    if has_power:
        power = integrate_power(
            ts,
            series.power_w,
            refined,
            method=power_method,
            max_gap_s=max_gap_s,
            gap_policy=gap_policy,
        )
        p_imp, p_exp, covered = power.import_wh, power.export_wh, power.covered_s
    else:
        p_imp = np.zeros(seg_ms.size)
        p_exp, covered = p_imp.copy(), p_imp.copy()
    shape_ts = ts if has_power else None
    shape_w = series.power_w if has_power else None
    imp, exp = p_imp, p_exp
    labels: set[str] = set()
    diff = None
    counted_any = np.zeros(seg_ms.size, dtype=np.bool_)
    for i, plan in enumerate(plans):
        if plan is None:
            continue
        counted = counter_buckets(
            plan.clean,
            refined,
            power_ts_ms=shape_ts,
            power_w=shape_w,
            export=i == 1,
            max_gap_s=max_gap_s,
        ).energy_wh
        counting, long_step = plan.classify(mid)
        counted_any |= counting
        if i == 0:
            imp = np.where(counting, counted, p_imp)
            if has_power:
                diff = np.where(counting, counted - p_imp, 0.0)
        else:
            exp = np.where(counting, counted, p_exp)
        # A counted step no longer than max_gap_s backs its time; a long one only where power
        # samples back it.
        covered = np.where(counting & ~long_step, seg_ms / 1000.0, covered)
    if counted_any.any():
        labels.add("counter")
    if (has_power and (~counted_any & (covered > 0)).any()) or not labels:
        labels.add(power_method)
    uncovered = np.divide(
        seg_ms / 1000.0 - covered, seg_ms / 1000.0, out=np.zeros_like(seg_ms), where=seg_ms > 0
    )
    interpolated = (imp + exp) * uncovered

    if refined is not edges:
        at = np.searchsorted(refined, edges)

        def to_buckets(values: FloatArray) -> FloatArray:
            if values.size == 0:
                return np.zeros(n_buckets)
            return np.add.reduceat(values, at[:-1])

        imp, exp, covered, interpolated = (to_buckets(x) for x in (imp, exp, covered, interpolated))
        diff = None if diff is None else to_buckets(diff)
    return SeriesEnergy(
        series,
        imp,
        exp,
        covered,
        "+".join(sorted(labels)),
        diff,
        tuple(sorted(events, key=lambda e: (e.start_ms, e.kind))),
        interpolated,
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
    """Return one row per device channel and bucket, and the per-series results behind them.

    Channels are never summed: without a site (see :mod:`wattlake.energy.sites`) nothing says
    whether two channels of a meter measure the grid and a circuit behind it, or two phases.
    Each row: ``device_id``, ``channel``, ``start`` and ``end`` (ISO 8601 with the local offset;
    start inclusive, end exclusive), ``import_wh``, ``export_wh``, ``net_wh`` [Wh], ``coverage``
    (share of the bucket backed by readings no further apart than ``max_gap_s``, 0–1),
    ``gap_s`` (the rest [s]), ``interpolated_wh`` (import and export energy in that rest [Wh]),
    ``method`` and ``counter_minus_power_wh`` (counter energy minus power energy where both
    exist [Wh], else null).

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
    for r in results:
        diff = r.counter_minus_power_wh
        interpolated = r.interpolated_wh if r.interpolated_wh is not None else r.import_wh * 0
        for j in range(edges_ms.size - 1):
            coverage = r.covered_s[j] / bucket_s[j] if bucket_s[j] > 0 else 0.0
            rows.append(
                {
                    "device_id": r.series.device_id,
                    "channel": r.series.channel,
                    "start": labels[j],
                    "end": labels[j + 1],
                    "import_wh": _round(r.import_wh[j], 3),
                    "export_wh": _round(r.export_wh[j], 3),
                    "net_wh": _round(r.import_wh[j] - r.export_wh[j], 3),
                    "coverage": _round(coverage, 4),
                    "gap_s": _round(bucket_s[j] - r.covered_s[j], 3),
                    "interpolated_wh": _round(interpolated[j], 3),
                    "method": r.method,
                    "counter_minus_power_wh": None if diff is None else _round(diff[j], 3),
                }
            )
    return rows, results


_BRACKETED_SQL: Final = """
WITH picked AS (
    SELECT * FROM readings WHERE $devices IS NULL OR list_contains($devices, device_id)
),
brackets AS (
    SELECT device_id, channel,
        max(ts) FILTER (WHERE ts < epoch_ms($start)) AS before_any,
        max(ts) FILTER (WHERE ts < epoch_ms($start) AND isfinite(power_w)) AS before_power,
        max(ts) FILTER (WHERE ts < epoch_ms($start) AND energy_wh >= 0) AS before_import,
        max(ts) FILTER (WHERE ts < epoch_ms($start) AND returned_energy_wh >= 0) AS before_export,
        min(ts) FILTER (WHERE ts >= epoch_ms($end)) AS after_any,
        min(ts) FILTER (WHERE ts >= epoch_ms($end) AND isfinite(power_w)) AS after_power,
        min(ts) FILTER (WHERE ts >= epoch_ms($end) AND energy_wh >= 0) AS after_import,
        min(ts) FILTER (WHERE ts >= epoch_ms($end) AND returned_energy_wh >= 0) AS after_export
    FROM picked GROUP BY device_id, channel
)
SELECT * FROM (
    SELECT * FROM picked WHERE ts >= epoch_ms($start) AND ts < epoch_ms($end)
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
    return table.cast(READING_SCHEMA)


def load_readings(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
) -> pa.Table:
    """Return the lake's readings for [start, end), bracketed (see :func:`bracketed_readings`)."""
    from wattlake.lake.storage import Lake
    from wattlake.query.engine import connect

    return bracketed_readings(
        connect(Lake.from_settings(settings)), start_ms, end_ms, device_ids=device_ids
    )


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

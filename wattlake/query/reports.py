"""Figures shaped for the commands and the pages: rows of energy per bucket, site balances,
costs per tariff zone with coverage and gaps. Pure functions of readings, series and energies;
nothing here reads the lake (:mod:`wattlake.query.energy` answers the questions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from wattlake.energy.buckets import format_local, parse_time_ms, zone
from wattlake.energy.series import (
    Series,
    SeriesEnergy,
    SiteEnergy,
    series_energy,
    site_energy,
    split_series,
)
from wattlake.energy.sites import Site
from wattlake.energy.tariffs import (
    EnergyOverEdges,
    Tariff,
    TariffCost,
    TariffSegments,
    cost_rows,
    shift_savings,
    tariff_cost,
    tariff_segments,
)
from wattlake.errors import UsageError

FloatArray = npt.NDArray[np.float64]


IntArray = npt.NDArray[np.int64]


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


# -- sites --------------------------------------------------------------------------------------
SITE_COLUMNS: Final[tuple[str, ...]] = (
    "site",
    "start",
    "end",
    "grid_import_wh",
    "grid_export_wh",
    "solar_wh",
    "battery_charge_wh",
    "battery_discharge_wh",
    "consumption_wh",
    "untracked_wh",
    "self_consumption",
    "self_sufficiency",
    "coverage",
    "interpolated_wh",
    "phase_netting",
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
    return series_rows(results, edges_ms, tz), results


def series_rows(
    results: Sequence[SeriesEnergy], edges_ms: IntArray, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """Return the rows of :func:`energy_rows` for per-series results over ``edges_ms``."""
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
    return rows


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


def _ratio(value: float) -> float | None:
    return None if not np.isfinite(value) else _round(value, 4)


def site_rows(energy: SiteEnergy, tz: ZoneInfo) -> list[dict[str, Any]]:
    """Return one row per bucket: :data:`SITE_COLUMNS`, then ``circuit_<name>_wh`` per circuit.

    Energies are rounded to 1 mWh after the balance is computed, so consumption equals the
    circuits plus untracked to the watt-hour in every row.
    """
    b = energy.balance
    labels = [format_local(int(e), tz) for e in energy.edges_ms]
    consumption, untracked = b.consumption_wh, b.untracked_wh
    self_consumption, self_sufficiency = b.self_consumption, b.self_sufficiency
    rows: list[dict[str, Any]] = []
    for j in range(energy.edges_ms.size - 1):
        row: dict[str, Any] = {
            "site": energy.site.name,
            "start": labels[j],
            "end": labels[j + 1],
            "grid_import_wh": _round(b.grid_import_wh[j], 3),
            "grid_export_wh": _round(b.grid_export_wh[j], 3),
            "solar_wh": _round(b.solar_wh[j], 3),
            "battery_charge_wh": _round(b.battery_charge_wh[j], 3),
            "battery_discharge_wh": _round(b.battery_discharge_wh[j], 3),
            "consumption_wh": _round(consumption[j], 3),
            "untracked_wh": _round(untracked[j], 3),
            "self_consumption": _ratio(self_consumption[j]),
            "self_sufficiency": _ratio(self_sufficiency[j]),
            "coverage": _round(energy.coverage[j], 4),
            "interpolated_wh": _round(energy.interpolated_wh[j], 3),
            "phase_netting": energy.phase_netting[j],
        }
        for name, values in b.circuits_wh.items():
            row[f"circuit_{name}_wh"] = _round(values[j], 3)
        rows.append(row)
    return rows


def site_grid_energy(
    table: pa.Table,
    site: Site,
    *,
    method: str = "auto",
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
) -> EnergyOverEdges:
    """Return a function giving the site's grid import and export over given edges [Wh].

    Only the grid role is billed; phases are netted as the site says. The function has the shape
    :func:`wattlake.energy.tariffs.compare_tariffs` expects.
    """

    def over(edges_ms: IntArray) -> tuple[FloatArray, FloatArray]:
        result = site_energy(
            table, site, edges_ms, method=method, max_gap_s=max_gap_s, max_power_w=max_power_w
        )
        return result.balance.grid_import_wh, result.balance.grid_export_wh

    return over


# -- cost with coverage -------------------------------------------------------------------------
def cost_period(
    tariff: Tariff, start: str, end: str, tz_name: str | None = None
) -> tuple[ZoneInfo, int, int]:
    """Read a cost period: dates and naive times in the tariff's own zone unless ``tz_name``.

    A Warsaw day under G11 then starts at Warsaw midnight, whatever ``energy.tz`` says.

    Raises:
        UsageError: unreadable times, an unknown zone, or an end not after the start.
    """
    tz = zone(tz_name or tariff.timezone)
    start_ms, end_ms = parse_time_ms(start, tz), parse_time_ms(end, tz)
    if end_ms <= start_ms:
        raise UsageError(f"The end ({end}) must be after the start ({start}).")
    return tz, start_ms, end_ms


def series_gaps(series: Series, start_ms: int, end_ms: int, max_gap_s: float) -> IntArray:
    """Return the spans of [start, end) not backed by readings of a series, as (start, end) rows.

    A span is a step between two readings (power or counter) longer than ``max_gap_s``, or the
    time before the first reading or after the last, clipped to the range [ms UTC].
    """
    usable = np.isfinite(series.power_w) | (series.energy_wh >= 0)
    usable |= series.returned_energy_wh >= 0
    t = series.ts_ms[usable]
    if t.size == 0:
        return np.array([[start_ms, end_ms]], dtype=np.int64)
    long_steps = np.flatnonzero(np.diff(t) > max_gap_s * 1000.0)
    spans = np.column_stack((t[long_steps], t[long_steps + 1]))
    spans = np.vstack(([[np.iinfo(np.int64).min, t[0]]], spans, [[t[-1], np.iinfo(np.int64).max]]))
    spans = np.column_stack((np.maximum(spans[:, 0], start_ms), np.minimum(spans[:, 1], end_ms)))
    return spans[spans[:, 1] > spans[:, 0]].astype(np.int64)


@dataclass(frozen=True, slots=True)
class CostReport:
    """Cost of a period under a tariff, with how much of it rests on readings.

    ``rows`` are :func:`wattlake.energy.tariffs.cost_rows` plus ``coverage`` (share of the
    zone's time backed by readings, the lowest of the billed channels), ``interpolated_wh`` and
    ``gaps`` (how many unbacked spans the zone's energy bridges); ``gaps`` lists those spans
    (``device_id``, ``channel``, ``start``, ``end``, ``length_s``, ``zones``); ``warnings`` are
    sentences for the user.
    """

    rows: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    warnings: list[str]
    coverage: float


def cost_report(
    table: pa.Table,
    tariff: Tariff,
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo,
    *,
    site: Site | None = None,
    channel: int | None = None,
    method: str = "auto",
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
    shift_share: float | None = None,
    min_coverage: float = 0.95,
) -> CostReport:
    """Price the energy of [start, end) under ``tariff``, with coverage and bridged gaps.

    With a ``site`` only its grid channels are billed (phases netted as the site says). Without
    one, channels are never summed: each device channel in ``table`` (or only ``channel``) is
    billed on its own, as its own row set (zones, fixed, total) led by ``device_id`` and
    ``channel``; the report's ``coverage`` is then the lowest of them.

    Raises:
        UsageError: bad method, or the tariff has no prices for the range.
    """
    segments = tariff_segments(tariff, start_ms, end_ms)
    edges = segments.edges_ms
    seg_s = np.diff(edges).astype(np.float64) / 1000.0
    if site is not None:
        grid_site = Site(
            site.name, site.timezone, site.tariff, site.phases, tuple(site.with_role("grid"))
        )
        energy = site_energy(
            table, grid_site, edges, method=method, max_gap_s=max_gap_s, max_power_w=max_power_w
        )
        keys = {r.key for r in grid_site.channels}
        billed = [s for s in split_series(table) if f"{s.device_id}:{s.channel}" in keys]
        return priced(
            tariff,
            segments,
            tz,
            energy.balance.grid_import_wh,
            energy.balance.grid_export_wh,
            energy.coverage * seg_s,
            energy.interpolated_wh,
            billed,
            start_ms=start_ms,
            end_ms=end_ms,
            max_gap_s=max_gap_s,
            shift_share=shift_share,
            min_coverage=min_coverage,
            warnings=list(energy.warnings),
        )
    series = split_series(table, channel=channel)
    if not series:
        zeros = np.zeros(seg_s.size)
        return priced(
            tariff,
            segments,
            tz,
            zeros,
            zeros,
            zeros,
            zeros,
            [],
            start_ms=start_ms,
            end_ms=end_ms,
            max_gap_s=max_gap_s,
            shift_share=shift_share,
            min_coverage=min_coverage,
        )
    return joined(
        [
            priced_channel(
                tariff,
                segments,
                tz,
                series_energy(
                    s, edges, method=method, max_gap_s=max_gap_s, max_power_w=max_power_w
                ),
                [s],
                start_ms=start_ms,
                end_ms=end_ms,
                max_gap_s=max_gap_s,
                shift_share=shift_share,
                min_coverage=min_coverage,
            )
            for s in series
        ]
    )


def priced_channel(
    tariff: Tariff,
    segments: TariffSegments,
    tz: ZoneInfo,
    result: SeriesEnergy,
    billed: list[Series],
    **options: Any,
) -> CostReport:
    """Price one device channel's energy ``result`` as :func:`priced` does (``options``: its
    keywords), labelled with the channel; ``billed`` are the series its gaps are listed from."""
    s = result.series
    interpolated = result.interpolated_wh
    if interpolated is None:
        interpolated = np.zeros(segments.edges_ms.size - 1)
    return priced(
        tariff,
        segments,
        tz,
        result.import_wh,
        result.export_wh,
        result.covered_s,
        interpolated,
        billed,
        label=f"{s.device_id} channel {s.channel}",
        lead={"device_id": s.device_id, "channel": s.channel},
        **options,
    )


def joined(reports: Sequence[CostReport]) -> CostReport:
    """Return the channels' reports as one: their rows, gaps and warnings in order, the lowest
    coverage."""
    return CostReport(
        [row for r in reports for row in r.rows],
        [gap for r in reports for gap in r.gaps],
        [w for r in reports for w in r.warnings],
        min(r.coverage for r in reports),
    )


def series_has_data(result: SeriesEnergy, start_ms: int, end_ms: int) -> bool:
    """Return True when a device channel's energy rests on anything in [start, end): a
    reading in the range, a covered second, or energy (measured or bridged) in a bucket."""
    ts = np.asarray(result.series.ts_ms)
    if ((ts >= start_ms) & (ts < end_ms)).any():
        return True
    arrays = [result.covered_s, result.import_wh, result.export_wh]
    if result.interpolated_wh is not None:
        arrays.append(result.interpolated_wh)
    return any(np.nan_to_num(np.asarray(a, dtype=np.float64)).any() for a in arrays)


def cost_rows_with_data(report: CostReport) -> tuple[list[Any], list[Any], list[str]]:
    """Return the cost rows, gaps and warnings without the row sets of device channels that
    have nothing in the period (no coverage, no energy, measured or bridged)."""
    sets: dict[tuple[Any, Any], list[Any]] = {}
    for row in report.rows:
        sets.setdefault((row.get("device_id"), row.get("channel")), []).append(row)

    def empty(rows: list[Any]) -> bool:
        figures = ("coverage", "import_wh", "export_wh", "interpolated_wh")
        return all(not row.get(k) for row in rows for k in figures)

    dropped = {key for key, rows in sets.items() if empty(rows)}
    rows = [row for key, rows in sets.items() if key not in dropped for row in rows]
    gaps = [g for g in report.gaps if (g.get("device_id"), g.get("channel")) not in dropped]
    if not rows:
        return [], [], []
    labels = tuple(f"{d} channel {c}:" for d, c in dropped if d is not None)
    warnings = [w for w in report.warnings if not labels or not w.startswith(labels)]
    return rows, gaps, warnings


def priced(
    tariff: Tariff,
    segments: TariffSegments,
    tz: ZoneInfo,
    imp: FloatArray,
    exp: FloatArray,
    covered_s: FloatArray,
    interpolated: FloatArray,
    billed: list[Series],
    *,
    start_ms: int,
    end_ms: int,
    max_gap_s: float,
    shift_share: float | None,
    min_coverage: float,
    warnings: list[str] | None = None,
    label: str = "",
    lead: dict[str, Any] | None = None,
) -> CostReport:
    """Price one billed energy (a site's grid, or one device channel) with its coverage."""
    warnings = [] if warnings is None else warnings
    edges = segments.edges_ms
    seg_s = np.diff(edges).astype(np.float64) / 1000.0
    cost = tariff_cost(tariff, segments, imp, exp)
    rows = cost_rows(cost)

    zi = segments.zone_index
    n_zones = len(tariff.zones)
    zone_s = np.bincount(zi, weights=seg_s, minlength=n_zones)
    zone_cov = np.bincount(zi, weights=covered_s, minlength=n_zones)
    zone_interp = np.bincount(zi, weights=interpolated, minlength=n_zones)
    gap_rows: list[dict[str, Any]] = []
    zone_gaps = np.zeros(n_zones, dtype=np.int64)
    for s in billed:
        for a, b in series_gaps(s, start_ms, end_ms, max_gap_s):
            first = int(np.searchsorted(edges, a, side="right")) - 1
            last = int(np.searchsorted(edges, b, side="left"))
            touched = sorted({int(z) for z in zi[max(first, 0) : last]})
            zone_gaps[touched] += 1
            gap_rows.append(
                {
                    "device_id": s.device_id,
                    "channel": s.channel,
                    "start": format_local(int(a), tz),
                    "end": format_local(int(b), tz),
                    "length_s": _round((b - a) / 1000.0, 3),
                    "zones": ",".join(tariff.zones[z] for z in touched),
                }
            )
    total_s = float(seg_s.sum())
    coverage = float(covered_s.sum()) / total_s if total_s > 0 else 0.0
    for i, row in enumerate(rows[:n_zones]):
        row["coverage"] = _round(zone_cov[i] / zone_s[i], 4) if zone_s[i] > 0 else None
        row["interpolated_wh"] = _round(zone_interp[i], 3)
        row["gaps"] = int(zone_gaps[i])
    rows[n_zones].update(coverage=None, interpolated_wh=None, gaps=None)
    rows[n_zones + 1].update(
        coverage=_round(coverage, 4),
        interpolated_wh=_round(float(interpolated.sum()), 3),
        gaps=len(gap_rows),
    )
    if shift_share is not None:
        shift = shift_savings(tariff, segments, imp, shift_share)
        rows.append(
            {
                "tariff": tariff.name,
                "zone": f"shift-{shift_share:g}",
                "import_wh": shift["shifted_wh"],
                "export_wh": 0.0,
                "import_cost": 0.0,
                "export_credit": 0.0,
                "cost": -shift["savings"],
                "currency": tariff.currency,
                "coverage": None,
                "interpolated_wh": None,
                "gaps": None,
            }
        )
    if coverage < min_coverage:
        only = f"{label}: only" if label else "Only"
        warnings.append(
            f"{only} {coverage:.1%} of the period is backed by readings no further apart than "
            f"{max_gap_s:g} s ({len(gap_rows)} gap(s), {float(interpolated.sum()):.1f} Wh "
            "interpolated); the cost bridges them — see the list of gaps."
        )
    if lead is not None:
        rows = [{**lead, **row} for row in rows]
    return CostReport(rows, gap_rows, warnings, coverage)


def one_channel(series: Sequence[Series]) -> None:
    """Refuse to go on with more than one device channel: channels are never summed.

    Raises:
        UsageError: ``series`` holds several devices, or several channels of one device (the
            sentence names them).
    """
    devices = sorted({s.device_id for s in series})
    if len(devices) > 1:
        raise UsageError(
            f"The lake has {len(devices)} devices here ({', '.join(devices[:5])}); "
            "name one device or a site (devices and channels are never summed)."
        )
    if len(series) > 1:
        channels = ", ".join(str(s.channel) for s in series)
        raise UsageError(
            f"Device {devices[0]} has channels {channels} and no site says which is the grid or "
            "the solar; name one channel, or a site (channels are never summed)."
        )

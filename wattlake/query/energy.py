"""Energy, cost and hourly energy from the lake: one entry point per question.

A question is an :class:`EnergyRequest` (range, zone, bucket size, device channel or site,
method, gap policy); :func:`energy_for` (device channels) and :func:`site_energy_for` (a site's
balance) answer it with one :class:`EnergyResult`,
:func:`cost_for` prices it, :func:`hourly_energy` gives whole UTC hours for PV and forecasts.
Each picks its source inside: the rollups (:mod:`wattlake.query.rollups`) when every bucket edge
is a UTC quarter-hour, the method is ``auto`` with gaps skipped and table ``energy_15min`` is up to
date for the range, else the readings (:mod:`wattlake.query.readings`), or both (the rollups up
to a quarter-hour, the readings after it: :func:`energy_with_recent`). The two sources agree to
float rounding: the rollups hold what the raw path gives per quarter-hour. The CLI and the web
call these functions and shape their answers (:mod:`wattlake.query.reports`).

A *series* is one (device, channel). Method ``auto`` (the default) takes a channel's energy from
its cumulative counters (``energy_wh`` for import, ``returned_energy_wh`` for export) when it has
at least two readings of them, shaped in time by its power samples, and otherwise integrates
``power_w`` with the trapezoid rule. ``trapezoid``, ``left`` and ``right`` always integrate power.
Channels are never summed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.energy.rollup import QUARTER_HOUR_MS
from wattlake.energy.series import (
    Series,
    SeriesEnergy,
    SiteEnergy,
    series_energies,
    series_energy,
    split_series,
)
from wattlake.energy.sites import Site, site_or_error
from wattlake.energy.tariffs import EnergyOverEdges, load_tariff, tariff_segments
from wattlake.errors import UsageError
from wattlake.lake.storage import Lake
from wattlake.query.readings import (
    cost_from_readings,
    hourly_from_readings,
    lake_readings,
    lake_series,
    load_readings,
    series_from_readings,
    site_energy_from_readings,
)
from wattlake.query.reports import (
    CostReport,
    cost_period,
    joined,
    one_channel,
    priced,
    priced_channel,
    segment_energy,
    site_grid_energy,
)
from wattlake.query.rollups import (
    aligned,
    device_rollups,
    method_label,
    series_from_rollups,
    site_energy_from_rollups,
    site_rollups,
)
from wattlake.query.sites import configured_sites, energy_options
from wattlake.schema import SERIES_COLUMNS

if TYPE_CHECKING:
    from wattlake.config import Settings

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


# Sources of an answer: the rollups, the readings, or both (below).
ROLLUPS: Final = "rollups"
READINGS: Final = "readings"


# Energy from rollups up to a quarter-hour, from readings after it (a range ending now, or the
# days the ingest has written since the rollup job last ran).
RECENT: Final = "rollups and recent readings"
_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class EnergySources:
    """Where :func:`energy_over_edges` reads from.

    ``rollups(start_ms, end_ms, device_id)`` returns the ``energy_15min`` rows of the range, or
    None when the rollups are not up to date for it; ``readings(start_ms, end_ms, device_id)``
    returns the readings the raw path needs for the range (with its margins);
    ``series(start_ms, end_ms, device_id)``, if given, the same readings already cut into
    series (what :func:`~wattlake.energy.series.split_series` makes of them), which the raw
    path then reads instead.
    """

    rollups: Callable[[int, int, str | None], pa.Table | None]
    readings: Callable[[int, int, str | None], pa.Table]
    max_gap_s: float = 300.0
    max_power_w: float = 60_000.0
    series: Callable[[int, int, str | None], list[Series]] | None = None


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
    return energy_from_readings(sources, edges, device_id=device_id, channel=channel), "readings"


def energy_from_readings(
    sources: EnergySources,
    edges_ms: npt.ArrayLike,
    *,
    device_id: str | None = None,
    channel: int | None = None,
) -> list[SeriesEnergy]:
    """Return the energy of each series in the buckets between ``edges_ms`` from the readings
    (the raw path of :func:`energy_over_edges`), through ``sources.series`` when given."""
    edges = np.asarray(edges_ms, dtype=np.int64)
    start_ms, end_ms = int(edges[0]), int(edges[-1])
    if sources.series is None:
        return series_from_readings(
            sources.readings(start_ms, end_ms, device_id),
            edges,
            channel=channel,
            max_gap_s=sources.max_gap_s,
            max_power_w=sources.max_power_w,
        )
    series = sources.series(start_ms, end_ms, device_id)
    if channel is not None:
        series = [s for s in series if s.channel == channel]
    return series_energies(
        series, edges, max_gap_s=sources.max_gap_s, max_power_w=sources.max_power_w
    )


def _split_points(start_ms: int, end_ms: int) -> list[int]:
    """Return where a range may switch from rollups to readings, latest first: the last
    quarter-hour up to the end (nothing new since the rollup job ran), then the start of the
    UTC day before the day the ingest writes to now, for a range ending on that day or at its
    midnight (the rollups of a day also need the day after it unchanged)."""
    quarter = end_ms // QUARTER_HOUR_MS * QUARTER_HOUR_MS
    day_before = {(end_ms // _DAY_MS - 1) * _DAY_MS, ((end_ms - 1) // _DAY_MS - 1) * _DAY_MS}
    return sorted({p for p in (quarter, *day_before) if start_ms < p <= end_ms}, reverse=True)


def _joined(
    head: list[SeriesEnergy],
    head_edges: IntArray,
    tail: list[SeriesEnergy],
    tail_edges: IntArray,
    edges: IntArray,
) -> list[SeriesEnergy]:
    """Add the buckets of ``head`` (rollups) and ``tail`` (readings) into the buckets between
    ``edges``, per series in order of device and channel; a bucket cut by the split point adds
    its two parts (head first)."""
    n = edges.size - 1
    head_at = np.searchsorted(edges, head_edges[:-1], side="right") - 1
    tail_at = np.searchsorted(edges, tail_edges[:-1], side="right") - 1
    parts: dict[tuple[str, int], list[tuple[SeriesEnergy, IntArray]]] = {}
    for results, at in ((head, head_at), (tail, tail_at)):
        for r in results:
            parts.setdefault((r.series.device_id, r.series.channel), []).append((r, at))
    joined = []
    for key in sorted(parts):

        def added(name: str, part: list[tuple[SeriesEnergy, IntArray]]) -> FloatArray | None:
            found = [(getattr(r, name), at) for r, at in part if getattr(r, name) is not None]
            if not found:
                return None
            out = np.zeros(n, dtype=np.float64)
            for values, at in found:
                np.add.at(out, at, values)
            return out

        part = parts[key]
        newest = part[-1][0]
        imp, exp, cov = (added(name, part) for name in ("import_wh", "export_wh", "covered_s"))
        assert imp is not None and exp is not None and cov is not None
        joined.append(
            SeriesEnergy(
                newest.series,
                imp,
                exp,
                cov,
                method_label([r.method for r, _ in part]),
                added("counter_minus_power_wh", part),
                tuple(e for r, _ in part for e in r.events),
                added("interpolated_wh", part),
            )
        )
    return joined


def energy_with_recent(
    sources: EnergySources,
    edges_ms: npt.ArrayLike,
    *,
    device_id: str | None = None,
    channel: int | None = None,
    fallback: bool = True,
) -> tuple[list[SeriesEnergy], str]:
    """Return the energy of each series in the buckets between ``edges_ms`` and its source, as
    :func:`energy_over_edges`, but when the rollups cannot answer the whole range (its end is
    not a quarter-hour, or the ingest wrote to its last days since the rollup job ran), the
    rollups answer up to a quarter-hour and the readings after it (source
    :data:`RECENT`): today's or this month's energy so far reads one or two days of readings,
    not the whole range. The two parts agree with the raw path to float rounding (the rollups
    hold what the raw path gives per quarter-hour); buckets cut by the split add two sums.
    Without ``fallback``, a range the rollups cannot answer at all returns no series (source
    ``readings``) instead of reading the whole range.
    """
    edges = np.asarray(edges_ms, dtype=np.int64)
    start_ms, end_ms = int(edges[0]), int(edges[-1])
    whole = aligned(edges)
    if whole:
        rows = sources.rollups(start_ms, end_ms, device_id)
        if rows is not None:
            return series_from_rollups(rows, edges, channel=channel), ROLLUPS
    for split in _split_points(start_ms, end_ms) if start_ms % QUARTER_HOUR_MS == 0 else []:
        head_edges = np.append(edges[edges < split], split)
        if not aligned(head_edges) or (whole and split == end_ms):
            continue  # (the whole range was asked above)
        rows = sources.rollups(start_ms, split, device_id)
        if rows is None:
            continue
        head = series_from_rollups(rows, head_edges, channel=channel)
        tail_edges = np.insert(edges[edges > split], 0, split)
        tail = energy_from_readings(sources, tail_edges, device_id=device_id, channel=channel)
        return _joined(head, head_edges, tail, tail_edges, edges), RECENT
    if not fallback:
        return [], READINGS
    return energy_from_readings(sources, edges, device_id=device_id, channel=channel), READINGS


def lake_sources(settings: Settings) -> EnergySources:
    """Return the lake's rollups and readings as :class:`EnergySources`.

    Rollups count as up to date for a range when no readings data file committed after the
    readings snapshot table ``energy_15min`` reflects holds a day within a day of the range.
    """
    lake = Lake.from_settings(settings)

    def rollups(start_ms: int, end_ms: int, device_id: str | None) -> pa.Table | None:
        return device_rollups(lake, start_ms, end_ms, device_id)

    def readings(start_ms: int, end_ms: int, device_id: str | None) -> pa.Table:
        devices = None if device_id is None else [device_id]
        return lake_readings(lake, start_ms, end_ms, device_ids=devices, columns=SERIES_COLUMNS)

    def series(start_ms: int, end_ms: int, device_id: str | None) -> list[Series]:
        devices = None if device_id is None else [device_id]
        return lake_series(lake, start_ms, end_ms, device_ids=devices)

    return EnergySources(
        rollups=rollups,
        readings=readings,
        max_gap_s=float(settings["energy.max_gap_s"]),
        max_power_w=float(settings["energy.max_power_w"]),
        series=series,
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


def _plain(method: str, gap_policy: str) -> bool:
    """Rollups hold method ``auto`` with gaps skipped: other options read raw readings."""
    return method == "auto" and gap_policy == "skip"


@dataclass(frozen=True, slots=True)
class EnergyRequest:
    """One question about energy: [start, end) in buckets of ``every`` local to ``tz``, of
    ``site``'s balance or of the device channels (``device_id``, ``channel`` if given; every
    device otherwise), integrated by ``method`` with gaps by ``gap_policy``."""

    start_ms: int
    end_ms: int
    tz: ZoneInfo
    every: str = "day"
    device_id: str | None = None
    channel: int | None = None
    site: Site | None = None
    method: str = "auto"
    gap_policy: str = "skip"


@dataclass(frozen=True, slots=True)
class EnergyResult:
    """The answer to an :class:`EnergyRequest`: the bucket edges [ms UTC], the energy of each
    device channel in them (none for a site), the site's balance (None for devices) and the
    source (:data:`ROLLUPS`, :data:`READINGS` or :data:`RECENT`)."""

    edges: IntArray
    series: list[SeriesEnergy]
    site: SiteEnergy | None
    source: str


def site_request(
    settings: Settings,
    site_name: str,
    start: str,
    end: str,
    every: str,
    tz_name: str | None = None,
    *,
    method: str = "auto",
    gap_policy: str = "skip",
) -> EnergyRequest:
    """Return the request for site ``site_name``'s balance, dates and naive times read in the
    site's time zone unless ``tz_name`` is given.

    Raises:
        ConfigError: no such site, or the sites are invalid.
        UsageError: unreadable times.
    """
    site = site_or_error(configured_sites(settings), site_name)
    tz = zone(tz_name or site.timezone)
    start_ms, end_ms = parse_time_ms(start, tz), parse_time_ms(end, tz)
    return EnergyRequest(
        start_ms, end_ms, tz, every, site=site, method=method, gap_policy=gap_policy
    )


def energy_for(settings: Settings, request: EnergyRequest) -> EnergyResult:
    """Return the energy of the device channels that ``request`` asks for: what ``wattlake
    energy`` prints (a site's balance is :func:`site_energy_for`'s).

    Rollups answer method ``auto`` with gaps skipped when the edges are UTC quarter-hours and
    the rollups are up to date, or for devices up to a quarter-hour with readings after it
    (:func:`energy_with_recent`); counter events are found only in readings.

    Raises:
        UsageError: unknown bucket size or method, or an empty range; the request names a site.
    """
    if request.site is not None:
        raise UsageError(f"Site {request.site.name}'s balance is asked of site_energy_for.")
    edges = bucket_edges_ms(request.start_ms, request.end_ms, request.every, request.tz)
    method, gap_policy = request.method, request.gap_policy
    device_id, channel = request.device_id, request.channel
    sources = lake_sources(settings)
    if _plain(method, gap_policy):
        results, source = energy_with_recent(sources, edges, device_id=device_id, channel=channel)
        return EnergyResult(edges, results, None, source)
    if sources.series is not None:  # the lake's: Series straight from the data files
        series = sources.series(int(edges[0]), int(edges[-1]), device_id)
    else:
        series = split_series(sources.readings(int(edges[0]), int(edges[-1]), device_id))
    results = [
        series_energy(
            s,
            edges,
            method=method,
            max_gap_s=sources.max_gap_s,
            max_power_w=sources.max_power_w,
            gap_policy=gap_policy,
        )
        for s in series
        if channel is None or s.channel == channel
    ]
    return EnergyResult(edges, results, None, READINGS)


def site_energy_for(settings: Settings, request: EnergyRequest) -> EnergyResult:
    """Return the balance per bucket of the site that ``request`` names (see
    :func:`site_request`): what ``wattlake energy --site`` prints.

    Rollups answer method ``auto`` with gaps skipped when the edges are UTC quarter-hours, the
    rollups are up to date and were computed for the site's configuration.

    Raises:
        UsageError: unknown bucket size or method, an empty range, or no site named.
    """
    if request.site is None:
        raise UsageError("A site's balance needs a site.")
    edges = bucket_edges_ms(request.start_ms, request.end_ms, request.every, request.tz)
    energy, source = _site_energy(
        settings, request.site, edges, method=request.method, gap_policy=request.gap_policy
    )
    return EnergyResult(edges, [], energy, source)


def _site_energy(
    settings: Settings,
    site: Site,
    edges_ms: npt.ArrayLike,
    *,
    method: str = "auto",
    gap_policy: str = "skip",
    billed: Site | None = None,
) -> tuple[SiteEnergy, str]:
    """Return the balance of ``site`` (or of ``billed``, a part of it such as its grid
    channels) per bucket between ``edges_ms``, and its source (``rollups`` or ``readings``)."""
    edges = np.asarray(edges_ms, dtype=np.int64)
    part = billed or site
    if _plain(method, gap_policy) and aligned(edges):
        rows = site_rollups(settings, site, int(edges[0]), int(edges[-1]))
        if rows is not None:
            energy = site_energy_from_rollups(rows, part, edges)
            if energy is not None:
                return energy, ROLLUPS
    energy = site_energy_from_readings(settings, part, edges, method=method, gap_policy=gap_policy)
    return energy, READINGS


def _full(covered_s: FloatArray, edges: IntArray) -> bool:
    """Return whether readings back the whole range, so no gap lies in it (a gap is time no
    reading backs, so it always lowers the coverage)."""
    return float(np.sum(covered_s)) >= (int(edges[-1]) - int(edges[0])) / 1000.0 - 1e-6


def cost_for(
    settings: Settings,
    *,
    start: str,
    end: str,
    tariff_name: str | None = None,
    tz_name: str | None = None,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
    method: str = "auto",
    shift_share: float | None = None,
    list_gaps: bool = True,
) -> tuple[CostReport, str]:
    """Return what ``wattlake cost`` prints: cost rows with coverage, the gaps and warnings,
    and its source: ``rollups``, ``rollups+readings`` (energy from rollups, the gaps bridged listed
    from readings because the coverage is not full), :data:`RECENT` (per device channel: the
    rollups up to a quarter-hour, readings after it, e.g. a month so far; gaps listed from
    readings) or ``readings``. Without ``list_gaps`` the gaps are not listed (no gap rows, gap
    counts 0: the costs are the same), so no more readings are read than the energy needs.

    Raises:
        ConfigError: no such site, or the sites are invalid.
        UsageError: no tariff, unreadable times, or no prices for the range.

    The tariff is ``tariff_name``, else the site's, else setting ``cost.tariff``. Dates are read
    in the tariff's own time zone unless ``tz_name`` is given.
    """
    site = None
    if site_name is not None:
        site = site_or_error(configured_sites(settings), site_name)
    chosen = tariff_name or (site.tariff if site else "") or str(settings["cost.tariff"])
    if not chosen:
        raise UsageError(
            "No tariff is given or configured; name one (e.g. pl-g11), give the site a tariff, "
            "or set cost.tariff."
        )
    tariff = load_tariff(chosen)
    tz, start_ms, end_ms = cost_period(tariff, start, end, tz_name)
    segments = tariff_segments(tariff, start_ms, end_ms)
    edges = segments.edges_ms

    def from_readings() -> tuple[CostReport, str]:
        report = cost_from_readings(
            settings,
            tariff,
            tz,
            start_ms,
            end_ms,
            site=site,
            device_id=device_id,
            channel=channel,
            method=method,
            shift_share=shift_share,
        )
        return report, READINGS

    if method != "auto" or (site is not None and not aligned(edges)):
        return from_readings()
    max_gap_s = float(settings["energy.max_gap_s"])
    options: dict[str, Any] = {
        "start_ms": start_ms,
        "end_ms": end_ms,
        "max_gap_s": max_gap_s,
        "shift_share": shift_share,
        "min_coverage": float(settings["cost.min_coverage"]),
    }
    seg_s = np.diff(edges).astype(np.float64) / 1000.0

    def series_of(devices: Sequence[str] | None) -> dict[str, Series]:
        table = load_readings(settings, start_ms, end_ms, device_ids=devices)
        return {f"{s.device_id}:{s.channel}": s for s in split_series(table)}

    if site is not None:
        grid_site = Site(
            site.name, site.timezone, site.tariff, site.phases, tuple(site.with_role("grid"))
        )
        energy, source = _site_energy(settings, site, edges, billed=grid_site)
        if source != ROLLUPS:
            return from_readings()
        covered = energy.coverage * seg_s
        billed: list[Series] = []
        if list_gaps and not _full(covered, edges):
            by_key = series_of(grid_site.device_ids)
            keys = dict.fromkeys(r.key for r in grid_site.channels)
            billed = [by_key[k] for k in keys if k in by_key]
            source = f"{ROLLUPS}+{READINGS}"
        report = priced(
            tariff,
            segments,
            tz,
            energy.balance.grid_import_wh,
            energy.balance.grid_export_wh,
            covered,
            energy.interpolated_wh,
            billed,
            warnings=list(energy.warnings),
            **options,
        )
        return report, source
    results, source = energy_with_recent(
        lake_sources(settings), edges, device_id=device_id, channel=channel, fallback=False
    )
    if not results:
        return from_readings()  # the raw path prices no readings as zeros with its warning
    found: dict[str, Series] = {}
    if list_gaps and not all(_full(r.covered_s, edges) for r in results):
        found = series_of([device_id] if device_id else None)
        source = f"{ROLLUPS}+{READINGS}" if source == ROLLUPS else source
    reports = []
    for r in results:
        key = f"{r.series.device_id}:{r.series.channel}"
        gaps_from = [] if _full(r.covered_s, edges) else [found[key]] if key in found else []
        reports.append(priced_channel(tariff, segments, tz, r, gaps_from, **options))
    return joined(reports), source


def hourly_energy(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
) -> tuple[IntArray, FloatArray, FloatArray, str]:
    """Return UTC hour starts [ms], consumption and solar production per hour [Wh], and the
    source (``rollups`` or ``readings``).

    With a site, consumption is the site's balance and solar its solar channels; without one,
    consumption is the import of one device channel (a device without a site has no roles, and
    its channels are never summed) and solar is all NaN. An hour without any reading backing it
    is NaN. Hours are whole UTC hours around [start, end).

    Raises:
        ConfigError: no such site.
        UsageError: several devices, or several channels of the device and no ``channel``.
        NoDataError: no readings in the range.
    """
    first_ms = start_ms // 3_600_000 * 3_600_000
    last_ms = -(-end_ms // 3_600_000) * 3_600_000
    edges = np.arange(first_ms, last_ms + 1, 3_600_000, dtype=np.int64)
    site = None
    if site_name is not None:
        site = site_or_error(configured_sites(settings), site_name)
        rows = site_rollups(settings, site, first_ms, last_ms)
        energy = None if rows is None else site_energy_from_rollups(rows, site, edges)
        if energy is not None:
            seen = energy.coverage > 0
            consumption = np.where(seen, energy.balance.consumption_wh, np.nan)
            solar = np.where(seen, energy.balance.solar_wh, np.nan)
            return edges[:-1], consumption, solar, ROLLUPS
    else:
        found = device_rollups(Lake.from_settings(settings), first_ms, last_ms, device_id)
        results = [] if found is None else series_from_rollups(found, edges, channel=channel)
        if results:
            one_channel([r.series for r in results])
            r = results[0]
            consumption = np.where(r.covered_s > 0, r.import_wh, np.nan)
            return edges[:-1], consumption, np.full(edges.size - 1, np.nan), ROLLUPS
    consumption, solar = hourly_from_readings(
        settings, edges, site=site, device_id=device_id, channel=channel
    )
    return edges[:-1], consumption, solar, READINGS


def energy_over_edges_for(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
    method: str = "auto",
) -> EnergyOverEdges:
    """Return grid import and export over any edges, for comparing tariffs on the same energy.

    Raises:
        ConfigError: no such site, or the sites are invalid.
    """
    max_gap_s, max_power_w = energy_options(settings)
    if site_name is not None:
        site = site_or_error(configured_sites(settings), site_name)
        table = load_readings(settings, start_ms, end_ms, device_ids=site.device_ids)
        return site_grid_energy(
            table, site, method=method, max_gap_s=max_gap_s, max_power_w=max_power_w
        )
    devices = [device_id] if device_id else None
    table = load_readings(settings, start_ms, end_ms, device_ids=devices)
    series = split_series(table, channel=channel)
    one_channel(series)
    return segment_energy(series, method=method, max_gap_s=max_gap_s, max_power_w=max_power_w)

"""Energy per bucket from rollups when they can answer, from raw readings otherwise.

One choice, made in :func:`energy_over_edges`: when every bucket edge falls on a UTC quarter-hour
(true of 15-minute, hourly, daily and monthly buckets in every zone whose offset is a multiple of
15 minutes, and of any range given as such dates or times) and table ``energy_15min`` is up to date
for the range, the quarter-hours of each series are summed into the buckets; otherwise the readings
are integrated (:func:`wattlake.energy.series.series_energy`). Both return one
:class:`~wattlake.energy.series.SeriesEnergy` per device channel, and the rollups hold exactly what
that function gives per quarter-hour, so the two agree to float rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.energy.rollup import QUARTER_HOUR_MS
from wattlake.energy.series import (
    Series,
    SeriesEnergy,
    SiteEnergy,
    series_energies,
    series_energy,
    site_energy,
    split_series,
)
from wattlake.energy.sites import Site, site_or_error
from wattlake.energy.tariffs import load_tariff, tariff_segments
from wattlake.query.energy import (
    CostReport,
    _priced,
    configured_sites,
    cost_period,
    load_readings,
    one_channel,
    site_rows,
)

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
    computed; quarter-hours outside the range are ignored. Series come in order of device and
    channel, and each bucket adds its quarter-hours in order of time.

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
    start = np.asarray(rows["start"].cast(_MS_TS).cast(pa.int64()).to_numpy(), dtype=np.int64)
    keep = (start >= edges[0]) & (start < edges[-1])
    if not keep.all():
        rows, start = rows.filter(pa.array(keep)), start[keep]
    if start.size == 0:
        return []
    n = edges.size - 1
    bucket = np.searchsorted(edges, start, side="right") - 1
    # Series in order of device then channel, as codes: no Python object per row.
    device_codes, devices = _codes(rows["device_id"])
    device_rank = np.argsort(np.argsort(np.asarray(devices, dtype=object), kind="stable"))
    chan = np.asarray(rows["channel"].to_numpy(), dtype=np.int64)
    low = int(chan.min())
    width = int(chan.max()) - low + 1
    if len(devices) * width <= 4 * start.size + 1024:  # few channel numbers: count, not sort
        pair = device_rank[device_codes] * width + (chan - low)
        present = np.bincount(pair, minlength=len(devices) * width) > 0
        series = (np.cumsum(present) - 1)[pair]
        count = int(np.count_nonzero(present))
    else:
        chan_codes = np.unique(chan, return_inverse=True)[1].reshape(-1)
        pair = device_rank[device_codes] * (int(chan_codes.max()) + 1) + chan_codes
        pairs, series = np.unique(pair, return_inverse=True)
        series, count = series.reshape(-1), pairs.size
    # Rows by series, then time: one key, mostly in runs already, so the stable sort is quick.
    span = int(edges[-1] - edges[0])
    if count * span < 2**62:
        order = np.argsort(series * span + (start - edges[0]), kind="stable")
    else:
        order = np.lexsort((start, series))
    series, bucket = series[order], bucket[order]
    cell = series * n + bucket

    def values(name: str) -> FloatArray:
        column = rows[name].cast(pa.float64()).fill_null(np.nan)
        return np.asarray(column.to_numpy(), dtype=np.float64)[order]

    def total(v: FloatArray) -> npt.NDArray[np.float64]:
        sums = np.bincount(cell, weights=v, minlength=count * n)
        return sums.astype(np.float64).reshape(count, n)

    imp, exp, cov = values("import_wh"), values("export_wh"), values("coverage_s")
    interp = values("interpolated_wh")
    diff = values("counter_minus_power_wh")
    # Quarter-hours with nothing in them (no coverage, no energy) say nothing of the method:
    # the raw path labels a range by what it counted or integrated anywhere in it.
    used = (cov > 0) | (imp != 0) | (exp != 0) | (np.nan_to_num(interp) != 0)
    any_used = np.bincount(series, weights=used, minlength=count) > 0
    labelled = used | ~any_used[series]
    method_codes, methods = _codes(rows["method"].fill_null(""))
    seen = np.unique(series[labelled] * len(methods) + method_codes[order][labelled])
    found: list[list[str]] = [[] for _ in range(count)]
    for code in seen.tolist():
        found[code // len(methods)].append(methods[code % len(methods)])
    has_diff = np.bincount(series, weights=~np.isnan(diff), minlength=count) > 0
    sums = [total(v) for v in (imp, exp, cov, np.nan_to_num(diff), interp)]
    results = []
    for i in range(count):
        first = int(order[np.searchsorted(series, i)])
        series_i = Series(
            devices[device_codes[first]],
            int(chan[first]),
            _EMPTY_I,
            _EMPTY_F,
            _EMPTY_F,
            _EMPTY_F,
        )
        results.append(
            SeriesEnergy(
                series_i,
                sums[0][i],
                sums[1][i],
                sums[2][i],
                _label(found[i]),
                sums[3][i] if has_diff[i] else None,
                (),
                sums[4][i],
            )
        )
    return results


def _codes(column: pa.ChunkedArray) -> tuple[IntArray, list[Any]]:
    """Return each row's index into the column's distinct values, and those values."""
    encoded = column.combine_chunks().dictionary_encode()
    return (
        np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64),
        encoded.dictionary.to_pylist(),
    )


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


# Energy from rollups up to a quarter-hour, from readings after it (a range ending now, or the
# days the ingest has written since the rollup job last ran).
RECENT: Final = "rollups and recent readings"
_DAY_MS: Final = 86_400_000


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
                _label([r.method for r, _ in part]),
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


# What fresh_rollups learnt from the table metadata, kept for the next call of the process (the web
# server asks many times per table state): the days of readings data files added since the readings
# snapshot a rollup run reflects, by (lake, that snapshot's sequence number), with the sequence
# number they were counted up to; and the energy_15min data files by day, by that table's metadata
# file.
_ADDED_DAYS: dict[tuple[str, int], tuple[int, frozenset[int]]] = {}
_ROLLUP_FILES: dict[tuple[str, str], tuple[bool, dict[int, list[str]]]] = {}
_MEMO_LOCK = threading.Lock()
_MEMO_ENTRIES: Final = 64


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    with _MEMO_LOCK:
        memo[key] = value
        while len(memo) > _MEMO_ENTRIES:
            memo.pop(next(iter(memo)))


def _days_added(lake: Any, readings: Any, done: int) -> set[int]:
    """Return :func:`wattlake.lake.freshness.days_added_since` of ``readings`` after sequence
    number ``done``, reading only the manifests newer than the previous call's (their days are
    kept)."""
    from wattlake.lake.freshness import days_added_since

    current = readings.current_snapshot()
    if current is None:
        return set()
    key = (str(lake.url), done)
    with _MEMO_LOCK:
        memo = _ADDED_DAYS.get(key)
    checked, days = memo if memo is not None else (done, frozenset())
    if checked != current.sequence_number:
        days = days | (days_added_since(readings, checked) or set())
        _remember(_ADDED_DAYS, key, (current.sequence_number, days))
    return set(days)


def _rollup_files(lake: Any, energy: Any) -> tuple[bool, dict[int, list[str]]]:
    """Return whether table ``energy_15min``'s scan plan has delete files, and its data files
    by UTC day (planned once per metadata file)."""
    from wattlake.lake import tables

    key = (str(lake.url), str(energy.metadata_location))
    with _MEMO_LOCK:
        known = _ROLLUP_FILES.get(key)
    if known is not None:
        return known
    tasks = list(energy.scan().plan_files()) if energy.current_snapshot() is not None else []
    by_day: dict[int, list[str]] = {}
    for t in tasks:
        by_day.setdefault(t.file.partition[0], []).append(tables.local_path(t.file.file_path))
    found = (any(t.delete_files for t in tasks), by_day)
    _remember(_ROLLUP_FILES, key, found)
    return found


def fresh_rollups(
    lake: Any,
    start_ms: int,
    end_ms: int,
    wanted: pc.Expression,
    columns: Sequence[str] = _ROLLUP_COLUMNS,
) -> pa.Table | None:
    """Return the ``energy_15min`` rows of the UTC days around [start, end) that match
    ``wanted``, or None when the rollups are not up to date for the range (see
    :func:`lake_sources`)."""
    from wattlake.lake import tables
    from wattlake.lake.freshness import DAY_MS, reflected_sequence
    from wattlake.schema import ENERGY_15MIN_TABLE, READINGS_TABLE

    energy = tables.open_table(lake, ENERGY_15MIN_TABLE)
    readings = tables.open_table(lake, READINGS_TABLE)
    done = reflected_sequence(readings, energy)
    if done is None:
        return None
    added = _days_added(lake, readings, done)
    first, last = start_ms // DAY_MS - 1, (end_ms - 1) // DAY_MS + 1
    if any(first <= d <= last for d in added):
        return None
    # The table opened above plans the scan: opening it again would reread its metadata.
    deletes, by_day = _rollup_files(lake, energy)
    days = range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1)
    paths = [p for d in days for p in by_day.get(d, [])]
    if deletes or not paths:
        if not paths and by_day:
            return None
        return tables.read_table(lake, ENERGY_15MIN_TABLE).filter(wanted).select(list(columns))
    dataset = pads.dataset(paths, format="parquet", filesystem=lake.fs)
    return dataset.to_table(columns=list(columns), filter=wanted)


def lake_sources(settings: Settings) -> EnergySources:
    """Return the lake's rollups and readings as :class:`EnergySources`.

    Rollups count as up to date for a range when table ``energy_15min`` reflects the readings
    table's current snapshot, or when no readings snapshot since the one it reflects added data
    to a day within a day of the range.
    """
    from wattlake.lake.storage import Lake
    from wattlake.query.energy import SERIES_COLUMNS, load_readings, load_series

    lake = Lake.from_settings(settings)

    def rollups(start_ms: int, end_ms: int, device_id: str | None) -> pa.Table | None:
        wanted = pads.field("site") == ""  # device rows (site rows name a site instead)
        if device_id is not None:
            wanted = wanted & (pads.field("device_id") == device_id)
        return fresh_rollups(lake, start_ms, end_ms, wanted)

    def readings(start_ms: int, end_ms: int, device_id: str | None) -> pa.Table:
        devices = None if device_id is None else [device_id]
        return load_readings(settings, start_ms, end_ms, device_ids=devices, columns=SERIES_COLUMNS)

    def series(start_ms: int, end_ms: int, device_id: str | None) -> list[Series]:
        return load_series(
            settings, start_ms, end_ms, device_ids=None if device_id is None else [device_id]
        )

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


# -- what the commands call: rollups where they can answer, raw readings otherwise ------------
ROLLUPS: Final = "rollups"
READINGS: Final = "readings"
_SITE_COLUMNS: Final = [*_ROLLUP_COLUMNS, "site", "role"]


def _plain(method: str, gap_policy: str) -> bool:
    """Rollups hold method ``auto`` with gaps skipped: other options read raw readings."""
    return method == "auto" and gap_policy == "skip"


def device_energy(
    settings: Settings,
    device_id: str | None,
    start_ms: int,
    end_ms: int,
    every: str,
    tz: ZoneInfo,
    *,
    channel: int | None = None,
    method: str = "auto",
    gap_policy: str = "skip",
) -> tuple[IntArray, list[SeriesEnergy], str]:
    """Return the bucket edges, the energy of each device channel in them and the source
    (``rollups`` or ``readings``): what ``wattlake energy`` prints.

    Rollups answer method ``auto`` with gaps skipped when the edges are UTC quarter-hours and
    the rollups are up to date, or up to a quarter-hour with readings after it
    (:func:`energy_with_recent`); counter events are found only in readings.

    Raises:
        UsageError: unknown bucket size or method, or an empty range.
    """
    edges = bucket_edges_ms(start_ms, end_ms, every, tz)
    sources = lake_sources(settings)
    if _plain(method, gap_policy):
        results, source = energy_with_recent(sources, edges, device_id=device_id, channel=channel)
        return edges, results, source
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
    return edges, results, READINGS


def site_rollups(settings: Settings, site: Site, start_ms: int, end_ms: int) -> pa.Table | None:
    """Return the ``energy_15min`` rows of ``site`` and of its devices around [start, end), or
    None when they are not up to date for the range or were computed for another
    configuration of the site."""
    import json

    from wattlake.lake import tables
    from wattlake.lake.freshness import SITES_PROPERTY, site_hash
    from wattlake.lake.storage import Lake
    from wattlake.schema import ENERGY_15MIN_TABLE

    lake = Lake.from_settings(settings)
    recorded = tables.last_property(tables.open_table(lake, ENERGY_15MIN_TABLE), SITES_PROPERTY)
    if json.loads(recorded or "{}").get(site.name) != site_hash(site):
        return None
    devices = pa.array(sorted(set(site.device_ids)), pa.string())
    wanted = (pads.field("site") == site.name) | (
        (pads.field("site") == "") & pads.field("device_id").isin(devices)
    )
    return fresh_rollups(lake, start_ms, end_ms, wanted, columns=_SITE_COLUMNS)


def site_energy_from_rollups(
    rows: pa.Table, site: Site, edges_ms: npt.ArrayLike
) -> SiteEnergy | None:
    """Return the balance of ``site`` per bucket from its ``energy_15min`` rows, as
    :func:`wattlake.energy.series.site_energy` gives it from readings; None when the rollups
    cannot give it exactly (no site rows, a role valid from a time that is not a quarter-hour,
    or netted phases with quarter-hours not netted).

    Balance energies come from the site's rows; coverage and interpolated energy from the
    device rows of its channels (a bucket's coverage is the lowest of its channels' coverage
    over the whole bucket, which the site rows' per-quarter-hour minimum cannot give).
    """
    from wattlake.energy.sites import UNTRACKED_TOLERANCE_WH, SiteBalance

    edges = np.asarray(edges_ms, dtype=np.int64)
    if not aligned(edges):
        return None
    n = edges.size - 1
    for role in site.channels:
        for b in (role.valid_from_ms, role.valid_until_ms):
            if b is not None and edges[0] < b < edges[-1] and b % QUARTER_HOUR_MS:
                return None
    start = np.asarray(rows["start"].cast(_MS_TS).cast(pa.int64()).to_numpy(), dtype=np.int64)
    keep = (start >= edges[0]) & (start < edges[-1])
    rows, start = rows.filter(pa.array(keep)), start[keep]
    bucket = np.searchsorted(edges, start, side="right") - 1
    site_col = np.asarray(rows["site"].to_pylist(), dtype=object)
    role_col = np.asarray(rows["role"].fill_null("").to_pylist(), dtype=object)
    is_site = site_col == site.name
    if not is_site.any():
        return None

    def values(name: str) -> FloatArray:
        column = rows[name].cast(pa.float64()).fill_null(np.nan)
        return np.nan_to_num(np.asarray(column.to_numpy(), dtype=np.float64))

    imp, exp = values("import_wh"), values("export_wh")
    cov, interp = values("coverage_s"), values("interpolated_wh")

    def total(mask: npt.NDArray[np.bool_], v: FloatArray) -> FloatArray:
        return np.bincount(bucket[mask], weights=v[mask], minlength=n).astype(np.float64)

    def role_rows(name: str) -> npt.NDArray[np.bool_]:
        return is_site & (role_col == name)

    kinds = {r.role for r in site.channels}
    zero = np.zeros(n)
    grid = role_rows("grid")
    grid_in = total(grid, imp) if "grid" in kinds else zero
    grid_out = total(grid, exp) if "grid" in kinds else zero
    solar = total(role_rows("solar"), imp) if "solar" in kinds else zero
    battery = role_rows("battery")
    charge = total(battery, imp) if "battery" in kinds else zero
    discharge = total(battery, exp) if "battery" in kinds else zero
    circuits = {
        r.name: total(role_rows(f"circuit:{r.name}"), imp)
        for r in site.channels
        if r.role not in ("grid", "solar", "battery", "ignore")
    }
    netting = ["per_phase"] * n
    if site.phases == "net" and site.with_role("grid"):
        labels = np.asarray(rows["method"].fill_null("").to_pylist(), dtype=object)[grid]
        netted = np.bincount(bucket[grid], minlength=n)
        if np.any(labels != "net") or np.any(netted == 0):
            return None  # quarter-hours not netted: the raw path decides per bucket
        netting = ["net"] * n

    # Coverage and interpolated energy of each channel while its role is in force.
    quarters = np.arange(edges[0], edges[-1], QUARTER_HOUR_MS, dtype=np.int64)
    quarter_bucket = np.searchsorted(edges, quarters, side="right") - 1
    is_device = site_col == ""
    keys = np.asarray(
        [
            f"{d}:{c}"
            for d, c in zip(rows["device_id"].to_pylist(), rows["channel"].to_pylist(), strict=True)
        ],
        dtype=object,
    )
    worst = np.full(n, np.inf)
    interpolated = np.zeros(n)
    for role in site.channels:
        if role.role == "ignore":
            continue

        def in_force(t: IntArray, role: Any = role) -> npt.NDArray[np.bool_]:
            ok = np.ones(t.size, dtype=np.bool_)
            if role.valid_from_ms is not None:
                ok &= t >= role.valid_from_ms
            if role.valid_until_ms is not None:
                ok &= t < role.valid_until_ms
            return ok

        valid_s = np.bincount(
            quarter_bucket, weights=in_force(quarters) * (QUARTER_HOUR_MS / 1000.0), minlength=n
        )
        mine = is_device & (keys == role.key) & in_force(start)
        share = np.divide(total(mine, cov), valid_s, out=np.full(n, np.inf), where=valid_s > 0)
        worst = np.minimum(worst, share)
        interpolated += total(mine, interp)
    balance = SiteBalance(
        grid_import_wh=grid_in,
        grid_export_wh=grid_out,
        solar_wh=solar,
        battery_charge_wh=charge,
        battery_discharge_wh=discharge,
        circuits_wh=circuits,
        top_circuits=list(dict.fromkeys(r.name for r in site.top_circuits)),
    )
    warnings = []
    negative = np.flatnonzero(balance.untracked_wh < -UNTRACKED_TOLERANCE_WH)
    if negative.size:
        warnings.append(
            f"Site {site.name}: the circuits add up to more than the consumption in "
            f"{negative.size} period(s) (untracked down to {balance.untracked_wh.min():.1f} Wh); "
            "check the roles, parents and clamp directions of the circuits."
        )
    coverage = np.where(np.isfinite(worst), np.clip(worst, 0.0, 1.0), 0.0)
    return SiteEnergy(
        site, edges, balance, coverage, interpolated, tuple(netting), tuple(warnings), ()
    )


def site_energy_for(
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
    table = load_readings(settings, int(edges[0]), int(edges[-1]), device_ids=part.device_ids)
    energy = site_energy(
        table,
        part,
        edges,
        method=method,
        max_gap_s=float(settings["energy.max_gap_s"]),
        max_power_w=float(settings["energy.max_power_w"]),
        gap_policy=gap_policy,
    )
    return energy, READINGS


def site_energy_report(
    settings: Settings,
    site_name: str,
    start: str,
    end: str,
    every: str,
    tz_name: str | None = None,
    *,
    method: str = "auto",
    gap_policy: str = "skip",
) -> tuple[list[dict[str, Any]], SiteEnergy, str]:
    """Return the rows of ``wattlake energy --site``, the balance behind them and the source.

    Raises:
        ConfigError: no such site, or the sites are invalid.
        UsageError: unreadable times, unknown bucket size or method.
    """
    site = site_or_error(configured_sites(settings), site_name)
    tz = zone(tz_name or site.timezone)
    start_ms, end_ms = parse_time_ms(start, tz), parse_time_ms(end, tz)
    edges = bucket_edges_ms(start_ms, end_ms, every, tz)
    energy, source = site_energy_for(settings, site, edges, method=method, gap_policy=gap_policy)
    return site_rows(energy, tz), energy, source


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
    """Return what ``wattlake cost`` prints (see :func:`wattlake.query.energy.cost_for`) and
    its source: ``rollups``, ``rollups+readings`` (energy from rollups, the gaps bridged listed
    from readings because the coverage is not full), :data:`RECENT` (per device channel: the
    rollups up to a quarter-hour, readings after it, e.g. a month so far; gaps listed from
    readings) or ``readings``. Without ``list_gaps`` the gaps are not listed (no gap rows, gap
    counts 0: the costs are the same), so no more readings are read than the energy needs.

    Raises:
        ConfigError: no such site, or the sites are invalid.
        UsageError: no tariff, unreadable times, or no prices for the range.
    """
    from wattlake.query import energy as raw

    def from_readings() -> tuple[CostReport, str]:
        report = raw.cost_for(
            settings,
            start=start,
            end=end,
            tariff_name=tariff_name,
            tz_name=tz_name,
            device_id=device_id,
            channel=channel,
            site_name=site_name,
            method=method,
            shift_share=shift_share,
        )
        return report, READINGS

    site = None
    if site_name is not None:
        site = site_or_error(configured_sites(settings), site_name)
    chosen = tariff_name or (site.tariff if site else "") or str(settings["cost.tariff"])
    if not chosen or method != "auto":
        return from_readings()
    tariff = load_tariff(chosen)
    tz, start_ms, end_ms = cost_period(tariff, start, end, tz_name)
    segments = tariff_segments(tariff, start_ms, end_ms)
    edges = segments.edges_ms
    if site is not None and not aligned(edges):
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
        energy, source = site_energy_for(settings, site, edges, billed=grid_site)
        if source != ROLLUPS:
            return from_readings()
        covered = energy.coverage * seg_s
        billed: list[Series] = []
        if list_gaps and not _full(covered, edges):
            by_key = series_of(grid_site.device_ids)
            keys = dict.fromkeys(r.key for r in grid_site.channels)
            billed = [by_key[k] for k in keys if k in by_key]
            source = f"{ROLLUPS}+{READINGS}"
        report = _priced(
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
        interpolated = r.interpolated_wh if r.interpolated_wh is not None else np.zeros(seg_s.size)
        reports.append(
            _priced(
                tariff,
                segments,
                tz,
                r.import_wh,
                r.export_wh,
                r.covered_s,
                interpolated,
                gaps_from,
                label=f"{r.series.device_id} channel {r.series.channel}",
                lead={"device_id": r.series.device_id, "channel": r.series.channel},
                **options,
            )
        )
    report = CostReport(
        [row for r in reports for row in r.rows],
        [gap for r in reports for gap in r.gaps],
        [w for r in reports for w in r.warnings],
        min(r.coverage for r in reports),
    )
    return report, source


def hourly_energy(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
) -> tuple[IntArray, FloatArray, FloatArray, str]:
    """Return what :func:`wattlake.query.energy.hourly_energy` returns (UTC hour starts,
    consumption and solar per hour) and its source, ``rollups`` or ``readings``.

    Raises:
        ConfigError: no such site.
        UsageError: several devices, or several channels of the device and no ``channel``.
        NoDataError: no readings in the range.
    """
    from wattlake.query import energy as raw

    first_ms = start_ms // 3_600_000 * 3_600_000
    last_ms = -(-end_ms // 3_600_000) * 3_600_000
    edges = np.arange(first_ms, last_ms + 1, 3_600_000, dtype=np.int64)
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
        found = lake_sources(settings).rollups(first_ms, last_ms, device_id)
        results = [] if found is None else series_from_rollups(found, edges, channel=channel)
        if results:
            one_channel([r.series for r in results])
            r = results[0]
            consumption = np.where(r.covered_s > 0, r.import_wh, np.nan)
            return edges[:-1], consumption, np.full(edges.size - 1, np.nan), ROLLUPS
    starts, consumption, solar = raw.hourly_energy(
        settings, start_ms, end_ms, device_id=device_id, channel=channel, site_name=site_name
    )
    return starts, consumption, solar, READINGS

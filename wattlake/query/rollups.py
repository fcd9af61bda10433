"""Energy from the rollups: table ``energy_15min`` read back into energies per bucket, one of
the two sources of :mod:`wattlake.query.energy` (the other is :mod:`wattlake.query.readings`;
neither imports the other).

The rollups hold, per device channel and UTC quarter-hour, what the raw path gives for that
quarter-hour, so a sum of quarter-hours is the energy of any bucket whose edges are quarter-hours
(:func:`aligned`). Rows come back only for a range they are up to date for
(:func:`fresh_rollups`, through the snapshot properties of :mod:`wattlake.lake.freshness`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.energy.rollup import QUARTER_HOUR_MS
from wattlake.energy.series import Series, SeriesEnergy, SiteEnergy
from wattlake.energy.sites import UNTRACKED_TOLERANCE_WH, Site, SiteBalance
from wattlake.lake.freshness import (
    DAY_MS,
    SITES_PROPERTY,
    files_by_day,
    site_hash,
    stale_days,
)
from wattlake.lake.storage import Lake
from wattlake.schema import ENERGY_15MIN_TABLE, READINGS_TABLE

# wattlake.lake.tables (pyiceberg) and pyarrow.dataset (which imports pandas) are imported in
# the functions that use them: a short command answered from the plan cache needs neither.
if TYPE_CHECKING:
    from wattlake.config import Settings

_MS_TS: Final = pa.timestamp("ms", tz="UTC")
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
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
_SITE_COLUMNS: Final = [*_ROLLUP_COLUMNS, "site", "role"]


def aligned(edges_ms: npt.ArrayLike) -> bool:
    """Return whether every edge is a UTC quarter-hour, so rollups can answer."""
    edges = np.asarray(edges_ms, dtype=np.int64)
    return bool(edges.size >= 2 and not np.any(edges % QUARTER_HOUR_MS))


def method_label(methods: list[str]) -> str:
    """Return the methods of the parts of a bucket as one label (``counter+trapezoid``)."""
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
                method_label(found[i]),
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


@dataclass(frozen=True, slots=True)
class _RollupState:
    """What a question over ``energy_15min`` learns from the metadata of it and the readings
    table: the UTC days of readings committed since the rollups (None: they reflect none),
    whether the rollups have delete files, their data files by UTC day, and the site
    configurations they were computed for (snapshot property :data:`SITES_PROPERTY`)."""

    stale: frozenset[int] | None
    deletes: bool
    by_day: dict[int, list[str]]
    sites: str | None


_ROLLUP_STATE: Final = "rollup-state"


def _rollup_state(lake: Lake) -> _RollupState:
    """Return the :class:`_RollupState` of ``lake``, from the plan cache when neither table
    changed since a command learnt it (opening the two tables through the catalog and reading
    their manifests costs a short command most of its time), else from the tables."""
    from wattlake.lake.catalog import current_metadata_location
    from wattlake.query.engine import keep, read_kept

    locations = [current_metadata_location(lake, t) for t in (READINGS_TABLE, ENERGY_15MIN_TABLE)]
    if None not in locations:
        kept = read_kept(lake, _ROLLUP_STATE, "\n".join(map(str, locations)))
        try:
            stale, deletes, by_day, sites = cast(list[Any], kept)
            return _RollupState(
                None if stale is None else frozenset(int(d) for d in stale),
                bool(deletes),
                {int(d): [str(p) for p in paths] for d, paths in by_day.items()},
                None if sites is None else str(sites),
            )
        except (TypeError, ValueError, AttributeError):
            pass  # not kept yet, or damaged: learnt again below
    from wattlake.lake import tables

    readings = tables.open_table(lake, READINGS_TABLE)
    energy = tables.open_table(lake, ENERGY_15MIN_TABLE)
    added = stale_days(lake, readings, energy)
    # The table opened above plans the scan: opening it again would reread its metadata.
    deletes, by_day = files_by_day(lake, energy)
    sites = tables.last_property(energy, SITES_PROPERTY)
    if None not in locations:
        value = [None if added is None else sorted(added), deletes, by_day, sites]
        keep(
            lake, _ROLLUP_STATE, f"{readings.metadata_location}\n{energy.metadata_location}", value
        )
    return _RollupState(None if added is None else frozenset(added), deletes, by_day, sites)


def _read_rows(lake: Lake, paths: Sequence[str], columns: Sequence[str]) -> pa.Table:
    """Return ``columns`` of the Parquet files ``paths`` (a column a file lacks is null), read
    file by file on a thread per core (Arrow lets go of the GIL): a ``pyarrow.dataset`` would
    import pandas, 0.15 s of a short command."""
    import pyarrow.parquet as pq

    from wattlake.energy.series import usable_cores

    def read(path: str) -> pa.Table:
        with lake.fs.open_input_file(path) as source:
            file = pq.ParquetFile(source)
            present = set(file.schema_arrow.names)
            return file.read(columns=[c for c in columns if c in present], use_threads=False)

    workers = min(usable_cores(), len(paths))
    if workers <= 1:
        parts = [read(path) for path in paths]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(read, paths))
    return pa.concat_tables(parts, promote_options="permissive")


# Which rows of energy_15min a question wants: a boolean mask over a table holding at least
# the columns site and device_id.
Wanted = Callable[[pa.Table], pa.ChunkedArray]
_FILTER_COLUMNS: Final = ("site", "device_id")


def fresh_rollups(
    lake: Any,
    start_ms: int,
    end_ms: int,
    wanted: Wanted,
    columns: Sequence[str] = _ROLLUP_COLUMNS,
    *,
    state: _RollupState | None = None,
) -> pa.Table | None:
    """Return the ``energy_15min`` rows of the UTC days around [start, end) that match
    ``wanted``, or None when the rollups are not up to date for the range (see
    :func:`wattlake.query.energy.lake_sources`)."""
    state = state or _rollup_state(lake)
    first, last = start_ms // DAY_MS - 1, (end_ms - 1) // DAY_MS + 1
    if state.stale is None or any(first <= d <= last for d in state.stale):
        return None
    days = range(start_ms // DAY_MS, (end_ms - 1) // DAY_MS + 1)
    paths = [p for d in days for p in state.by_day.get(d, [])]
    if state.deletes or not paths:
        if not paths and state.by_day:
            return None
        from wattlake.lake import tables

        rows = tables.read_table(lake, ENERGY_15MIN_TABLE)
        return rows.filter(wanted(rows)).select(list(columns))
    rows = _read_rows(lake, paths, list(dict.fromkeys([*columns, *_FILTER_COLUMNS])))
    return rows.filter(wanted(rows)).select(list(columns))


def device_rollups(
    lake: Lake, start_ms: int, end_ms: int, device_id: str | None
) -> pa.Table | None:
    """Return the device rows of ``energy_15min`` (of ``device_id`` only if given) around
    [start, end), or None when the rollups are not up to date for the range."""

    def wanted(rows: pa.Table) -> pa.ChunkedArray:
        mask = pc.equal(rows["site"], "")  # device rows (site rows name a site instead)
        if device_id is not None:
            mask = pc.and_(mask, pc.equal(rows["device_id"], device_id))
        return mask

    return fresh_rollups(lake, start_ms, end_ms, wanted)


def site_rollups(settings: Settings, site: Site, start_ms: int, end_ms: int) -> pa.Table | None:
    """Return the ``energy_15min`` rows of ``site`` and of its devices around [start, end), or
    None when they are not up to date for the range or were computed for another
    configuration of the site."""
    lake = Lake.from_settings(settings)
    state = _rollup_state(lake)
    if json.loads(state.sites or "{}").get(site.name) != site_hash(site):
        return None
    devices = pa.array(sorted(set(site.device_ids)), pa.string())

    def wanted(rows: pa.Table) -> pa.ChunkedArray:
        device_rows = pc.and_(
            pc.equal(rows["site"], ""), pc.is_in(rows["device_id"], value_set=devices)
        )
        return pc.or_(pc.equal(rows["site"], site.name), device_rows)

    return fresh_rollups(lake, start_ms, end_ms, wanted, columns=_SITE_COLUMNS, state=state)


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

"""The figures the pages and the API show, each from the same library functions as the CLI.

Energy and cost come from :mod:`wattlake.query.energy` over readings loaded by
:func:`wattlake.query.engine.load_readings` (exactly what ``wattlake energy`` and ``wattlake
cost`` call); power history is downsampled in DuckDB to min, mean and max per bucket so spikes
stay visible. Every function returns a :class:`Rows`: named columns and rows, rendered as JSON,
CSV or Parquet by the API, so a download holds exactly what a chart or table shows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar, cast
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import pyarrow as pa

from wattlake.config import Settings
from wattlake.energy.buckets import format_local, utc_offsets_ms, zone
from wattlake.energy.tariffs import (
    Tariff,
    builtin_tariff_names,
    compare_tariffs,
    load_tariff,
    shift_savings,
    tariff_segments,
)
from wattlake.errors import UsageError
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.energy import (
    ENERGY_COLUMNS,
    SITE_COLUMNS,
    configured_sites,
    energy_over_edges_for,
    energy_rows,
    load_readings,
    series_rows,
)
from wattlake.query.engine import (
    DERIVED_VIEWS,
    VIEW_NAMES,
    ViewFilter,
    connect,
    define_views,
    drop_views,
)
from wattlake.query.rollups import cost_for, device_energy, site_energy_report
from wattlake.schema import (
    DEAD_LETTERS_TABLE,
    ENERGY_15MIN_TABLE,
    POWER_1H_TABLE,
    POWER_1MIN_TABLE,
    READINGS_TABLE,
)

# How often the tables' snapshot ids are checked [s]; when one changed, the views (their list
# of data files) are made again (planning the Iceberg scans holds the GIL for a second or two)
# and the figures asked lately are computed for the new state before it is shown, for at most
# WARM_LIMIT_S: so a figure shown lags the lake by VIEW_REFRESH_S + WARM_LIMIT_S = 30 s at most,
# plus the second or two that planning the views takes.
VIEW_REFRESH_S: Final = 25.0
WARM_LIMIT_S: Final = 5.0
# Figures computed again for a new table state: those asked within this time [s], at most
# WARM_ENTRIES of them (the most recently asked).
WARM_RECENT_S: Final = 600.0
WARM_ENTRIES: Final = 32
# The tables behind the views and the figures; their snapshot ids key the figures' cache.
VIEW_TABLES: Final = (
    READINGS_TABLE,
    DEAD_LETTERS_TABLE,
    ENERGY_15MIN_TABLE,
    POWER_1MIN_TABLE,
    POWER_1H_TABLE,
)
# Views pruned to a range of days kept (see LakeView.fetch_in), and the longest range of
# days they are made for (a longer one reads most of the files anyway: the whole views).
RANGE_VIEWS: Final = 8
RANGE_VIEW_DAYS: Final = 62
# A window ending less than this before now [ms] is not computed again for a new table state
# (its next ask has a new end).
RECENT_END_MS: Final = 120_000
# Figures kept per table state (the least recently used go first).
CACHE_ENTRIES: Final = 256
T = TypeVar("T")
log = logging.getLogger(__name__)
# Times in SQL: a TIMESTAMPTZ from epoch ms, so filters on ts reach the Parquet statistics.
TS_PARAM: Final = "make_timestamptz(?::BIGINT * 1000)"
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
# The month's cost so far is computed again at most this often [s] (it moves slowly and costs
# a month of readings).
MONTH_COST_TTL_S: Final = 60.0
SEASONS: Final = {
    12: "winter",
    1: "winter",
    2: "winter",
    3: "spring",
    4: "spring",
    5: "spring",
    6: "summer",
    7: "summer",
    8: "summer",
    9: "autumn",
    10: "autumn",
    11: "autumn",
}


@dataclass(frozen=True, slots=True)
class Rows:
    """A table of figures: column names (units in the names) and one dict per row."""

    columns: list[str]
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_arrow(self) -> pa.Table:
        """Return the rows as an Arrow table (for Parquet downloads)."""
        return pa.Table.from_pylist(
            [{c: r.get(c) for c in self.columns} for r in self.rows]
            or [dict.fromkeys(self.columns)],
        ).slice(0, len(self.rows))


class LakeView:
    """One DuckDB connection over the lake's views, renewed in the background every
    ``VIEW_REFRESH_S`` so new data files appear without a request waiting for the catalog.
    Queries run one at a time (registered Arrow views belong to one connection)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lake = Lake.from_settings(settings)
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        # Views pruned to a range of days, by (snapshot ids, first day, last day): the suffix
        # of their names on one connection, the least recently used first (see fetch_in).
        self._ranges: OrderedDict[tuple[Any, ...], str] = OrderedDict()
        self._range_con: duckdb.DuckDBPyConnection | None = None
        self._range_number = 0
        self._made_at = 0.0
        self._renewing = False
        # The tables' snapshot ids the views show: figures are cached under them.
        self.snapshots: tuple[int | None, ...] = ()
        self._cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        # The overview's month cost, computed at most every MONTH_COST_TTL_S.
        self.month_cost: dict[tuple[int, str, str], tuple[Any, dict[str, Any]]] = {}
        self.month_cost_lock = threading.Lock()
        # Figures asked lately (key -> how to compute it, when last asked), and callbacks that
        # compute figures depending on the time now (the overview's): both run for a new table
        # state before requests see it (see renew).
        self._recent: OrderedDict[tuple[Any, ...], tuple[Callable[[], Any], float]] = OrderedDict()
        self.warmers: list[Callable[[], Any]] = []
        self._warming = threading.local()

    def _snapshot_ids(self) -> tuple[int | None, ...]:
        """Return the current snapshot id of every table the figures read (a few ms each)."""
        ids = []
        for name in VIEW_TABLES:
            snapshot = tables.open_table(self.lake, name).current_snapshot()
            ids.append(None if snapshot is None else snapshot.snapshot_id)
        return tuple(ids)

    def cached(self, key: tuple[Any, ...], compute: Callable[[], T], *, again: bool = True) -> T:
        """Return ``compute()``, kept under ``key`` and the snapshot ids the views show, so
        a figure is computed once per table state (a new commit is seen within
        ``VIEW_REFRESH_S + WARM_LIMIT_S``, as the views are). With ``again`` (for a
        ``compute`` that does not depend on the time now), a figure asked lately is computed
        for a new table state before requests see that state (see :meth:`renew`)."""
        self.fetch("SELECT 1")  # the views and snapshot ids exist (or are renewed)
        ids = getattr(self._warming, "ids", None) or self.snapshots
        full = (ids, *key)
        if again and getattr(self._warming, "ids", None) is None:
            with self._cache_lock:
                self._recent[key] = (compute, time.monotonic())
                self._recent.move_to_end(key)
                while len(self._recent) > WARM_ENTRIES:
                    self._recent.popitem(last=False)
        with self._cache_lock:
            if full in self._cache:
                self._cache.move_to_end(full)
                return cast(T, self._cache[full])
        value = compute()
        with self._cache_lock:
            self._cache[full] = value
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return value

    def fetch(self, query: str, params: list[Any] | None = None) -> tuple[list[str], list[Any]]:
        """Return the column names and rows of ``query`` over the current views.

        Raises:
            StorageError: the lake cannot be read.
        """
        if self._con is None:
            ids = self._snapshot_ids()
            fresh = self._connect(ids)
            with self._lock:
                if self._con is None:
                    self._con, self._made_at, self.snapshots = fresh, time.monotonic(), ids
        elif time.monotonic() - self._made_at > VIEW_REFRESH_S and not self._renewing:
            self._renewing = True
            threading.Thread(target=self.renew, name="lake-views", daemon=True).start()
        with self._lock:
            assert self._con is not None
            cursor = self._con.execute(query, params or [])
            return [d[0] for d in cursor.description or []], cursor.fetchall()

    def _connect(self, ids: tuple[int | None, ...]) -> duckdb.DuckDBPyConnection:
        """Return a connection whose views show the tables at snapshot ids ``ids``."""
        return connect(
            self.lake, snapshot_ids=dict(zip(VIEW_TABLES, ids, strict=True)), keep_plans=True
        )

    def fetch_in(
        self, start_ms: int, end_ms: int, query: str, params: list[Any] | None = None
    ) -> tuple[list[str], list[Any]]:
        """Return :meth:`fetch` of ``query`` over views pruned to the UTC days of [start, end)
        at the table state the views show: a short range opens its few files, not the footer
        of every file in the lake. The query names views in braces (``{readings}``) and must
        filter its own range; a range longer than ``RANGE_VIEW_DAYS`` uses the whole views.

        Raises:
            StorageError: the lake cannot be read.
        """
        names = {view: view for view in (*VIEW_NAMES, *DERIVED_VIEWS)}
        first, last = start_ms // DAY_MS, (end_ms - 1) // DAY_MS
        if last - first >= RANGE_VIEW_DAYS:
            return self.fetch(query.format(**names), params)
        self.fetch("SELECT 1")  # the views and snapshot ids exist (or are renewed)
        ids = self.state()
        key = (ids, first, last)
        with self._lock:
            suffix = self._ranges.get(key)
            if suffix is None:
                # Views of one more range on the one connection kept for them (planning is
                # kept per table state, so this takes some ms, not the catalog's seconds).
                if self._range_con is None:
                    self._range_con = duckdb.connect()
                self._range_number += 1
                suffix = f"_r{self._range_number}"
                define_views(
                    self._range_con,
                    self.lake,
                    suffix=suffix,
                    view_filter=ViewFilter(start_ms, end_ms),
                    snapshot_ids=dict(zip(VIEW_TABLES, ids, strict=True)),
                    keep_plans=True,
                )
                self._ranges[key] = suffix
                while len(self._ranges) > RANGE_VIEWS:
                    drop_views(self._range_con, self._ranges.popitem(last=False)[1])
            self._ranges.move_to_end(key)
            assert self._range_con is not None
            named = query.format(**{n: f"{n}{suffix}" for n in names})
            cursor = self._range_con.execute(named, params or [])
            return [d[0] for d in cursor.description or []], cursor.fetchall()

    def renew(self) -> None:
        """Show the tables' current state if one changed: make the views again, compute the
        figures asked lately (and the warmers') for the new state within ``WARM_LIMIT_S``,
        then key the cache by the new snapshot ids, so the first request after a commit finds
        its figures computed. Until then requests see the previous state (the new views
        already answer uncached queries)."""
        fresh = None
        with self._lock:
            self._renewing = True  # (called directly, too)
        try:
            ids = self._snapshot_ids()
            # Planning the views' scans is the costly part: only when a table changed.
            if ids != self.snapshots:
                fresh = self._connect(ids)
        except Exception:  # the old views keep serving; the next request tries again
            ids = self.snapshots
        if fresh is not None:
            with self._lock:
                old, self._con = self._con, fresh
                if old is not None:
                    old.close()
            # The new state is shown after WARM_LIMIT_S at the latest (a figure still being
            # computed then is kept for it when done; a request for it meanwhile computes it).
            warming = threading.Thread(
                target=self._warm, args=(ids,), name="lake-warm", daemon=True
            )
            warming.start()
            warming.join(WARM_LIMIT_S)
        with self._lock:
            self._made_at = time.monotonic()
            self.snapshots = ids
            self._renewing = False

    def _warm(self, ids: tuple[int | None, ...]) -> None:
        """Compute the figures asked lately and the warmers' under snapshot ids ``ids`` (the
        warmers first; no new one after ``WARM_LIMIT_S``)."""
        deadline = time.monotonic() + WARM_LIMIT_S
        with self._cache_lock:
            recent = [
                (key, compute)
                for key, (compute, asked) in reversed(self._recent.items())
                if asked > time.monotonic() - WARM_RECENT_S
            ]
        jobs: list[tuple[tuple[Any, ...] | None, Callable[[], Any]]] = [
            *((None, w) for w in self.warmers),
            *recent,
        ]
        self._warming.ids = ids
        try:
            for key, compute in jobs:
                if time.monotonic() > deadline:
                    break
                try:
                    if key is None:
                        compute()
                    else:
                        self.cached(key, compute)
                except Exception as exc:  # the request will compute (and report) it
                    log.debug("warming %r failed: %s", key, exc)
        finally:
            self._warming.ids = None

    _renew = renew

    def warming(self) -> bool:
        """Return whether this thread computes figures for a new table state."""
        return getattr(self._warming, "ids", None) is not None

    def state(self) -> tuple[int | None, ...]:
        """Return the snapshot ids figures are computed for now (the new ones while warming)."""
        return getattr(self._warming, "ids", None) or self.snapshots


def tz_of(settings: Settings, tz_name: str | None = None) -> ZoneInfo:
    """Return the zone of local days: ``tz_name`` or the ``energy.tz`` setting."""
    return zone(tz_name or settings["energy.tz"])


def now_ms() -> int:
    """Return the time now [ms UTC]."""
    return time.time_ns() // 1_000_000


def local_midnight_before(ts_ms: int, tz: ZoneInfo) -> int:
    """Return the start of the local day holding ``ts_ms`` [ms UTC]."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return int(local.timestamp() * 1000)


def month_start_before(ts_ms: int, tz: ZoneInfo) -> tuple[int, int]:
    """Return the start of the local month holding ``ts_ms`` and of the next one [ms UTC]."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz)
    first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = (
        first.replace(year=first.year + 1, month=1)
        if first.month == 12
        else first.replace(month=first.month + 1)
    )
    return int(first.timestamp() * 1000), int(nxt.timestamp() * 1000)


def _energy_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "max_gap_s": float(settings["energy.max_gap_s"]),
        "max_power_w": float(settings["energy.max_power_w"]),
    }


def energy(
    settings: Settings,
    *,
    start_ms: int,
    end_ms: int,
    every: str,
    tz: ZoneInfo,
    device_id: str | None = None,
) -> Rows:
    """Return energy per device and local bucket, as ``wattlake energy`` prints it [Wh].

    Raises:
        UsageError: the range or bucket size is invalid.
    """
    edges, results, source = device_energy(settings, device_id, start_ms, end_ms, every, tz)
    rows = series_rows(results, edges, tz)
    shown = ("device_id", "channel", "start", "end", "import_wh", "export_wh", "net_wh", "coverage")
    columns = [c for c in ENERGY_COLUMNS if c in shown]
    return Rows(columns, [{c: r[c] for c in columns} for r in rows], {"source": source})


def sites(settings: Settings) -> Rows:
    """Return the configured sites: name, time zone, tariff, devices."""
    rows = [
        {
            "site": site.name,
            "timezone": site.timezone,
            "tariff": site.tariff,
            "devices": ",".join(site.device_ids),
        }
        for site in configured_sites(settings, check_devices=False).values()
    ]
    return Rows(["site", "timezone", "tariff", "devices"], rows)


def site_energy(
    settings: Settings,
    *,
    site_name: str,
    start: str,
    end: str,
    every: str,
    tz_name: str | None = None,
) -> Rows:
    """Return a site's balance per bucket, as ``wattlake energy --site`` prints it [Wh]; local
    times in the site's zone unless ``tz_name`` is given."""
    rows, balance, source = site_energy_report(settings, site_name, start, end, every, tz_name)
    circuits = [f"circuit_{name}_wh" for name in balance.balance.circuits_wh]
    columns = [*SITE_COLUMNS[:9], *circuits, *SITE_COLUMNS[9:]]
    return Rows(columns, rows, {"warnings": list(balance.warnings), "source": source})


def tariff_for(settings: Settings, name: str | None = None) -> Tariff:
    """Return the tariff named, else the ``cost.tariff`` setting.

    Raises:
        UsageError: no tariff is named or set.
    """
    chosen = name or settings["cost.tariff"]
    if not chosen:
        raise UsageError(
            "No tariff is set for devices without a site; set cost.tariff "
            "(e.g. pl-g11) or ask for one by name."
        )
    return load_tariff(chosen)


def cost(
    settings: Settings,
    *,
    start: str,
    end: str,
    tz_name: str | None = None,
    tariff_name: str | None = None,
    device_id: str | None = None,
    site_name: str | None = None,
    channel: int | None = None,
) -> Rows:
    """Return energy and cost per tariff zone with coverage, as ``wattlake cost`` prints it
    (the tariff named, else the site's, else ``cost.tariff``; dates in the tariff's zone
    unless ``tz_name`` is given). Without a site: a row set per device channel (each row
    led by ``device_id`` and ``channel``), or ``channel`` only; never summed.

    Raises:
        UsageError: no tariff, unreadable times, or no prices for the range.
    """
    report, source = cost_for(
        settings,
        start=start,
        end=end,
        tariff_name=tariff_name,
        tz_name=tz_name,
        device_id=device_id,
        channel=channel,
        site_name=site_name,
    )
    columns = list(report.rows[0]) if report.rows else ["tariff", "zone", "cost"]
    return Rows(columns, report.rows, {"warnings": report.warnings, "source": source})


def tariff_comparison(
    settings: Settings,
    *,
    start_ms: int,
    end_ms: int,
    device_id: str | None = None,
    site_name: str | None = None,
    shift_share: float = 0.2,
    channel: int | None = None,
) -> Rows:
    """Price the same consumption under every built-in tariff (cheapest first), with the
    saving of moving ``shift_share`` of dear-zone load into each tariff's cheapest zone.

    Without a site the consumption is one device channel (``channel`` is needed when the
    device has several: channels are never summed).

    Raises:
        UsageError: several devices or channels and no site or ``channel``.
    """
    over = energy_over_edges_for(
        settings, start_ms, end_ms, device_id=device_id, channel=channel, site_name=site_name
    )
    tariffs = [load_tariff(n) for n in builtin_tariff_names()]
    rows = compare_tariffs(tariffs, over, start_ms, end_ms)
    by_name = {t.name: t for t in tariffs}
    for row in rows:
        tariff = by_name[row["tariff"]]
        segments = tariff_segments(tariff, start_ms, end_ms)
        imp, _ = over(segments.edges_ms)
        saving = shift_savings(tariff, segments, imp, shift_share)
        row["shift_savings"] = round(float(saving["savings"]), 4)
    columns = [
        "tariff",
        "import_wh",
        "export_wh",
        "energy_cost",
        "fixed_cost",
        "total",
        "shift_savings",
        "currency",
        "rank",
    ]
    return Rows(columns, rows, {"shift_share": shift_share})


# Rollup tables of power statistics and their period [ms], coarsest first.
POWER_ROLLUPS: Final = (("power_1h", 3_600_000), ("power_1min", 60_000))


def power_history(
    view: LakeView,
    *,
    start_ms: int,
    end_ms: int,
    points: int,
    tz: ZoneInfo,
    device_id: str | None = None,
) -> Rows:
    """Return power per device channel over [start, end) in at most ``points`` buckets, with
    the min, mean and max of each bucket [W] (spikes stay visible at any zoom).

    Buckets of an hour or more come from ``power_1h``, of a minute or more from ``power_1min``
    as far as those rollups reach; the rest (short ranges, data not rolled up yet) from raw
    readings.
    """
    if end_ms <= start_ms:
        raise UsageError("The end must be after the start.")
    points = max(10, min(int(points), 5000))
    bucket_ms = max(1000, -(-(end_ms - start_ms) // points))
    device_sql = " AND device_id = ?" if device_id else ""
    device_param: list[Any] = [device_id] if device_id else []
    found: list[Any] = []
    raw_from = start_ms
    rollup = next(((t, p) for t, p in POWER_ROLLUPS if bucket_ms >= p), None)
    if rollup is not None:
        table, period_ms = rollup
        _, reach = view.fetch_in(
            start_ms,
            end_ms,
            f"SELECT epoch_ms(max(start)) FROM {{{table}}} WHERE start >= {TS_PARAM} "
            f"AND start < {TS_PARAM}{device_sql}",
            [start_ms, end_ms, *device_param],
        )
        if reach and reach[0][0] is not None:
            raw_from = min(end_ms, int(reach[0][0]) + period_ms)
            _, found = view.fetch_in(
                start_ms,
                end_ms,
                "SELECT device_id, channel, (epoch_ms(start) - ?) // ? AS b, min(min_power_w), "
                "sum(mean_power_w * samples) / sum(samples), max(max_power_w), sum(samples) "
                f"FROM {{{table}}} WHERE start >= make_timestamptz(?::BIGINT * 1000) AND start < "
                f"make_timestamptz(?::BIGINT * 1000){device_sql} GROUP BY ALL",
                [start_ms, bucket_ms, start_ms, raw_from, *device_param],
            )
    if raw_from < end_ms:
        _, raw = view.fetch_in(
            start_ms,
            end_ms,
            "SELECT device_id, channel, (epoch_ms(ts) - ?) // ? AS b, min(power_w), "
            "avg(power_w), max(power_w), count(*) FROM {readings} WHERE ts >= "
            "make_timestamptz(?::BIGINT * 1000) AND ts < make_timestamptz(?::BIGINT * 1000)"
            f"{device_sql} GROUP BY ALL",
            [start_ms, bucket_ms, raw_from, end_ms, *device_param],
        )
        found = _merge_buckets(found, raw)
    found.sort(key=lambda f: (f[0], f[1], f[2]))
    rows = [
        {
            "device_id": d,
            "channel": int(c),
            "ts": format_local(start_ms + int(b) * bucket_ms, tz),
            "ts_ms": start_ms + int(b) * bucket_ms,
            "min_w": _r(lo),
            "mean_w": _r(mean),
            "max_w": _r(hi),
            "readings": int(n),
        }
        for d, c, b, lo, mean, hi, n in found
    ]
    columns = ["device_id", "channel", "ts", "ts_ms", "min_w", "mean_w", "max_w", "readings"]
    source = "readings" if rollup is None or raw_from == start_ms else rollup[0]
    return Rows(columns, rows, {"bucket_ms": bucket_ms, "source": source})


def _merge_buckets(first: list[Any], second: list[Any]) -> list[Any]:
    """Combine bucket statistics of two sources (a bucket may straddle where they meet)."""
    merged: dict[tuple[Any, Any, Any], list[Any]] = {}
    for d, c, b, lo, mean, hi, n in [*first, *second]:
        key = (d, c, b)
        if key not in merged:
            merged[key] = [d, c, b, lo, mean, hi, n]
            continue
        m = merged[key]
        total = (m[6] or 0) + (n or 0)
        if mean is not None and m[4] is not None and total:
            m[4] = (m[4] * m[6] + mean * n) / total
        m[3] = lo if m[3] is None else m[3] if lo is None else min(m[3], lo)
        m[5] = hi if m[5] is None else m[5] if hi is None else max(m[5], hi)
        m[6] = total
    return [tuple(v) for v in merged.values()]


def _r(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def devices(view: LakeView, settings: Settings, *, tz: ZoneInfo, at_ms: int | None = None) -> Rows:
    """Return every device channel with its last reading and whether it is stale."""
    now = at_ms if at_ms is not None else now_ms()
    since = (now - 7 * DAY_MS) // HOUR_MS * HOUR_MS  # from the hour: one query per table state
    found = view.cached(
        ("devices", since),
        lambda: view.fetch_in(
            since,
            now + DAY_MS,
            "SELECT device_id, channel, epoch_ms(max(ts)) AS last_ms, arg_max(power_w, ts), "
            f"count(*) FROM {{readings}} WHERE ts >= {TS_PARAM} GROUP BY ALL "
            "ORDER BY device_id, channel",
            [since],
        )[1],
    )
    stale_s = float(settings["web.stale_after_s"])
    rows = [
        {
            "device_id": d,
            "channel": int(c),
            "last_seen": format_local(int(last), tz),
            "last_seen_ms": int(last),
            "age_s": round((now - int(last)) / 1000, 1),
            "power_w": _r(p),
            "stale": (now - int(last)) / 1000 > stale_s,
            "readings_7d": int(n),
        }
        for d, c, last, p, n in found
    ]
    columns = [
        "device_id",
        "channel",
        "last_seen",
        "last_seen_ms",
        "age_s",
        "power_w",
        "stale",
        "readings_7d",
    ]
    return Rows(columns, rows)


def today_energy(view: LakeView, settings: Settings, *, tz: ZoneInfo, at_ms: int) -> Rows:
    """Return today's energy so far per device channel (one bucket from local midnight), with
    its coverage; computed once per table state (no reading lies after now), for the overview
    and for the coverage alert."""
    day_start = local_midnight_before(at_ms, tz)
    return view.cached(
        ("today", day_start, str(tz)),
        lambda: energy(settings, start_ms=day_start, end_ms=at_ms, every="day", tz=tz),
        again=False,  # (its end is the time now: the overview's warmer computes it again)
    )


def overview(
    view: LakeView, settings: Settings, *, tz: ZoneInfo, at_ms: int | None = None
) -> dict[str, Any]:
    """Return the overview: devices now, today's energy, this month's cost so far and its
    projection for the whole month (cost so far scaled by the share of the month gone)."""
    now = at_ms if at_ms is not None else now_ms()
    today = today_energy(view, settings, tz=tz, at_ms=now)
    month_start, month_end = month_start_before(now, tz)
    month: dict[str, Any] = {"tariff": None}
    if settings["cost.tariff"]:
        key = (month_start, str(tz), settings["cost.tariff"])
        ids = view.state()
        known = view.month_cost.get(key)
        # Again when the tables changed: at most once a minute for a request, on every new
        # table state while the views are renewed (so requests rarely wait for it).
        due = known is None or (
            known[0] != ids
            and (view.warming() or now - known[1]["as_of_ms"] > MONTH_COST_TTL_S * 1000)
        )
        if known is None or due:
            # One computation at a time (the server's warm-up and a first request, say): a
            # request arriving meanwhile waits for it rather than computing it again.
            with view.month_cost_lock:
                again = view.month_cost.get(key)
                if again is None or again is known:
                    again = (ids, _month_cost(settings, tz, month_start, month_end, now))
                    view.month_cost = {key: again}
            known = again
        month = dict(known[1])
    return {
        "time_zone": str(tz),
        "now": format_local(now, tz),
        "devices": devices(view, settings, tz=tz, at_ms=now).rows,
        "today": today.rows,
        "month": month,
    }


def _month_cost(
    settings: Settings, tz: ZoneInfo, month_start: int, month_end: int, now: int
) -> dict[str, Any]:
    # The totals only: the gaps are not listed (that would read the month's readings), the
    # month's complete days come from the rollups and only the recent tail from readings.
    report, _ = cost_for(
        settings,
        start=format_local(month_start, tz),
        end=format_local(now, tz),
        tz_name=str(tz),
        list_gaps=False,
    )
    rows = report.rows
    # Without a site each device channel is billed on its own (never summed): one total each.
    totals = [r for r in rows if r.get("zone") == "total"]
    scale = (month_end - month_start) / max(now - month_start, 1)
    channels = [
        {
            "device_id": t.get("device_id"),
            "channel": t.get("channel"),
            "cost_so_far": round(float(t["cost"]), 2),
            "projected": round(float(t["cost"]) * scale, 2),
        }
        for t in totals
    ]
    one = channels[0] if len(channels) == 1 else None
    return {
        "tariff": rows[0]["tariff"] if rows else settings["cost.tariff"],
        "currency": rows[0].get("currency", "") if rows else "",
        "cost_so_far": one["cost_so_far"] if one else None,
        "projected": one["projected"] if one else None,
        "channels": channels,
        "as_of": format_local(now, tz),
        "as_of_ms": now,
    }


def patterns(
    view: LakeView,
    *,
    start_ms: int,
    end_ms: int,
    tz: ZoneInfo,
    device_id: str | None = None,
    channel: int | None = None,
) -> tuple[Rows, Rows]:
    """Return the mean power by local weekday and hour (a heatmap) and by season and local
    hour (average daily profiles) [W] of the readings chosen (give a device and channel for
    one meter: what several channels measure is not summed unless asked)."""
    query = (
        "SELECT epoch_ms(date_trunc('hour', ts)) AS h, device_id, channel, avg(power_w) "
        f"FROM readings WHERE ts >= {TS_PARAM} AND ts < {TS_PARAM}"
        + (" AND device_id = ?" if device_id else "")
        + (" AND channel = ?" if channel is not None else "")
        + " GROUP BY ALL"
    )
    params: list[Any] = [start_ms, end_ms] + ([device_id] if device_id else [])
    params += [channel] if channel is not None else []
    _, found = view.fetch(query, params)
    if not found:
        empty_heat = Rows(["weekday", "hour", "mean_w"], [])
        return empty_heat, Rows(["season", "hour", "mean_w"], [])
    hours = np.array([f[0] for f in found], dtype=np.int64)
    power = np.array([f[3] if f[3] is not None else np.nan for f in found], dtype=np.float64)
    # Sum channels per UTC hour first (the device's power), then average per local slot.
    unique_h, inverse = np.unique(hours, return_inverse=True)
    summed = np.zeros(unique_h.size)
    np.add.at(summed, inverse, np.nan_to_num(power))
    local = unique_h + utc_offsets_ms(unique_h, tz)
    local_hour = (local // 3_600_000) % 24
    weekday = ((local // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    months = np.array(
        [datetime.fromtimestamp(int(t) / 1000, UTC).month for t in local], dtype=np.int64
    )
    heat = []
    for wd in range(7):
        for hr in range(24):
            sel = (weekday == wd) & (local_hour == hr)
            heat.append(
                {
                    "weekday": wd,
                    "hour": hr,
                    "mean_w": _r(summed[sel].mean()) if sel.any() else None,
                }
            )
    profile = []
    for season in ("winter", "spring", "summer", "autumn"):
        in_season = np.isin(months, [m for m, s in SEASONS.items() if s == season])
        for hr in range(24):
            sel = in_season & (local_hour == hr)
            if sel.any():
                profile.append({"season": season, "hour": hr, "mean_w": _r(summed[sel].mean())})
    return (
        Rows(["weekday", "hour", "mean_w"], heat),
        Rows(["season", "hour", "mean_w"], profile),
    )


def quality(
    view: LakeView, settings: Settings, *, start_ms: int, end_ms: int, tz: ZoneInfo
) -> Rows:
    """Return per device: last seen, coverage, gap time and counter anomalies over the range
    (from the same energy computation as ``wattlake energy``)."""
    table = load_readings(settings, start_ms, end_ms)
    edges = np.array([start_ms, end_ms], dtype=np.int64)
    rows, results = energy_rows(table, edges, tz, **_energy_kwargs(settings))
    # One row per device channel: its own anomalies and its own last reading.
    events: dict[tuple[str, int], dict[str, int]] = {}
    for result in results:
        kinds = events.setdefault((result.series.device_id, result.series.channel), {})
        for e in result.events:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
    last = {(r["device_id"], r["channel"]): r for r in devices(view, settings, tz=tz).rows}
    out = []
    for r in rows:
        kinds = events.get((r["device_id"], r["channel"]), {})
        seen = last.get((r["device_id"], r["channel"]))
        out.append(
            {
                "device_id": r["device_id"],
                "channel": r.get("channel"),
                "last_seen": seen["last_seen"] if seen else None,
                "coverage": r["coverage"],
                "gap_s": r["gap_s"],
                "counter_resets": kinds.get("reset", 0),
                "outliers_rejected": kinds.get("spike", 0) + kinds.get("glitch", 0),
            }
        )
    columns = [
        "device_id",
        "channel",
        "last_seen",
        "coverage",
        "gap_s",
        "counter_resets",
        "outliers_rejected",
    ]
    return Rows(columns, out)


def dead_letters(view: LakeView, *, limit: int = 20) -> tuple[Rows, Rows]:
    """Return dead letters counted by reason, and the latest ``limit`` with their payloads."""
    _, by_reason = view.fetch(
        "SELECT error_code AS reason, count(*) AS count FROM dead_letters GROUP BY 1 ORDER BY 2 "
        "DESC"
    )
    columns, _ = view.fetch("SELECT * FROM dead_letters LIMIT 0")
    order = "arrival_ms DESC" if "arrival_ms" in columns else "1"
    wanted: list[str] = [
        c for c in ("arrival_time", "error_code", "topic", "raw_text") if c in columns
    ]
    _, latest = view.fetch(
        f"SELECT {', '.join(wanted) or '*'} FROM dead_letters ORDER BY {order} LIMIT ?", [limit]
    )
    return (
        Rows(["reason", "count"], [{"reason": r, "count": int(n)} for r, n in by_reason]),
        Rows(
            wanted,
            [
                {c: None if v is None else str(v) for c, v in zip(wanted, row, strict=True)}
                for row in latest
            ],
        ),
    )

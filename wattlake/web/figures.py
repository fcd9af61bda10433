"""The figures the pages and the API show, each from the same library functions as the CLI.

Energy and cost come from the entry points of :mod:`wattlake.query.energy` (exactly what
``wattlake energy`` and ``wattlake cost`` call); power history from :mod:`wattlake.query.power`,
downsampled in DuckDB to min, mean and max per bucket so spikes stay visible. This module shapes
their answers for the pages. Every function returns a :class:`Rows`: named columns and rows,
rendered as JSON, CSV or Parquet by the API, so a download holds exactly what a chart or table
shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

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
from wattlake.query.deadletters import dead_letter_rows
from wattlake.query.energy import (
    EnergyRequest,
    cost_for,
    energy_for,
    energy_over_edges_for,
    site_energy_for,
    site_request,
)
from wattlake.query.lakeview import LakeView
from wattlake.query.power import hourly_power, last_readings, power_buckets
from wattlake.query.readings import load_readings
from wattlake.query.reports import (
    ENERGY_COLUMNS,
    SITE_COLUMNS,
    energy_rows,
    series_rows,
    site_rows,
)
from wattlake.query.sites import configured_sites

# A window ending less than this before now [ms] is not computed again for a new table state
# (its next ask has a new end).
RECENT_END_MS: Final = 120_000
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
    answer = energy_for(settings, EnergyRequest(start_ms, end_ms, tz, every, device_id=device_id))
    rows = series_rows(answer.series, answer.edges, tz)
    shown = ("device_id", "channel", "start", "end", "import_wh", "export_wh", "net_wh", "coverage")
    columns = [c for c in ENERGY_COLUMNS if c in shown]
    return Rows(columns, [{c: r[c] for c in columns} for r in rows], {"source": answer.source})


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
    request = site_request(settings, site_name, start, end, every, tz_name)
    answer = site_energy_for(settings, request)
    balance = answer.site
    assert balance is not None  # (a site's request is answered with its balance)
    circuits = [f"circuit_{name}_wh" for name in balance.balance.circuits_wh]
    columns = [*SITE_COLUMNS[:9], *circuits, *SITE_COLUMNS[9:]]
    rows = site_rows(balance, request.tz)
    return Rows(columns, rows, {"warnings": list(balance.warnings), "source": answer.source})


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
    found, source = power_buckets(
        view, start_ms=start_ms, end_ms=end_ms, bucket_ms=bucket_ms, device_id=device_id
    )
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
    return Rows(columns, rows, {"bucket_ms": bucket_ms, "source": source})


def _r(value: Any, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def devices(view: LakeView, settings: Settings, *, tz: ZoneInfo, at_ms: int | None = None) -> Rows:
    """Return every device channel with its last reading and whether it is stale."""
    now = at_ms if at_ms is not None else now_ms()
    since = (now - 7 * DAY_MS) // HOUR_MS * HOUR_MS  # from the hour: one query per table state
    found = view.cached(
        ("devices", since),
        lambda: last_readings(view, since, now + DAY_MS),
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
    found = hourly_power(
        view, start_ms=start_ms, end_ms=end_ms, device_id=device_id, channel=channel
    )
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
    by_reason, wanted, latest = dead_letter_rows(view, limit=limit)
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

"""Time-of-use tariffs: zones in local time, prices with validity periods, cost of energy.

A tariff file (TOML, format in ``docs/tariffs.md``) names *zones* (``day``, ``night``,
``peak`` …) and *rules* that put half-open local-time ranges of some day types and seasons into a
zone; the first matching rule wins and ``default_zone`` takes the rest. *Prices* have validity
periods that start at local midnight of ``valid_from``. Zone changes are just more bucket edges:
:func:`tariff_segments` turns a tariff and a time range into UTC millisecond edges with the zone
and price period of each segment, and the integration kernel splits every interval exactly there.

A *dynamic* tariff (hourly or 15-minute market prices read from a file, see
:mod:`wattlake.energy.dynamic_tariffs`) has one zone, ``dynamic``, and one price period per
price interval: its segments are the price intervals, so the same kernel prices it exactly.
"""

from __future__ import annotations

import itertools
import tomllib
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import holidays
import msgspec
import numpy as np
import numpy.typing as npt

from wattlake.energy.buckets import format_local, local_midnight_ms, wall_time_ms, zone
from wattlake.errors import UsageError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DAY_TYPES: Final = ("weekday", "saturday", "sunday", "holiday")
_DAY_ALIASES: Final[dict[str, frozenset[str]]] = {
    "all": frozenset(DAY_TYPES),
    "weekend": frozenset({"saturday", "sunday"}),
    **{d: frozenset({d}) for d in DAY_TYPES},
}
_MINUTES_PER_DAY: Final = 1440


# -- the file, as read (msgspec checks types at the edge) --------------------------------------
class _RuleFile(msgspec.Struct, forbid_unknown_fields=True):
    zone: str
    hours: list[str]
    days: list[str] = msgspec.field(default_factory=lambda: ["all"])
    season: str | None = None


class _PriceFile(msgspec.Struct, forbid_unknown_fields=True):
    valid_from: date
    import_per_kwh: dict[str, float]
    export_per_kwh: float | dict[str, float] = 0.0
    fixed_per_day: float = 0.0
    fixed_per_month: float = 0.0


class _TariffFile(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    currency: str
    timezone: str
    default_zone: str
    prices: list[_PriceFile]
    title: str = ""
    holidays: str | None = None
    seasons: dict[str, list[int]] = msgspec.field(default_factory=dict)
    rules: list[_RuleFile] = msgspec.field(default_factory=list)
    models: list[str] = msgspec.field(default_factory=list)
    leaves_out: list[str] = msgspec.field(default_factory=list)


# -- the model ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ZoneRule:
    """Local-time ranges [minute of day, half-open) of some day types and months in a zone."""

    zone: str
    days: frozenset[str]
    months: frozenset[int]
    ranges_min: tuple[tuple[int, int], ...]

    def applies(self, day_type: str, month: int) -> bool:
        """Return whether the rule is in force on a day of this type and month."""
        return day_type in self.days and month in self.months


@dataclass(frozen=True, slots=True)
class PricePeriod:
    """Prices in force from local midnight of ``valid_from`` until the next period.

    Import and export prices are per zone [currency/kWh]; fixed charges are per local day and per
    calendar month [currency].
    """

    valid_from: date
    import_per_kwh: Mapping[str, float]
    export_per_kwh: Mapping[str, float]
    fixed_per_day: float
    fixed_per_month: float


@dataclass(frozen=True, slots=True)
class DynamicPrices:
    """Prices per interval of a dynamic tariff.

    ``edges_ms`` [ms UTC] has one more element than the price arrays; interval ``i`` is
    [edges_ms[i], edges_ms[i + 1]). A NaN import price marks a gap the price file does not cover.
    Prices are [currency/kWh], negative ones included; fixed charges [currency] per local day
    and per calendar month, pro rata as in zone tariffs.
    """

    origin: str
    edges_ms: IntArray
    import_per_kwh: FloatArray
    export_per_kwh: FloatArray
    fixed_per_day: float = 0.0
    fixed_per_month: float = 0.0


@dataclass(frozen=True, slots=True)
class Tariff:
    """A time-of-use tariff; build one with :func:`load_tariff` or :func:`parse_tariff`."""

    name: str
    title: str
    currency: str
    timezone: str
    holidays_country: str | None
    default_zone: str
    zones: tuple[str, ...]
    rules: tuple[ZoneRule, ...]
    prices: tuple[PricePeriod, ...]
    models: tuple[str, ...] = ()
    leaves_out: tuple[str, ...] = ()
    dynamic: DynamicPrices | None = None

    def period_on(self, day: date) -> int:
        """Return the index of the price period in force on a local day.

        Raises:
            UsageError: the tariff has no prices that early.
        """
        index = -1
        for i, period in enumerate(self.prices):
            if period.valid_from <= day:
                index = i
        if index < 0:
            raise UsageError(
                f"Tariff {self.name} has no prices before {self.prices[0].valid_from}; "
                "start later or add a price period to the tariff file."
            )
        return index


def _minutes(text: str, where: str) -> int:
    try:
        hh, mm = text.strip().split(":")
        minutes = int(hh) * 60 + int(mm)
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r} is not a time like 06:00.") from exc
    if not 0 <= minutes <= _MINUTES_PER_DAY or not 0 <= int(mm) < 60:
        raise UsageError(f"{where}: {text!r} is not a time between 00:00 and 24:00.")
    return minutes


def _ranges(hours: list[str], where: str) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for item in hours:
        if "-" not in item:
            raise UsageError(f"{where}: {item!r} is not a range like 22:00-06:00.")
        first, last = item.split("-", 1)
        start, end = _minutes(first, where), _minutes(last, where)
        if start < end:
            out.append((start, end))
        elif start > end:  # wraps past midnight: 22:00-06:00
            out.extend([(start, _MINUTES_PER_DAY), (0, end)])
        else:
            raise UsageError(f"{where}: {item!r} is empty; use 00:00-24:00 for the whole day.")
    return tuple(out)


def _months(span: list[int], where: str) -> frozenset[int]:
    if len(span) != 2 or not all(1 <= m <= 12 for m in span):
        raise UsageError(f"{where}: a season is [first_month, last_month], e.g. [6, 9].")
    first, last = span
    if first <= last:
        return frozenset(range(first, last + 1))
    return frozenset([*range(first, 13), *range(1, last + 1)])


def parse_tariff(text: str, *, origin: str = "tariff", folder: Path | None = None) -> Tariff:
    """Build a tariff from the text of a TOML tariff file.

    A file with ``kind = "dynamic"`` names a price file (relative to ``folder``, the TOML
    file's folder) and builds a dynamic tariff.

    Raises:
        UsageError: the file is not valid TOML or does not follow ``docs/tariffs.md``.
    """
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{origin} is not valid TOML: {exc}.") from exc
    if table.get("kind", "zones") == "dynamic":
        from wattlake.energy.dynamic_tariffs import dynamic_tariff_from_table

        return dynamic_tariff_from_table(table, origin=origin, folder=folder)
    table.pop("kind", None)
    try:
        raw = msgspec.convert(table, _TariffFile)
    except msgspec.ValidationError as exc:
        raise UsageError(f"{origin} does not follow docs/tariffs.md: {exc}.") from exc
    zone(raw.timezone)
    if raw.holidays is not None:
        try:
            holidays.country_holidays(raw.holidays)
        except NotImplementedError as exc:
            raise UsageError(
                f"{origin}: holidays = {raw.holidays!r} is not a country code the holidays "
                "package knows, e.g. PL, GB, US."
            ) from exc
    seasons = {name: _months(span, f"{origin} season {name}") for name, span in raw.seasons.items()}
    rules: list[ZoneRule] = []
    zones: list[str] = []
    for i, rule in enumerate(raw.rules):
        where = f"{origin} rule {i + 1} ({rule.zone})"
        days: set[str] = set()
        for d in rule.days:
            if d not in _DAY_ALIASES:
                raise UsageError(f"{where}: unknown day type {d!r}; use {', '.join(_DAY_ALIASES)}.")
            days |= _DAY_ALIASES[d]
        if "holiday" in days and raw.holidays is None and rule.days != ["all"]:
            raise UsageError(f'{where}: uses holidays, so set holidays = "<country code>".')
        if rule.season is not None and rule.season not in seasons:
            raise UsageError(f"{where}: season {rule.season!r} is not defined under [seasons].")
        months = seasons[rule.season] if rule.season else frozenset(range(1, 13))
        rules.append(ZoneRule(rule.zone, frozenset(days), months, _ranges(rule.hours, where)))
        zones.append(rule.zone)
    zones.append(raw.default_zone)
    ordered_zones = tuple(dict.fromkeys(zones))
    if not raw.prices:
        raise UsageError(f"{origin} has no [[prices]]; add at least one price period.")
    periods: list[PricePeriod] = []
    for p in sorted(raw.prices, key=lambda p: p.valid_from):
        missing = [z for z in ordered_zones if z not in p.import_per_kwh]
        if missing:
            raise UsageError(
                f"{origin} prices from {p.valid_from} lack an import price for zone(s) "
                f"{', '.join(missing)}; add them under import_per_kwh."
            )
        export = p.export_per_kwh
        export_map = (
            {z: float(export) for z in ordered_zones}
            if isinstance(export, float | int)
            else {z: float(export.get(z, 0.0)) for z in ordered_zones}
        )
        periods.append(
            PricePeriod(
                p.valid_from,
                {z: float(p.import_per_kwh[z]) for z in ordered_zones},
                export_map,
                p.fixed_per_day,
                p.fixed_per_month,
            )
        )
    return Tariff(
        name=raw.name,
        title=raw.title,
        currency=raw.currency,
        timezone=raw.timezone,
        holidays_country=raw.holidays,
        default_zone=raw.default_zone,
        zones=ordered_zones,
        rules=tuple(rules),
        prices=tuple(periods),
        models=tuple(raw.models),
        leaves_out=tuple(raw.leaves_out),
    )


def builtin_tariff_names() -> list[str]:
    """Return the names of the tariffs shipped with wattlake."""
    folder = resources.files("wattlake.energy").joinpath("tariffs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def builtin_tariff_text(name: str) -> str:
    """Return the TOML text of a built-in tariff.

    Raises:
        UsageError: no built-in tariff has that name.
    """
    if name not in builtin_tariff_names():
        raise UsageError(
            f"No tariff named {name!r}; use one of {', '.join(builtin_tariff_names())} "
            "or the path of a .toml tariff file."
        )
    folder = resources.files("wattlake.energy").joinpath("tariffs")
    return folder.joinpath(f"{name}.toml").read_text(encoding="utf-8")


def load_tariff(name_or_path: str) -> Tariff:
    """Return a built-in tariff by name, or a tariff file by path.

    A ``.csv`` or ``.json`` path is a price file of a dynamic tariff (formats in
    ``docs/tariffs.md``); a ``.toml`` file is a zone tariff or, with ``kind = "dynamic"``, a
    dynamic one.

    Raises:
        UsageError: neither a built-in name nor a readable, valid tariff or price file.
    """
    path = Path(name_or_path)
    if path.suffix.lower() in (".csv", ".json"):
        from wattlake.energy.dynamic_tariffs import load_price_file

        return load_price_file(path)
    if name_or_path.endswith(".toml") or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"Cannot read tariff file {path}: {exc.strerror}.") from exc
        return parse_tariff(text, origin=str(path), folder=path.parent)
    return parse_tariff(builtin_tariff_text(name_or_path), origin=f"built-in tariff {name_or_path}")


# -- zones in time -----------------------------------------------------------------------------
def day_type(day: date, holiday_calendar: Mapping[date, Any] | None) -> str:
    """Return ``holiday``, ``saturday``, ``sunday`` or ``weekday``; a holiday wins."""
    if holiday_calendar is not None and day in holiday_calendar:
        return "holiday"
    return {5: "saturday", 6: "sunday"}.get(day.weekday(), "weekday")


def day_zones(tariff: Tariff, day_kind: str, month: int) -> list[tuple[int, str]]:
    """Return the zone changes of a day as (minute of day, zone), starting at minute 0."""
    active = [r for r in tariff.rules if r.applies(day_kind, month)]
    cuts = sorted({0, _MINUTES_PER_DAY, *(m for r in active for rng in r.ranges_min for m in rng)})
    changes: list[tuple[int, str]] = []
    for start, end in itertools.pairwise(cuts):
        middle = (start + end) / 2
        name = tariff.default_zone
        for rule in active:
            if any(lo <= middle < hi for lo, hi in rule.ranges_min):
                name = rule.zone
                break
        if not changes or changes[-1][1] != name:
            changes.append((start, name))
    return changes


@dataclass(frozen=True, slots=True)
class TariffSegments:
    """Consecutive segments of one zone and one price period.

    ``edges_ms`` has one more element than ``zone_index`` and ``period_index``; ``fixed_cost`` is
    the pro-rata fixed charges of the whole range [currency]. ``day_group`` numbers the kind of
    day each segment lies in (same day type and season: the same rules in force), and
    ``group_zones[g]`` lists the zones such a day has, so load is only ever shifted within it.
    """

    edges_ms: IntArray
    zone_index: npt.NDArray[np.intp]
    period_index: npt.NDArray[np.intp]
    fixed_cost: float
    day_group: npt.NDArray[np.intp] | None = None
    group_zones: tuple[tuple[int, ...], ...] = ()


def tariff_segments(tariff: Tariff, start_ms: int, end_ms: int) -> TariffSegments:
    """Split [start, end) into segments of constant zone and price, in the tariff's time zone.

    Fixed charges are pro rata: a per-day charge times the share of each local day inside the
    range, a per-month charge times the share of each calendar month.

    Raises:
        UsageError: the range is empty or the tariff has no prices for part of it.
    """
    if end_ms <= start_ms:
        raise UsageError("The end of the range must be after the start.")
    tz = ZoneInfo(tariff.timezone)
    if tariff.dynamic is not None:
        return _dynamic_segments(tariff.dynamic, start_ms, end_ms, tz)
    calendar: Mapping[date, Any] | None = None
    first_day = _local_date(start_ms, tz)
    last_day = _local_date(end_ms, tz)
    if tariff.holidays_country:
        years = range(first_day.year, last_day.year + 1)
        calendar = holidays.country_holidays(tariff.holidays_country, years=years)
    zone_of = {name: i for i, name in enumerate(tariff.zones)}
    starts: list[int] = []
    zones: list[int] = []
    periods: list[int] = []
    groups: list[int] = []
    group_of: dict[tuple[int, ...], int] = {}
    group_zones: list[tuple[int, ...]] = []
    fixed = 0.0
    cache: dict[tuple[str, int], list[tuple[int, str]]] = {}
    day_group: dict[tuple[str, int], int] = {}
    day = first_day
    while day <= last_day:
        day_start = local_midnight_ms(day, tz)
        day_end = local_midnight_ms(day + timedelta(days=1), tz)
        if day_end > start_ms and day_start < end_ms:
            period = tariff.period_on(day)
            kind = day_type(day, calendar)
            key = (kind, day.month)
            if key not in cache:
                cache[key] = day_zones(tariff, kind, day.month)
                in_force = tuple(
                    i for i, r in enumerate(tariff.rules) if r.applies(kind, day.month)
                )
                if in_force not in group_of:
                    group_of[in_force] = len(group_zones)
                    group_zones.append(tuple(sorted({zone_of[z] for _, z in cache[key]})))
                day_group[key] = group_of[in_force]
            midnight = datetime(day.year, day.month, day.day)
            if day_end - day_start == _MS_PER_DAY:
                changes = [
                    (wall_time_ms(midnight + timedelta(minutes=minute), tz), name)
                    for minute, name in cache[key]
                ]
            else:
                changes = _dst_day_changes(midnight, day_start, day_end, cache[key], tz)
            for at, name in changes:
                starts.append(at)
                zones.append(zone_of[name])
                periods.append(period)
                groups.append(day_group[key])
            overlap = min(day_end, end_ms) - max(day_start, start_ms)
            prices = tariff.prices[period]
            fixed += prices.fixed_per_day * overlap / (day_end - day_start)
            if prices.fixed_per_month:
                month_start = local_midnight_ms(day.replace(day=1), tz)
                next_month = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
                month_ms = local_midnight_ms(next_month, tz) - month_start
                fixed += prices.fixed_per_month * overlap / month_ms
        day += timedelta(days=1)
    seg_start = np.array(starts, dtype=np.int64)
    zone_index = np.array(zones, dtype=np.intp)
    period_index = np.array(periods, dtype=np.intp)
    group_index = np.array(groups, dtype=np.intp)
    # Keep the segments that reach into [start, end), drop a change to the same zone and price
    # (midnight), and clip to the range.
    seg_end = np.append(seg_start[1:], np.int64(end_ms))
    keep = (seg_end > start_ms) & (seg_start < end_ms) & (seg_end > seg_start)
    same = np.zeros(keep.size, dtype=np.bool_)
    same[1:] = (
        (zone_index[1:] == zone_index[:-1])
        & (period_index[1:] == period_index[:-1])
        & (group_index[1:] == group_index[:-1])
    )
    first_kept = int(np.argmax(keep)) if keep.any() else 0
    same[first_kept] = False
    keep &= ~same
    seg_start = np.maximum(seg_start[keep], start_ms)
    edges = np.append(seg_start, np.int64(end_ms))
    return TariffSegments(
        edges,
        zone_index[keep],
        period_index[keep],
        fixed,
        group_index[keep],
        tuple(group_zones),
    )


def _dynamic_segments(
    prices: DynamicPrices, start_ms: int, end_ms: int, tz: ZoneInfo
) -> TariffSegments:
    """Split [start, end) at the price intervals' edges; the period index is the interval's.

    Raises:
        UsageError: part of the range has no price.
    """
    edges = prices.edges_ms
    if start_ms < edges[0] or end_ms > edges[-1]:
        raise UsageError(
            f"{prices.origin} has prices from {format_local(int(edges[0]), tz)} to "
            f"{format_local(int(edges[-1]), tz)} only; a cost from "
            f"{format_local(start_ms, tz)} to {format_local(end_ms, tz)} needs prices for all "
            "of it — shorten the range or use a price file that covers it."
        )
    first = int(np.searchsorted(edges, start_ms, side="right")) - 1
    last = int(np.searchsorted(edges, end_ms, side="left"))
    index = np.arange(first, last, dtype=np.intp)
    missing = index[np.isnan(prices.import_per_kwh[index])]
    if missing.size:
        a, b = int(edges[missing[0]]), int(edges[missing[0] + 1])
        raise UsageError(
            f"{prices.origin} has no price from {format_local(a, tz)} to {format_local(b, tz)}; "
            "a dynamic tariff prices only the times its file covers — shorten the range or "
            "complete the price file."
        )
    seg_edges = np.concatenate(([start_ms], edges[first + 1 : last], [end_ms])).astype(np.int64)
    fixed = _prorata_fixed(start_ms, end_ms, tz, prices.fixed_per_day, prices.fixed_per_month)
    return TariffSegments(seg_edges, np.zeros(index.size, dtype=np.intp), index, fixed)


def _prorata_fixed(
    start_ms: int, end_ms: int, tz: ZoneInfo, per_day: float, per_month: float
) -> float:
    """Return fixed charges over [start, end): each local day's and month's share [currency]."""
    fixed = 0.0
    day = _local_date(start_ms, tz)
    while day <= _local_date(end_ms, tz):
        day_start = local_midnight_ms(day, tz)
        day_end = local_midnight_ms(day + timedelta(days=1), tz)
        overlap = min(day_end, end_ms) - max(day_start, start_ms)
        if overlap > 0:
            fixed += per_day * overlap / (day_end - day_start)
            month_start = local_midnight_ms(day.replace(day=1), tz)
            next_month = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
            fixed += per_month * overlap / (local_midnight_ms(next_month, tz) - month_start)
        day += timedelta(days=1)
    return fixed


_MS_PER_DAY: Final = 86_400_000
_EPOCH_UTC: Final = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))


def _instant_ms(wall: datetime, tz: ZoneInfo, fold: int) -> int:
    return int((wall.replace(tzinfo=tz, fold=fold) - _EPOCH_UTC) // timedelta(milliseconds=1))


def _local_minute(ts_ms: int, tz: ZoneInfo) -> int:
    local = (_EPOCH_UTC + timedelta(milliseconds=ts_ms)).astimezone(tz)
    return local.hour * 60 + local.minute


def _offset_changes_ms(start_ms: int, end_ms: int, tz: ZoneInfo) -> list[int]:
    """Return the first instant of each new UTC offset in (start, end] [ms UTC], by bisection."""

    def offset(ts: int) -> timedelta | None:
        return (_EPOCH_UTC + timedelta(milliseconds=ts)).astimezone(tz).utcoffset()

    out: list[int] = []
    step = 3_600_000
    a = start_ms
    while a < end_ms:
        b = min(a + step, end_ms)
        if offset(a) != offset(b):
            lo, hi = a, b
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == offset(lo):
                    lo = mid
                else:
                    hi = mid
            out.append(hi)
        a = b
    return out


def _dst_day_changes(
    midnight: datetime,
    day_start: int,
    day_end: int,
    changes: list[tuple[int, str]],
    tz: ZoneInfo,
) -> list[tuple[int, str]]:
    """Return the zone changes of a 23- or 25-hour day as (instant [ms UTC], zone).

    Every instant where the zone can change — each boundary at both of its occurrences (a wall
    time in the repeated hour happens twice), a boundary inside the skipped hour moved to the
    jump, and the jump itself — gets the zone its local wall-clock time says.
    """
    candidates = {day_start, *_offset_changes_ms(day_start, day_end, tz)}
    for minute, _ in changes:
        wall = midnight + timedelta(minutes=minute)
        for fold in (0, 1):
            at = _instant_ms(wall, tz, fold)
            if day_start <= at < day_end and _local_minute(at, tz) == minute % 1440:
                candidates.add(at)
        # a wall time that does not exist lands on the jump, which is already a candidate

    minutes = [m for m, _ in changes]

    def zone_of_minute(m: int) -> str:
        return changes[bisect_right(minutes, m) - 1][1]

    out: list[tuple[int, str]] = []
    for at in sorted(candidates):
        name = zone_of_minute(_local_minute(at, tz))
        if not out or out[-1][1] != name:
            out.append((at, name))
    return out


def _local_date(ts_ms: int, tz: ZoneInfo) -> date:
    return (
        (datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC")) + timedelta(milliseconds=ts_ms))
        .astimezone(tz)
        .date()
    )


def zone_at(tariff: Tariff, ts_ms: npt.ArrayLike) -> list[str]:
    """Return the zone in force at each instant [ms UTC]."""
    ts = np.atleast_1d(np.asarray(ts_ms, dtype=np.int64))
    if ts.size == 0:
        return []
    segments = tariff_segments(tariff, int(ts.min()), int(ts.max()) + 1)
    index = np.searchsorted(segments.edges_ms, ts, side="right") - 1
    return [tariff.zones[segments.zone_index[i]] for i in index]


# -- cost --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ZoneCost:
    """Energy and money of one zone over a range."""

    zone: str
    import_wh: float
    export_wh: float
    import_cost: float
    export_credit: float


@dataclass(frozen=True, slots=True)
class TariffCost:
    """Cost of a range under one tariff: per zone, fixed charges and total [currency]."""

    tariff: Tariff
    zones: tuple[ZoneCost, ...]
    fixed_cost: float

    @property
    def import_wh(self) -> float:
        """Return the imported energy of all zones [Wh]."""
        return sum(z.import_wh for z in self.zones)

    @property
    def export_wh(self) -> float:
        """Return the exported energy of all zones [Wh]."""
        return sum(z.export_wh for z in self.zones)

    @property
    def total(self) -> float:
        """Return import cost plus fixed charges minus export credit [currency]."""
        energy = sum(z.import_cost - z.export_credit for z in self.zones)
        return energy + self.fixed_cost


def price_tables(tariff: Tariff) -> tuple[FloatArray, FloatArray]:
    """Return import and export prices as [period, zone] arrays [currency/kWh].

    A dynamic tariff's periods are its price intervals and its one zone is ``dynamic``.
    """
    if tariff.dynamic is not None:
        return tariff.dynamic.import_per_kwh[:, None], tariff.dynamic.export_per_kwh[:, None]
    imp = np.array([[p.import_per_kwh[z] for z in tariff.zones] for p in tariff.prices])
    exp = np.array([[p.export_per_kwh[z] for z in tariff.zones] for p in tariff.prices])
    return imp.astype(np.float64), exp.astype(np.float64)


def tariff_cost(
    tariff: Tariff,
    segments: TariffSegments,
    import_wh: npt.ArrayLike,
    export_wh: npt.ArrayLike,
) -> TariffCost:
    """Price the energy of each segment and add it up per zone.

    Parameters
    ----------
    tariff : Tariff
    segments : TariffSegments
        From :func:`tariff_segments`.
    import_wh, export_wh : float array
        Energy of each segment [Wh], e.g. from :func:`wattlake.energy.integrate.integrate_power`
        over ``segments.edges_ms``.
    """
    imp = np.asarray(import_wh, dtype=np.float64)
    exp = np.asarray(export_wh, dtype=np.float64)
    imp_price, exp_price = price_tables(tariff)
    zi, pi = segments.zone_index, segments.period_index
    n = len(tariff.zones)
    z_imp = np.bincount(zi, weights=imp, minlength=n)
    z_exp = np.bincount(zi, weights=exp, minlength=n)
    z_cost = np.bincount(zi, weights=imp / 1000.0 * imp_price[pi, zi], minlength=n)
    z_credit = np.bincount(zi, weights=exp / 1000.0 * exp_price[pi, zi], minlength=n)
    zones = tuple(
        ZoneCost(name, float(z_imp[i]), float(z_exp[i]), float(z_cost[i]), float(z_credit[i]))
        for i, name in enumerate(tariff.zones)
    )
    return TariffCost(tariff, zones, segments.fixed_cost)


def cost_rows(cost: TariffCost) -> list[dict[str, Any]]:
    """Return one row per zone, one for fixed charges and a total, ready to print.

    Each row has ``tariff``, ``zone``, ``import_wh``, ``export_wh``, ``import_cost``,
    ``export_credit``, ``cost`` (import cost minus export credit, or the charge) and
    ``currency``; money is rounded to 1/10000 of the currency unit, energy to 1 mWh.
    """

    def row(
        name: str, imp: float, exp: float, cost_in: float, credit: float, total: float
    ) -> dict[str, Any]:
        return {
            "tariff": cost.tariff.name,
            "zone": name,
            "import_wh": round(imp, 3),
            "export_wh": round(exp, 3),
            "import_cost": round(cost_in, 4),
            "export_credit": round(credit, 4),
            "cost": round(total, 4),
            "currency": cost.tariff.currency,
        }

    rows = [
        row(
            z.zone,
            z.import_wh,
            z.export_wh,
            z.import_cost,
            z.export_credit,
            z.import_cost - z.export_credit,
        )
        for z in cost.zones
    ]
    rows.append(row("fixed", 0.0, 0.0, 0.0, 0.0, cost.fixed_cost))
    rows.append(
        row(
            "total",
            cost.import_wh,
            cost.export_wh,
            sum(z.import_cost for z in cost.zones),
            sum(z.export_credit for z in cost.zones),
            cost.total,
        )
    )
    return rows


EnergyOverEdges = Callable[[IntArray], tuple[FloatArray, FloatArray]]


def compare_tariffs(
    tariffs: Sequence[Tariff], energy_over_edges: EnergyOverEdges, start_ms: int, end_ms: int
) -> list[dict[str, Any]]:
    """Price the same consumption under several tariffs, cheapest first.

    Parameters
    ----------
    tariffs : sequence of Tariff
    energy_over_edges : callable
        Given edges [ms UTC], returns import and export energy per segment [Wh].
    start_ms, end_ms : int
        Range [ms UTC].

    Returns
    -------
    list of dict
        ``tariff``, ``import_wh``, ``export_wh``, ``energy_cost``, ``fixed_cost``, ``total``,
        ``currency``, ``rank`` (1 = cheapest; totals in different currencies are not comparable
        and are ranked within their currency).
    """
    rows: list[dict[str, Any]] = []
    for tariff in tariffs:
        segments = tariff_segments(tariff, start_ms, end_ms)
        imp, exp = energy_over_edges(segments.edges_ms)
        cost = tariff_cost(tariff, segments, imp, exp)
        rows.append(
            {
                "tariff": tariff.name,
                "import_wh": round(cost.import_wh, 3),
                "export_wh": round(cost.export_wh, 3),
                "energy_cost": round(cost.total - cost.fixed_cost, 4),
                "fixed_cost": round(cost.fixed_cost, 4),
                "total": round(cost.total, 4),
                "currency": tariff.currency,
            }
        )
    rows.sort(key=lambda r: (r["currency"], r["total"]))
    rank: dict[str, int] = {}
    for r in rows:
        rank[r["currency"]] = rank.get(r["currency"], 0) + 1
        r["rank"] = rank[r["currency"]]
    return rows


def shift_savings(
    tariff: Tariff, segments: TariffSegments, import_wh: npt.ArrayLike, share: float
) -> dict[str, Any]:
    """Estimate the saving of moving a flexible share of load into the cheapest zone of its day.

    ``share`` of the energy imported in every zone dearer than the cheapest zone of the *same
    kind of day* — same day type and season, so the same rules in force — and the same price
    period is assumed to move to that cheapest zone (a dishwasher or an electric car started
    later that day). Load never moves into another season's or day type's prices. Under a
    dynamic tariff the cheapest price interval of the same local day within the range takes the
    load. Export is left as it is.

    Parameters
    ----------
    share : float
        Flexible share of the load in dear zones [0–1].

    Returns
    -------
    dict
        ``tariff``, ``share``, ``shifted_wh``, ``savings`` [currency] and ``currency``.

    Raises:
        UsageError: ``share`` is not within [0, 1].
    """
    if not 0.0 <= share <= 1.0:
        raise UsageError(f"The share of load to shift must be between 0 and 1, not {share}.")
    imp = np.asarray(import_wh, dtype=np.float64)
    imp_price, _ = price_tables(tariff)
    zi, pi = segments.zone_index, segments.period_index
    if tariff.dynamic is not None:
        # the cheapest price interval of the same local day within the range
        tz = ZoneInfo(tariff.timezone)
        days = [_local_date(int(t), tz) for t in segments.edges_ms[:-1]]
        _, day_of = np.unique(np.array(days, dtype="datetime64[D]"), return_inverse=True)
        seg_price = imp_price[pi, zi]
        cheapest_of_day = np.full(int(day_of.max()) + 1 if day_of.size else 0, np.inf)
        np.minimum.at(cheapest_of_day, day_of, seg_price)
        cheapest_of_segment = cheapest_of_day[day_of]
    elif segments.day_group is None or not segments.group_zones:
        cheapest_of_segment = imp_price.min(axis=1)[pi]
    else:
        # cheapest[g, p]: cheapest import price among the zones of day group g in period p
        cheapest = np.array(
            [imp_price[:, list(zones)].min(axis=1) for zones in segments.group_zones]
        )
        cheapest_of_segment = cheapest[segments.day_group, pi]
    extra = imp_price[pi, zi] - cheapest_of_segment
    dear = extra > 0
    shifted_wh = float((imp * share)[dear].sum())
    savings = float((imp * share / 1000.0 * extra)[dear].sum())
    return {
        "tariff": tariff.name,
        "share": share,
        "shifted_wh": round(shifted_wh, 3),
        "savings": round(savings, 4),
        "currency": tariff.currency,
    }

"""Dynamic tariffs: hourly or 15-minute prices read from a file, one price per interval.

Four inputs are read (shapes and samples in ``docs/tariffs.md``): a plain CSV
(``start[,end],import_price_per_kwh[,export_price_per_kwh]``), the ENTSO-E transparency
platform's day-ahead price CSV, Nord Pool's day-ahead CSV export and Octopus Agile's API answer
saved as JSON. Each becomes :class:`~wattlake.energy.tariffs.DynamicPrices`: interval edges
[ms UTC] and prices [currency/kWh]. Two intervals that overlap are refused when the file is read;
a time between intervals is a gap, refused only when a cost needs it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np

from wattlake.energy.buckets import zone
from wattlake.energy.tariffs import DynamicPrices, Tariff
from wattlake.errors import UsageError

DYNAMIC_ZONE: Final = "dynamic"
FORMATS: Final = ("auto", "csv", "entsoe", "nordpool", "octopus")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=zone("UTC"))
_CET: Final = "Europe/Brussels"  # the CET/CEST of market time units: EU daylight-saving rules
_NORDPOOL_ZONES: Final = {"CET": _CET, "EET": "Europe/Helsinki", "UTC": "UTC", "GMT": "UTC"}
_WALL_FORMATS: Final = (
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
)


@dataclass(frozen=True, slots=True)
class PriceIntervals:
    """Intervals read from a price file, in file order.

    ``start_ms``/``end_ms`` [ms UTC]; prices [currency/kWh]; ``export_per_kwh`` is None when the
    file has no export prices. ``currency`` and ``timezone`` are what the file says, if anything.
    """

    start_ms: list[int]
    end_ms: list[int]
    import_per_kwh: list[float]
    export_per_kwh: list[float] | None
    currency: str | None = None
    timezone: str | None = None


class _DynamicFile(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    name: str
    currency: str
    timezone: str
    prices_file: str
    format: str = "auto"
    area: str | None = None
    title: str = ""
    import_markup_per_kwh: float = 0.0
    export_per_kwh: float | None = None
    fixed_per_day: float = 0.0
    fixed_per_month: float = 0.0
    models: list[str] = msgspec.field(default_factory=list)
    leaves_out: list[str] = msgspec.field(default_factory=list)


# -- reading the inputs ------------------------------------------------------------------------
def _number(text: str | None, where: str) -> float:
    if text is None:
        raise UsageError(f"{where}: a price is missing.")
    cleaned = text.strip().replace("\u2212", "-").replace(" ", "")
    if "," in cleaned and "." not in cleaned:
        cleaned = cleaned.replace(",", ".")  # a decimal comma (semicolon-separated exports)
    try:
        return float(cleaned)
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r} is not a price.") from exc


def _instant_ms(text: str | None, where: str) -> int:
    try:
        moment = datetime.fromisoformat((text or "").strip().replace("Z", "+00:00"))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{where}: {text!r} is not an ISO 8601 time.") from exc
    if moment.tzinfo is None:
        raise UsageError(
            f"{where}: {text!r} has no UTC offset; write it like 2026-03-29T00:00+01:00."
        )
    return int((moment - _EPOCH) // timedelta(milliseconds=1))


def _wall(text: str, where: str) -> datetime:
    for fmt in _WALL_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt)
        except ValueError:
            continue
    raise UsageError(f"{where}: {text!r} is not a time like 29.03.2026 00:00.")


class _WallClock:
    """Turn a file's local wall-clock intervals into instants, through daylight-saving changes.

    A start seen before in the file is the repeated hour's second occurrence; a marker
    ``(CET)``/``(CEST)`` after a time says which occurrence it is. An interval lasts its
    wall-clock length, shortened where that length spans the skipped hour.
    """

    def __init__(self, tz_name: str) -> None:
        self.tz = zone(tz_name)
        self.seen: set[datetime] = set()

    def _ms(self, wall: datetime, fold: int) -> int:
        aware = wall.replace(tzinfo=self.tz, fold=fold)
        return int((aware - _EPOCH) // timedelta(milliseconds=1))

    def interval(self, start_text: str, end_text: str, where: str) -> tuple[int, int]:
        marker = re.search(r"\((CES?T)\)\s*$", start_text)
        start = _wall(re.sub(r"\s*\([A-Z]+\)\s*$", "", start_text), where)
        end = _wall(re.sub(r"\s*\([A-Z]+\)\s*$", "", end_text), where)
        if marker is not None:
            fold = 1 if marker.group(1) == "CET" else 0
        else:
            fold = 1 if start in self.seen else 0
        self.seen.add(start)
        start_ms = self._ms(start, fold)
        by_wall_ms = int((end - start) // timedelta(milliseconds=1))
        end_ms = start_ms + min(by_wall_ms, self._ms(end, 0) - start_ms)
        if end_ms <= start_ms:
            raise UsageError(f"{where}: the interval {start_text} - {end_text} is empty.")
        return start_ms, end_ms


def _sniff(text: str) -> list[list[str]]:
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = ";" if first.count(";") > first.count(",") else ","
    return [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(row)]


def _per_kwh(header: str, where: str) -> tuple[float, str | None]:
    """Return the factor from the header's price unit to per kWh, and its currency."""
    unit = re.search(r"([A-Z]{3})\s*/\s*(MWh|kWh)", header)
    if unit is None:
        raise UsageError(f"{where}: the column {header!r} names no unit like EUR/MWh.")
    return (0.001 if unit.group(2) == "MWh" else 1.0), unit.group(1)


def read_plain_csv(text: str, origin: str) -> PriceIntervals:
    """Read ``start[,end],import_price_per_kwh[,export_price_per_kwh]``, times with offsets.

    Without ``end`` every interval lasts the smallest step between two starts in the file
    (15 min or 1 h); a longer step is a gap.
    """
    rows = list(csv.DictReader(io.StringIO(text)))
    columns = set(rows[0]) if rows else set()
    if not {"start", "import_price_per_kwh"} <= columns:
        raise UsageError(
            f"{origin} needs the columns start and import_price_per_kwh (optionally end and "
            "export_price_per_kwh); see docs/tariffs.md."
        )
    starts = [_instant_ms(r["start"], f"{origin} row {i + 2}") for i, r in enumerate(rows)]
    if "end" in columns:
        ends = [_instant_ms(r["end"], f"{origin} row {i + 2}") for i, r in enumerate(rows)]
    else:
        ordered = sorted(set(starts))
        step = min((b - a for a, b in itertools.pairwise(ordered)), default=3_600_000)
        ends = [s + step for s in starts]
    imp = [_number(r["import_price_per_kwh"], f"{origin} row {i + 2}") for i, r in enumerate(rows)]
    exp = None
    if "export_price_per_kwh" in columns:
        exp = [
            _number(r["export_price_per_kwh"], f"{origin} row {i + 2}") for i, r in enumerate(rows)
        ]
    return PriceIntervals(starts, ends, imp, exp)


def read_entsoe_csv(text: str, origin: str) -> PriceIntervals:
    """Read the ENTSO-E day-ahead price CSV: ``"MTU (CET/CEST)"`` and a ``Day-ahead Price``
    column with its unit (``[EUR/MWh]``); rows without a price (``-`` or empty) are gaps."""
    rows = _sniff(text)
    header = [h.strip() for h in rows[0]] if rows else []
    mtu = next((i for i, h in enumerate(header) if h.startswith("MTU")), None)
    price = next((i for i, h in enumerate(header) if "day-ahead price" in h.lower()), None)
    if mtu is None or price is None:
        raise UsageError(
            f"{origin} is not an ENTSO-E day-ahead price export: it needs the columns "
            '"MTU (CET/CEST)" and "Day-ahead Price [EUR/MWh]".'
        )
    factor, currency = _per_kwh(header[price], origin)
    clock = _WallClock(_CET)
    out = PriceIntervals([], [], [], None, currency, _CET)
    for n, row in enumerate(rows[1:], start=2):
        where = f"{origin} row {n}"
        if len(row) <= max(mtu, price):
            raise UsageError(f"{where} has {len(row)} columns; the header has {len(header)}.")
        if " - " not in row[mtu]:
            raise UsageError(f"{where}: {row[mtu]!r} is not an MTU like 29.03.2026 00:00 - …")
        first, last = row[mtu].split(" - ", 1)
        if row[price].strip() in ("", "-", "n/e", "N/A"):
            continue
        start_ms, end_ms = clock.interval(first, last, where)
        out.start_ms.append(start_ms)
        out.end_ms.append(end_ms)
        out.import_per_kwh.append(_number(row[price], where) * factor)
    return out


def read_nordpool_csv(text: str, origin: str, area: str | None = None) -> PriceIntervals:
    """Read Nord Pool's day-ahead CSV export: ``Delivery Start (CET)``, ``Delivery End (CET)``
    and one price column per area such as ``SE3 (EUR)`` [currency/MWh]; ``area`` picks one."""
    rows = _sniff(text)
    header = [h.strip() for h in rows[0]] if rows else []
    start = next((i for i, h in enumerate(header) if h.lower().startswith("delivery start")), None)
    end = next((i for i, h in enumerate(header) if h.lower().startswith("delivery end")), None)
    areas = {
        m.group(1): (i, m.group(2))
        for i, h in enumerate(header)
        if (m := re.fullmatch(r"([A-Za-z0-9\-. ]+?)\s*\(([A-Z]{3})\)", h))
        and not h.lower().startswith("delivery")
    }
    if start is None or end is None or not areas:
        raise UsageError(
            f"{origin} is not a Nord Pool day-ahead export: it needs the columns "
            '"Delivery Start (CET)", "Delivery End (CET)" and an area price like "SE3 (EUR)".'
        )
    if area is None and len(areas) > 1:
        raise UsageError(
            f"{origin} has prices of several areas ({', '.join(areas)}); pick one with "
            'area = "…" in a dynamic tariff file.'
        )
    chosen = area if area is not None else next(iter(areas))
    if chosen not in areas:
        raise UsageError(f"{origin} has no area {chosen!r}; it has {', '.join(areas)}.")
    column, currency = areas[chosen]
    clock_zone = re.search(r"\(([A-Z]+)\)", header[start])
    tz_name = _NORDPOOL_ZONES.get(clock_zone.group(1) if clock_zone else "CET")
    if tz_name is None:
        raise UsageError(f"{origin}: {header[start]!r} is in a clock wattlake does not know.")
    clock = _WallClock(tz_name)
    out = PriceIntervals([], [], [], None, currency, tz_name)
    for n, row in enumerate(rows[1:], start=2):
        where = f"{origin} row {n}"
        if len(row) <= max(start, end, column):
            raise UsageError(f"{where} has {len(row)} columns; the header has {len(header)}.")
        if row[column].strip() in ("", "-"):
            continue
        start_ms, end_ms = clock.interval(row[start], row[end], where)
        out.start_ms.append(start_ms)
        out.end_ms.append(end_ms)
        out.import_per_kwh.append(_number(row[column], where) / 1000.0)
    return out


def read_octopus_json(text: str, origin: str) -> PriceIntervals:
    """Read Octopus Energy's unit-rates API answer: ``results`` of ``value_inc_vat``
    [p/kWh], ``valid_from`` and ``valid_to``; prices become GBP/kWh."""
    try:
        answer = json.loads(text)
        results: Iterable[Mapping[str, Any]] = answer["results"]
        rates = [(r["valid_from"], r["valid_to"], float(r["value_inc_vat"])) for r in results]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"{origin} is not an Octopus unit-rates answer: it needs results with "
            "value_inc_vat, valid_from and valid_to."
        ) from exc
    out = PriceIntervals([], [], [], None, "GBP", "Europe/London")
    for i, (first, last, pence) in enumerate(rates):
        where = f"{origin} result {i + 1}"
        out.start_ms.append(_instant_ms(first, where))
        out.end_ms.append(_instant_ms(last, where))
        out.import_per_kwh.append(pence / 100.0)
    return out


def detect_format(text: str, suffix: str) -> str:
    """Return which input a price file is: ``csv``, ``entsoe``, ``nordpool`` or ``octopus``."""
    if suffix == ".json" or text.lstrip().startswith("{"):
        return "octopus"
    first = text.splitlines()[0].lower() if text.strip() else ""
    if "mtu" in first and "day-ahead price" in first:
        return "entsoe"
    if "delivery start" in first:
        return "nordpool"
    return "csv"


def read_prices(
    text: str, origin: str, fmt: str = "auto", area: str | None = None
) -> PriceIntervals:
    """Read a price file of any supported input.

    Raises:
        UsageError: an unknown format, or a file that does not follow it.
    """
    if fmt not in FORMATS:
        raise UsageError(f"{origin}: format {fmt!r} is not one of {', '.join(FORMATS)}.")
    if fmt == "auto":
        fmt = detect_format(text, Path(origin).suffix.lower())
    text = text.lstrip("\ufeff")
    if fmt == "octopus":
        return read_octopus_json(text, origin)
    if fmt == "entsoe":
        return read_entsoe_csv(text, origin)
    if fmt == "nordpool":
        return read_nordpool_csv(text, origin, area)
    return read_plain_csv(text, origin)


# -- building the tariff -----------------------------------------------------------------------
def dynamic_prices(
    intervals: PriceIntervals,
    origin: str,
    *,
    import_markup_per_kwh: float = 0.0,
    export_per_kwh: float | None = None,
    fixed_per_day: float = 0.0,
    fixed_per_month: float = 0.0,
) -> DynamicPrices:
    """Sort the intervals, refuse overlaps and mark gaps with a NaN price.

    The import price is the file's plus ``import_markup_per_kwh``; the export price is the
    file's, else ``export_per_kwh``, else 0.

    Raises:
        UsageError: no intervals, or two of them overlap.
    """
    if not intervals.start_ms:
        raise UsageError(f"{origin} has no prices.")
    order = np.argsort(np.asarray(intervals.start_ms, dtype=np.int64), kind="stable")
    start = np.asarray(intervals.start_ms, dtype=np.int64)[order]
    end = np.asarray(intervals.end_ms, dtype=np.int64)[order]
    imp = np.asarray(intervals.import_per_kwh, dtype=np.float64)[order] + import_markup_per_kwh
    if intervals.export_per_kwh is not None:
        exp = np.asarray(intervals.export_per_kwh, dtype=np.float64)[order]
    else:
        exp = np.full(start.size, export_per_kwh or 0.0)
    overlap = np.flatnonzero(start[1:] < end[:-1])
    if overlap.size:
        i = int(overlap[0])
        a = (_EPOCH + timedelta(milliseconds=int(start[i + 1]))).isoformat()
        raise UsageError(
            f"{origin} has two prices for {a} (intervals overlap); keep one price per interval."
        )
    gap = np.flatnonzero(start[1:] > end[:-1])
    # a gap becomes an interval of its own with no price (NaN), refused only if a cost needs it
    edges = np.concatenate((start, [end[-1]]))
    edges = np.insert(edges, gap + 1, end[gap])
    imp = np.insert(imp, gap + 1, np.nan)
    exp = np.insert(exp, gap + 1, np.nan)
    return DynamicPrices(origin, edges.astype(np.int64), imp, exp, fixed_per_day, fixed_per_month)


def dynamic_tariff(
    name: str,
    currency: str,
    timezone: str,
    prices: DynamicPrices,
    *,
    title: str = "",
    models: tuple[str, ...] = (),
    leaves_out: tuple[str, ...] = (),
) -> Tariff:
    """Return a tariff of one zone, ``dynamic``, priced per interval by ``prices``."""
    zone(timezone)
    return Tariff(
        name=name,
        title=title or f"Dynamic prices from {prices.origin}",
        currency=currency,
        timezone=timezone,
        holidays_country=None,
        default_zone=DYNAMIC_ZONE,
        zones=(DYNAMIC_ZONE,),
        rules=(),
        prices=(),
        models=models,
        leaves_out=leaves_out,
        dynamic=prices,
    )


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"Cannot read {what} {path}: {exc.strerror}.") from exc


def load_price_file(path: Path) -> Tariff:
    """Return a dynamic tariff straight from a price file, named by its path.

    The currency and time zone are the file's (ENTSO-E and Nord Pool: the unit's currency and
    CET/CEST; Octopus: GBP and Europe/London); a plain CSV says neither, so it is priced in
    ``XXX`` (ISO 4217: no currency) in UTC — write a dynamic tariff file to say them.

    Raises:
        UsageError: the file cannot be read or does not follow its input's shape.
    """
    origin = str(path)
    intervals = read_prices(_read_text(path, "price file"), origin)
    return dynamic_tariff(
        origin,
        intervals.currency or "XXX",
        intervals.timezone or "UTC",
        dynamic_prices(intervals, origin),
    )


def dynamic_tariff_from_table(table: dict[str, Any], *, origin: str, folder: Path | None) -> Tariff:
    """Build a dynamic tariff from a TOML table with ``kind = "dynamic"``.

    Raises:
        UsageError: the table does not follow ``docs/tariffs.md`` or its price file is bad.
    """
    try:
        raw = msgspec.convert(table, _DynamicFile)
    except msgspec.ValidationError as exc:
        raise UsageError(f"{origin} does not follow docs/tariffs.md: {exc}.") from exc
    path = Path(raw.prices_file)
    if not path.is_absolute() and folder is not None:
        path = folder / path
    intervals = read_prices(_read_text(path, "price file"), str(path), raw.format, raw.area)
    if intervals.currency is not None and intervals.currency != raw.currency:
        raise UsageError(
            f"{origin} says currency {raw.currency} but {path} has prices in "
            f"{intervals.currency}; make them agree."
        )
    prices = dynamic_prices(
        intervals,
        str(path),
        import_markup_per_kwh=raw.import_markup_per_kwh,
        export_per_kwh=raw.export_per_kwh,
        fixed_per_day=raw.fixed_per_day,
        fixed_per_month=raw.fixed_per_month,
    )
    return dynamic_tariff(
        raw.name,
        raw.currency,
        raw.timezone,
        prices,
        title=raw.title,
        models=tuple(raw.models),
        leaves_out=tuple(raw.leaves_out),
    )

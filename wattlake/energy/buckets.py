"""Bucket edges in local time: 15 minutes, hours, days and months in an IANA time zone.

Every function returns or takes UTC epoch milliseconds. A bucket is the half-open interval
between two consecutive edges. Local days are 23 or 25 hours long on daylight-saving days; on the
25-hour day the repeated local hour is two distinct hour buckets (each one real hour long), and
the missing hour of the 23-hour day simply has no bucket. Zones whose offset is not a whole
number of hours (Asia/Kolkata +05:30, Australia/Adelaide +09:30/+10:30, Asia/Kathmandu +05:45)
get hour buckets that start at their local full hour.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from wattlake.errors import UsageError

Every = Literal["15min", "hour", "day", "month"]
EVERY_CHOICES: Final[tuple[str, ...]] = ("15min", "hour", "day", "month")

_MS_PER_MIN: Final = 60_000
_MS_PER_HOUR: Final = 3_600_000
_MS_PER_DAY: Final = 86_400_000
_DATE_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``.

    Raises:
        UsageError: no zone has that name.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise UsageError(
            f"Unknown time zone {name!r}; use an IANA name such as Europe/Warsaw or UTC."
        ) from exc


def local_midnight_ms(day: date, tz: ZoneInfo) -> int:
    """Return the instant a local calendar day starts [ms UTC].

    If midnight does not exist that day (a daylight-saving jump at 00:00) the day starts at the
    first instant that exists, i.e. at the jump.
    """
    return wall_time_ms(datetime(day.year, day.month, day.day), tz)


def wall_time_ms(wall: datetime, tz: ZoneInfo) -> int:
    """Return the instant of a naive local wall-clock time [ms UTC].

    An ambiguous time (the repeated hour) means its first occurrence; a time that does not exist
    (the skipped hour) is moved forward by the length of the jump, so a boundary at the start of
    the skipped hour lands exactly on the jump.
    """
    aware = wall.replace(tzinfo=tz, fold=0)
    # fold=0 resolves a skipped time with the offset from before the jump, which moves it forward.
    return int((aware - _EPOCH) // timedelta(milliseconds=1))


def format_local(ts_ms: int, tz: ZoneInfo) -> str:
    """Return an instant as ISO 8601 with the local offset, e.g. ``2026-10-25T02:00:00+01:00``."""
    instant = _EPOCH + timedelta(milliseconds=int(ts_ms))
    text = instant.astimezone(tz).isoformat(timespec="milliseconds")
    return text.replace(".000", "", 1)


def parse_time_ms(text: str, tz: ZoneInfo) -> int:
    """Parse a command-line time into an instant [ms UTC].

    ``2026-03-29`` is local midnight in ``tz``; an ISO timestamp with an offset (or ``Z``) is
    taken as given; a naive ISO timestamp is local wall-clock time in ``tz``.

    Raises:
        UsageError: the text is neither a date nor an ISO 8601 timestamp.
    """
    value = text.strip()
    try:
        if _DATE_RE.match(value):
            return local_midnight_ms(date.fromisoformat(value), tz)
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UsageError(
            f"Cannot read time {text!r}; give a date like 2026-03-29 or an ISO timestamp "
            "like 2026-03-29T06:00:00+02:00."
        ) from exc
    if parsed.tzinfo is None:
        return wall_time_ms(parsed, tz)
    return int((parsed - _EPOCH) // timedelta(milliseconds=1))


def _offset_ms(ts_ms: int, tz: ZoneInfo) -> int:
    instant = _EPOCH + timedelta(milliseconds=ts_ms)
    offset = instant.astimezone(tz).utcoffset()
    return 0 if offset is None else int(offset // timedelta(milliseconds=1))


def utc_offsets_ms(ts_ms: npt.ArrayLike, tz: ZoneInfo) -> npt.NDArray[np.int64]:
    """Return the zone's UTC offset at each instant [ms].

    Offsets are sampled once an hour and every change is located exactly by bisection, so the
    cost grows with the time span, not with the number of instants.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    if ts.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo = (int(ts.min()) // _MS_PER_HOUR - 1) * _MS_PER_HOUR
    hi = (int(ts.max()) // _MS_PER_HOUR + 2) * _MS_PER_HOUR
    grid = range(lo, hi + 1, _MS_PER_HOUR)
    samples = [_offset_ms(t, tz) for t in grid]
    change_at: list[int] = []
    change_to: list[int] = []
    for i in range(1, len(samples)):
        if samples[i] != samples[i - 1]:
            a, b = lo + (i - 1) * _MS_PER_HOUR, lo + i * _MS_PER_HOUR
            while b - a > 1:  # first instant with the new offset
                mid = (a + b) // 2
                if _offset_ms(mid, tz) == samples[i - 1]:
                    a = mid
                else:
                    b = mid
            change_at.append(b)
            change_to.append(samples[i])
    values = np.array([samples[0], *change_to], dtype=np.int64)
    index = np.searchsorted(np.array(change_at, dtype=np.int64), ts, side="right")
    return values[index]


def _local_days(start_ms: int, end_ms: int, tz: ZoneInfo) -> list[date]:
    first = (_EPOCH + timedelta(milliseconds=start_ms)).astimezone(tz).date()
    last = (_EPOCH + timedelta(milliseconds=end_ms)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 2)]


def bucket_edges_ms(start_ms: int, end_ms: int, every: str, tz: ZoneInfo) -> npt.NDArray[np.int64]:
    """Return the edges of local buckets covering [start, end) [ms UTC].

    The first edge is ``start_ms`` and the last is ``end_ms``; in between come every local
    boundary of the bucket size strictly inside the range, so a range that does not start on a
    boundary gets a shorter first bucket.

    Parameters
    ----------
    start_ms, end_ms : int
        Range [ms UTC], ``start_ms < end_ms``.
    every : str
        ``15min``, ``hour``, ``day`` or ``month``.
    tz : ZoneInfo
        Zone whose wall clock defines the boundaries.

    Raises:
        UsageError: ``every`` is unknown or the range is empty.
    """
    start_ms, end_ms = int(start_ms), int(end_ms)
    if end_ms <= start_ms:
        raise UsageError("The end of the range must be after the start.")
    if every in ("15min", "hour"):
        step = 15 * _MS_PER_MIN
        period = step if every == "15min" else _MS_PER_HOUR
        # Every zone in use today is offset from UTC by a multiple of 15 minutes, so each local
        # quarter-hour (and so each local full hour) is a UTC quarter-hour.
        first = -(-start_ms // step) * step
        grid = np.arange(first, end_ms, step, dtype=np.int64)
        local = grid + utc_offsets_ms(grid, tz)
        inner = grid[(local % period == 0) & (grid > start_ms)]
    elif every in ("day", "month"):
        days = _local_days(start_ms, end_ms, tz)
        if every == "month":
            days = [d for d in days if d.day == 1]
        instants = np.array([local_midnight_ms(d, tz) for d in days], dtype=np.int64)
        inner = instants[(instants > start_ms) & (instants < end_ms)]
    else:
        raise UsageError(f"Unknown bucket size {every!r}; use one of {', '.join(EVERY_CHOICES)}.")
    return np.concatenate(([start_ms], inner, [end_ms])).astype(np.int64)

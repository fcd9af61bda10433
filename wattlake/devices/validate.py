"""Checks shared by every decoder: numbers and timestamps that can be stored."""

from __future__ import annotations

import math
from typing import Any, Final

from wattlake.errors import DecodeError

# Readings before 2000 or more than a day ahead of the receive time are not believable.
MIN_TS_MS: Final = 946_684_800_000
MAX_FUTURE_MS: Final = 24 * 3600 * 1000


def number(value: Any, field: str) -> float:
    """Return ``value`` as a finite float.

    Raises:
        DecodeError: ``bad-type`` for a non-number, ``not-finite`` for NaN or infinity.
    """
    if type(value) is float and value - value == 0.0:  # the common case; NaN and inf fail
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError("bad-type", f"{field} is {type(value).__name__}, not a number")
    try:
        result = float(value)
    except OverflowError as exc:  # an integer too large for a float
        raise DecodeError("not-finite", f"{field} is an integer too large for a float") from exc
    if not math.isfinite(result):
        raise DecodeError("not-finite", f"{field} is {value!r}")
    return result


def timestamp_ms(seconds: Any, received_at_ms: int) -> int:
    """Convert device epoch seconds to milliseconds, refusing impossible times.

    Raises:
        DecodeError: ``bad-timestamp`` before 2000 or more than a day after ``received_at_ms``.
    """
    ms = number(seconds, "ts") * 1000.0  # may overflow to infinity: compared before round()
    if not MIN_TS_MS <= ms <= received_at_ms + MAX_FUTURE_MS:
        raise DecodeError("bad-timestamp", f"ts {seconds!r} s is before 2000 or over a day ahead")
    return round(ms)


def number_text(payload: bytes, field: str) -> float:
    """Return a payload that is one number written as text (``"1243.52"``) as a finite float.

    Raises:
        DecodeError: ``bad-type`` for anything but a number, ``not-finite`` for NaN or infinity.
    """
    try:
        value = float(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DecodeError("bad-type", f"{field} is {payload[:40]!r}, not a number") from exc
    if not math.isfinite(value):
        raise DecodeError("not-finite", f"{field} is {payload[:40]!r}")
    return value

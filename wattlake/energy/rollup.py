"""Power statistics per fixed period: minimum, maximum and mean of one series' samples.

The kernel behind the ``power_1min`` and ``power_1h`` rollups. Periods are UTC and a whole number
of milliseconds long (60,000 for minutes, 3,600,000 for hours), so a sample at ``ts`` belongs to
the period starting at ``ts - ts % period``. Only periods that hold at least one finite sample
appear; the mean is the plain mean of the samples in the period (the meters sample evenly, and a
chart wants what the meter showed, not an energy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
QUARTER_HOUR_MS: Final = 900_000

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PowerStats:
    """Statistics of one series per period.

    Attributes
    ----------
    start_ms : int64 array
        Start of each period that has samples [ms UTC].
    min_w, max_w, mean_w : float64 array
        Lowest, highest and mean active power of the period's samples [W].
    samples : int64 array
        Number of finite samples in the period.
    """

    start_ms: IntArray
    min_w: FloatArray
    max_w: FloatArray
    mean_w: FloatArray
    samples: IntArray


def power_stats(ts_ms: npt.ArrayLike, power_w: npt.ArrayLike, period_ms: int) -> PowerStats:
    """Return min, max and mean power of one series per UTC period of ``period_ms``.

    Parameters
    ----------
    ts_ms : int array
        Sample times [ms UTC], sorted ascending.
    power_w : float array
        Active power [W]; NaN samples are left out.
    period_ms : int
        Length of a period [ms], e.g. 60,000.

    Returns
    -------
    PowerStats

    Raises:
        ValueError: arrays of different lengths, unsorted times or a period that is not positive.
    """
    ts = np.atleast_1d(np.asarray(ts_ms, dtype=np.int64))
    p = np.atleast_1d(np.asarray(power_w, dtype=np.float64))
    if ts.shape != p.shape or ts.ndim != 1:
        raise ValueError("ts_ms and power_w must be 1-d arrays of the same length")
    if period_ms <= 0:
        raise ValueError(f"period_ms must be positive, not {period_ms!r}")
    finite = np.isfinite(p)
    if not finite.all():
        ts, p = ts[finite], p[finite]
    if ts.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return PowerStats(np.zeros(0, np.int64), empty, empty, empty, np.zeros(0, np.int64))
    if ts.size > 1 and np.any(ts[1:] < ts[:-1]):
        raise ValueError("ts_ms must be sorted ascending within a series")
    period = ts - ts % period_ms
    first = np.flatnonzero(np.concatenate(([True], period[1:] != period[:-1])))
    samples = np.diff(np.append(first, ts.size))
    return PowerStats(
        start_ms=period[first],
        min_w=np.minimum.reduceat(p, first),
        max_w=np.maximum.reduceat(p, first),
        mean_w=np.add.reduceat(p, first) / samples,
        samples=samples.astype(np.int64),
    )

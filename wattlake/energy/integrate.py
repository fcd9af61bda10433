"""Energy from power samples: exact integration of one series into buckets.

One series is one device channel sorted by time. Between two consecutive samples the power is a
known function of time (the *shape* of the interval):

* ``trapezoid`` (default): linear from the first sample to the second;
* ``left``: constant at the first sample (the meter reports the power of the interval it ends);
* ``right``: constant at the second sample.

Because the shape is known, the energy up to any instant is closed-form, so every interval is
split *exactly* at every bucket edge: hourly sums add up to the daily sum and daily sums to the
monthly sum, up to float rounding. Positive power is import and negative power is export; they
are integrated apart, and a linear interval whose sign changes is split at its zero crossing.

An interval longer than ``max_gap_s`` is a *gap*. With the default policy ``skip`` it contributes
nothing; ``hold`` keeps the power of the sample before the gap and ``linear`` interpolates across
it. Whatever the policy, time inside gaps is not *covered*: ``coverage`` is the share of each
bucket that lies between two samples no more than ``max_gap_s`` apart.

The kernel is vectorised: one pass of numpy arithmetic over the intervals, a reduction per bucket
(``np.add.reduceat``) and closed-form corrections at the bucket edges, which are few.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

Method = Literal["trapezoid", "left", "right"]
GapPolicy = Literal["skip", "hold", "linear"]
METHODS: Final[tuple[str, ...]] = ("trapezoid", "left", "right")
GAP_POLICIES: Final[tuple[str, ...]] = ("skip", "hold", "linear")

_MS_PER_HOUR: Final = 3_600_000.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class BucketEnergy:
    """Energy of one series in each bucket between consecutive ``edges_ms``.

    Attributes
    ----------
    edges_ms : int64 array
        Bucket edges [ms UTC]; bucket ``j`` is [``edges_ms[j]``, ``edges_ms[j + 1]``).
    import_wh, export_wh : float64 array
        Energy drawn from and fed into the grid in each bucket, both non-negative [Wh].
    covered_s : float64 array
        Time of each bucket between samples no more than ``max_gap_s`` apart [s].
    gap_start_ms : int64 array
        Start of every gap (interval longer than ``max_gap_s``) overlapping the buckets [ms UTC].
    gap_length_s : float64 array
        Length of each of those gaps [s].
    """

    edges_ms: IntArray
    import_wh: FloatArray
    export_wh: FloatArray
    covered_s: FloatArray
    gap_start_ms: IntArray
    gap_length_s: FloatArray

    @property
    def bucket_s(self) -> FloatArray:
        """Return the length of each bucket [s]."""
        return np.diff(self.edges_ms).astype(np.float64) / 1000.0

    @property
    def coverage(self) -> FloatArray:
        """Return the covered share of each bucket [0–1]; 0 for an empty bucket."""
        length = self.bucket_s
        return np.divide(self.covered_s, length, out=np.zeros_like(length), where=length > 0)

    @property
    def gap_s(self) -> FloatArray:
        """Return the uncovered time of each bucket: gaps and time without samples [s]."""
        return self.bucket_s - self.covered_s

    @property
    def net_wh(self) -> FloatArray:
        """Return import minus export in each bucket [Wh]."""
        return self.import_wh - self.export_wh


def positive_part_wh(
    start_w: npt.ArrayLike, end_w: npt.ArrayLike, duration_ms: npt.ArrayLike
) -> FloatArray:
    """Return the integral of max(p, 0) for p linear from ``start_w`` to ``end_w``.

    Parameters
    ----------
    start_w, end_w : numeric
        Power at the start and at the end of the interval [W].
    duration_ms : numeric
        Length of the interval [ms].

    Returns
    -------
    numeric
        Energy of the positive part [W·ms]; a sign change is split at the zero crossing.
        NaN input gives NaN.
    """
    a = np.asarray(start_w, dtype=np.float64)
    b = np.asarray(end_w, dtype=np.float64)
    x = np.asarray(duration_ms, dtype=np.float64)
    hi = np.maximum(a, b)
    lo = np.minimum(a, b)
    out = np.where(lo >= 0, (a + b) * 0.5 * x, 0.0)
    cross = (lo < 0) & (hi > 0)
    # Zero crossing: the positive triangle has height hi and a base hi / (hi - lo) of the interval.
    span = np.where(cross, hi - lo, 1.0)
    out = np.where(cross, hi * hi / (2.0 * span) * x, out)
    return np.where(np.isnan(a + b + x), np.nan, out)


def _shape(
    p0: FloatArray, p1: FloatArray, gap: npt.NDArray[np.bool_], method: str, gap_policy: str
) -> tuple[FloatArray, FloatArray]:
    """Return power at the start and end of each interval as integrated [W]."""
    if method == "trapezoid":
        a, b = p0, p1
    elif method == "left":
        a, b = p0, p0
    else:
        a, b = p1, p1
    if gap_policy == "skip":
        return np.where(gap, 0.0, a), np.where(gap, 0.0, b)
    if gap_policy == "hold":
        return np.where(gap, p0, a), np.where(gap, p0, b)
    return np.where(gap, p0, a), np.where(gap, p1, b)


def _check_options(method: str, gap_policy: str, max_gap_s: float) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if gap_policy not in GAP_POLICIES:
        raise ValueError(f"gap_policy must be one of {', '.join(GAP_POLICIES)}, not {gap_policy!r}")
    if not max_gap_s > 0:
        raise ValueError(f"max_gap_s must be positive, not {max_gap_s!r}")


def _empty(edges: IntArray) -> BucketEnergy:
    zeros = np.zeros(max(edges.size - 1, 0), dtype=np.float64)
    return BucketEnergy(
        edges, zeros, zeros.copy(), zeros.copy(), np.zeros(0, np.int64), np.zeros(0, np.float64)
    )


def integrate_power(
    ts_ms: npt.ArrayLike,
    power_w: npt.ArrayLike,
    edges_ms: npt.ArrayLike,
    *,
    method: str = "trapezoid",
    max_gap_s: float = 300.0,
    gap_policy: str = "skip",
) -> BucketEnergy:
    """Integrate power samples of one series into buckets, split exactly at every edge.

    Parameters
    ----------
    ts_ms : int array
        Sample times [ms UTC], sorted ascending (repeated times make zero-length intervals).
    power_w : float array
        Active power at each sample [W]; negative is export. NaN samples are left out, so the
        interval runs from the sample before to the sample after.
    edges_ms : int array
        Bucket edges [ms UTC], ascending; from :func:`wattlake.energy.buckets.bucket_edges_ms`.
    method : str, default ``trapezoid``
        Shape of each interval: ``trapezoid``, ``left`` or ``right``.
    max_gap_s : float, default 300
        Intervals longer than this are gaps [s].
    gap_policy : str, default ``skip``
        Energy of a gap: ``skip`` (none), ``hold`` (power before the gap) or ``linear``.

    Returns
    -------
    BucketEnergy
        Import, export and covered time per bucket, and the gaps.

    Raises:
        ValueError: arrays of different lengths, unsorted times or edges, or an unknown option.
    """
    _check_options(method, gap_policy, max_gap_s)
    ts = np.atleast_1d(np.asarray(ts_ms, dtype=np.int64))
    p = np.atleast_1d(np.asarray(power_w, dtype=np.float64))
    edges = np.atleast_1d(np.asarray(edges_ms, dtype=np.int64))
    if ts.shape != p.shape or ts.ndim != 1 or edges.ndim != 1:
        raise ValueError("ts_ms and power_w must be 1-d arrays of the same length")
    if edges.size >= 2 and np.any(edges[1:] < edges[:-1]):
        raise ValueError("edges_ms must be ascending")
    if edges.size < 2 or ts.size < 2:
        return _empty(edges)

    # min() propagates NaN, so one reduction tells both "any NaN" and "any export".
    p_min = p.min()
    if np.isnan(p_min):
        keep = ~np.isnan(p)
        ts, p = ts[keep], p[keep]
        if ts.size < 2:
            return _empty(edges)
        p_min = p.min()

    # Only the samples around the buckets matter: cut the series to the intervals that
    # contain the first and the last edge, and everything in between.
    pos_first, pos_last = np.searchsorted(ts, edges[[0, -1]], side="right") - 1
    lo = max(int(pos_first), 0)
    hi = min(int(pos_last) + 1, ts.size - 1)
    if hi <= lo:
        return _empty(edges)
    if lo > 0 or hi < ts.size - 1:
        ts, p = ts[lo : hi + 1], p[lo : hi + 1]
        p_min = p.min()
    n = ts.size

    dt = np.diff(ts)
    if dt.min() < 0:
        raise ValueError("ts_ms must be sorted ascending within a series")
    max_gap_ms = max_gap_s * 1000.0
    gap_idx = np.flatnonzero(dt > max_gap_ms)
    p0, p1 = p[:-1], p[1:]

    # Signed energy of each interval in "raw" units: W·ms divided by `weight`, which saves the
    # multiplication by 1/2 of the trapezoid rule on every interval.
    weight = 0.5 if method == "trapezoid" else 1.0
    if method == "trapezoid":
        signed = p0 + p1
    elif method == "left":
        signed = p0.copy()
    else:
        signed = p1.copy()
    np.multiply(signed, dt, out=signed)
    if gap_idx.size:
        g_gap = np.ones(gap_idx.size, dtype=np.bool_)
        ga, gb = _shape(p0[gap_idx], p1[gap_idx], g_gap, method, gap_policy)
        signed[gap_idx] = (ga + gb) * 0.5 * dt[gap_idx] / weight
    has_export = bool(p_min < 0)
    if has_export:
        positive = np.maximum(signed, 0.0)
        negative = p < 0
        cand = np.flatnonzero(negative[:-1] != negative[1:])  # sign change between samples
        if cand.size:
            c_gap = np.zeros(cand.size, dtype=np.bool_)
            if gap_idx.size:
                c_gap = np.isin(cand, gap_idx)
            ca, cb = _shape(p0[cand], p1[cand], c_gap, method, gap_policy)
            positive[cand] = positive_part_wh(ca, cb, dt[cand]) / weight

    # Interval k holds edge e when ts[k] <= e < ts[k + 1]; k = n - 1 is a virtual empty
    # interval after the last sample, k = -1 (clipped to 0) lies before the first sample.
    k = np.searchsorted(ts, edges, side="right") - 1
    kc = np.clip(k, 0, n - 1)
    real = (k >= 0) & (k <= n - 2)
    ki = np.where(real, k, 0)
    kd = dt[ki]
    x = np.where(real, np.clip(edges - ts[ki], 0, kd), 0).astype(np.float64)
    e_gap = np.asarray(kd > max_gap_ms) & real
    ea, eb = _shape(p[ki], p[np.minimum(ki + 1, n - 1)], e_gap, method, gap_policy)
    frac = np.divide(x, kd, out=np.zeros_like(x), where=kd > 0)
    ev = ea + (eb - ea) * frac
    part_pos = positive_part_wh(ea, ev, x) / weight
    part_neg = positive_part_wh(-ea, -ev, x) / weight
    part_signed = part_pos - part_neg

    # Edges are ascending, so kc is too; from the first edge whose interval is the last one's,
    # every bucket is empty. reduceat sums view[kc[j]:kc[j + 1]] (and the rest of the view for
    # the last index); no copy of the interval arrays is made.
    n_buckets = edges.size - 1
    first_tail = int(np.searchsorted(kc, kc[-1]))

    def per_bucket(values: FloatArray, part: FloatArray) -> FloatArray:
        sums = np.zeros(n_buckets, dtype=np.float64)
        if first_tail > 0:
            head = np.add.reduceat(values[: kc[-1]], kc[:first_tail])
            head[:-1][kc[: first_tail - 1] == kc[1:first_tail]] = 0.0
            sums[:first_tail] = head
        return sums - part[:-1] + part[1:]

    to_wh = weight / _MS_PER_HOUR
    signed_b = per_bucket(signed, part_signed)
    if has_export:
        import_raw = per_bucket(positive, part_pos)
        import_wh = import_raw * to_wh
        export_wh = (import_raw - signed_b) * to_wh
    else:
        import_wh = signed_b * to_wh
        export_wh = np.zeros_like(import_wh)

    # Covered time is exact integer arithmetic: time between the first and the last sample,
    # minus time inside gaps, evaluated at each edge.
    gap_start = ts[gap_idx]
    gap_end = ts[gap_idx + 1]
    cum_gap = np.concatenate(([0], np.cumsum(gap_end - gap_start)))
    m = np.searchsorted(gap_end, edges, side="right")
    if gap_idx.size:
        mi = np.minimum(m, gap_idx.size - 1)
        partial_gap = np.where(m < gap_idx.size, np.clip(edges - gap_start[mi], 0, None), 0)
    else:
        partial_gap = np.zeros_like(edges)
    covered_at = np.clip(edges, ts[0], ts[-1]) - ts[0] - (cum_gap[m] + partial_gap)
    covered_s = np.diff(covered_at).astype(np.float64) / 1000.0

    overlaps = (gap_start < edges[-1]) & (gap_end > edges[0])
    return BucketEnergy(
        edges_ms=edges,
        import_wh=import_wh,
        export_wh=export_wh,
        covered_s=covered_s,
        gap_start_ms=gap_start[overlaps],
        gap_length_s=(gap_end - gap_start)[overlaps].astype(np.float64) / 1000.0,
    )


def plain_trapezoid_wh(ts_ms: IntArray, power_w: FloatArray) -> float:
    """Return the trapezoid integral of one whole series, no buckets and no gaps [Wh].

    The baseline the kernel is benchmarked against.
    """
    dt = np.diff(ts_ms)
    return float(np.dot(power_w[:-1] + power_w[1:], dt)) * 0.5 / _MS_PER_HOUR

"""Energy from cumulative counters (``energy_wh``, ``returned_energy_wh``) of one series.

A meter's own counter is the most accurate source of energy, but real counters misbehave. Each
step between two readings is classified, and only *normal* steps count:

* **unavailable** — the reading is NaN or negative (devices send ``-1`` for "unknown"); it is left
  out and the step runs from the reading before to the reading after.
* **glitch** — the counter drops and comes back to at least its earlier level within
  ``glitch_window_s`` (default 300 s), by a rise no steeper than ``max_power_w``. The low
  readings are ignored; the step from before the drop to the return counts as one normal step.
* **reset** — the counter drops and does not come back (a reboot, a replaced meter). The reading
  after the drop is the new baseline. *Conservative rule*: the step across the reset counts
  **nothing**, because the reboot time is unknown — the value after the drop may hold energy
  since the reboot, or a stale value restored from flash. The event reports the value after the
  drop (``to_wh``) as the most that step could have missed; energy from power samples, where
  present, shows what happened (see ``counter_minus_power_wh`` in the query layer).
* **spike** — the counter rises faster than is plausible: faster than ``max_power_w`` (default
  60 kW per channel) allows, plus ``resolution_wh`` for the counter's rounding, or — where the
  same channel's power samples back the whole step — by more than twice their energy plus
  ``POWER_TOLERANCE_WH``. If the next reading is plausible again from the level before the spike,
  the spike reading alone is an outlier and is ignored. Otherwise the counter moved to a new
  level: the jump counts nothing and the new level is the baseline.
* **outlier that comes back** — a reading above both neighbours whose removal leaves a plausible
  rise at the device's own rate (previous reading to next one): the reading is ignored, even when
  its rise alone was under every limit, so a jump of hundreds of Wh that comes back is never
  counted.

Counter energy is then apportioned to buckets: the *total* of each step comes from the counter,
its *shape in time* from power samples when they exist (else linear in time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from wattlake.energy.integrate import BucketEnergy, integrate_power

_MS_PER_HOUR: Final = 3_600_000.0
POWER_FACTOR: Final = 2.0
"""A counter step may hold at most this many times the energy of the power samples behind it."""
_SLICE_ROWS: Final = 100_000  # up to this many rows of suspect steps: sum them, no cumsum
POWER_TOLERANCE_WH: Final = 20.0
"""... plus this much [Wh]: instantaneous samples miss short loads between them."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """One counter anomaly.

    ``kind`` is ``unavailable``, ``glitch``, ``reset`` or ``spike``; [``start_ms``, ``end_ms``]
    is the step or run of readings concerned [ms UTC]; ``from_wh`` and ``to_wh`` are the counter
    values around it [Wh] (NaN for ``unavailable``).
    """

    kind: str
    start_ms: int
    end_ms: int
    from_wh: float
    to_wh: float


@dataclass(frozen=True, slots=True)
class CleanCounter:
    """Accepted readings of a counter and which steps between them count.

    Attributes
    ----------
    ts_ms : int64 array
        Times of the accepted readings [ms UTC].
    counter_wh : float64 array
        Counter value at each accepted reading [Wh].
    counts : bool array
        One per step between consecutive accepted readings: whether its delta counts.
    events : tuple of CounterEvent
        Every anomaly found, in time order within each kind.
    """

    ts_ms: IntArray
    counter_wh: FloatArray
    counts: BoolArray
    events: tuple[CounterEvent, ...]

    @property
    def delta_wh(self) -> FloatArray:
        """Return the counted energy of each step (0 for reset and spike steps) [Wh]."""
        delta = np.diff(self.counter_wh)
        if not self.counts.all():
            delta[~self.counts] = 0.0
        return delta

    @property
    def cumulative_wh(self) -> FloatArray:
        """Return the counted energy from the first accepted reading to each one [Wh]."""
        delta = self.delta_wh
        out = np.empty(delta.size + 1, dtype=np.float64)
        out[0] = 0.0
        np.cumsum(delta, out=out[1:])
        return out

    @property
    def total_wh(self) -> float:
        """Return the counted energy of the whole series [Wh]."""
        return float(self.delta_wh.sum())


class PowerReference:
    """The power samples of a series, to judge counter steps against.

    :meth:`step_energy` gives the import energy of the samples between two readings (the export
    energy for a reference built with ``export``: its samples are negated) and whether they back
    the whole step. Steps of one interval are computed directly; the cumulative sums
    over the whole series are built only when many long steps are asked for, so judging a few
    suspect steps costs no pass over the samples.
    """

    def __init__(self, ts_ms: IntArray, power_w: FloatArray, *, max_gap_s: float = 300.0) -> None:
        self.ts_ms = ts_ms
        self.power_w = power_w
        self.max_gap_ms = max_gap_s * 1000.0
        self._cumulative: tuple[FloatArray, IntArray] | None = None

    def _interval(self, r0: IntArray, r1: IntArray) -> tuple[FloatArray, BoolArray]:
        p0 = np.maximum(self.power_w[r0], 0.0)
        p1 = np.maximum(self.power_w[r1], 0.0)
        dt = (self.ts_ms[r1] - self.ts_ms[r0]).astype(np.float64)
        energy = (p0 + p1) * dt * (0.5 / _MS_PER_HOUR)
        backed = np.isfinite(energy) & (dt <= self.max_gap_ms)
        return np.where(backed, energy, 0.0), backed

    def _sums(self) -> tuple[FloatArray, IntArray]:
        if self._cumulative is None:
            rows = np.arange(self.ts_ms.size - 1)
            energy, backed = self._interval(rows, rows + 1)
            self._cumulative = (
                np.concatenate(([0.0], np.cumsum(energy))),
                np.concatenate(([0], np.cumsum(~backed, dtype=np.int64))),
            )
        return self._cumulative

    def step_energy(self, r0: IntArray, r1: IntArray) -> tuple[FloatArray, BoolArray]:
        """Return the import energy of the samples from row ``r0`` to row ``r1`` [Wh], and
        whether samples no further apart than ``max_gap_s`` back all of it."""
        r0 = np.asarray(r0, dtype=np.int64)
        r1 = np.asarray(r1, dtype=np.int64)
        span = r1 - r0
        if np.all(span == 1):
            return self._interval(r0, r1)
        if self._cumulative is None and int(span.sum()) <= _SLICE_ROWS:
            energy = np.zeros(r0.size)
            backed = np.ones(r0.size, dtype=np.bool_)
            for i, (a, b) in enumerate(zip(r0.tolist(), r1.tolist(), strict=True)):
                rows = np.arange(a, b)
                part, ok = self._interval(rows, rows + 1)
                energy[i], backed[i] = part.sum(), ok.all()
            return energy, backed
        cum, unbacked = self._sums()
        return cum[r1] - cum[r0], unbacked[r1] == unbacked[r0]


def power_reference(
    ts_ms: npt.ArrayLike,
    power_w: npt.ArrayLike,
    *,
    max_gap_s: float = 300.0,
    export: bool = False,
) -> PowerReference:
    """Return the power samples of one series as a :class:`PowerReference`.

    Each interval counts the trapezoid of the power clipped at zero (import only), or with
    ``export`` of the negated power clipped at zero (export only: the reference for an export
    counter such as ``returned_energy_wh``); an interval with a NaN sample at either end or
    longer than ``max_gap_s`` counts nothing and is unbacked.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    p = np.asarray(power_w, dtype=np.float64)
    return PowerReference(ts, -p if export else p, max_gap_s=max_gap_s)


def clean_counter(
    ts_ms: npt.ArrayLike,
    counter_wh: npt.ArrayLike,
    *,
    max_power_w: float = 60_000.0,
    glitch_window_s: float = 300.0,
    resolution_wh: float = 1.0,
    power: PowerReference | Callable[[], PowerReference] | None = None,
) -> CleanCounter:
    """Classify the steps of a cumulative counter and keep the ones that count.

    Parameters
    ----------
    ts_ms : int array
        Reading times [ms UTC], sorted ascending.
    counter_wh : float array
        Counter values [Wh]; NaN or negative means unavailable.
    max_power_w : float, default 60000
        Highest plausible average power of one step [W].
    glitch_window_s : float, default 300
        A drop that returns to the earlier level within this time is a glitch [s].
    resolution_wh : float, default 1
        Counter rounding allowed on top of ``max_power_w`` [Wh].
    power : PowerReference or a function returning one, optional
        Power energy of the same series at each reading, in the counter's direction (from
        :func:`power_reference`, with ``export`` for an export counter); steps it backs may
        rise by at most ``POWER_FACTOR`` times its energy plus ``POWER_TOLERANCE_WH``.
        A function is called only when some step rises by more than the tolerance, so the
        common case (small steps) costs no pass over the power samples.

    Returns
    -------
    CleanCounter

    Raises:
        ValueError: arrays of different lengths or unsorted times.
    """
    ts_all = np.atleast_1d(np.asarray(ts_ms, dtype=np.int64))
    v_all = np.atleast_1d(np.asarray(counter_wh, dtype=np.float64))
    if ts_all.shape != v_all.shape or ts_all.ndim != 1:
        raise ValueError("ts_ms and counter_wh must be 1-d arrays of the same length")
    dt_all = np.diff(ts_all)
    if ts_all.size > 1 and np.any(dt_all < 0):
        raise ValueError("ts_ms must be sorted ascending within a series")
    events: list[CounterEvent] = []

    available = np.isfinite(v_all) & (v_all >= 0)
    every = bool(available.all())  # then rows of the accepted readings are the readings' own
    if not every:
        flips = np.flatnonzero(np.diff(np.concatenate(([1], available.view(np.int8), [1]))))
        for start, stop in zip(flips[::2], flips[1::2], strict=True):
            events.append(
                CounterEvent(
                    "unavailable", int(ts_all[start]), int(ts_all[stop - 1]), np.nan, np.nan
                )
            )
    t = ts_all if every else ts_all[available]
    v = v_all if every else v_all[available]
    n = t.size
    if n < 2:
        return CleanCounter(t, v, np.zeros(0, dtype=np.bool_), tuple(events))

    per_ms_wh = max_power_w / _MS_PER_HOUR
    window_ms = glitch_window_s * 1000.0
    step = np.diff(v)
    step_limit = per_ms_wh * (dt_all if every else np.diff(t)) + resolution_wh
    slack_wh = POWER_TOLERANCE_WH + resolution_wh
    rows = None if every or power is None else np.flatnonzero(available)

    def row(i: IntArray) -> IntArray:  # the reading of each accepted reading
        return i if rows is None else rows[i]

    if power is not None:
        # Only a step that rises by more than the tolerance can be judged implausible by power.
        suspect = np.flatnonzero(step > slack_wh)
        if suspect.size == 0:
            power = None
        else:
            if callable(power):
                power = power()
            if power.ts_ms.shape != ts_all.shape:
                raise ValueError("power must have one value per reading")
            energy, backed = power.step_energy(row(suspect), row(suspect + 1))
            by_power = POWER_FACTOR * energy + slack_wh
            step_limit[suspect] = np.where(
                backed, np.minimum(step_limit[suspect], by_power), step_limit[suspect]
            )

    def limit_wh(b: int, c: int) -> float:
        cap = per_ms_wh * float(t[c] - t[b]) + resolution_wh
        if isinstance(power, PowerReference):
            energy, backed = power.step_energy(row(np.array([b])), row(np.array([c])))
            if backed[0]:
                return min(cap, POWER_FACTOR * float(energy[0]) + slack_wh)
        return cap

    def accepted_before(b: int) -> int:
        a = b - 1
        while a >= 0 and not keep[a]:
            a -= 1
        return a

    anomalies = np.flatnonzero((step < 0) | (step > step_limit))
    # Without anomalies every reading is kept: no mask to allocate or scan.
    keep = np.ones(n if anomalies.size else 0, dtype=np.bool_)
    no_count: list[int] = []  # accepted readings whose following step counts nothing

    # Walk from anomaly to anomaly: a Python step per anomaly, never per reading. `b` is the
    # baseline reading, `c` the reading compared with it.
    b, c = 0, 1
    while c < n:
        if c == b + 1:
            at = int(np.searchsorted(anomalies, b))
            if at == anomalies.size:
                break
            b = int(anomalies[at])
            c = b + 1
        delta = v[c] - v[b]
        if 0 <= delta <= limit_wh(b, c):
            b, c = c, c + 1
            continue
        if delta < 0:
            stop = int(np.searchsorted(t, t[c] + window_ms, side="right"))
            back = np.flatnonzero(v[c:stop] >= v[b])
            j = c + int(back[0]) if back.size else -1
            if j > 0 and v[j] - v[b] <= limit_wh(b, j):
                keep[c:j] = False
                glitch = CounterEvent("glitch", int(t[c]), int(t[j - 1]), float(v[b]), float(v[c]))
                events.append(glitch)
                c = j
                continue
            a = accepted_before(b)
            if a >= 0 and a not in no_count and 0 <= v[c] - v[a] <= limit_wh(a, c):
                # b stood above both neighbours: an outlier that came back, not a reset.
                keep[b] = False
                events.append(CounterEvent("spike", int(t[b]), int(t[b]), float(v[a]), float(v[b])))
                b = a
                continue
            no_count.append(b)
            events.append(CounterEvent("reset", int(t[b]), int(t[c]), float(v[b]), float(v[c])))
            b, c = c, c + 1
            continue
        nxt = c + 1
        if nxt < n and 0 <= v[nxt] - v[b] <= limit_wh(b, nxt):
            keep[c] = False
            events.append(CounterEvent("spike", int(t[c]), int(t[c]), float(v[b]), float(v[c])))
            c = nxt
            continue
        no_count.append(b)
        events.append(CounterEvent("spike", int(t[b]), int(t[c]), float(v[b]), float(v[c])))
        b, c = c, c + 1

    kept_all = bool(keep.all())  # (True when empty: no anomalies)
    kept_index = None if kept_all else np.flatnonzero(keep)
    counts = np.ones((n if kept_index is None else kept_index.size) - 1, dtype=np.bool_)
    if no_count:
        stopped = np.array(no_count, dtype=np.int64)
        counts[stopped if kept_index is None else np.searchsorted(kept_index, stopped)] = False
    events.sort(key=lambda e: (e.start_ms, e.kind))
    if kept_index is None:
        return CleanCounter(t, v, counts, tuple(events))
    return CleanCounter(t[kept_index], v[kept_index], counts, tuple(events))


def _counted_ms(counter: CleanCounter, at: IntArray) -> FloatArray:
    """Return the time inside counted steps from the first accepted reading to the readings
    ``at`` [ms], exactly (integers, so the same as a float cumulative sum of the steps)."""
    t = counter.ts_ms
    elapsed = t[at] - t[0]
    if counter.counts.all():
        return elapsed.astype(np.float64)
    idle = np.flatnonzero(~counter.counts)
    idle_cum = np.concatenate(([0], np.cumsum(t[idle + 1] - t[idle])))
    return (elapsed - idle_cum[np.searchsorted(idle, at)]).astype(np.float64)


@dataclass(frozen=True, slots=True)
class CounterBuckets:
    """Counter energy per bucket.

    ``energy_wh`` is the counted energy of each bucket [Wh]; ``covered_s`` the time of each
    bucket inside counted steps [s]; ``shaped_by_power`` whether power samples shaped the split.
    """

    edges_ms: IntArray
    energy_wh: FloatArray
    covered_s: FloatArray
    shaped_by_power: bool


def counter_buckets(
    counter: CleanCounter,
    edges_ms: npt.ArrayLike,
    *,
    power_ts_ms: npt.ArrayLike | None = None,
    power_w: npt.ArrayLike | None = None,
    export: bool = False,
    max_gap_s: float = 300.0,
    power_energy: Callable[[IntArray], BucketEnergy] | None = None,
) -> CounterBuckets:
    """Apportion counted energy to buckets.

    Each step's total is the counter delta. Inside a step that crosses edges, energy is split in
    proportion to the energy of the power samples (their import part, or export part when
    ``export``) when those exist and are non-zero over the step, else in proportion to time.

    Parameters
    ----------
    counter : CleanCounter
        From :func:`clean_counter`.
    edges_ms : int array
        Bucket edges [ms UTC], ascending.
    power_ts_ms, power_w : array, optional
        Power samples of the same series [ms UTC], [W].
    export : bool, default False
        The counter counts export (``returned_energy_wh``).
    max_gap_s : float, default 300
        Passed to the power integration; gaps are bridged linearly for shaping [s].
    power_energy : callable, optional
        ``power_energy(instants_ms)`` returns what :func:`integrate_power` gives of the power
        samples over those edges with gaps bridged linearly (a caller shaping both counters of a
        series can integrate once); by default it is called so.
    """
    edges = np.asarray(edges_ms, dtype=np.int64)
    t = counter.ts_ms
    cum = counter.cumulative_wh
    n_buckets = max(edges.size - 1, 0)
    if t.size < 2 or n_buckets == 0:
        zeros = np.zeros(n_buckets, dtype=np.float64)
        return CounterBuckets(edges, zeros, zeros.copy(), False)
    # np.interp between the two readings around each edge: the same values as over all
    # readings, without a pass over them.
    k = np.searchsorted(t, edges, side="right") - 1
    near = np.unique(
        np.concatenate(([0, t.size - 1], np.clip(k, 0, t.size - 2), np.clip(k + 1, 1, t.size - 1)))
    )
    covered_s = np.diff(np.interp(edges, t[near], _counted_ms(counter, near))) / 1000.0
    at_edges = np.interp(edges, t[near], cum[near])  # linear in time within each step

    shaped = False
    if power_ts_ms is not None and power_w is not None:
        pts = np.asarray(power_ts_ms, dtype=np.int64)
        pw = np.asarray(power_w, dtype=np.float64)
        inside = (k >= 0) & (k < t.size - 1)
        if pts.size >= 2 and inside.any():
            kk = k[inside]
            points = np.unique(np.concatenate((t[kk], t[kk + 1], edges[inside])))
            energy = (
                integrate_power(pts, pw, points, max_gap_s=max_gap_s, gap_policy="linear")
                if power_energy is None
                else power_energy(points)
            )
            part = energy.export_wh if export else energy.import_wh
            power_cum = np.concatenate(([0.0], np.cumsum(part)))

            def power_at(instants: IntArray) -> FloatArray:
                return power_cum[np.searchsorted(points, instants)]

            whole = power_at(t[kk + 1]) - power_at(t[kk])
            share = power_at(edges[inside]) - power_at(t[kk])
            usable = whole > 0
            if usable.any():
                shaped = True
                step_wh = cum[kk + 1] - cum[kk]
                by_power = cum[kk] + step_wh * np.divide(
                    share, whole, out=np.zeros_like(share), where=usable
                )
                values = at_edges[inside]
                at_edges[inside] = np.where(usable, by_power, values)
    return CounterBuckets(edges, np.diff(at_edges), covered_s, shaped)

"""Energy of device channel series: readings cut into one series per (device, channel) and
integrated, summed per site (pure functions over numpy arrays, and the Arrow tables they are
cut from).

A *series* is one (device, channel). Readings may arrive unsorted and with exact duplicates on
(device_id, channel, ts); the first copy wins (the lake's readers keep the copy the views keep
first). Method ``auto`` takes a channel's energy from its cumulative counters when it has at
least two readings of them, shaped in time by its power samples, and otherwise integrates
``power_w`` with the trapezoid rule.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.energy.counters import (
    CleanCounter,
    CounterEvent,
    PowerReference,
    clean_counter,
    counter_buckets,
    power_reference,
)
from wattlake.energy.integrate import METHODS, BucketEnergy, integrate_power
from wattlake.energy.sites import UNTRACKED_TOLERANCE_WH, ChannelRole, Site, SiteBalance
from wattlake.errors import UsageError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

ENERGY_METHODS: Final[tuple[str, ...]] = ("auto", *METHODS)


@dataclass(frozen=True, slots=True)
class Series:
    """The readings of one device channel, sorted by time without duplicates."""

    device_id: str
    channel: int
    ts_ms: IntArray
    power_w: FloatArray
    energy_wh: FloatArray
    returned_energy_wh: FloatArray


# The columns split_series reads.


def _float_column(table: pa.Table, name: str) -> FloatArray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    column = table[name].cast(pa.float64())  # nulls become NaN in to_numpy
    return np.asarray(column.to_numpy(), dtype=np.float64)


def split_series(table: pa.Table, *, channel: int | None = None) -> list[Series]:
    """Sort readings, drop exact duplicates and cut them into one series per device channel.

    Raises:
        UsageError: the table lacks ``ts``, ``device_id`` or ``channel``.
    """
    missing = {"ts", "device_id", "channel"} - set(table.column_names)
    if missing:
        raise UsageError(f"Readings lack column(s) {', '.join(sorted(missing))}.")
    if channel is not None:
        table = table.filter(pc.equal(table["channel"], channel))
    if table.num_rows == 0:
        return []
    encoded = pc.dictionary_encode(table["device_id"]).combine_chunks()
    names = encoded.dictionary.to_pylist()
    dev = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    ch = np.asarray(table["channel"].to_numpy(), dtype=np.int64)
    ts = np.asarray(table["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64)
    rank = np.empty(len(names), dtype=np.int64)
    rank[sorted(range(len(names)), key=names.__getitem__)] = np.arange(len(names))
    key = rank[dev]
    if not np.all(
        (key[1:] > key[:-1])
        | (
            (key[1:] == key[:-1])
            & ((ch[1:] > ch[:-1]) | ((ch[1:] == ch[:-1]) & (ts[1:] >= ts[:-1])))
        )
    ):  # not yet sorted by device, channel and ts (the lake's reader returns them sorted)
        table = table.sort_by(
            [("device_id", "ascending"), ("channel", "ascending"), ("ts", "ascending")]
        )
        encoded = pc.dictionary_encode(table["device_id"]).combine_chunks()
        names = encoded.dictionary.to_pylist()
        dev = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        ch = np.asarray(table["channel"].to_numpy(), dtype=np.int64)
        ts = np.asarray(table["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64)
    power = _float_column(table, "power_w")
    energy = _float_column(table, "energy_wh")
    returned = _float_column(table, "returned_energy_wh")
    new_series = np.ones(ts.size, dtype=np.bool_)
    new_series[1:] = (dev[1:] != dev[:-1]) | (ch[1:] != ch[:-1])
    duplicate = np.zeros(ts.size, dtype=np.bool_)
    duplicate[1:] = ~new_series[1:] & (ts[1:] == ts[:-1])
    keep = ~duplicate
    starts = np.flatnonzero(new_series[keep])
    dev, ch, ts = dev[keep], ch[keep], ts[keep]
    power, energy, returned = power[keep], energy[keep], returned[keep]
    bounds = [*starts.tolist(), ts.size]
    return [
        Series(names[dev[a]], int(ch[a]), ts[a:b], power[a:b], energy[a:b], returned[a:b])
        for a, b in itertools.pairwise(bounds)
    ]


@dataclass(frozen=True, slots=True)
class SeriesEnergy:
    """Energy of one series per bucket, with the method used and anomalies found.

    ``covered_s`` is the time of each bucket backed by readings no further apart than
    ``max_gap_s`` [s]; ``interpolated_wh`` the import and export energy in the rest [Wh].
    """

    series: Series
    import_wh: FloatArray
    export_wh: FloatArray
    covered_s: FloatArray
    method: str
    counter_minus_power_wh: FloatArray | None
    events: tuple[CounterEvent, ...] = field(default=())
    interpolated_wh: FloatArray | None = None


@dataclass(frozen=True, slots=True)
class _CounterPlan:
    """One cleaned counter and where on a timeline it counts."""

    clean: CleanCounter
    long_step: npt.NDArray[np.bool_]

    def bounds(self) -> IntArray:
        """Return the instants where counting starts or stops or a long step begins or ends."""
        t = self.clean.ts_ms
        special = np.flatnonzero(~self.clean.counts | self.long_step)
        return np.concatenate((t[[0, -1]], t[special], t[special + 1]))

    def classify(self, mid_ms: FloatArray) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Return, per segment midpoint, whether the counter counts there and by a long step."""
        t = self.clean.ts_ms
        k = np.searchsorted(t, mid_ms, side="right") - 1
        inside = (k >= 0) & (k <= t.size - 2)
        kk = np.where(inside, k, 0)
        counting = inside & self.clean.counts[kk]
        return counting, counting & self.long_step[kk]


def _plan(
    ts_ms: IntArray,
    counter_wh: FloatArray,
    *,
    max_power_w: float,
    max_gap_ms: float,
    reference: Callable[[], PowerReference] | None,
) -> _CounterPlan | None:
    clean = clean_counter(ts_ms, counter_wh, max_power_w=max_power_w, power=reference)
    if clean.ts_ms.size < 2:
        return None
    return _CounterPlan(clean, np.diff(clean.ts_ms) > max_gap_ms)


def series_energy(
    series: Series,
    edges_ms: IntArray,
    *,
    method: str = "auto",
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
    gap_policy: str = "skip",
) -> SeriesEnergy:
    """Return the energy of one series in each bucket between ``edges_ms``.

    With method ``auto`` a cumulative counter wins wherever it counts: between its first and last
    accepted reading, except across a reset or a lasting jump. Everywhere else (before a counter
    appears, after it stops, across a reset) the power samples give the energy. Coverage is the
    time backed by readings no further apart than ``max_gap_s``: a counter step that short, or
    power samples that close; energy in the rest is also reported as ``interpolated_wh``.

    Raises:
        UsageError: ``method`` is unknown.
    """
    if method not in ENERGY_METHODS:
        raise UsageError(f"Unknown method {method!r}; use one of {', '.join(ENERGY_METHODS)}.")
    power_method = "trapezoid" if method == "auto" else method
    edges = np.asarray(edges_ms, dtype=np.int64)
    n_buckets = edges.size - 1
    max_gap_ms = max_gap_s * 1000.0
    ts = series.ts_ms
    finite = np.isfinite(series.power_w)
    has_power = int(np.count_nonzero(finite)) >= 2
    auto = method == "auto"
    use_import = auto and int(np.isfinite(series.energy_wh).sum()) >= 2
    use_export = auto and int(np.isfinite(series.returned_energy_wh).sum()) >= 2
    if n_buckets <= 0:
        zeros = np.zeros(0)
        return SeriesEnergy(series, zeros, zeros, zeros, power_method, None, (), zeros)

    def reference() -> PowerReference:
        return power_reference(ts, series.power_w, max_gap_s=max_gap_s)

    def export_reference() -> PowerReference:  # the export counter against export power
        return power_reference(ts, series.power_w, max_gap_s=max_gap_s, export=True)

    events: list[CounterEvent] = []
    plans: list[_CounterPlan | None] = [None, None]
    for i, (wanted, values) in enumerate(
        ((use_import, series.energy_wh), (use_export, series.returned_energy_wh))
    ):
        if wanted:
            plan = _plan(
                ts,
                values,
                max_power_w=max_power_w,
                max_gap_ms=max_gap_ms,
                reference=(export_reference if i == 1 else reference) if has_power else None,
            )
            if plan is not None:
                events.extend(plan.clean.events)
            plans[i] = plan

    if plans == [None, None] and (gap_policy == "skip" or not has_power):
        # Power only, gaps count nothing: no energy lies in uncovered time, nothing to refine.
        if not has_power:
            zeros = np.zeros(n_buckets)
            return SeriesEnergy(series, zeros, zeros, zeros, power_method, None, (), zeros)
        power = integrate_power(
            ts, series.power_w, edges, method=power_method, max_gap_s=max_gap_s, gap_policy="skip"
        )
        return SeriesEnergy(
            series,
            power.import_wh,
            power.export_wh,
            power.covered_s,
            power_method,
            None,
            tuple(sorted(events, key=lambda e: (e.start_ms, e.kind))),
            np.zeros(n_buckets),
        )

    # Refine the buckets at every instant where the source or the coverage can change, so each
    # refined segment is wholly counted or not, and wholly covered or not.
    bounds = [edges]
    if has_power:
        pts = ts[finite] if not finite.all() else ts
        gaps = np.flatnonzero(np.diff(pts) > max_gap_ms)
        bounds.extend((pts[[0, -1]], pts[gaps], pts[gaps + 1]))
    for plan in plans:
        if plan is not None:
            bounds.append(plan.bounds())
    if len(bounds) > 1:
        refined = np.unique(np.concatenate(bounds))
        refined = refined[(refined >= edges[0]) & (refined <= edges[-1])]
    else:
        refined = edges
    seg_ms = np.diff(refined).astype(np.float64)
    mid = refined[:-1] + seg_ms * 0.5

    if has_power:
        power = integrate_power(
            ts,
            series.power_w,
            refined,
            method=power_method,
            max_gap_s=max_gap_s,
            gap_policy=gap_policy,
        )
        p_imp, p_exp, covered = power.import_wh, power.export_wh, power.covered_s
    else:
        p_imp = np.zeros(seg_ms.size)
        p_exp, covered = p_imp.copy(), p_imp.copy()
    shape_ts = ts if has_power else None
    shape_w = series.power_w if has_power else None
    imp, exp = p_imp, p_exp
    labels: set[str] = set()
    diff = None
    counted_any = np.zeros(seg_ms.size, dtype=np.bool_)
    shapes: list[tuple[IntArray, BucketEnergy]] = []

    def shape(instants_ms: IntArray) -> BucketEnergy:
        # Both counters usually split at the same instants: integrate the power once.
        for known, energy in shapes:
            if np.array_equal(known, instants_ms):
                return energy
        energy = integrate_power(
            ts, series.power_w, instants_ms, max_gap_s=max_gap_s, gap_policy="linear"
        )
        shapes.append((instants_ms, energy))
        return energy

    for i, plan in enumerate(plans):
        if plan is None:
            continue
        counted = counter_buckets(
            plan.clean,
            refined,
            power_ts_ms=shape_ts,
            power_w=shape_w,
            export=i == 1,
            max_gap_s=max_gap_s,
            power_energy=shape if has_power else None,
        ).energy_wh
        counting, long_step = plan.classify(mid)
        counted_any |= counting
        if i == 0:
            imp = np.where(counting, counted, p_imp)
            if has_power:
                diff = np.where(counting, counted - p_imp, 0.0)
        else:
            exp = np.where(counting, counted, p_exp)
        # A counted step no longer than max_gap_s backs its time; a long one only where power
        # samples back it.
        covered = np.where(counting & ~long_step, seg_ms / 1000.0, covered)
    if counted_any.any():
        labels.add("counter")
    if (has_power and (~counted_any & (covered > 0)).any()) or not labels:
        labels.add(power_method)
    uncovered = np.divide(
        seg_ms / 1000.0 - covered, seg_ms / 1000.0, out=np.zeros_like(seg_ms), where=seg_ms > 0
    )
    interpolated = (imp + exp) * uncovered

    if refined is not edges:
        at = np.searchsorted(refined, edges)

        def to_buckets(values: FloatArray) -> FloatArray:
            if values.size == 0:
                return np.zeros(n_buckets)
            return np.add.reduceat(values, at[:-1])

        imp, exp, covered, interpolated = (to_buckets(x) for x in (imp, exp, covered, interpolated))
        diff = None if diff is None else to_buckets(diff)
    return SeriesEnergy(
        series,
        imp,
        exp,
        covered,
        "+".join(sorted(labels)),
        diff,
        tuple(sorted(events, key=lambda e: (e.start_ms, e.kind))),
        interpolated,
    )


def usable_cores() -> int:
    """Return how many cores this process may run on (its affinity where the OS says)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1


# Series with at least this many readings in all are integrated on a thread per core: numpy
# releases the GIL in the kernel's passes over the arrays, which is nearly all of its time.
_THREADED_READINGS: Final = 200_000


def series_energies(
    series: Sequence[Series],
    edges_ms: IntArray | Sequence[IntArray],
    *,
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
) -> list[SeriesEnergy]:
    """Return :func:`series_energy` (method ``auto``, gaps skipped) of each series, in order,
    over ``edges_ms`` (or, given a sequence of edge arrays, over the edges of each series);
    many readings are shared out over the machine's cores."""
    if len(edges_ms) and all(isinstance(e, np.ndarray) and e.ndim == 1 for e in edges_ms):
        each = [np.asarray(e, dtype=np.int64) for e in edges_ms]  # edges of each series
        if len(each) != len(series):
            raise ValueError("series_energies takes one edge array per series")
    else:
        each = [np.asarray(edges_ms, dtype=np.int64)] * len(series)

    def energy_of(i: int) -> SeriesEnergy:
        return series_energy(
            series[i], each[i], method="auto", max_gap_s=max_gap_s, max_power_w=max_power_w
        )

    workers = min(usable_cores(), len(series))
    if workers < 2 or sum(s.ts_ms.size for s in series) < _THREADED_READINGS:
        return [energy_of(i) for i in range(len(series))]
    # Longest first, so one long series does not start last and run alone.
    by_size = sorted(range(len(series)), key=lambda i: -series[i].ts_ms.size)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = dict(zip(by_size, pool.map(energy_of, by_size), strict=True))
    return [done[i] for i in range(len(series))]


@dataclass(frozen=True, slots=True)
class SiteEnergy:
    """A site's balance per bucket, with how well it is measured.

    ``coverage`` is the lowest coverage of the site's channels in each bucket (0–1);
    ``interpolated_wh`` the energy of all its channels in time not backed by readings [Wh];
    ``phase_netting`` per bucket says ``net`` or ``per_phase`` (with the reason when ``net`` was
    asked for but only counters were there); ``warnings`` are sentences to show the user.
    """

    site: Site
    edges_ms: IntArray
    balance: SiteBalance
    coverage: FloatArray
    interpolated_wh: FloatArray
    phase_netting: tuple[str, ...]
    warnings: tuple[str, ...]
    events: tuple[tuple[str, CounterEvent], ...] = ()


def _net_series(parts: Sequence[Series]) -> Series | None:
    """Return one power series: the sum of the parts' power at every instant any of them has.

    Each part is interpolated linearly at the others' instants; an instant outside a part's
    samples is left out (NaN), so only time where every part has samples is netted.
    """
    usable = [(s.ts_ms[np.isfinite(s.power_w)], s.power_w[np.isfinite(s.power_w)]) for s in parts]
    if not usable or any(t.size < 2 for t, _ in usable):
        return None
    ts = np.unique(np.concatenate([t for t, _ in usable]))
    total = np.zeros(ts.size)
    for t, p in usable:
        total += np.interp(ts, t, p, left=np.nan, right=np.nan)
    nan = np.full(ts.size, np.nan)
    first = parts[0]
    return Series(first.device_id, first.channel, ts, total, nan, nan.copy())


def site_energy(
    table: pa.Table,
    site: Site,
    edges_ms: IntArray,
    *,
    method: str = "auto",
    max_gap_s: float = 300.0,
    max_power_w: float = 60_000.0,
    gap_policy: str = "skip",
) -> SiteEnergy:
    """Return the energy balance of ``site`` in each bucket between ``edges_ms``.

    Each channel's energy comes from :func:`series_energy` (counters where they count, power
    elsewhere) and is taken only while its role assignment is in force (``valid_from``). With
    ``phases = "net"`` the grid channels' power is summed at each instant before integration, so
    import on one phase and export on another cancel; buckets without power samples fall back to
    ``per_phase`` and say so.

    Raises:
        UsageError: ``method`` is unknown.
    """
    edges = np.asarray(edges_ms, dtype=np.int64)
    n = edges.size - 1
    bounds = [
        b
        for role in site.channels
        for b in (role.valid_from_ms, role.valid_until_ms)
        if b is not None and edges[0] < b < edges[-1]
    ]
    refined = np.unique(np.concatenate((edges, np.array(bounds, dtype=np.int64))))
    at = np.searchsorted(refined, edges)
    seg_ms = np.diff(refined).astype(np.float64)
    by_key = {f"{s.device_id}:{s.channel}": s for s in split_series(table)}

    def energy_of(series: Series, how: str) -> SeriesEnergy:
        return series_energy(
            series,
            refined,
            method=how,
            max_gap_s=max_gap_s,
            max_power_w=max_power_w,
            gap_policy=gap_policy,
        )

    computed: dict[str, SeriesEnergy] = {}
    events: list[tuple[str, CounterEvent]] = []

    def buckets(values: FloatArray) -> FloatArray:
        return np.add.reduceat(values, at[:-1]) if values.size else np.zeros(n)

    def valid_mask(role: ChannelRole) -> npt.NDArray[np.bool_]:
        valid = np.ones(seg_ms.size, dtype=np.bool_)
        if role.valid_from_ms is not None:
            valid &= refined[:-1] >= role.valid_from_ms
        if role.valid_until_ms is not None:
            valid &= refined[:-1] < role.valid_until_ms
        return valid

    sums = {k: np.zeros(n) for k in ("grid_in", "grid_out", "solar", "charge", "discharge")}
    circuits: dict[str, FloatArray] = {}
    worst = np.full(n, np.inf)
    interpolated = np.zeros(n)
    valid_s_total = np.zeros(n)
    for role in site.channels:
        if role.role == "ignore":
            continue
        series = by_key.get(role.key)
        valid = valid_mask(role)
        valid_s = buckets(np.where(valid, seg_ms, 0.0)) / 1000.0
        if series is None:
            result_imp = result_exp = covered = interp = np.zeros(seg_ms.size)
        else:
            if role.key not in computed:
                computed[role.key] = energy_of(series, method)
                events.extend((role.key, e) for e in computed[role.key].events)
            r = computed[role.key]
            result_imp, result_exp, covered = r.import_wh, r.export_wh, r.covered_s
            interp = r.interpolated_wh if r.interpolated_wh is not None else np.zeros(seg_ms.size)
        imp = buckets(np.where(valid, result_imp, 0.0))
        exp = buckets(np.where(valid, result_exp, 0.0))
        if role.invert:
            imp, exp = exp, imp
        share = np.divide(
            buckets(np.where(valid, covered, 0.0)),
            valid_s,
            out=np.full(n, np.inf),
            where=valid_s > 0,
        )
        worst = np.minimum(worst, share)
        interpolated += buckets(np.where(valid, interp, 0.0))
        valid_s_total += valid_s
        if role.role == "grid":
            sums["grid_in"] += imp
            sums["grid_out"] += exp
        elif role.role == "solar":
            sums["solar"] += exp
        elif role.role == "battery":
            sums["charge"] += imp
            sums["discharge"] += exp
        else:
            circuits[role.name] = circuits.get(role.name, np.zeros(n)) + imp - exp

    netting = ["per_phase"] * n
    warnings: list[str] = []
    grid_roles = site.with_role("grid")
    if site.phases == "net" and grid_roles:
        parts = [by_key[r.key] for r in grid_roles if r.key in by_key]
        net = _net_series(parts) if len(parts) == len(grid_roles) else None
        reason = "per_phase (no power samples to net)"
        if net is None:
            netting = [reason] * n
        else:
            power_method = "trapezoid" if method == "auto" else method
            r = energy_of(net, power_method)
            valid = np.zeros(seg_ms.size, dtype=np.bool_)
            for role in grid_roles:
                valid |= valid_mask(role)
            net_in = buckets(np.where(valid, r.import_wh, 0.0))
            net_out = buckets(np.where(valid, r.export_wh, 0.0))
            net_cov = buckets(np.where(valid, r.covered_s, 0.0))
            use = net_cov > 0
            sums["grid_in"] = np.where(use, net_in, sums["grid_in"])
            sums["grid_out"] = np.where(use, net_out, sums["grid_out"])
            netting = ["net" if u else reason for u in use]
        if any(label != "net" for label in netting):
            warnings.append(
                f"Site {site.name}: some periods have only counters on the grid phases, so their "
                "phases are billed one by one (per_phase), not netted."
            )
    balance = SiteBalance(
        grid_import_wh=sums["grid_in"],
        grid_export_wh=sums["grid_out"],
        solar_wh=sums["solar"],
        battery_charge_wh=sums["charge"],
        battery_discharge_wh=sums["discharge"],
        circuits_wh=circuits,
        top_circuits=list(dict.fromkeys(r.name for r in site.top_circuits)),
    )
    negative = np.flatnonzero(balance.untracked_wh < -UNTRACKED_TOLERANCE_WH)
    if negative.size:
        warnings.append(
            f"Site {site.name}: the circuits add up to more than the consumption in "
            f"{negative.size} period(s) (untracked down to {balance.untracked_wh.min():.1f} Wh); "
            "check the roles, parents and clamp directions of the circuits."
        )
    coverage = np.where(np.isfinite(worst), np.clip(worst, 0.0, 1.0), 0.0)
    return SiteEnergy(
        site,
        edges,
        balance,
        coverage,
        interpolated,
        tuple(netting),
        tuple(warnings),
        tuple(events),
    )

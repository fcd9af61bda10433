"""Power integration: hand-derived energies, gaps, sign changes and edge invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.energy.integrate import integrate_power, positive_part_wh

S = 1000  # ms per second
H = 3_600_000  # ms per hour


def test_irregular_intervals_trapezoid_left_right() -> None:
    ts = np.array([0, 10 * S, 40 * S, 100 * S])
    p = np.array([100.0, 200.0, 200.0, 0.0])
    # trapezoid: 150*10 + 200*30 + 100*60 = 1500 + 6000 + 6000 = 13500 W·s = 3.75 Wh
    assert integrate_power(ts, p, [0, 100 * S]).import_wh == pytest.approx([3.75])
    # left: 100*10 + 200*30 + 200*60 = 19000 W·s = 5.2777… Wh
    left = integrate_power(ts, p, [0, 100 * S], method="left").import_wh
    assert left == pytest.approx([19000 / 3600])
    # right: 200*10 + 200*30 + 0*60 = 8000 W·s
    right = integrate_power(ts, p, [0, 100 * S], method="right").import_wh
    assert right == pytest.approx([8000 / 3600])


def test_interval_split_exactly_at_an_edge() -> None:
    # 0 W at t=0 rising linearly to 3600 W at t=1 h; edge at 30 min where p = 1800 W.
    # first half: (0 + 1800)/2 * 0.5 h = 450 Wh; second: (1800 + 3600)/2 * 0.5 h = 1350 Wh
    r = integrate_power([0, H], [0.0, 3600.0], [0, H // 2, H], max_gap_s=7200)
    assert r.import_wh == pytest.approx([450.0, 1350.0])
    assert r.coverage == pytest.approx([1.0, 1.0])


def test_a_gap_contributes_nothing_and_is_reported() -> None:
    # 1 kW throughout; samples at 0, 60 s, then 1000 s and 1060 s: the 940 s interval is a gap.
    ts = np.array([0, 60, 1000, 1060]) * S
    p = np.full(4, 1000.0)
    r = integrate_power(ts, p, [0, 1060 * S])
    # covered: 60 s + 60 s = 120 s at 1 kW = 120000 W·s = 33.333 Wh
    assert r.import_wh == pytest.approx([120_000 / 3600])
    assert r.covered_s == pytest.approx([120.0])
    assert r.gap_s == pytest.approx([940.0])
    assert r.gap_start_ms.tolist() == [60 * S]
    assert r.gap_length_s.tolist() == [940.0]
    # hold: the whole 1060 s at 1 kW = 294.444 Wh, still only 120 s covered
    held = integrate_power(ts, p, [0, 1060 * S], gap_policy="hold")
    assert held.import_wh == pytest.approx([1060_000 / 3600])
    assert held.covered_s == pytest.approx([120.0])


def test_linear_gap_policy_interpolates() -> None:
    # 0 W -> 1000 W over 1000 s (a gap): linear gives 500 W average * 1000 s = 138.889 Wh
    r = integrate_power([0, 1000 * S], [0.0, 1000.0], [0, 1000 * S], gap_policy="linear")
    assert r.import_wh == pytest.approx([500_000 / 3600])


def test_sign_change_is_split_at_the_zero_crossing() -> None:
    # +3000 W -> -1000 W over 40 s, crossing at 30 s: import 3000*30/2 = 45000 W·s,
    # export 1000*10/2 = 5000 W·s.
    r = integrate_power([0, 40 * S], [3000.0, -1000.0], [0, 40 * S])
    assert r.import_wh == pytest.approx([45000 / 3600])
    assert r.export_wh == pytest.approx([5000 / 3600])
    # edge at 20 s (p = 1000 W): [0,20) imports (3000+1000)/2*20 = 40000 W·s;
    # [20,40) imports 1000*10/2 = 5000 W·s and exports 5000 W·s.
    r = integrate_power([0, 40 * S], [3000.0, -1000.0], [0, 20 * S, 40 * S])
    assert r.import_wh == pytest.approx([40000 / 3600, 5000 / 3600])
    assert r.export_wh == pytest.approx([0.0, 5000 / 3600])


def test_positive_part_scalar_array_and_nan() -> None:
    assert float(positive_part_wh(1000.0, 1000.0, 1000)) == pytest.approx(1e6)
    assert positive_part_wh([2.0, -2.0], [-2.0, -2.0], [4, 4]) == pytest.approx([2.0, 0.0])
    assert np.isnan(positive_part_wh(np.nan, 1.0, 1))


def test_nan_samples_are_bridged() -> None:
    # the NaN at 30 s is left out: 100 W from 0 to 60 s = 6000 W·s
    r = integrate_power([0, 30 * S, 60 * S], [100.0, np.nan, 100.0], [0, 60 * S])
    assert r.import_wh == pytest.approx([6000 / 3600])


def test_scalar_and_empty_input() -> None:
    assert integrate_power(0, 100.0, [0, S]).import_wh.tolist() == [0.0]
    assert integrate_power([], [], [0, S]).import_wh.tolist() == [0.0]


def test_edges_outside_the_samples_are_uncovered() -> None:
    r = integrate_power([H, 2 * H], [1000.0, 1000.0], [0, H, 2 * H, 3 * H], max_gap_s=H)
    assert r.import_wh == pytest.approx([0.0, 1000.0, 0.0])
    assert r.coverage == pytest.approx([0.0, 1.0, 0.0])


def test_unsorted_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        integrate_power([2, 1], [1.0, 1.0], [0, 5])


def test_interval_across_local_midnight() -> None:
    tz = zone("Europe/Warsaw")
    midnight = parse_time_ms("2026-06-02", tz)
    # 2 kW from 23:59 to 00:01: one minute each side, 2000 W * 60 s = 33.333 Wh per day
    ts = [midnight - 60 * S, midnight + 60 * S]
    edges = bucket_edges_ms(
        parse_time_ms("2026-06-01", tz), parse_time_ms("2026-06-03", tz), "day", tz
    )
    r = integrate_power(ts, [2000.0, 2000.0], edges)
    assert r.import_wh == pytest.approx([2000 * 60 / 3600] * 2)


def test_both_daylight_saving_days_in_warsaw() -> None:
    tz = zone("Europe/Warsaw")
    for day, after, hours in (("2026-03-29", "2026-03-30", 23), ("2026-10-25", "2026-10-26", 25)):
        start, end = parse_time_ms(day, tz), parse_time_ms(after, tz)
        ts = np.arange(start, end + 1, 60 * S)
        edges = bucket_edges_ms(start, end, "hour", tz)
        r = integrate_power(ts, np.full(ts.size, 1000.0), edges)
        # 1 kW for every real hour: 1000 Wh per hour bucket, 23000 / 25000 Wh per day
        assert r.import_wh == pytest.approx([1000.0] * hours)
        day_total = integrate_power(ts, np.full(ts.size, 1000.0), [start, end]).import_wh
        assert day_total == pytest.approx([1000.0 * hours])


series = st.lists(
    st.tuples(st.integers(1, 400), st.floats(-5000, 5000, allow_nan=False)),
    min_size=2,
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(series, st.sampled_from(["trapezoid", "left", "right"]), st.sampled_from(["skip", "hold"]))
def test_bucket_sizes_agree_and_extra_edges_change_nothing(
    steps: list[tuple[int, float]], method: str, gap_policy: str
) -> None:
    tz = zone("Europe/Warsaw")
    start = parse_time_ms("2026-10-24T22:00", tz)
    ts = start + np.cumsum([s for s, _ in steps]) * 60 * S  # minutes apart, across the DST day
    p = np.array([w for _, w in steps])
    end = int(ts[-1]) + 1
    totals = []
    for every in ("15min", "hour", "day", "month"):
        r = integrate_power(
            ts, p, bucket_edges_ms(start, end, every, tz), method=method, gap_policy=gap_policy
        )
        totals.append((r.import_wh.sum(), r.export_wh.sum(), r.covered_s.sum()))
    whole = integrate_power(ts, p, [start, end], method=method, gap_policy=gap_policy)
    for imp, exp, cov in totals:
        assert imp == pytest.approx(whole.import_wh[0], rel=1e-9, abs=1e-6)
        assert exp == pytest.approx(whole.export_wh[0], rel=1e-9, abs=1e-6)
        assert cov == pytest.approx(whole.covered_s[0])
    assert (whole.import_wh >= 0).all() and (whole.export_wh >= 0).all()

"""Counters: glitch, reset, spike, unavailable, and apportioning to buckets."""

from __future__ import annotations

import numpy as np
import pytest

from wattlake.energy.counters import clean_counter, counter_buckets

M = 60_000  # ms per minute


def minutes(n: int) -> np.ndarray:
    return np.arange(n) * M


def test_normal_counter_counts_every_step() -> None:
    c = clean_counter(minutes(4), [100.0, 110.0, 125.0, 130.0])
    assert c.total_wh == 30.0  # 130 - 100
    assert c.events == ()


def test_a_glitch_is_ignored() -> None:
    # 110 -> 0 -> 130: the 0 is a glitch; counted 100 -> 110 -> 130 -> 140 = 40 Wh
    c = clean_counter(minutes(5), [100.0, 110.0, 0.0, 130.0, 140.0])
    assert c.total_wh == 40.0
    assert [e.kind for e in c.events] == ["glitch"]
    assert c.ts_ms.tolist() == [0, M, 3 * M, 4 * M]


def test_a_reset_starts_a_new_baseline_and_counts_nothing_across_it() -> None:
    # 100 -> 110 (10 Wh), reset to 2 (not counted: reboot time unknown), 2 -> 12 -> 22 (20 Wh)
    c = clean_counter(minutes(5), [100.0, 110.0, 2.0, 12.0, 22.0])
    assert c.total_wh == 30.0
    (event,) = c.events
    assert (event.kind, event.from_wh, event.to_wh) == ("reset", 110.0, 2.0)


def test_a_single_spike_reading_is_dropped() -> None:
    # 1e6 Wh in one minute would need 60 GW; the next reading fits the old level
    c = clean_counter(minutes(5), [100.0, 110.0, 1e6, 130.0, 140.0])
    assert c.total_wh == 40.0
    assert [e.kind for e in c.events] == ["spike"]


def test_a_jump_to_a_new_level_is_excluded() -> None:
    # 100 -> 110 counts 10; the jump to 1e6 is excluded; 1e6 -> 1e6 + 10 counts 10
    c = clean_counter(minutes(4), [100.0, 110.0, 1e6, 1e6 + 10])
    assert c.total_wh == 20.0
    assert c.counts.tolist() == [True, False, True]


def test_the_spike_limit_is_max_power_over_the_interval() -> None:
    # 1000 Wh in 60 s is 60 kW: allowed (limit 1000 Wh + 1 Wh resolution); 1002 Wh is not
    assert clean_counter([0, M], [0.0, 1000.0]).total_wh == 1000.0
    assert clean_counter([0, M], [0.0, 1002.0]).total_wh == 0.0
    assert clean_counter([0, M], [0.0, 1002.0], max_power_w=120_000).total_wh == 1002.0


def test_unavailable_readings_minus_one_and_nan() -> None:
    c = clean_counter(minutes(5), [100.0, -1.0, np.nan, 130.0, 140.0])
    assert c.total_wh == 40.0
    (event,) = c.events
    assert (event.kind, event.start_ms, event.end_ms) == ("unavailable", M, 2 * M)


def test_counter_apportioned_linearly_without_power() -> None:
    c = clean_counter([0, 4 * M], [0.0, 40.0])
    # 40 Wh over 4 minutes, edge at 1 minute: 10 + 30
    b = counter_buckets(c, [0, M, 4 * M])
    assert b.energy_wh == pytest.approx([10.0, 30.0])
    assert not b.shaped_by_power


def test_counter_apportioned_by_power_shape() -> None:
    c = clean_counter([0, 4 * M], [0.0, 40.0])
    # power 0 W in the first minute then 1000 W: all 40 Wh (counter total) falls after 1 min.
    b = counter_buckets(
        c, [0, M, 4 * M], power_ts_ms=[0, M - 1, M, 4 * M], power_w=[0.0, 0.0, 1000.0, 1000.0]
    )
    # power energy: 1000 W * 0.5 ms ramp before the edge, 1000 W * 180 s after it
    assert b.energy_wh[0] == pytest.approx(40.0 * 500 / 180_000_500)
    assert b.energy_wh.sum() == pytest.approx(40.0)
    assert b.shaped_by_power


def test_reset_step_is_uncovered() -> None:
    c = clean_counter(minutes(3), [100.0, 110.0, 2.0])
    b = counter_buckets(c, [0, 2 * M])
    assert b.energy_wh == pytest.approx([10.0])
    assert b.covered_s == pytest.approx([60.0])

"""Simulated PV never produces more than pvlib's clear sky gives the site at that time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pvlib
from hypothesis import given, settings
from hypothesis import strategies as st

from wattlake.devices.sim import loads

YEAR_2026_S = 1_767_225_600  # 2026-01-01T00:00:00Z


def clearsky_w(house: loads.Household, ts_s: np.ndarray) -> np.ndarray:
    """Return pvlib's clear-sky output of the house's array at each time [W], independently."""
    times = pd.to_datetime(ts_s, unit="s", utc=True)
    longitude = ((house.utc_offset_s / 240.0 + 180.0) % 360.0) - 180.0
    site = pvlib.location.Location(loads.LATITUDE_DEG, longitude, altitude=0)
    ghi = site.get_clearsky(pd.DatetimeIndex(times), model="ineichen")["ghi"].to_numpy()
    return house.pv_kwp * np.maximum(ghi, 0.0)


def test_pv_stays_under_clear_sky_through_a_year() -> None:
    for utc_offset_s in (0.0, 3_600.0, 7_200.0, -5 * 3_600.0):
        house = loads.Household.draw(7, pv_kwp=8.0, utc_offset_s=utc_offset_s)
        # Every 7 minutes 10 s, on one day every four weeks: dawn, noon and dusk at every season.
        days = np.arange(0, 365, 28) * 86_400.0
        ts = (YEAR_2026_S + days[:, None] + np.arange(0, 86_400, 430.0)[None, :]).ravel()
        pv = np.array([loads.sample(house, t).pv_w for t in ts])
        assert (pv <= clearsky_w(house, ts) + 1e-9).all()
        assert pv.max() > 0.5 * house.pv_kwp * 1_000 * 0.85 * 0.5  # the cap leaves real output


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 1_000),
    offset_h=st.integers(-12, 14),
    ts_s=st.floats(YEAR_2026_S, YEAR_2026_S + 3 * 365 * 86_400.0),
    kwp=st.floats(0.5, 30.0),
)
def test_pv_never_exceeds_clear_sky(seed: int, offset_h: int, ts_s: float, kwp: float) -> None:
    house = loads.Household.draw(seed, pv_kwp=kwp, utc_offset_s=offset_h * 3_600.0)
    pv = loads.pv_power_w(house, ts_s)
    assert 0.0 <= pv <= clearsky_w(house, np.array([ts_s]))[0] + 1e-9

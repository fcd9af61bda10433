"""Household load shapes for simulated meters: pure functions of household, time and seed.

A :class:`Household` holds the parameters of one home (drawn once from a seed); the power of
each appliance at a time is a deterministic function of the household and that time, so the
same seed gives the same curve whichever order or rate it is sampled at. Randomness comes from a
counter-based hash (:func:`uniform`), not from a stateful generator.

Appliances: an always-on base load, fridge compressor cycles, morning and evening lighting and
electronics, cooking at lunch and dinner, kettle boils, a washing machine cycle on some days,
and optionally an electric car charging in the evening, a heat pump whose demand follows the
season, photovoltaic production shaped by the sun's elevation and each day's clouds, and a home
battery that charges from PV surplus and discharges in the evening.
Times are epoch seconds [s]; local time is UTC plus ``utc_offset_s``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

DAY_S: Final = 86_400.0
HOUR_S: Final = 3_600.0
LATITUDE_DEG: Final = 50.0  # central Europe: where the seeds' meters hang
_MASK64: Final = (1 << 64) - 1


def _mix(value: int) -> int:
    """Return the splitmix64 finaliser of ``value``: a good 64-bit hash, fast in Python."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def uniform(seed: int, *keys: int) -> float:
    """Return a number in [0, 1) that depends only on ``seed`` and ``keys``."""
    value = _mix(seed & _MASK64)
    for key in keys:
        value = _mix(value ^ (key & _MASK64))
    return (value >> 11) * (1.0 / (1 << 53))


@dataclass(frozen=True, slots=True)
class Household:
    """Parameters of one simulated home. Powers in [W], durations in [s]."""

    seed: int
    base_w: float = 120.0
    fridge_w: float = 110.0
    fridge_period_s: float = 2_700.0
    fridge_duty: float = 0.35
    evening_w: float = 250.0
    cooking_w: float = 2_000.0
    kettle_w: float = 2_000.0
    kettles_per_day: int = 4
    washer_probability: float = 0.4
    ev_w: float = 0.0
    heat_pump_w: float = 0.0
    pv_kwp: float = 0.0
    utc_offset_s: float = 0.0
    battery_w: float = 0.0

    @classmethod
    def draw(
        cls,
        seed: int,
        *,
        ev: bool = False,
        heat_pump: bool = False,
        pv_kwp: float = 0.0,
        utc_offset_s: float = 0.0,
        battery_w: float = 0.0,
    ) -> Household:
        """Return a household with plausible parameters drawn from ``seed``.

        ``pv_kwp`` is the peak power of its PV array [kWp] (0: none); ``battery_w`` the charge
        and discharge power limit of its home battery [W] (0: none).
        """
        rng = random.Random(seed)
        return cls(
            seed=seed,
            base_w=round(rng.uniform(60.0, 200.0), 1),
            fridge_w=round(rng.uniform(80.0, 150.0), 1),
            fridge_period_s=rng.uniform(2_000.0, 3_600.0),
            fridge_duty=rng.uniform(0.25, 0.45),
            evening_w=round(rng.uniform(120.0, 400.0), 1),
            cooking_w=round(rng.uniform(1_500.0, 3_000.0), 1),
            kettle_w=round(rng.choice([1_800.0, 2_000.0, 2_200.0, 3_000.0]), 1),
            kettles_per_day=rng.randint(2, 6),
            washer_probability=rng.uniform(0.2, 0.6),
            ev_w=rng.choice([3_700.0, 7_400.0, 11_000.0]) if ev else 0.0,
            heat_pump_w=round(rng.uniform(1_200.0, 3_000.0), 1) if heat_pump else 0.0,
            pv_kwp=pv_kwp,
            utc_offset_s=utc_offset_s,
            battery_w=battery_w,
        )


@dataclass(frozen=True, slots=True)
class LoadSample:
    """What each appliance draws at one instant [W]; ``pv_w`` is production (≥ 0) and
    ``battery_w`` the home battery (positive charging, negative discharging)."""

    base_w: float
    fridge_w: float
    evening_w: float
    cooking_w: float
    kettle_w: float
    washer_w: float
    ev_w: float
    heat_pump_w: float
    pv_w: float
    battery_w: float = 0.0

    @property
    def consumption_w(self) -> float:
        """Return the sum of every appliance [W] (PV excluded)."""
        return (
            self.base_w
            + self.fridge_w
            + self.evening_w
            + self.cooking_w
            + self.kettle_w
            + self.washer_w
            + self.ev_w
            + self.heat_pump_w
        )

    @property
    def grid_w(self) -> float:
        """Return the power at the grid connection [W]: negative when PV exports."""
        return self.consumption_w - self.pv_w + self.battery_w


@dataclass(frozen=True, slots=True)
class Event:
    """An appliance running from ``start_s`` to ``end_s`` (epoch [s]) at ``power_w`` [W]."""

    appliance: str
    start_s: float
    end_s: float
    power_w: float


@lru_cache(maxsize=4096)
def day_events(house: Household, day: int) -> tuple[Event, ...]:
    """Return the appliance runs that start on local ``day`` (days since the epoch)."""
    rng = random.Random(_mix(house.seed) ^ _mix(day + 1))
    midnight_s = day * DAY_S - house.utc_offset_s
    events: list[Event] = []

    def at(hour_lo: float, hour_hi: float) -> float:
        return midnight_s + rng.uniform(hour_lo, hour_hi) * HOUR_S

    if rng.random() < 0.5:  # lunch
        start = at(11.5, 13.0)
        events.append(
            Event("cooking", start, start + rng.uniform(1_200, 2_700), house.cooking_w * 0.7)
        )
    if rng.random() < 0.9:  # dinner
        start = at(17.0, 19.5)
        events.append(Event("cooking", start, start + rng.uniform(1_800, 4_500), house.cooking_w))
    for _ in range(rng.randint(1, house.kettles_per_day)):
        start = at(6.5, 22.0)
        events.append(Event("kettle", start, start + rng.uniform(150, 240), house.kettle_w))
    if rng.random() < house.washer_probability:
        start = at(8.0, 20.0)
        events.append(Event("washer", start, start + 900, 2_000.0))  # heating the water
        events.append(Event("washer", start + 900, start + 4_500, 250.0))  # washing
        events.append(Event("washer", start + 4_500, start + 5_100, 500.0))  # spinning
    if house.ev_w > 0 and rng.random() < 0.5:
        start = at(17.5, 21.0)
        events.append(Event("ev", start, start + rng.uniform(3_600, 4 * 3_600), house.ev_w))
    return tuple(events)


def events_power_w(house: Household, ts_s: float) -> dict[str, float]:
    """Return the draw of each event-driven appliance running at ``ts_s`` [W]."""
    day = math.floor((ts_s + house.utc_offset_s) / DAY_S)
    totals = dict.fromkeys(EVENT_APPLIANCES, 0.0)
    for d in (day - 1, day):  # an evening run can cross midnight
        for event in day_events(house, d):
            if event.start_s <= ts_s < event.end_s:
                totals[event.appliance] += event.power_w
    return totals


EVENT_APPLIANCES: Final = ("cooking", "kettle", "washer", "ev")


def fridge_power_w(house: Household, ts_s: float) -> float:
    """Return the fridge's draw [W]: the compressor runs for ``fridge_duty`` of each period."""
    phase = ((ts_s + uniform(house.seed, 1) * house.fridge_period_s) / house.fridge_period_s) % 1.0
    return house.fridge_w if phase < house.fridge_duty else 2.0


def evening_power_w(house: Household, ts_s: float) -> float:
    """Return lighting and electronics [W]: a morning bump at 7 h and an evening one at 20 h."""
    hour = ((ts_s + house.utc_offset_s) % DAY_S) / HOUR_S
    morning = math.exp(-(((hour - 7.0) / 0.8) ** 2)) * 0.4
    evening = math.exp(-(((hour - 20.0) / 2.0) ** 2))
    return house.evening_w * (morning + evening)


def heat_pump_power_w(house: Household, ts_s: float) -> float:
    """Return the heat pump's draw [W]: it runs part of each half hour, more in winter nights."""
    if house.heat_pump_w <= 0:
        return 0.0
    day_of_year = (ts_s / DAY_S) % 365.25
    season = 0.5 + 0.5 * math.cos(2 * math.pi * (day_of_year - 15) / 365.25)  # 1 mid-January
    hour = ((ts_s + house.utc_offset_s) % DAY_S) / HOUR_S
    night = 0.15 * math.cos(2 * math.pi * (hour - 4.0) / 24.0)  # colder before dawn
    duty = min(1.0, max(0.0, 0.05 + 0.75 * season + night))
    slot = math.floor(ts_s / 1_800.0)
    phase = (ts_s / 1_800.0) % 1.0
    offset = uniform(house.seed, 2, slot) * (1.0 - duty)
    return house.heat_pump_w if offset <= phase < offset + duty else 0.0


def sun_elevation_sin(house: Household, ts_s: float) -> float:
    """Return the sine of the sun's elevation at local solar time (negative at night)."""
    day_of_year = (ts_s / DAY_S) % 365.25
    declination = math.radians(23.44) * math.sin(2 * math.pi * (day_of_year - 81) / 365.25)
    hour = ((ts_s + house.utc_offset_s) % DAY_S) / HOUR_S
    hour_angle = math.radians(15.0 * (hour - 12.0))
    lat = math.radians(LATITUDE_DEG)
    return math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(
        hour_angle
    )


def pv_power_w(house: Household, ts_s: float) -> float:
    """Return PV production [W] (≥ 0): sun-shaped, 0 at night, dimmed by the day's clouds.

    Each day gets a cloudiness between 0 (clear) and 0.8; passing clouds vary every 5 minutes.
    Never more than the array gives under pvlib's clear sky (:func:`clearsky_pv_w`).
    """
    if house.pv_kwp <= 0:
        return 0.0
    elevation = sun_elevation_sin(house, ts_s)
    if elevation <= 0:
        return 0.0
    day = math.floor((ts_s + house.utc_offset_s) / DAY_S)
    cloudiness = 0.8 * uniform(house.seed, 3, day) ** 2
    passing = uniform(house.seed, 4, math.floor(ts_s / 300.0))
    weather = 1.0 - cloudiness * (0.5 + 0.5 * passing)
    shaped_w = house.pv_kwp * 1_000.0 * 0.85 * elevation * weather
    return min(shaped_w, clearsky_pv_w(house, ts_s))


def site_longitude_deg(house: Household) -> float:
    """Return the longitude whose mean solar time is the household's clock time [°]."""
    return ((house.utc_offset_s / 240.0 + 180.0) % 360.0) - 180.0


def clearsky_pv_w(house: Household, ts_s: float) -> float:
    """Return what the household's array gives under a clear sky at ``ts_s`` [W].

    That is ``pv_kwp`` times pvlib's Ineichen clear-sky global horizontal irradiance over
    1000 W/m2 (an array at standard test conditions, without losses), at latitude
    :data:`LATITUDE_DEG`, the longitude of :func:`site_longitude_deg`, sea level (the least
    irradiance of any altitude). Computed once per day at whole minutes; the smaller of the
    two minutes around ``ts_s`` is returned, never more than pvlib's value at ``ts_s``.
    """
    day = math.floor(ts_s / DAY_S)
    ghi = _clearsky_ghi_day(day, site_longitude_deg(house))
    minute = min(int((ts_s - day * DAY_S) // CLEARSKY_STEP_S), len(ghi) - 2)
    return house.pv_kwp * min(ghi[minute], ghi[minute + 1])


CLEARSKY_STEP_S: Final = 60.0
"""Spacing of the clear-sky irradiance samples the PV cap is read from [s]."""


@lru_cache(maxsize=64)
def _clearsky_ghi_day(day: int, longitude_deg: float) -> tuple[float, ...]:
    """Return pvlib's clear-sky GHI [W/m2] at each minute of UTC day ``day`` and the next
    midnight (1441 values)."""
    import pandas as pd  # pvlib (and pandas) only for households with PV
    import pvlib

    start = pd.Timestamp(day * DAY_S, unit="s", tz="UTC")
    times = pd.date_range(start, periods=int(DAY_S / CLEARSKY_STEP_S) + 1, freq="60s")
    location = pvlib.location.Location(LATITUDE_DEG, longitude_deg, altitude=0)
    ghi = location.get_clearsky(times, model="ineichen")["ghi"].to_numpy()
    return tuple(max(0.0, float(v)) for v in ghi)


EVENING_DISCHARGE_H: Final = (17.0, 23.0)
"""Local hours [from, to) in which the simulated battery covers the load."""


def battery_power_w(house: Household, ts_s: float, consumption_w: float, pv_w: float) -> float:
    """Return the home battery's power [W]: positive charging, negative discharging.

    It charges from PV surplus up to ``battery_w`` and, in the evening
    (:data:`EVENING_DISCHARGE_H`), discharges to cover the load up to ``battery_w``. The state
    of charge is not simulated (the load shapes are pure functions of time), so a day may
    discharge more than it charged; the energy balance of the meters still adds up.
    """
    if house.battery_w <= 0:
        return 0.0
    surplus = pv_w - consumption_w
    if surplus > 0:
        return min(surplus, house.battery_w)
    hour = ((ts_s + house.utc_offset_s) % DAY_S) / HOUR_S
    if EVENING_DISCHARGE_H[0] <= hour < EVENING_DISCHARGE_H[1]:
        return -min(-surplus, house.battery_w)
    return 0.0


def sample(house: Household, ts_s: float) -> LoadSample:
    """Return what every appliance of ``house`` draws at ``ts_s`` [W]."""
    base_noise = 0.9 + 0.2 * uniform(house.seed, 5, math.floor(ts_s / 10.0))
    events = events_power_w(house, ts_s)
    drawn = LoadSample(
        base_w=house.base_w * base_noise,
        fridge_w=fridge_power_w(house, ts_s),
        evening_w=evening_power_w(house, ts_s),
        cooking_w=events["cooking"],
        kettle_w=events["kettle"],
        washer_w=events["washer"],
        ev_w=events["ev"],
        heat_pump_w=heat_pump_power_w(house, ts_s),
        pv_w=pv_power_w(house, ts_s),
    )
    if house.battery_w <= 0:
        return drawn
    battery = battery_power_w(house, ts_s, drawn.consumption_w, drawn.pv_w)
    return dataclasses.replace(drawn, battery_w=battery)

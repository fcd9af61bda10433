"""The benchmark fleet: household meters at 10 s sampling, generated from a fixed seed.

Every benchmark of the lake (import, compaction, storage, rollups) runs on this fleet, so the
figures compare like with like. ``N`` two-channel meters (Shelly Pro EM-like: channel 0 the grid
connection, channel 1 the PV inverter or, without PV, the kitchen circuit) sample every
``step_s`` seconds for ``D`` UTC days from ``start``.

What makes it realistic rather than a sine:

* **Loads** are the simulator's household model (:mod:`wattlake.devices.sim.loads`: base load,
  fridge cycles, lights, cooking, kettles, washing, some cars and heat pumps, PV under daily
  clouds), evaluated here with numpy instead of one Python call per sample. :func:`check_loads`
  proves the vectorised model equals :func:`wattlake.devices.sim.loads.sample`.
* **Noise at meter resolution**: active power gets measurement noise of a few resolution steps
  (0.2 W + 0.1 % of the reading, normal); voltage and grid frequency wander slowly (a smooth
  curve through random knots every 5 min and 1 min; frequency is one grid shared by all meters)
  with a little sample noise; the power factor follows the load.
* **The noisy fleet** (``FleetSpec(noise="noisy")``, ``--fleet noisy``; issue 27) measures
  every quantity with its own noise instead of deriving the rest from active power: the load
  varies within the 10 s between readings (0.4 %) and so does the grid's voltage (0.25 V);
  each meter has a calibration gain of up to +-0.5 % on voltage and current (power carries
  both; Shelly states about +-1 % accuracy) and the metering chip's noise per reading on
  voltage (0.05 V), current (2 mA + 0.2 %), active power (0.2 W + 0.2 %) and reactive power
  (0.5 var + 0.5 %); apparent power is ``hypot(P, Q)`` and the power factor ``P / S`` of what
  was measured (:data:`NOISY_LOAD_FLICKER` and the constants after it). The quiet fleet (the
  default of :class:`FleetSpec`) is the one the figures before issue 27 were measured on.
* **Every field rounded as the meter reports it** (:data:`RESOLUTION`), from the Shelly Gen2
  payloads in the fixtures: power and apparent power 0.1, voltage 0.1 V, current 1 mA, power
  factor 0.01, frequency 0.01 Hz, reactive power 0.01 var, counters 0.01 Wh.
* **Counters equal the integral**: ``energy_wh`` and ``returned_energy_wh`` are the cumulative
  trapezoid integral of the reported power (import and export split exactly at zero crossings,
  with :func:`wattlake.energy.integrate.positive_part_wh`), from a random meter reading,
  rounded to 0.01 Wh. The meter keeps counting while it is offline.
* **Device time**: each meter samples at its own phase within the 10 s period with 0–20 ms of
  timer jitter (Gen2 device time has 10 ms resolution); ``received_at`` lags by 80–400 ms.
* **Offline gaps**: on 4 % of device-days the meter is silent for 10 min to 3 h.

The same seed, fleet size and dates give identical readings on every machine. Days are generated
in order (counters carry over), one Arrow table per UTC day in the canonical reading schema,
sorted by device, channel and time.

Run ``.venv/bin/python bench/fleet.py --days 30 --out /tmp/fleet`` to write Parquet files
(``--format csv`` for CSV) that ``wattlake import`` takes; ``--check`` compares the vectorised
loads with the simulator's.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from wattlake.devices.sim import loads
from wattlake.devices.sim.loads import DAY_S, HOUR_S, Household
from wattlake.energy.integrate import positive_part_wh
from wattlake.schema import READING_SCHEMA

SEED: Final = 20_261_113
START: Final = date(2026, 1, 1)
STEP_S: Final = 10
CHANNELS: Final = 2
SOURCE: Final = "shelly-gen2"
# Resolution each field is reported at [unit of the field]; values are multiples of it.
RESOLUTION: Final[dict[str, float]] = {
    "power_w": 0.1,
    "apparent_power_va": 0.1,
    "reactive_power_var": 0.01,
    "voltage_v": 0.1,
    "current_a": 0.001,
    "pf": 0.01,
    "freq_hz": 0.01,
    "energy_wh": 0.01,
    "returned_energy_wh": 0.01,
}
# The noisy fleet's measurement model. Shelly states the accuracy of its energy meters as of
# the order of +-1 % of the reading (not checked against a datasheet here); that is mostly
# calibration, here a gain per meter of up to +-0.5 % on voltage and on current (power carries
# both), while the reading-to-reading noise of the metering chip is smaller: (floor, relative)
# standard deviations below, in the field's unit. Beside the meter, the load itself varies
# within the 10 s between readings, and so does the grid's voltage at the meter.
NOISY_LOAD_FLICKER: Final = 0.004  # [relative, standard deviation]
NOISY_GRID_FLICKER_V: Final = 0.25  # [V, standard deviation]
NOISY_VOLTAGE_NOISE_V: Final = 0.05  # [V, standard deviation]
NOISY_POWER: Final = (0.2, 0.002)  # [W], [-]
NOISY_REACTIVE: Final = (0.5, 0.005)  # [var], [-]: reactive power is measured less exactly
NOISY_CURRENT: Final = (0.002, 0.002)  # [A], [-]
FLEETS: Final = ("quiet", "noisy")
_MS_PER_DAY: Final = 86_400_000
_MASK64: Final = (1 << 64) - 1
_U64 = np.uint64

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# -- the household model, vectorised (the same functions as wattlake.devices.sim.loads) -----------


def _mix(value: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Return splitmix64's finaliser of each value, wrapping like loads._mix."""
    value = value + _U64(0x9E3779B97F4A7C15)
    value = (value ^ (value >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    value = (value ^ (value >> _U64(27))) * _U64(0x94D049BB133111EB)
    return value ^ (value >> _U64(31))


def uniform(seed: int, *keys: int | IntArray) -> FloatArray:
    """Return :func:`wattlake.devices.sim.loads.uniform` of ``seed`` and ``keys``, over arrays."""
    shape = np.broadcast_shapes(*(np.shape(k) for k in keys)) if keys else ()
    value = np.full(shape or (1,), seed & _MASK64, dtype=np.uint64)
    value = _mix(value)
    for key in keys:
        if isinstance(key, int):
            k = np.full(1, key & _MASK64, dtype=np.uint64)
        else:
            k = np.asarray(key, dtype=np.int64).view(np.uint64)
        value = _mix(value ^ k)
    out = (value >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return out.reshape(shape) if shape else out


@dataclass(frozen=True, slots=True)
class Loads:
    """What each appliance draws at each instant [W]; ``pv_w`` is production (≥ 0)."""

    base_w: FloatArray
    fridge_w: FloatArray
    evening_w: FloatArray
    cooking_w: FloatArray
    kettle_w: FloatArray
    washer_w: FloatArray
    ev_w: FloatArray
    heat_pump_w: FloatArray
    pv_w: FloatArray

    @property
    def consumption_w(self) -> FloatArray:
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


def sample_loads(house: Household, ts_s: FloatArray) -> Loads:
    """Return :func:`wattlake.devices.sim.loads.sample` at every time of ``ts_s`` [s], at once."""
    seed = house.seed
    base = house.base_w * (0.9 + 0.2 * uniform(seed, 5, np.floor(ts_s / 10.0).astype(np.int64)))
    phase = (
        (ts_s + float(uniform(seed, 1)[0]) * house.fridge_period_s) / house.fridge_period_s
    ) % 1.0
    fridge = np.where(phase < house.fridge_duty, house.fridge_w, 2.0)
    hour = ((ts_s + house.utc_offset_s) % DAY_S) / HOUR_S
    evening = house.evening_w * (
        np.exp(-(((hour - 7.0) / 0.8) ** 2)) * 0.4 + np.exp(-(((hour - 20.0) / 2.0) ** 2))
    )
    events = {name: np.zeros_like(ts_s) for name in loads.EVENT_APPLIANCES}
    local_day = np.floor((ts_s + house.utc_offset_s) / DAY_S).astype(np.int64)
    for d in range(int(local_day.min()) - 1, int(local_day.max()) + 1):
        # loads.events_power_w counts an event of day d at local days d and d + 1 only.
        lo, hi = np.searchsorted(local_day, [d, d + 2])
        window = ts_s[lo:hi]
        for event in loads.day_events(house, d):
            a, b = np.searchsorted(window, [event.start_s, event.end_s], side="left")
            events[event.appliance][lo + a : lo + b] += event.power_w
    heat_pump = np.zeros_like(ts_s)
    if house.heat_pump_w > 0:
        day_of_year = (ts_s / DAY_S) % 365.25
        season = 0.5 + 0.5 * np.cos(2 * np.pi * (day_of_year - 15) / 365.25)
        night = 0.15 * np.cos(2 * np.pi * (hour - 4.0) / 24.0)
        duty = np.minimum(1.0, np.maximum(0.0, 0.05 + 0.75 * season + night))
        slot = np.floor(ts_s / 1_800.0).astype(np.int64)
        slot_phase = (ts_s / 1_800.0) % 1.0
        offset = uniform(seed, 2, slot) * (1.0 - duty)
        running = (offset <= slot_phase) & (slot_phase < offset + duty)
        heat_pump = np.where(running, house.heat_pump_w, 0.0)
    pv = np.zeros_like(ts_s)
    if house.pv_kwp > 0:
        day_of_year = (ts_s / DAY_S) % 365.25
        declination = math.radians(23.44) * np.sin(2 * np.pi * (day_of_year - 81) / 365.25)
        hour_angle = np.radians(15.0 * (hour - 12.0))
        lat = math.radians(loads.LATITUDE_DEG)
        elevation = math.sin(lat) * np.sin(declination) + math.cos(lat) * np.cos(
            declination
        ) * np.cos(hour_angle)
        cloudiness = 0.8 * uniform(seed, 3, local_day) ** 2
        passing = uniform(seed, 4, np.floor(ts_s / 300.0).astype(np.int64))
        weather = 1.0 - cloudiness * (0.5 + 0.5 * passing)
        pv = np.where(elevation > 0, house.pv_kwp * 1_000.0 * 0.85 * elevation * weather, 0.0)
    return Loads(
        base,
        fridge,
        evening,
        events["cooking"],
        events["kettle"],
        events["washer"],
        events["ev"],
        heat_pump,
        pv,
    )


def channel_powers_w(house: Household, load: Loads) -> list[FloatArray]:
    """Return the true power of each channel [W], wired like the simulator's 2-channel meters."""
    grid = load.consumption_w - load.pv_w
    if house.pv_kwp > 0:
        return [grid, -load.pv_w]
    return [grid, 4.0 + load.fridge_w + load.kettle_w + load.cooking_w]


# -- the fleet ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """Which fleet to generate: ``devices`` meters for ``days`` UTC days from ``start``.

    ``pv_kwp`` [kWp] goes to a ``pv_share`` of the homes; ``ev_share`` and ``heat_pump_share``
    of them have a car or a heat pump. ``utc_offset_s`` [s] places local time (Central
    European winter time by default).
    """

    devices: int = 10
    days: int = 30
    start: date = START
    step_s: int = STEP_S
    seed: int = SEED
    pv_kwp: float = 6.0
    pv_share: float = 0.5
    ev_share: float = 0.3
    heat_pump_share: float = 0.3
    utc_offset_s: float = 3_600.0
    gap_share: float = 0.04
    # "quiet": the first bench fleet (noise on active power only, the rest derived from it);
    # "noisy": every quantity measured with its own noise (:func:`_noisy_channel`).
    noise: str = "quiet"

    @property
    def start_ms(self) -> int:
        """Return the first instant of the fleet [ms UTC]."""
        return (
            int(datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp())
            * 1000
        )

    @property
    def end_ms(self) -> int:
        """Return the instant after the last day [ms UTC]."""
        return self.start_ms + self.days * _MS_PER_DAY

    @property
    def readings(self) -> int:
        """Return about how many readings the fleet holds (gaps make it a little fewer)."""
        return self.devices * CHANNELS * self.days * (86_400 // self.step_s)


@dataclass(slots=True)
class Meter:
    """One meter: its household, its timing and its running counters [Wh]."""

    index: int
    device_id: str
    seed: int
    house: Household
    phase_ms: int
    voltage_offset_v: float
    import_wh: list[float]
    export_wh: list[float]
    last_ts_ms: int | None = None
    last_power_w: list[float] = field(default_factory=lambda: [0.0] * CHANNELS)
    # Calibration errors of this meter's voltage and current [relative] (noisy fleet only).
    gain: tuple[float, float] = (0.0, 0.0)


def make_meters(spec: FleetSpec) -> list[Meter]:
    """Return the fleet's meters, drawn from ``spec.seed`` like the simulator's devices."""
    meters = []
    for index in range(spec.devices):
        seed = int(loads.uniform(spec.seed, 100, index) * (1 << 62))
        rng = random.Random(seed)
        house = Household.draw(
            seed,
            ev=rng.random() < spec.ev_share,
            heat_pump=rng.random() < spec.heat_pump_share,
            pv_kwp=spec.pv_kwp if rng.random() < spec.pv_share else 0.0,
            utc_offset_s=spec.utc_offset_s,
        )
        meters.append(
            Meter(
                index=index,
                device_id=f"shellyproem50-bench{index:04d}",
                seed=seed,
                house=house,
                phase_ms=rng.randrange(0, spec.step_s * 1000 - 20, 10),
                voltage_offset_v=rng.uniform(-4.0, 4.0),
                gain=(rng.uniform(-0.005, 0.005), rng.uniform(-0.005, 0.005))
                if spec.noise == "noisy"
                else (0.0, 0.0),
                import_wh=[round(rng.uniform(1_000.0, 50_000.0), 2) for _ in range(CHANNELS)],
                export_wh=[
                    round(rng.uniform(100.0, 5_000.0), 2) if house.pv_kwp > 0 else 0.0
                    for _ in range(CHANNELS)
                ],
            )
        )
    return meters


def _round_to(values: FloatArray, column: str) -> FloatArray:
    """Round to the column's resolution; k / scale is the double nearest the decimal."""
    scale = round(1.0 / RESOLUTION[column])
    return np.round(values * scale) / scale + 0.0  # + 0.0 turns -0.0 into 0.0


def _smooth(seed: int, key: int, ts_s: FloatArray, knot_s: float) -> FloatArray:
    """Return a smooth curve in [0, 1) through random knots every ``knot_s`` seconds."""
    k = np.floor(ts_s / knot_s).astype(np.int64)
    frac = ts_s / knot_s - k
    return uniform(seed, key, k) * (1.0 - frac) + uniform(seed, key, k + 1) * frac


def _true_pf(
    meter: Meter, ch: int, power: FloatArray, resistive_share: FloatArray, ts_ms: IntArray
) -> FloatArray:
    """Return the load's power factor [-], from its resistive share: 0.80 to 0.99."""
    noise = uniform(meter.seed, 7 + ch, ts_ms)
    resistive = np.minimum(1.0, np.abs(power) / 2_000.0)
    if ch == 0:
        resistive = np.maximum(resistive, resistive_share)
    elif meter.house.pv_kwp > 0:
        resistive = np.ones(power.size)  # an inverter runs at unity power factor
    pf: FloatArray = 0.80 + 0.19 * resistive + 0.02 * noise * (1 - resistive)
    return pf


def _noisy_channel(
    rng: np.random.Generator,
    power_w: FloatArray,
    pf: FloatArray,
    voltage_true_v: FloatArray,
    voltage_v: FloatArray,
    gain: tuple[float, float],
) -> dict[str, FloatArray]:
    """Return what a channel reports of a load of true power ``power_w`` [W] at power factor
    ``pf`` [-] (inductive), each quantity measured with its own noise, rounded as reported.

    The load itself varies within the 10 s between readings (LOAD_FLICKER); the meter
    measures voltage (``voltage_v``, already measured and rounded), current, active and
    reactive power, each with the meter's calibration error (``gain``: voltage, current;
    power carries both) and its own noise (NOISY_*); apparent power is sqrt(P^2 + Q^2) of the
    measured powers and the power factor P / S, as the meter computes them.
    """
    n = power_w.size
    load = power_w * (1.0 + rng.normal(0.0, NOISY_LOAD_FLICKER, n))
    reactive_true = np.abs(load) * np.tan(np.arccos(np.clip(pf, 0.0, 1.0)))
    current_true = np.hypot(load, reactive_true) / voltage_true_v
    scale = (1.0 + gain[0]) * (1.0 + gain[1])

    def measure(true: FloatArray, floor: float, relative: float) -> FloatArray:
        noise: FloatArray = rng.normal(0.0, 1.0, n) * (floor + relative * np.abs(true))
        return true + noise

    power = _round_to(measure(load * scale, *NOISY_POWER), "power_w")
    reactive = _round_to(-measure(reactive_true * scale, *NOISY_REACTIVE), "reactive_power_var")
    current = _round_to(
        np.abs(measure(current_true * (1.0 + gain[1]), *NOISY_CURRENT)), "current_a"
    )
    apparent = _round_to(np.hypot(power, reactive), "apparent_power_va")
    pf_abs = np.divide(np.abs(power), apparent, out=np.ones(n), where=apparent > 0)
    pf_abs = _round_to(np.minimum(pf_abs, 1.0), "pf")
    return {
        "power_w": power,
        "apparent_power_va": apparent,
        "reactive_power_var": reactive,
        "voltage_v": voltage_v,
        "current_a": current,
        "pf": np.where(power < 0, -pf_abs, pf_abs),
    }


def meter_day(spec: FleetSpec, meter: Meter, day: int) -> dict[str, np.ndarray]:
    """Return the readings of one meter on UTC day ``day`` of the fleet, as columns.

    Advances the meter's counters. Rows are ordered by channel, then time.
    """
    rng = np.random.default_rng([spec.seed, meter.index, day])
    n = 86_400 // spec.step_s
    day_ms = spec.start_ms + day * _MS_PER_DAY
    jitter = rng.integers(0, 3, n) * 10
    ts_ms = day_ms + meter.phase_ms + np.arange(n, dtype=np.int64) * spec.step_s * 1000 + jitter
    ts_s = ts_ms / 1000.0
    load = sample_loads(meter.house, ts_s)
    hour = ((ts_s + spec.utc_offset_s) % DAY_S) / HOUR_S

    swing = 2.0 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    wander = 3.0 * (_smooth(meter.seed, 8, ts_s, 300.0) - 0.5)
    true_power = channel_powers_w(meter.house, load)
    voltage = (
        230.0
        + meter.voltage_offset_v
        + swing
        + wander
        - 0.0004 * true_power[0]
        + rng.normal(0.0, 0.05, n)
    )
    if spec.noise == "noisy":
        # The grid's own short-term variation at the meter, then the meter's gain and noise.
        voltage = voltage + rng.normal(0.0, NOISY_GRID_FLICKER_V, n)
        voltage_true = voltage
        voltage = voltage * (1.0 + meter.gain[0]) + rng.normal(0.0, NOISY_VOLTAGE_NOISE_V, n)
    voltage = _round_to(voltage, "voltage_v")
    grid_freq = 50.0 + 0.08 * (_smooth(spec.seed, 9, ts_s, 60.0) - 0.5)  # one grid for all
    freq = _round_to(grid_freq + rng.normal(0.0, 0.003, n), "freq_hz")
    resistive_share = np.divide(
        load.kettle_w + load.cooking_w + load.washer_w,
        load.consumption_w,
        out=np.zeros(n),
        where=load.consumption_w > 0,
    )

    columns: dict[str, list[np.ndarray]] = {name: [] for name in READING_SCHEMA.names}
    gaps = np.zeros(n, dtype=np.bool_)
    if rng.random() < spec.gap_share:
        length = int(rng.uniform(600, 3 * 3_600) // spec.step_s)
        first = int(rng.integers(0, n))
        gaps[first : first + length] = True
    keep = ~gaps
    kept = int(keep.sum())
    for ch in range(CHANNELS):
        exact = true_power[ch]
        if spec.noise == "noisy":
            measured = _noisy_channel(
                rng,
                exact,
                _true_pf(meter, ch, exact, resistive_share, ts_ms),
                voltage_true,
                voltage,
                meter.gain,
            )
            power = measured["power_w"]
        else:
            power = _round_to(
                exact + rng.normal(0.0, 1.0, n) * (0.2 + 0.001 * np.abs(exact)), "power_w"
            )
        # Counters: trapezoid integral of the reported power since the last reading, import and
        # export apart, carried over from the previous day.
        prev_ts = np.concatenate(
            ([meter.last_ts_ms if meter.last_ts_ms is not None else ts_ms[0]], ts_ms[:-1])
        )
        prev_p = np.concatenate(([meter.last_power_w[ch]], power[:-1]))
        dt_ms = (ts_ms - prev_ts).astype(np.float64)
        imported = np.cumsum(positive_part_wh(prev_p, power, dt_ms) / 3_600_000.0)
        exported = np.cumsum(positive_part_wh(-prev_p, -power, dt_ms) / 3_600_000.0)
        energy = meter.import_wh[ch] + imported
        returned = meter.export_wh[ch] + exported
        meter.import_wh[ch] = float(energy[-1])
        meter.export_wh[ch] = float(returned[-1])
        meter.last_power_w[ch] = float(power[-1])

        if spec.noise == "noisy":
            values = measured
        else:
            pf_abs = np.minimum(
                _round_to(_true_pf(meter, ch, power, resistive_share, ts_ms), "pf"), 1.0
            )
            apparent = _round_to(np.abs(power) / pf_abs, "apparent_power_va")
            values = {
                "power_w": power,
                "apparent_power_va": apparent,
                "reactive_power_var": _round_to(
                    -np.sqrt(np.maximum(0.0, apparent**2 - power**2)), "reactive_power_var"
                ),
                "voltage_v": voltage,
                "current_a": _round_to(apparent / voltage, "current_a"),
                "pf": np.where(power < 0, -pf_abs, pf_abs),
            }
        values = values | {
            "freq_hz": freq,
            "energy_wh": _round_to(energy, "energy_wh"),
            "returned_energy_wh": _round_to(returned, "returned_energy_wh"),
        }
        columns["ts"].append(ts_ms[keep])
        columns["received_at"].append(ts_ms[keep] + rng.integers(80, 400, n)[keep])
        columns["channel"].append(np.full(kept, ch, dtype=np.int16))
        for name, array in values.items():
            columns[name].append(array[keep])
    meter.last_ts_ms = int(ts_ms[-1])
    out: dict[str, np.ndarray] = {k: np.concatenate(v) for k, v in columns.items() if v}
    return out


def day_table(spec: FleetSpec, meters: list[Meter], day: int) -> pa.Table:
    """Return every meter's readings on UTC day ``day`` of the fleet (canonical schema)."""
    parts = [meter_day(spec, m, day) for m in meters]
    rows = [p["ts"].size for p in parts]
    arrays = []
    for f in READING_SCHEMA:
        if f.name in ("ts", "received_at"):
            ms = pa.array(np.concatenate([p[f.name] for p in parts]), pa.timestamp("ms", tz="UTC"))
            arrays.append(ms.cast(f.type))
        elif f.name == "device_id":
            ids = np.repeat(np.array([m.device_id for m in meters], dtype=object), rows)
            arrays.append(pa.array(ids, f.type))
        elif f.name == "source":
            arrays.append(pa.array(np.full(sum(rows), SOURCE, dtype=object), f.type))
        else:
            arrays.append(pa.array(np.concatenate([p[f.name] for p in parts]), f.type))
    return pa.Table.from_arrays(arrays, schema=READING_SCHEMA)


def day_tables(spec: FleetSpec) -> Iterator[pa.Table]:
    """Yield the fleet one UTC day at a time, in order (counters carry over between days)."""
    meters = make_meters(spec)
    for day in range(spec.days):
        yield day_table(spec, meters, day)


def fleet_table(spec: FleetSpec) -> pa.Table:
    """Return the whole fleet as one table (mind the memory: ~110 bytes per reading)."""
    return pa.concat_tables(day_tables(spec))


def write_files(
    spec: FleetSpec, out_dir: Path, *, file_format: str = "parquet", days_per_file: int = 7
) -> list[Path]:
    """Write the fleet as files ``wattlake import`` takes; return their paths.

    Parquet files hold the canonical columns; CSV files hold ``ts`` (ISO 8601, UTC),
    ``device_id``, ``channel`` and the measured columns (the lake sets the rest on import).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    batch: list[pa.Table] = []

    def flush(first_day: int) -> None:
        table = pa.concat_tables(batch)
        stem = f"fleet-{spec.devices}dev-{date.fromordinal(spec.start.toordinal() + first_day)}"
        if file_format == "parquet":
            path = out_dir / f"{stem}.parquet"
            pq.write_table(table, path, compression="zstd")
        else:
            path = out_dir / f"{stem}.csv"
            ts_ms = table["ts"].cast(pa.timestamp("ms", tz="UTC"))  # %S then carries the ms
            text_ts = pc.strftime(ts_ms, format="%Y-%m-%dT%H:%M:%S")
            table = table.drop_columns(["received_at", "source"]).set_column(
                0, "ts", pc.binary_join_element_wise(text_ts, "Z", "")
            )
            pa_csv.write_csv(table, path)
        paths.append(path)

    first = 0
    for day, table in enumerate(day_tables(spec)):
        batch.append(table)
        if len(batch) == days_per_file:
            flush(first)
            batch, first = [], day + 1
    if batch:
        flush(first)
    return paths


def check_loads(spec: FleetSpec, samples: int = 300) -> float:
    """Return the largest relative difference between this model and the simulator's [-]."""
    rng = np.random.default_rng(spec.seed)
    worst = 0.0
    for meter in make_meters(spec):
        ts_s = np.sort(rng.uniform(spec.start_ms / 1000, spec.end_ms / 1000, samples))
        vector = sample_loads(meter.house, ts_s)
        for i, t in enumerate(ts_s):
            scalar = loads.sample(meter.house, float(t))
            for name in Loads.__slots__:
                a, b = getattr(scalar, name), float(getattr(vector, name)[i])
                worst = max(worst, abs(a - b) / max(1.0, abs(a)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--start", type=date.fromisoformat, default=START)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--days-per-file", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="compare loads with the simulator")
    parser.add_argument("--fleet", choices=FLEETS, default="noisy", help="measurement noise")
    args = parser.parse_args()
    spec = FleetSpec(
        devices=args.devices, days=args.days, start=args.start, seed=args.seed, noise=args.fleet
    )
    if args.check:
        worst = check_loads(spec)
        print(f"largest relative difference to loads.sample: {worst:.3g}")
        sys.exit(0 if worst < 1e-9 else 1)
    if args.out is None:
        parser.error("--out DIR is needed to write files")
    began = time.perf_counter()
    paths = write_files(spec, args.out, file_format=args.format, days_per_file=args.days_per_file)
    seconds = time.perf_counter() - began
    rows = sum(
        pq.ParquetFile(p).metadata.num_rows
        if p.suffix == ".parquet"
        else sum(1 for _ in p.open()) - 1  # CSV: lines after the header
        for p in paths
    )
    print(f"wrote {len(paths)} file(s) to {args.out} in {seconds:.1f} s ({rows:,} readings)")


if __name__ == "__main__":
    main()

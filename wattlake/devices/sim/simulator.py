"""Simulated meter fleets: real device payloads, household load shapes and injected faults.

Two halves. :class:`Fleet` generates what a fleet publishes, round by round, as
:class:`SimMessage` values; it touches no network, and the same :class:`FleetConfig` (seed
included) and the same simulated times give byte-identical payloads. :class:`Simulator` publishes
a fleet to an MQTT broker in wall-clock time: first, optionally, days of history as fast as the
broker takes them, then live rounds at a fixed rate.

In every round each device samples its household (:mod:`wattlake.devices.sim.loads`) once, adds the
energy since its last sample to its counters, and publishes in its format:

- ``shelly-gen1`` (EM, 2 channels) and ``shelly-gen1-3em`` (3 phases): one value per topic
  ``shellies/<id>/emeter/<ch>/<quantity>``; ``energy``/``returned_energy`` in watt-minutes since
  boot, ``total``/``total_returned`` in Wh kept across reboots; ``shellies/<id>/online`` and
  ``shellies/<id>/announce`` when (re)connecting. No device time: the receiver stamps them.
- ``shelly-gen2`` (Pro EM, 2 channels) and ``shelly-gen2-3em`` (Pro 3EM): ``<id>/events/rpc``
  ``NotifyStatus`` with the changed keys of ``em1:N`` (``em:0``), counters ``em1data:N``
  (``emdata:0``) when a device-time minute begins, and ``NotifyFullStatus`` on connect and every
  ``full_status_interval_s``; device time in ``params.ts``; ``<id>/online`` on gaps.
- ``generic``, ``csv`` and any format of the table (:mod:`wattlake.devices.formats`) with a
  ``render``: canonical readings (``batch`` per message) rendered by the format's descriptor;
  ``generic`` is ``wattlake/<id>/readings``, a JSON object with canonical column names per
  reading, or an array of readings; ``csv`` is ``wattlake/<id>/csv``, a header and a line per
  reading. These formats keep no device state (no reboots, no status topics).

Channels: on 2-channel meters channel 0 is the grid connection (consumption minus PV) and
channel 1 the PV inverter (``-pv``: negative while producing) or, without PV, the kitchen
circuit (fridge, kettle, cooking). A home with a battery has a third channel, 2, on the battery
(positive charging, negative discharging), as a Pro 3EM in its monophase profile or a Shelly 3EM
with one clamp per cable would measure it; its grid channel includes the battery.
``FleetConfig.homes`` gives devices a kind each (``circuit``, ``pv``, ``pv+battery``), and
:func:`site_tables` writes the ``[sites.<name>]`` tables that describe those meters.
On 3-phase meters phase a carries base load, fridge, lights
and kettle, phase b cooking and washing, phase c the car and heat pump; PV is spread evenly.

Counters are the trapezoid integral of the published (rounded) power, import and export split
exactly where power crosses zero (:func:`split_energy_wh`).
"""

from __future__ import annotations

import enum
import heapq
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Protocol

import msgspec
import paho.mqtt.client as mqtt

from wattlake.devices.descriptor import DeviceFormat
from wattlake.devices.formats import FORMATS
from wattlake.devices.sim import loads
from wattlake.devices.sim.loads import Household, LoadSample
from wattlake.devices.sim.rpc import FleetRpc, MeterMemory, answer_mqtt
from wattlake.errors import BrokerError, UsageError
from wattlake.schema import Reading

log = logging.getLogger(__name__)


HOME_KINDS: Final[tuple[str, ...]] = ("circuit", "pv", "pv+battery")
"""Kinds of home a device can measure: grid + kitchen circuit, grid + PV, grid + PV + battery."""
DEMO_HOMES: Final[tuple[str, ...]] = HOME_KINDS
HOME_PV_KWP: Final = 5.0
"""PV array of a ``pv`` or ``pv+battery`` home when the fleet gives none [kWp]."""
HOME_BATTERY_W: Final = 3_000.0
"""Charge and discharge power limit of a ``pv+battery`` home's battery [W]."""


class SimFormat(enum.StrEnum):
    """Payload formats the simulator speaks by name (Shelly models and generic); any format of
    the table with a ``render`` (:func:`rendered_format`) too."""

    shelly_gen1 = "shelly-gen1"
    shelly_gen1_3em = "shelly-gen1-3em"
    shelly_gen2 = "shelly-gen2"
    shelly_gen2_3em = "shelly-gen2-3em"
    generic = "generic"


RENDERED_FORMATS: Final = tuple(name for name, f in FORMATS.items() if f.render is not None)
"""Formats the simulator renders through their descriptor (canonical readings, device time)."""
DEVICE_TIME_FORMATS: Final = frozenset(
    {SimFormat.shelly_gen2, SimFormat.shelly_gen2_3em, *RENDERED_FORMATS}
)
"""Formats whose payloads carry the device's own time (and so can be backfilled)."""
FORMAT_NAMES: Final = tuple(dict.fromkeys([*SimFormat, *RENDERED_FORMATS]))
"""Every format the simulator speaks."""

ID_PREFIX: Final[dict[str, str]] = {
    SimFormat.shelly_gen1: "shellyem",
    SimFormat.shelly_gen1_3em: "shellyem3",
    SimFormat.shelly_gen2: "shellyproem50",
    SimFormat.shelly_gen2_3em: "shellypro3em",
}
# A descriptor's render: device id and canonical readings -> topic and payload.
Render = Callable[[str, list[Reading]], tuple[str, bytes]]
# The id prefix of devices of a rendered format (generic, csv).
RENDERED_ID_PREFIX: Final = "meter"
GEN1_MODEL: Final[dict[str, str]] = {
    SimFormat.shelly_gen1: "SHEM",
    SimFormat.shelly_gen1_3em: "SHEM-3",
}


def rendered_format(fmt: str) -> DeviceFormat | None:
    """Return the table's format that renders ``fmt``'s payloads, None for a Shelly model."""
    found = FORMATS.get(fmt)
    return found if found is not None and found.render is not None else None


# Quantities a Gen1 meter publishes per channel, in publishing order.
GEN1_EM_QUANTITIES: Final = ("power", "reactive_power", "voltage", "pf")
GEN1_3EM_QUANTITIES: Final = ("power", "current", "voltage", "pf")
GEN1_COUNTERS: Final = ("energy", "returned_energy", "total", "total_returned")
GEN2_EM1_KEYS: Final = ("current", "voltage", "act_power", "aprt_power", "pf", "freq")
GEN2_EM_TOTALS: Final = ("total_current", "total_act_power", "total_aprt_power")
PHASES: Final = ("a", "b", "c")
MALFORMED_KINDS: Final = ("truncated", "nan", "wrong-type")
FIRMWARE_GEN1: Final = "20230913-114244/v1.14.0-gcb84623"


@dataclass(frozen=True, slots=True)
class Faults:
    """How often each kind of fault is injected.

    ``reboot_rate`` and ``offline_rate`` are probabilities per device and round;
    ``duplicate_rate``, ``late_rate`` and ``malformed_rate`` per data message (at most one of
    the three hits a message); ``clock_skew_rate`` is the share of devices whose clock is off by
    between half and all of ``clock_skew_s`` [s], either way. An offline gap lasts
    ``offline_s`` [s] of simulated time; a late message is published ``late_s`` [s] later.

    Raises:
        UsageError: a rate is outside [0, 1], the message rates sum above 1, or a duration is
            negative.
    """

    reboot_rate: float = 0.0
    offline_rate: float = 0.0
    offline_s: float = 60.0
    duplicate_rate: float = 0.0
    late_rate: float = 0.0
    late_s: float = 30.0
    malformed_rate: float = 0.0
    clock_skew_rate: float = 0.0
    clock_skew_s: float = 120.0

    def __post_init__(self) -> None:
        for name in (
            "reboot_rate",
            "offline_rate",
            "duplicate_rate",
            "late_rate",
            "malformed_rate",
            "clock_skew_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                what = name.replace("_", " ")
                raise UsageError(f"The {what} must be between 0 and 1, not {value:g}.")
        if self.duplicate_rate + self.late_rate + self.malformed_rate > 1.0:
            raise UsageError(
                "The duplicate, late and malformed rates together must not exceed 1: they are "
                "shares of the same messages."
            )
        for name in ("offline_s", "late_s", "clock_skew_s"):
            value = getattr(self, name)
            if not value >= 0.0:
                what = name.removesuffix("_s").replace("_", " ")
                raise UsageError(f"The {what} time must be zero or more seconds, not {value:g}.")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What to simulate: how many devices of which format, their homes, and the faults.

    ``pv_kwp`` [kWp] goes to a ``pv_share`` of the devices; ``ev_share`` and
    ``heat_pump_share`` of the devices have an electric car or a heat pump. ``batch`` readings
    go into each message of a rendered format (``generic``, ``csv``). ``utc_offset_s`` [s]
    places local time for load shapes.
    Devices are numbered from ``first_device`` (several simulators, distinct fleets).

    Raises:
        UsageError: a count or share is out of range, or ``batch`` > 1 for a Shelly format.
    """

    fmt: str = SimFormat.shelly_gen2
    devices: int = 1
    seed: int = 0
    faults: Faults = field(default_factory=Faults)
    batch: int = 1
    pv_kwp: float = 0.0
    pv_share: float = 1.0
    ev_share: float = 0.0
    heat_pump_share: float = 0.0
    full_status_interval_s: float = 600.0
    utc_offset_s: float = 0.0
    first_device: int = 0
    homes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.fmt not in FORMAT_NAMES:
            choices = ", ".join(FORMAT_NAMES)
            raise UsageError(f"There is no format {self.fmt!r}; choose one of: {choices}.")
        if self.fmt in SimFormat.__members__.values():
            object.__setattr__(self, "fmt", SimFormat(self.fmt))
        if self.devices < 1:
            raise UsageError(f"A fleet needs at least 1 device, not {self.devices}.")
        if not 0 <= self.first_device <= 9_999_999:
            raise UsageError(
                f"The first device number must be 0 to 9999999, not {self.first_device}."
            )
        if self.batch < 1:
            raise UsageError(f"A message holds at least 1 reading, not {self.batch}.")
        if self.batch > 1 and rendered_format(self.fmt) is None:
            raise UsageError(
                f"Only the {', '.join(RENDERED_FORMATS)} formats carry several readings a "
                f"message; {self.fmt} sends one sample per message, not {self.batch}."
            )
        if not self.pv_kwp >= 0:
            raise UsageError(f"The PV peak power must be zero or more kWp, not {self.pv_kwp:g}.")
        for name in ("pv_share", "ev_share", "heat_pump_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                what = name.replace("_", " ")
                raise UsageError(f"The {what} must be between 0 and 1, not {value:g}.")
        if not self.full_status_interval_s > 0:
            raise UsageError("The full-status interval must be a positive number of seconds.")
        unknown = [h for h in self.homes if h not in HOME_KINDS]
        if unknown:
            raise UsageError(
                f"Unknown home kind {unknown[0]!r}; use {', '.join(HOME_KINDS)} for each home."
            )
        if self.homes and self.channels != 2:
            raise UsageError(
                "Home kinds need a 2-channel format "
                f"(shelly-gen1, shelly-gen2, {', '.join(RENDERED_FORMATS)})."
            )

    def home_of(self, index: int) -> str:
        """Return the kind of home device ``index`` measures ('' without ``homes``)."""
        return self.homes[index % len(self.homes)] if self.homes else ""

    @property
    def channels(self) -> int:
        """Return the channels (or phases) of each device."""
        return 3 if self.fmt in (SimFormat.shelly_gen1_3em, SimFormat.shelly_gen2_3em) else 2


@dataclass(frozen=True, slots=True)
class SimMessage:
    """One MQTT message a simulated device publishes.

    ``kind`` says what it is: ``data``, ``status`` (online, announce), or the fault it carries
    (``duplicate``, ``late``, ``malformed``).
    """

    topic: str
    payload: bytes
    kind: str = "data"


@dataclass(slots=True)
class SimStats:
    """What a fleet published and every fault it injected, counted as injected."""

    rounds: int = 0
    messages: int = 0
    payload_bytes: int = 0
    data_messages: int = 0
    status_messages: int = 0
    reboots: int = 0
    offline_gaps: int = 0
    duplicates: int = 0
    late: int = 0
    malformed: int = 0
    clock_skew: int = 0
    skewed_devices: int = 0
    malformed_by_kind: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the counts as a JSON-ready dict."""
        return asdict(self)

    def summary(self) -> str:
        """Return one line naming every count."""
        faults = ", ".join(
            f"{getattr(self, name)} {label}"
            for name, label in (
                ("reboots", "reboot(s)"),
                ("offline_gaps", "offline gap(s)"),
                ("duplicates", "duplicate(s)"),
                ("late", "late"),
                ("malformed", "malformed"),
                ("clock_skew", "clock-skewed"),
            )
        )
        return (
            f"published {self.messages} messages ({self.data_messages} data, "
            f"{self.status_messages} status) in {self.rounds} rounds; injected: {faults}"
        )


def split_energy_wh(p0_w: float, p1_w: float, dt_s: float) -> tuple[float, float]:
    """Return (import, export) energy [Wh] of power going linearly from ``p0_w`` to ``p1_w`` [W].

    Over ``dt_s`` [s]; where the power crosses zero the trapezoid is split there, so import
    integrates only positive power and export only negative power (export returned ≥ 0).
    """
    hours = dt_s / 3600.0
    if p0_w >= 0 and p1_w >= 0:
        return (p0_w + p1_w) / 2 * hours, 0.0
    if p0_w <= 0 and p1_w <= 0:
        return 0.0, -(p0_w + p1_w) / 2 * hours
    high, low = max(p0_w, p1_w), min(p0_w, p1_w)
    positive_share = high / (high - low)
    return high * positive_share / 2 * hours, -low * (1 - positive_share) / 2 * hours


@dataclass(slots=True)  # not frozen: a frozen __init__ costs a third of a sample's time
class ChannelSample:
    """Electrical values of one channel at one instant, rounded as a meter publishes them."""

    power_w: float
    apparent_power_va: float
    reactive_power_var: float
    voltage_v: float
    current_a: float
    pf: float
    freq_hz: float
    energy_wh: float
    returned_energy_wh: float


def channel_powers(fmt: str, house: Household, load: LoadSample) -> list[float]:
    """Return the active power of each channel [W] (see the module docstring for the wiring)."""
    if fmt in (SimFormat.shelly_gen1_3em, SimFormat.shelly_gen2_3em):
        pv_each = load.pv_w / 3
        return [
            load.base_w + load.fridge_w + load.evening_w + load.kettle_w - pv_each,
            8.0 + load.cooking_w + load.washer_w - pv_each,
            12.0 + load.ev_w + load.heat_pump_w - pv_each,
        ]
    second = (
        -load.pv_w if house.pv_kwp > 0 else 4.0 + load.fridge_w + load.kettle_w + load.cooking_w
    )
    if house.battery_w > 0:
        return [load.grid_w, second, load.battery_w]
    return [load.grid_w, second]


class SimDevice:
    """One simulated meter: its household, counters, fault state and payload format."""

    def __init__(self, config: FleetConfig, index: int) -> None:
        self.config = config
        self.fmt = config.fmt
        rendered = rendered_format(config.fmt)
        self.render: Render | None = rendered.render if rendered is not None else None
        self.index = index
        self.device_id = f"{ID_PREFIX.get(config.fmt, RENDERED_ID_PREFIX)}-sim{index:04d}"
        device_seed = loads.uniform(config.seed, 100, index)
        self.seed = int(device_seed * (1 << 62))
        self.rng = random.Random(self.seed)
        rng = self.rng
        pv_kwp = config.pv_kwp if rng.random() < config.pv_share else 0.0
        home = config.home_of(index)
        if home:
            pv_kwp = (config.pv_kwp or HOME_PV_KWP) if home != "circuit" else 0.0
        self.house = Household.draw(
            self.seed,
            ev=rng.random() < config.ev_share,
            heat_pump=rng.random() < config.heat_pump_share,
            pv_kwp=pv_kwp,
            utc_offset_s=config.utc_offset_s,
            battery_w=HOME_BATTERY_W if home == "pv+battery" else 0.0,
        )
        self.channels = config.channels + (1 if self.house.battery_w > 0 else 0)
        self.skew_s = 0.0
        if rng.random() < config.faults.clock_skew_rate:
            magnitude = rng.uniform(0.5, 1.0) * config.faults.clock_skew_s
            self.skew_s = magnitude if rng.random() < 0.5 else -magnitude
        channels = self.channels
        self.memory = MeterMemory(channels)  # the per-minute records (EMData/EM1Data)
        self.import_wh = [round(rng.uniform(1_000.0, 50_000.0), 2) for _ in range(channels)]
        self.export_wh = [
            round(rng.uniform(100.0, 5_000.0), 2) if self.house.pv_kwp > 0 else 0.0
            for _ in range(channels)
        ]
        self.last_ts_s: float | None = None
        self.last_power_w: list[float] = [0.0] * channels
        self.connected = False
        self.offline_until_s: float | None = None
        self.boot_ts_s: float | None = None
        self.boot_import_wh = list(self.import_wh)
        self.boot_export_wh = list(self.export_wh)
        self.just_rebooted = False
        self.full_status_due_s: float | None = None  # None: the next notification is full
        self.last_minute = -1
        self.sent: dict[str, dict[str, Any]] = {}
        self.pending: deque[dict[str, Any]] = deque()  # rendered readings not yet sent
        self.next_sample_s: float | None = None

    # -- measuring ------------------------------------------------------------------------

    def measure(self, ts_s: float) -> list[ChannelSample]:
        """Sample the household at ``ts_s`` [s] and add the energy since the last sample."""
        load = loads.sample(self.house, ts_s)
        powers = [round(p, 1) for p in channel_powers(self.fmt, self.house, load)]
        if self.last_ts_s is not None and ts_s > self.last_ts_s:
            dt_s = ts_s - self.last_ts_s
            for ch, power in enumerate(powers):
                imported, exported = split_energy_wh(self.last_power_w[ch], power, dt_s)
                self.import_wh[ch] += imported
                self.export_wh[ch] += exported
                self.memory.add_energy(self.device_time_s(self.last_ts_s), ch, imported, exported)
        self.last_ts_s = ts_s
        self.last_power_w = powers
        hour = ((ts_s + self.house.utc_offset_s) % loads.DAY_S) / loads.HOUR_S
        grid_swing = 2.0 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        noise = loads.uniform(self.seed, 7, math.floor(ts_s * 10))
        samples = []
        for ch, power in enumerate(powers):
            voltage = 230.0 + grid_swing + 3.0 * (noise - 0.5) - 0.0004 * power + 0.3 * ch
            resistive = min(1.0, abs(power) / 2_000.0)
            pf_abs = round(0.80 + 0.19 * resistive + 0.02 * noise * (1 - resistive), 2)
            pf_abs = min(pf_abs, 1.0)
            apparent = abs(power) / pf_abs
            self.memory.add_sample(self.device_time_s(ts_s), ch, voltage, apparent / voltage)
            samples.append(
                ChannelSample(
                    power_w=power,
                    apparent_power_va=round(apparent, 1),
                    reactive_power_var=round(-math.sqrt(max(0.0, apparent**2 - power**2)), 2),
                    voltage_v=round(voltage, 2),
                    current_a=round(apparent / voltage, 3),
                    pf=-pf_abs if power < 0 else pf_abs,
                    freq_hz=round(50.0 + 0.1 * (noise - 0.5), 2),
                    energy_wh=self.import_wh[ch],
                    returned_energy_wh=self.export_wh[ch],
                )
            )
        return samples

    def device_time_s(self, ts_s: float) -> float:
        """Return what the device's clock says at true time ``ts_s`` [s]."""
        return ts_s + self.skew_s

    # -- life cycle -----------------------------------------------------------------------

    def reboot(self, ts_s: float) -> None:
        """Restart: Gen1 counters since boot start again; every format reconnects."""
        self.boot_ts_s = ts_s
        self.boot_import_wh = list(self.import_wh)
        self.boot_export_wh = list(self.export_wh)
        self.just_rebooted = True
        self.full_status_due_s = None

    def status_messages(self, online: bool, ts_s: float) -> list[tuple[str, bytes]]:
        """Return the messages of (re)connecting or of going silent (the last will)."""
        flag = b"true" if online else b"false"
        if self.fmt in (SimFormat.shelly_gen1, SimFormat.shelly_gen1_3em):
            out = [(f"shellies/{self.device_id}/online", flag)]
            if online:
                mac = f"C45BBE{self.seed & 0xFFFFFF:06X}"
                announce = {
                    "id": self.device_id,
                    "model": GEN1_MODEL[self.fmt],
                    "mac": mac,
                    "ip": f"192.0.2.{self.index % 250 + 2}",
                    "new_fw": False,
                    "fw_ver": FIRMWARE_GEN1,
                }
                out.append((f"shellies/{self.device_id}/announce", _encode(announce)))
            return out
        if self.render is not None:
            return []
        if online:
            self.full_status_due_s = None
        return [(f"{self.device_id}/online", flag)]

    # -- payloads -------------------------------------------------------------------------

    def data_documents(self, ts_s: float, step_s: float) -> list[tuple[str, Any, bytes]]:
        """Measure and return this round's (topic, document, payload) triples.

        A document is a str for Gen1 topics, a JSON-ready dict for Gen2 and the list of
        canonical readings (``ts`` [ms]) of a rendered format.
        """
        if self.render is not None:
            return self._rendered_documents(self.render, ts_s, step_s)
        samples = self.measure(ts_s)
        if self.fmt in (SimFormat.shelly_gen1, SimFormat.shelly_gen1_3em):
            return [(t, d, _encode(d)) for t, d in self._gen1_documents(samples)]
        document = self._gen2_document(ts_s, samples)
        return [(f"{self.device_id}/events/rpc", document, _encode(document))]

    def _gen1_documents(self, samples: list[ChannelSample]) -> list[tuple[str, Any]]:
        quantities = (
            GEN1_EM_QUANTITIES if self.fmt is SimFormat.shelly_gen1 else GEN1_3EM_QUANTITIES
        )
        out: list[tuple[str, Any]] = []
        for ch, s in enumerate(samples):
            prefix = f"shellies/{self.device_id}/emeter/{ch}/"
            values = {
                "power": f"{s.power_w:.2f}",
                "reactive_power": f"{s.reactive_power_var:.2f}",
                "current": f"{s.current_a:.2f}",
                "voltage": f"{s.voltage_v:.2f}",
                "pf": f"{s.pf:.2f}",
            }
            for quantity in quantities:
                out.append((prefix + quantity, values[quantity]))
            if self.just_rebooted:  # the firmware's placeholder until it has counted again
                counters = dict.fromkeys(GEN1_COUNTERS, "-1")
            else:
                counters = {
                    "energy": str(round((s.energy_wh - self.boot_import_wh[ch]) * 60)),
                    "returned_energy": str(
                        round((s.returned_energy_wh - self.boot_export_wh[ch]) * 60)
                    ),
                    "total": f"{s.energy_wh:.1f}",
                    "total_returned": f"{s.returned_energy_wh:.1f}",
                }
            for quantity in GEN1_COUNTERS:
                out.append((prefix + quantity, counters[quantity]))
        self.just_rebooted = False
        return out

    def _gen2_document(self, ts_s: float, samples: list[ChannelSample]) -> dict[str, Any]:
        device_ts = round(self.device_time_s(ts_s), 2)
        full = self.full_status_due_s is None or ts_s >= self.full_status_due_s
        if full:
            self.full_status_due_s = ts_s + self.config.full_status_interval_s
            self.sent.clear()
        minute = math.floor(device_ts / 60.0)
        counters_due = full or minute != self.last_minute
        self.last_minute = minute
        params: dict[str, Any] = {"ts": device_ts}
        if self.fmt is SimFormat.shelly_gen2:
            for ch, s in enumerate(samples):
                em1 = {
                    "current": s.current_a,
                    "voltage": round(s.voltage_v, 1),
                    "act_power": s.power_w,
                    "aprt_power": s.apparent_power_va,
                    "pf": s.pf,
                    "freq": round(s.freq_hz, 1),
                }
                params[f"em1:{ch}"] = self._changed(f"em1:{ch}", ch, em1)
                if full:
                    params[f"em1:{ch}"]["calibration"] = "factory"
            if counters_due:
                for ch, s in enumerate(samples):
                    data = {
                        "total_act_energy": round(s.energy_wh, 2),
                        "total_act_ret_energy": round(s.returned_energy_wh, 2),
                    }
                    params[f"em1data:{ch}"] = self._changed(f"em1data:{ch}", ch, data)
        else:
            em: dict[str, Any] = {}
            for phase, s in zip(PHASES, samples, strict=True):
                em[f"{phase}_current"] = s.current_a
                em[f"{phase}_voltage"] = round(s.voltage_v, 1)
                em[f"{phase}_act_power"] = s.power_w
                em[f"{phase}_aprt_power"] = s.apparent_power_va
                em[f"{phase}_pf"] = s.pf
                em[f"{phase}_freq"] = round(s.freq_hz, 1)
            if full:
                em["n_current"] = None
            em["total_current"] = round(sum(s.current_a for s in samples), 3)
            em["total_act_power"] = round(sum(s.power_w for s in samples), 1)
            em["total_aprt_power"] = round(sum(s.apparent_power_va for s in samples), 1)
            params["em:0"] = self._changed("em:0", 0, em)
            if full:
                params["em:0"]["user_calibrated_phase"] = []
            if counters_due:
                emdata: dict[str, Any] = {}
                for phase, s in zip(PHASES, samples, strict=True):
                    emdata[f"{phase}_total_act_energy"] = round(s.energy_wh, 2)
                    emdata[f"{phase}_total_act_ret_energy"] = round(s.returned_energy_wh, 2)
                emdata["total_act"] = round(sum(s.energy_wh for s in samples), 2)
                emdata["total_act_ret"] = round(sum(s.returned_energy_wh for s in samples), 2)
                params["emdata:0"] = self._changed("emdata:0", 0, emdata)
        if full:
            uptime_from = self.boot_ts_s if self.boot_ts_s is not None else ts_s - 3_600.0
            params["sys"] = {
                "mac": f"08F9E0{self.seed & 0xFFFFFF:06X}",
                "restart_required": False,
                "unixtime": int(device_ts),
                "uptime": max(0, int(ts_s - uptime_from)),
            }
        return {
            "src": self.device_id,
            "dst": f"{self.device_id}/events",
            "method": "NotifyFullStatus" if full else "NotifyStatus",
            "params": params,
        }

    def _changed(self, component: str, component_id: int, values: dict[str, Any]) -> dict[str, Any]:
        """Return ``id`` plus the keys whose value differs from what was last sent."""
        last = self.sent.setdefault(component, {})
        out: dict[str, Any] = {"id": component_id}
        for key, value in values.items():
            if key not in last or last[key] != value:
                out[key] = value
                last[key] = value
        return out

    def _rendered_documents(
        self, render: Render, ts_s: float, step_s: float
    ) -> list[tuple[str, Any, bytes]]:
        batch = self.config.batch
        channels = self.channels
        # batch readings per round; each sample yields one reading per channel, so samples
        # are step_s * channels / batch apart and a round still spans step_s of time.
        sample_step_s = step_s * channels / batch
        if self.next_sample_s is None or self.next_sample_s < ts_s - step_s:
            self.next_sample_s = ts_s
        while len(self.pending) < batch:
            sample_ts = self.next_sample_s
            device_ts_ms = round(self.device_time_s(sample_ts) * 1000)
            for ch, s in enumerate(self.measure(sample_ts)):
                self.pending.append(
                    {
                        "ts": device_ts_ms,
                        "channel": ch,
                        "power_w": s.power_w,
                        "voltage_v": s.voltage_v,
                        "current_a": s.current_a,
                        "pf": s.pf,
                        "energy_wh": round(s.energy_wh, 3),
                        "returned_energy_wh": round(s.returned_energy_wh, 3),
                    }
                )
            self.next_sample_s = sample_ts + sample_step_s
        readings = [self.pending.popleft() for _ in range(batch)]
        topic, payload = render(self.device_id, readings)
        return [(topic, readings, payload)]

    def malformed(self, document: Any, payload: bytes, kind: str) -> bytes:
        """Return a broken version of a payload: ``truncated``, ``nan`` or ``wrong-type``."""
        if isinstance(document, str):  # Gen1: a bare number
            return {"truncated": b"", "nan": b"nan", "wrong-type": b"true"}[kind]
        if kind == "truncated":  # within the first line: a CSV header, all of a JSON payload
            first_line = payload.find(b"\n")
            end = first_line if first_line > 1 else len(payload)
            return payload[: self.rng.randint(1, end - 1)]
        if self.render is not None:  # the first reading's power as text the format refuses
            first = {**document[0], "power_w": "NaN" if kind == "nan" else "high"}
            return self.render(self.device_id, [first, *document[1:]])[1]
        broken = json.loads(payload)  # Gen2: the device time
        ts = broken["params"]["ts"]
        broken["params"]["ts"] = math.nan if kind == "nan" else str(ts)
        return json.dumps(broken, separators=(",", ":")).encode()


_encoder = msgspec.json.Encoder()


def _encode(document: Any) -> bytes:
    if isinstance(document, str):
        return document.encode()
    return _encoder.encode(document)


class Fleet:
    """Generate what a fleet of simulated meters publishes, round by round, without a network.

    Deterministic: the same :class:`FleetConfig` and the same sequence of :meth:`round` calls
    give byte-identical messages. :attr:`stats` counts what was generated and injected.
    """

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        first = config.first_device
        self.devices = [SimDevice(config, index) for index in range(first, first + config.devices)]
        self.stats = SimStats(skewed_devices=sum(1 for d in self.devices if d.skew_s != 0.0))
        self._late: list[tuple[float, int, SimMessage]] = []
        self._late_seq = 0

    def round(self, ts_s: float, step_s: float) -> list[SimMessage]:
        """Return every message of the round at simulated time ``ts_s`` [s].

        ``step_s`` [s] is the time until the next round (generic devices spread their batch
        over it). Late messages that are due are released first.

        Raises:
            ValueError: ``step_s`` is not positive.
        """
        if not step_s > 0:
            raise ValueError(f"step_s must be positive, not {step_s!r}")
        out: list[SimMessage] = []
        while self._late and self._late[0][0] <= ts_s:
            out.append(heapq.heappop(self._late)[2])
        for device in self.devices:
            self._device_round(device, ts_s, step_s, out)
        self.stats.rounds += 1
        self._count(out)
        return out

    def rounds(self, start_s: float, step_s: float, count: int) -> Iterator[list[SimMessage]]:
        """Yield ``count`` rounds ``step_s`` [s] apart from ``start_s`` [s], then the held-back."""
        for i in range(count):
            yield self.round(start_s + i * step_s, step_s)
        yield self.drain()

    def drain(self) -> list[SimMessage]:
        """Return the late messages still held back (at the end of a run)."""
        out = [item[2] for item in sorted(self._late)]
        self._late.clear()
        self._count(out)
        return out

    def _count(self, messages: list[SimMessage]) -> None:
        stats = self.stats
        stats.messages += len(messages)
        for message in messages:
            stats.payload_bytes += len(message.payload)
            if message.kind == "status":
                stats.status_messages += 1
            else:
                stats.data_messages += 1

    def _device_round(
        self, device: SimDevice, ts_s: float, step_s: float, out: list[SimMessage]
    ) -> None:
        faults = self.config.faults
        rng = device.rng
        online = True
        if not device.connected:
            device.connected = True
            device.boot_ts_s = ts_s
            out.extend(SimMessage(t, p, "status") for t, p in device.status_messages(True, ts_s))
        elif device.offline_until_s is not None:
            if ts_s >= device.offline_until_s:
                device.offline_until_s = None
                out.extend(
                    SimMessage(t, p, "status") for t, p in device.status_messages(True, ts_s)
                )
            else:
                online = False
        else:
            reboot_draw, offline_draw = rng.random(), rng.random()
            if reboot_draw < faults.reboot_rate and device.render is None:
                device.reboot(ts_s)
                self.stats.reboots += 1
                out.extend(
                    SimMessage(t, p, "status") for t, p in device.status_messages(True, ts_s)
                )
            elif offline_draw < faults.offline_rate:
                device.offline_until_s = ts_s + faults.offline_s
                self.stats.offline_gaps += 1
                out.extend(
                    SimMessage(t, p, "status") for t, p in device.status_messages(False, ts_s)
                )
                online = False
        documents = device.data_documents(ts_s, step_s)  # measures even while offline
        if not online:
            return
        for topic, document, payload in documents:
            if device.skew_s != 0.0 and self.config.fmt in DEVICE_TIME_FORMATS:
                self.stats.clock_skew += 1
            draw = rng.random()
            if draw < faults.malformed_rate:
                kind = MALFORMED_KINDS[rng.randrange(len(MALFORMED_KINDS))]
                bad = device.malformed(document, payload, kind)
                self.stats.malformed += 1
                by_kind = self.stats.malformed_by_kind
                by_kind[kind] = by_kind.get(kind, 0) + 1
                out.append(SimMessage(topic, bad, "malformed"))
            elif draw < faults.malformed_rate + faults.duplicate_rate:
                self.stats.duplicates += 1
                out.append(SimMessage(topic, payload))
                out.append(SimMessage(topic, payload, "duplicate"))
            elif draw < faults.malformed_rate + faults.duplicate_rate + faults.late_rate:
                self.stats.late += 1
                self._late_seq += 1
                due = (ts_s + faults.late_s, self._late_seq, SimMessage(topic, payload, "late"))
                heapq.heappush(self._late, due)
            else:
                out.append(SimMessage(topic, payload))


class BrokerEndpoint(Protocol):
    """Where to publish (``wattlake.gateway.mqtt.BrokerAddress`` is one)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class Simulator:
    """Publish a :class:`Fleet` to an MQTT broker in wall-clock time.

    First ``backfill_days`` [d] of history ending at the live start, one round every
    ``backfill_interval_s`` [s] of device time, as fast as the broker acknowledges; then one
    round every ``interval_s`` [s] of wall time, each advancing simulated time by
    ``interval_s * speed``, until stopped, ``count`` live rounds, or ``duration_s`` [s].
    The live part starts at simulated time ``start_s`` (epoch [s], default: now).

    Raises:
        UsageError: backfill is asked of a format without device time, or a value is out of
            range.
    """

    def __init__(
        self,
        broker: BrokerEndpoint,
        *,
        devices: int = 1,
        interval_s: float = 1.0,
        seed: int = 0,
        qos: int = 1,
        count: int | None = None,
        config: FleetConfig | None = None,
        speed: float = 1.0,
        backfill_days: float = 0.0,
        backfill_interval_s: float = 60.0,
        duration_s: float | None = None,
        start_s: float | None = None,
        max_pending: int = 20_000,
        username: str = "",
        password: str = "",
    ) -> None:
        self.config = config or FleetConfig(devices=devices, seed=seed)
        if backfill_days > 0 and self.config.fmt not in DEVICE_TIME_FORMATS:
            raise UsageError(
                f"History needs device time in the payload, and {self.config.fmt} has none "
                "(the receiver stamps it); use one of "
                f"{', '.join(sorted(DEVICE_TIME_FORMATS))}."
            )
        for name, value in (
            ("interval", interval_s),
            ("speed", speed),
            ("backfill interval", backfill_interval_s),
        ):
            if not value > 0:
                raise UsageError(f"The {name} must be a positive number, not {value:g}.")
        if backfill_days < 0:
            raise UsageError(f"Days of history must be zero or more, not {backfill_days:g}.")
        if qos not in (0, 1):
            raise UsageError(f"The MQTT QoS must be 0 or 1, not {qos}.")
        self.fleet = Fleet(self.config)
        self.broker = broker
        self.interval_s = interval_s
        self.qos = qos
        self.count = count
        self.speed = speed
        self.backfill_days = backfill_days
        self.backfill_interval_s = backfill_interval_s
        self.duration_s = duration_s
        self.start_s = start_s
        self.max_pending = max_pending
        self.published = 0
        self.backfill_rounds = 0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"wattlake-sim-{uuid.uuid4().hex[:8]}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        # paho scans its in-flight messages on every acknowledgement: 100 acknowledged ~16k
        # msg/s from a local Mosquitto, 1000 ~10k, 10000 ~3k (docs/simulator.md).
        self._client.max_inflight_messages_set(100)
        self._client.on_connect = self._on_connect
        if username:  # a secured broker: the demo's "fleet" credential (gateway/registry.py)
            self._client.username_pw_set(username, password or None)
        # Gen2 meters answer RPC calls on <id>/rpc (the refill's record requests).
        self.rpc = FleetRpc(self.fleet)
        self._client.on_message = self._on_rpc
        self._pending: deque[mqtt.MQTTMessageInfo] = deque()

    @property
    def stats(self) -> SimStats:
        """Return what the fleet generated and injected so far."""
        return self.fleet.stats

    def _on_connect(
        self, _client: mqtt.Client, _u: object, _f: object, rc: object, _p: object
    ) -> None:
        if not getattr(rc, "is_failure", False):
            self._connected.set()
            _client.subscribe("+/rpc", qos=1)

    def _on_rpc(self, _client: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        reply = answer_mqtt(self.rpc, msg.topic, msg.payload)
        if reply is not None:
            self._client.publish(reply[0], reply[1], qos=1)

    def run(self) -> int:
        """Publish until stopped, ``count`` rounds or ``duration_s``; return messages published.

        Raises:
            BrokerError: the broker cannot be reached or does not accept the connection.
        """
        where = f"{self.broker.host}:{self.broker.port}"
        try:
            self._client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError as exc:
            raise BrokerError(
                f"Cannot reach the MQTT broker at {where}: {exc}; check --broker and that the "
                "broker runs."
            ) from exc
        self._client.loop_start()
        try:
            if not self._connected.wait(15):
                raise BrokerError(f"The MQTT broker at {where} did not accept the connection.")
            live_start_s = time.time() if self.start_s is None else self.start_s
            self._backfill(live_start_s)
            self._live(live_start_s)
            self._publish(self.fleet.drain())
            while self._pending:
                self._pending.popleft().wait_for_publish(timeout=30)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
        return self.published

    def _backfill(self, live_start_s: float) -> None:
        rounds = math.floor(self.backfill_days * loads.DAY_S / self.backfill_interval_s)
        first_s = live_start_s - rounds * self.backfill_interval_s
        for i in range(rounds):
            if self._stop.is_set():
                return
            self._publish(
                self._round(first_s + i * self.backfill_interval_s, self.backfill_interval_s)
            )
            self.backfill_rounds += 1

    def _live(self, live_start_s: float) -> None:
        step_s = self.interval_s * self.speed
        started = time.monotonic()
        i = 0
        while not self._stop.is_set() and (self.count is None or i < self.count):
            now = time.monotonic()
            if self.duration_s is not None and now - started >= self.duration_s:
                break
            wait_s = started + i * self.interval_s - now
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            self._publish(self._round(live_start_s + i * step_s, step_s))
            i += 1

    def _round(self, ts_s: float, step_s: float) -> list[SimMessage]:
        with self.rpc.lock:  # RPC answers read the meters' records from paho's thread
            return self.fleet.round(ts_s, step_s)

    def _publish(self, messages: list[SimMessage]) -> None:
        pending = self._pending
        for message in messages:
            info = self._client.publish(message.topic, message.payload, self.qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.published += 1
                if self.qos:
                    pending.append(info)
            else:
                log.warning("publish to %s failed: %s", message.topic, mqtt.error_string(info.rc))
        while pending and pending[0].is_published():
            pending.popleft()
        while len(pending) > self.max_pending:  # the broker sets the pace
            pending.popleft().wait_for_publish(timeout=30)

    def stop(self) -> None:
        """Ask :meth:`run` to finish the current round, publish held-back messages and return."""
        self._stop.set()


def site_tables(config: FleetConfig, *, timezone: str = "UTC", tariff: str = "") -> dict[str, Any]:
    """Return ``[sites.<name>]`` tables describing what each device of a fleet measures.

    One site per device, named ``home-<n>`` after the device number: channel 0 ``grid``;
    channel 1 a ``circuit`` (the kitchen, behind the grid) or ``solar``; channel 2 the
    ``battery`` of a ``pv+battery`` home. Ready for :func:`wattlake.energy.sites.parse_sites`
    and for :func:`sites_toml`.
    """
    sites: dict[str, Any] = {}
    for i in range(config.devices):
        device = SimDevice(config, config.first_device + i)
        channels: list[dict[str, Any]] = [
            {"device": device.device_id, "channel": 0, "role": "grid"}
        ]
        if device.house.pv_kwp > 0:
            channels.append({"device": device.device_id, "channel": 1, "role": "solar"})
        else:
            channels.append(
                {
                    "device": device.device_id,
                    "channel": 1,
                    "role": "circuit",
                    "name": "kitchen",
                    "parent": f"{device.device_id}:0",
                }
            )
        if device.house.battery_w > 0:
            channels.append({"device": device.device_id, "channel": 2, "role": "battery"})
        site: dict[str, Any] = {"timezone": timezone}
        if tariff:
            site["tariff"] = tariff
        site["channels"] = channels
        sites[f"home-{device.index}"] = site
    return sites


def sites_toml(tables: dict[str, Any]) -> str:
    """Return site tables as the TOML text of ``wattlake.toml`` (``[sites.<name>]`` blocks)."""
    lines: list[str] = []
    for name, site in tables.items():
        lines.append(f"[sites.{json.dumps(name)}]")
        for key, value in site.items():
            if key != "channels":
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
        for channel in site.get("channels", []):
            lines.append(f"[[sites.{json.dumps(name)}.channels]]")
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in channel.items())
            lines.append("")
    return "\n".join(lines)

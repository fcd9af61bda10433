"""Sites: which meter channel measures what in a home, and the energy balance that follows.

A site is a ``[sites.<name>]`` table of ``wattlake.toml``::

    [sites.home]
    timezone = "Europe/Warsaw"      # local days of the site (IANA name)
    tariff = "pl-g12"               # built-in name or path of a tariff file; grid channels only
    phases = "per_phase"            # or "net": phases netted at each instant (balancing meters)

    [[sites.home.channels]]
    device = "shellyem-1"
    channel = 0
    role = "grid"                   # grid, solar, battery, circuit, ignore

    [[sites.home.channels]]
    device = "shellyem-1"
    channel = 1
    role = "circuit"
    name = "kitchen"                # optional label (default device:channel)
    parent = "shellyem-1:0"         # optional: the channel this circuit hangs off
    valid_from = "2026-05-01"       # optional: the role holds from local midnight of that day

Sign conventions of the roles (power as the meter reports it):

* ``grid`` — import positive, export negative.
* ``solar`` — production is the energy flowing *out of* the inverter, i.e. the channel's negative
  part (how a Shelly clamp on the inverter's cable reads); ``invert = true`` for a clamp the
  other way round. Standby draw at night is the other part and counts as consumption of the
  inverter, not as production.
* ``battery`` — positive is charging (energy into the battery), negative is discharging;
  ``invert = true`` flips it.
* ``circuit`` — a load behind the grid connection; its energy is import minus export.

The balance of a period (all in Wh)::

    consumption   = grid_import + solar + battery_discharge - grid_export - battery_charge
    untracked     = consumption - sum of the circuits without a circuit parent
    self_consumption = (solar - grid_export) / solar          (share of production used on site)
    self_sufficiency = (consumption - grid_import) / consumption

This module is pure: it parses and validates the tables, and does the arithmetic on arrays.
:mod:`wattlake.query.energy` feeds it lake readings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from wattlake.energy.buckets import local_midnight_ms, zone
from wattlake.errors import ConfigError

ROLES: Final[tuple[str, ...]] = ("grid", "solar", "battery", "circuit", "ignore")
PHASE_NETTING: Final[tuple[str, ...]] = ("per_phase", "net")
UNTRACKED_TOLERANCE_WH: Final = 0.5
"""Untracked energy below minus this is reported as a warning (circuits add up to more)."""

FloatArray = npt.NDArray[np.float64]


class _ChannelFile(msgspec.Struct, forbid_unknown_fields=True):
    device: str
    channel: int
    role: str
    name: str = ""
    parent: str | None = None
    valid_from: date | None = None
    invert: bool = False


class _SiteFile(msgspec.Struct, forbid_unknown_fields=True):
    timezone: str = "UTC"
    tariff: str = ""
    phases: str = "per_phase"
    channels: list[_ChannelFile] = msgspec.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChannelRole:
    """One role assignment of a device channel in a site.

    ``valid_from_ms`` is local midnight of ``valid_from`` [ms UTC] (None: since always);
    ``valid_until_ms`` the next assignment of the same channel (None: still in force).
    ``parent`` is the ``device:channel`` key of the channel a circuit hangs off.
    """

    device_id: str
    channel: int
    role: str
    name: str
    parent: str | None = None
    valid_from_ms: int | None = None
    valid_until_ms: int | None = None
    invert: bool = False

    @property
    def key(self) -> str:
        """Return ``device:channel``."""
        return f"{self.device_id}:{self.channel}"


@dataclass(frozen=True, slots=True)
class Site:
    """A home: its clock, tariff, phase netting and channel roles."""

    name: str
    timezone: str
    tariff: str
    phases: str
    channels: tuple[ChannelRole, ...] = field(default=())

    @property
    def device_ids(self) -> list[str]:
        """Return the devices of the site, sorted."""
        return sorted({c.device_id for c in self.channels})

    def with_role(self, role: str) -> list[ChannelRole]:
        """Return the assignments of one role."""
        return [c for c in self.channels if c.role == role]

    @property
    def top_circuits(self) -> list[ChannelRole]:
        """Return the circuits whose parent is not itself a circuit (they add up)."""
        circuits = {c.key for c in self.with_role("circuit")}
        return [c for c in self.with_role("circuit") if c.parent not in circuits]


def _key(text: str, where: str) -> str:
    device, sep, channel = text.rpartition(":")
    if not sep or not device or not channel.isdigit():
        raise ConfigError(f'{where}: parent {text!r} is not "device:channel", e.g. "em-1:0".')
    return f"{device}:{int(channel)}"


def parse_sites(
    tables: Mapping[str, Any], *, known_devices: Collection[str] | None = None
) -> dict[str, Site]:
    """Build and validate the sites of a ``[sites]`` table.

    Parameters
    ----------
    tables : mapping
        The ``sites`` table of ``wattlake.toml``: site name -> its table.
    known_devices : collection of str, optional
        Devices that exist (in the lake or the device registry); when given, a site naming
        another device is an error.

    Raises:
        ConfigError: an unknown field, role, phase netting, time zone or device; a channel in
            two sites or twice from the same day; a parent that is not a channel of the site.
    """
    sites: dict[str, Site] = {}
    owner: dict[str, str] = {}
    for name, raw_table in tables.items():
        where = f"[sites.{name}]"
        try:
            raw = msgspec.convert(raw_table, _SiteFile)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{where} in wattlake.toml is not valid: {exc}.") from exc
        try:
            tz = zone(raw.timezone)
        except Exception as exc:
            raise ConfigError(f"{where}: unknown time zone {raw.timezone!r}.") from exc
        if raw.phases not in PHASE_NETTING:
            raise ConfigError(
                f"{where}: phases = {raw.phases!r} is unknown; use {' or '.join(PHASE_NETTING)}."
            )
        by_key: dict[str, list[_ChannelFile]] = {}
        for ch in raw.channels:
            if ch.role not in ROLES:
                raise ConfigError(
                    f"{where}: {ch.device}:{ch.channel} has role {ch.role!r}, which does not "
                    f"exist; use one of {', '.join(ROLES)}."
                )
            if ch.channel < 0:
                raise ConfigError(f"{where}: channel {ch.channel} of {ch.device} is negative.")
            if known_devices is not None and ch.device not in known_devices:
                raise ConfigError(
                    f"{where}: device {ch.device!r} is unknown (no readings and not "
                    "registered); check its id with `wattlake device list`."
                )
            key = f"{ch.device}:{ch.channel}"
            if owner.get(key, name) != name:
                raise ConfigError(
                    f"{where}: channel {key} is already in site {owner[key]}; a channel belongs "
                    "to one site (use role ignore, or remove it from one of them)."
                )
            owner[key] = name
            by_key.setdefault(key, []).append(ch)
        roles: list[ChannelRole] = []
        for key, entries in by_key.items():
            entries.sort(key=lambda c: c.valid_from or date.min)
            starts = [c.valid_from for c in entries]
            if len(set(starts)) != len(starts):
                raise ConfigError(
                    f"{where}: channel {key} has two roles from the same day; give each a "
                    "different valid_from."
                )
            bounds = [None if d is None else local_midnight_ms(d, tz) for d in starts]
            for i, ch in enumerate(entries):
                parent = None if ch.parent is None else _key(ch.parent, where)
                roles.append(
                    ChannelRole(
                        device_id=ch.device,
                        channel=ch.channel,
                        role=ch.role,
                        name=ch.name or key,
                        parent=parent,
                        valid_from_ms=bounds[i],
                        valid_until_ms=bounds[i + 1] if i + 1 < len(bounds) else None,
                        invert=ch.invert,
                    )
                )
        keys = {r.key for r in roles}
        for r in roles:
            if r.parent is not None and r.parent not in keys:
                raise ConfigError(
                    f"{where}: the parent {r.parent} of circuit {r.name} is not a channel of "
                    "the site; add it or remove parent."
                )
            if r.parent is not None and r.role != "circuit":
                raise ConfigError(f"{where}: only circuits have a parent, not {r.role} {r.key}.")
        sites[name] = Site(name, raw.timezone, raw.tariff, raw.phases, tuple(roles))
    return sites


def site_or_error(sites: Mapping[str, Site], name: str) -> Site:
    """Return the site called ``name``.

    Raises:
        ConfigError: there is no such site.
    """
    if name not in sites:
        known = ", ".join(sorted(sites)) or "none are configured"
        raise ConfigError(
            f"No site named {name!r} in wattlake.toml ({known}); add a [sites.{name}] table."
        )
    return sites[name]


@dataclass(frozen=True, slots=True)
class SiteBalance:
    """The energy balance of a site per bucket [Wh]; ratios in [0–1] (NaN when undefined)."""

    grid_import_wh: FloatArray
    grid_export_wh: FloatArray
    solar_wh: FloatArray
    battery_charge_wh: FloatArray
    battery_discharge_wh: FloatArray
    circuits_wh: Mapping[str, FloatArray]
    top_circuits: Sequence[str]

    @property
    def consumption_wh(self) -> FloatArray:
        """Return grid import + solar + battery discharge − export − battery charge [Wh]."""
        return (
            self.grid_import_wh
            + self.solar_wh
            + self.battery_discharge_wh
            - self.grid_export_wh
            - self.battery_charge_wh
        )

    @property
    def untracked_wh(self) -> FloatArray:
        """Return consumption minus the circuits that add up (no circuit parent) [Wh]."""
        total = np.zeros_like(self.grid_import_wh)
        for name in self.top_circuits:
            total = total + self.circuits_wh[name]
        return self.consumption_wh - total

    @property
    def self_consumption(self) -> FloatArray:
        """Return the share of solar production used on site, (solar − export) / solar."""
        solar = self.solar_wh
        used = np.clip(solar - self.grid_export_wh, 0.0, None)
        return np.divide(used, solar, out=np.full_like(solar, np.nan), where=solar > 0)

    @property
    def self_sufficiency(self) -> FloatArray:
        """Return the share of consumption not imported, (consumption − import) / consumption."""
        use = self.consumption_wh
        own = np.clip(use - self.grid_import_wh, 0.0, None)
        return np.divide(own, use, out=np.full_like(use, np.nan), where=use > 0)

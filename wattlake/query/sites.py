"""The sites of ``wattlake.toml`` and the energy settings every question reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wattlake.energy.sites import Site, parse_sites

if TYPE_CHECKING:
    from wattlake.config import Settings


def configured_sites(settings: Settings, *, check_devices: bool = True) -> dict[str, Site]:
    """Return the sites of ``wattlake.toml``, validated.

    With ``check_devices`` a site naming a device that neither the lake has seen nor the device
    registry (:mod:`wattlake.gateway.registry`, setting ``security.dir``) holds is an error, so a
    freshly provisioned meter with no readings yet is accepted (the check is skipped while both
    are empty, as on a fresh install).

    Raises:
        ConfigError: a site is invalid (see :func:`wattlake.energy.sites.parse_sites`), or the
            device registry cannot be read.
    """
    tables = settings.tables.get("sites", {})
    if not tables:
        return {}
    known: set[str] | None = None
    if check_devices:
        from wattlake.query.inventory import lake_inventory

        known = {d.device_id for d in lake_inventory(settings).devices}
        known |= registered_devices(settings)
    return parse_sites(tables, known_devices=known or None)


def registered_devices(settings: Settings) -> set[str]:
    """Return the ids of the devices in the device registry (revoked ones too: their readings
    may still be in the lake); empty without a registry.

    Raises:
        ConfigError: the registry file cannot be read.
    """
    from wattlake.gateway.ca import security_dir
    from wattlake.gateway.registry import Registry

    clients = Registry(security_dir(str(settings["security.dir"]))).clients()
    return {c.client_id for c in clients.values() if c.role == "device"}


def energy_options(settings: Settings) -> tuple[float, float]:
    """Return the longest gap bridged [s] and the highest plausible power [W] of ``settings``."""
    return float(settings["energy.max_gap_s"]), float(settings["energy.max_power_w"])

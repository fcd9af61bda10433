"""Device status: what the meters say about themselves (online, model, firmware), not readings.

Shelly devices publish a last-will ``online`` topic (``true``/``false``) and Gen1 devices an
``announce`` document; every message a device sends also tells when it was last seen. The router
keeps one :class:`StatusRegistry` for all formats and exposes it as ``device_status()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from wattlake.errors import DecodeError

# Payload of an ``online`` topic -> whether the device is connected.
ONLINE_PAYLOADS: Final = {b"true": True, b"false": False}
# Announce key -> DeviceStatus field, for the facts a Gen1 announce carries.
ANNOUNCE_MAP: Final = {"model": "model", "fw_ver": "fw", "ip": "ip", "mac": "mac"}


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """What is known about one device.

    ``online`` is None until the device (or its broker, through the last will) says; the other
    facts are None until an announce names them. ``last_seen_ms`` is the receive time [ms since
    the epoch] of the device's latest message of any kind.
    """

    device_id: str
    format: str
    online: bool | None = None
    last_seen_ms: int | None = None
    model: str | None = None
    fw: str | None = None
    ip: str | None = None
    mac: str | None = None


def parse_online(payload: bytes) -> bool:
    """Return the state an ``online`` payload announces.

    Raises:
        DecodeError: ``bad-type`` for anything but ``true`` or ``false``.
    """
    state = ONLINE_PAYLOADS.get(payload.strip().lower())
    if state is None:
        raise DecodeError("bad-type", f"online payload {payload[:40]!r} is not true or false")
    return state


class StatusRegistry:
    """The latest :class:`DeviceStatus` of every device seen, keyed by device id."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceStatus] = {}

    def seen(self, device_id: str, fmt: str, at_ms: int, **facts: Any) -> DeviceStatus:
        """Record that ``device_id`` sent something at ``at_ms`` [ms], with optional facts.

        ``facts`` are DeviceStatus fields (``online``, ``model``, ``fw``, ``ip``, ``mac``); None
        values leave what is known unchanged.
        """
        known = self._devices.get(device_id) or DeviceStatus(device_id, fmt)
        changes = {k: v for k, v in facts.items() if v is not None}
        last_seen = max(at_ms, known.last_seen_ms or at_ms)
        status = dataclasses.replace(known, format=fmt, last_seen_ms=last_seen, **changes)
        self._devices[device_id] = status
        return status

    def announce(self, device_id: str, fmt: str, at_ms: int, doc: dict[str, Any]) -> None:
        """Record the facts of an announce document (string values only)."""
        facts = {
            field: doc[key]
            for key, field in ANNOUNCE_MAP.items()
            if isinstance(doc.get(key), str) and doc[key]
        }
        self.seen(device_id, fmt, at_ms, **facts)

    def snapshot(self) -> dict[str, DeviceStatus]:
        """Return the status of every device seen so far (a copy; entries are immutable)."""
        return dict(self._devices)

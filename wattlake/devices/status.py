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

IDENTITY_MISMATCH: Final = "identity-mismatch"
# Payload of an ``online`` topic -> whether the device is connected.
ONLINE_PAYLOADS: Final = {b"true": True, b"false": False}
# Announce key -> DeviceStatus field, for the facts a Gen1 announce carries.
ANNOUNCE_MAP: Final = {"model": "model", "fw_ver": "fw", "ip": "ip", "mac": "mac"}


def mismatch(expected: str, named: object, topic: str) -> DecodeError:
    """Return the error of a message on ``topic`` naming device ``named`` instead of
    ``expected`` (its publisher)."""
    who = f"published by {expected!r}" if expected else "on a topic that names no device"
    return DecodeError(
        IDENTITY_MISMATCH,
        f"the message names device {str(named)[:128]!r} but was {who} (topic "
        f"{topic[:200]!r}); a device may only send its own readings",
    )


class Binding:
    """The identity the message being decoded is bound to (None: unbound, anything goes).

    The router sets it around each decode; the status registry calls :meth:`require` before it
    records anything about a device, and decoders record a device before they keep state for it
    (Gen2 components, Gen1 cycles), so a message naming another device changes nothing.
    """

    __slots__ = ("expected", "topic")

    def __init__(self) -> None:
        self.expected: str | None = None
        self.topic = ""

    def require(self, device_id: str) -> None:
        """Refuse ``device_id`` unless it is the bound identity (or nothing is bound).

        Raises:
            DecodeError: ``identity-mismatch``.
        """
        if self.expected is not None and device_id != self.expected:
            raise mismatch(self.expected, device_id, self.topic)


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

    def __init__(self, binding: Binding | None = None) -> None:
        # The identity the message being decoded is bound to (set by the router).
        self.binding = binding or Binding()
        self._devices: dict[str, DeviceStatus] = {}
        # Hot path: most messages only move "last seen", kept apart from the immutable facts.
        self._last_seen: dict[str, int] = {}

    def seen(self, device_id: str, fmt: str, at_ms: int, **facts: Any) -> None:
        """Record that ``device_id`` sent something at ``at_ms`` [ms], with optional facts.

        ``facts`` are DeviceStatus fields (``online``, ``model``, ``fw``, ``ip``, ``mac``); None
        values leave what is known unchanged. Decoders call this before they keep any state for
        a device, so that a message bound to another identity is refused before it changes
        anything.

        Raises:
            DecodeError: ``identity-mismatch`` when the message being decoded is bound to
                another device (:class:`~wattlake.devices.identity.Binding`).
        """
        self.binding.require(device_id)
        last = self._last_seen.get(device_id)
        if last is None or at_ms > last:
            self._last_seen[device_id] = at_ms
        known = self._devices.get(device_id)
        if known is not None and known.format == fmt and not facts:
            return
        changes = {k: v for k, v in facts.items() if v is not None}
        base = known or DeviceStatus(device_id, fmt)
        self._devices[device_id] = dataclasses.replace(base, format=fmt, **changes)

    def announce(self, device_id: str, fmt: str, at_ms: int, doc: dict[str, Any]) -> None:
        """Record the facts of an announce document (string values only).

        Raises:
            DecodeError: ``identity-mismatch``, as :meth:`seen`.
        """
        facts = {
            field: doc[key]
            for key, field in ANNOUNCE_MAP.items()
            if isinstance(doc.get(key), str) and doc[key]
        }
        self.seen(device_id, fmt, at_ms, **facts)

    def snapshot(self) -> dict[str, DeviceStatus]:
        """Return the status of every device seen so far (a copy; entries are immutable)."""
        return {
            device_id: dataclasses.replace(status, last_seen_ms=self._last_seen[device_id])
            for device_id, status in self._devices.items()
        }

"""Every reading belongs to the meter that sent it: the one identity rule, for every format.

The id a reading is stored under is the identity the broker authenticated. A broker cannot say
who published a message, but with wattlake's rules (the embedded broker's ACL plugin, the
generated Mosquitto ACL) a device may publish only below its own id, so the topic's device level
*is* the authenticated identity: :func:`publisher` reads it, and the broker ACLs
(:mod:`wattlake.gateway.auth`) use the same function, so both agree by construction:

=====================================  ==========================
topic                                  publisher
=====================================  ==========================
``shellies/<id>/…`` (3 levels or more) ``<id>``
``wattlake/<id>/…`` (3 levels or more) ``<id>``
``shellies/announce``                  none: the payload's ``id`` (the embedded broker checks it
                                       against the publisher; Mosquitto does not grant the topic)
any other ``<id>/…``                   ``<id>``
=====================================  ==========================

Whatever a payload says (a Gen2 ``src``, a generic ``device_id``, a Gen1 announce ``id``, a
deeper topic level, any later format's field), a message that names another device is refused
whole as a dead letter ``identity-mismatch``, raw bytes kept, never a reading. Decoders keep
decoding and report the device the payload names; the router (:mod:`wattlake.devices.router`)
applies this rule to what they return (:func:`check`) and to what they record about devices
(:class:`Binding`, which the status registry consults before any per-device state changes).
Imports of history files keep their ids: each row's message is on its own device's topic.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from wattlake.devices.base import Decoded
from wattlake.devices.formats import FORMATS
from wattlake.devices.status import IDENTITY_MISMATCH, Binding, mismatch

__all__ = [
    "ANNOUNCE_TOPICS",
    "IDENTITY_MISMATCH",
    "NOBODY",
    "ROOTS",
    "Binding",
    "bound_identity",
    "check",
    "mismatch",
    "publisher",
]

# Topic roots whose second level is the device (``shellies/<id>/…``, ``wattlake/<id>/…``): the
# formats' topic roots (:attr:`~wattlake.devices.descriptor.DeviceFormat.topic_root`).
ROOTS: Final = frozenset(fmt.topic_root for fmt in FORMATS.values() if fmt.topic_root)
# Topics whose payload names its device (``shellies/announce``); the embedded broker checks it.
ANNOUNCE_TOPICS: Final = frozenset(
    fmt.announce_topic for fmt in FORMATS.values() if fmt.announce_topic
)
# What a topic without a device level binds to: no device may be named on it.
NOBODY: Final = ""


def publisher(topic: str) -> str | None:
    """Return the device a broker with wattlake's ACLs lets publish on ``topic``, None if none.

    ``shellies/<id>/…`` and ``wattlake/<id>/…`` (three levels or more) belong to ``<id>``; any
    other topic of two levels or more to its first level.
    """
    parts = topic.split("/", 2)
    if parts[0] in ROOTS:
        return parts[1] or None if len(parts) == 3 else None
    return parts[0] or None if len(parts) >= 2 else None


def bound_identity(topic: str) -> str | None:
    """Return the only device a message on ``topic`` may name: its :func:`publisher`,
    :data:`NOBODY` for a topic without one, None for an announce topic such as
    ``shellies/announce`` (any: its payload names the device and the broker checked it)."""
    if topic in ANNOUNCE_TOPICS:
        return None
    found = publisher(topic)
    return NOBODY if found is None else found


def check(expected: str, topic: str, decoded: Decoded) -> None:
    """Refuse ``decoded`` unless every reading's ``device_id`` is ``expected``.

    Raises:
        DecodeError: ``identity-mismatch`` naming the first other device.
    """
    if isinstance(decoded, pa.Table):
        if not decoded.num_rows:
            return
        ids = decoded.column("device_id")
        same = pc.equal(ids, pa.scalar(expected, pa.string()))
        if ids.null_count or not pc.all(same).as_py():
            first = pc.index(pc.fill_null(same, False), False).as_py()
            raise mismatch(expected, ids[first].as_py(), topic)
        return
    for reading in decoded:
        if reading["device_id"] != expected:
            raise mismatch(expected, reading["device_id"], topic)

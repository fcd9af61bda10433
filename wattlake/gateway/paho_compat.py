"""wattlake's one use of paho-mqtt's internals, written for paho-mqtt 2.x (checked at import).

paho sends each acknowledgement of a received QoS 1 message (``Client.ack``) as a packet of its
own: a socket wake-up and a send per message. The ingest acknowledges hundreds at once after
each write-ahead log sync, so :func:`send_pubacks` queues them as one write through paho's
private ``_packet_queue`` (see docs/compat.md).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import paho.mqtt.client as mqtt

from wattlake.compat import require_series

# The paho-mqtt releases this module was written for (and checked against).
PAHO_SERIES: Final = "2."
# PUBACK is 0x40, remaining length 2, packet id (reason code 0 may be omitted in v5).
PUBACK_PACKET: Final = struct.Struct("!BBH")


def check_version() -> str:
    """Return the installed paho-mqtt version.

    Raises:
        LibraryVersionError: it is not :data:`PAHO_SERIES`.
    """
    return require_series("paho-mqtt", PAHO_SERIES, __name__)


check_version()


def send_pubacks(client: mqtt.Client, mids: Sequence[int]) -> None:
    """Acknowledge the QoS 1 messages ``mids`` to the broker in one write (PUBACK each)."""
    queue_packet = getattr(client, "_packet_queue", None)
    if queue_packet is None:  # a paho without the internal queue: one PUBACK per call
        for mid in mids:
            client.ack(mid, 1)
        return
    acks = b"".join(PUBACK_PACKET.pack(mqtt.PUBACK, 2, mid) for mid in mids)
    queue_packet(mqtt.PUBACK, acks, 0, 0)

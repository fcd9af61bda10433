"""What wattlake knows about one device format, in one frozen descriptor.

Each format module (``shelly_gen2.py``, ``shelly_gen1.py``, ``generic.py``, ``csv_lines.py``)
defines one :class:`DeviceFormat`, ``FORMAT``; :mod:`wattlake.devices.formats` lists them in one
table, and everything that needs to know about formats reads that table instead of naming them:
the router (routes, decoders), the identity rule (the topic root before a device's id), the
embedded broker's ACLs and the Mosquitto ACL (the prefix a device owns, extra topics), the
device registry (authentication kinds, the plain listener) and provisioning (the instructions).

A device owns the topics below its prefix: ``<root>/<id>/…`` for a format with a
:attr:`DeviceFormat.topic_root`, ``<id>/…`` for one without. It may publish and read there and
nowhere else, except its format's :attr:`~DeviceFormat.announce_topic` (publish, with its own id
in the payload) and :attr:`~DeviceFormat.read_topics` (read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from wattlake.devices.base import Decoder
from wattlake.devices.status import StatusRegistry
from wattlake.schema import Reading

AuthKind = Literal["cert", "password"]
# The user-name placeholder of Mosquitto's ``pattern`` ACL lines.
MOSQUITTO_USER: Final = "%u"


@dataclass(frozen=True, slots=True)
class Route:
    """A topic pattern a format decodes, MQTT-style (``+`` one level, ``#`` one or more).

    ``device_level`` is the index of the level that names the device, None when the payload
    names it (``shellies/announce``).
    """

    pattern: str
    device_level: int | None

    @property
    def levels(self) -> tuple[str, ...]:
        """Return the pattern's levels."""
        return tuple(self.pattern.split("/"))


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What provisioning hands a format to tell the user how to connect a device.

    ``password`` is empty for a certificate client, ``cert_pem``/``key_pem`` empty for a
    password client; ``ca_pem`` is the project CA (empty without one).
    """

    device_id: str
    password: str
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    broker_host: str
    tls_port: int
    plain_port: int
    device_address: str


@dataclass(frozen=True, slots=True)
class DeviceFormat:
    """One device format: how its topics look, how it is decoded, secured and connected.

    - ``name``: the format's name in settings, the registry and the CLI (``shelly-gen2``).
    - ``title``: how messages to a person name its devices (``Shelly Gen1``).
    - ``routes``: the topics it decodes; a route whose first level is a literal is tried before
      one whose first level is ``+``, otherwise in table order (first match wins).
    - ``decoder``: makes the format's decoder, given the router's status registry.
    - ``instructions``: the lines that tell a person how to connect a device (provisioning).
    - ``topic_root``: the level before the device id in the device's own topics (``shellies``),
      empty when the id is the first level.
    - ``announce_topic``: a topic outside the prefix whose JSON payload's ``id`` names the
      device, which the device may publish on (the embedded broker checks the id).
    - ``read_topics``: topic filters outside the prefix the device may read.
    - ``auth``: the credentials its devices can use.
    - ``plain_listener``: its devices cannot do TLS and may use the opt-in plain listener.
    - ``render``: the simulator's payload of a format without device state: the topic and
      payload that carry canonical readings (``ts`` [ms], ``channel``, measurement columns) for
      a device id; None for a format the simulator models itself (Shelly: counters since boot,
      changed keys only).
    """

    name: str
    title: str
    routes: tuple[Route, ...]
    decoder: Callable[[StatusRegistry], Decoder]
    instructions: Callable[[Enrolment], list[str]]
    topic_root: str = ""
    announce_topic: str = ""
    read_topics: tuple[str, ...] = ()
    auth: tuple[AuthKind, ...] = ("cert", "password")
    plain_listener: bool = False
    render: Callable[[str, list[Reading]], tuple[str, bytes]] | None = None

    def prefix(self, device_id: str) -> tuple[str, ...]:
        """Return the topic levels every topic of device ``device_id`` starts with."""
        return (self.topic_root, device_id) if self.topic_root else (device_id,)

    def owns(self, device_id: str, topic: str) -> bool:
        """Return True when ``topic`` (or a topic filter) lies below ``device_id``'s prefix."""
        prefix = self.prefix(device_id)
        parts = topic.split("/")
        return len(parts) > len(prefix) and tuple(parts[: len(prefix)]) == prefix

    def acl_pattern(self) -> str:
        """Return the Mosquitto ``pattern`` topic of what a device of this format owns."""
        return "/".join((*self.prefix(MOSQUITTO_USER), "#"))

"""Choose the decoder for a message by its topic (or a per-device override), and decode it.

Routes come from the table of formats (:mod:`wattlake.devices.formats`, each format's
:class:`~wattlake.devices.descriptor.DeviceFormat`); first match wins, routes under a literal
root (``shellies/…``, ``wattlake/…``) before those whose first level is a device id:

====================================  ==============  =====================================
topic                                 format          device id
====================================  ==============  =====================================
``shellies/announce``                 ``shelly-gen1`` ``id`` in the announce document
``shellies/+/#`` (``emeter/+/+``,     ``shelly-gen1`` level 2
``online``, ``announce``, relay …)
``wattlake/+/readings``               ``generic``     level 2
``wattlake/+/csv``                    ``csv``         level 2
``+/events/rpc``                      ``shelly-gen2`` level 1 (the device's MQTT prefix)
``+/wattlake/rpc``                    ``shelly-gen2`` level 1 (answers to refill calls)
``+/rpc``                             ``shelly-gen2`` level 1 (calls to a device: no readings)
``+/status/+``                        ``shelly-gen2`` level 1
``+/online``                          ``shelly-gen2`` level 1
====================================  ==============  =====================================

The setting ``devices.formats`` (``device_id=format,...``) overrides the format per device: the
device is the level the matching route names, or, for a topic no route matches, the first level
that is a configured device id (e.g. a Gen2 meter with the prefix ``shellies/<id>`` publishes
``shellies/<id>/events/rpc``). Decoders read topics from the right (``.../events/rpc``,
``.../emeter/<ch>/<quantity>``, ``.../<id>/readings``), so an override works under every prefix
a broker grants a device (``<id>/``, ``shellies/<id>/``, ``wattlake/<id>/``); under another
prefix the topic belongs to another device and the identity rule below refuses it.

Every message is bound to the identity its topic belongs to (:mod:`wattlake.devices.identity`):
a message whose readings, or whose device facts, name another device is refused whole as
``identity-mismatch``, whatever format it is in. Decoders report what the payload says; this
module decides.

A decoder that fails with anything but :class:`~wattlake.errors.DecodeError` has a bug; the
message it failed on is refused all the same, as a ``decoder-error`` naming the exception, so
one strange payload becomes one dead letter instead of stopping the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Protocol, cast, runtime_checkable

from wattlake.devices.base import Decoded, Decoder, RawMessage
from wattlake.devices.formats import FORMATS as DEVICE_FORMATS
from wattlake.devices.formats import routes
from wattlake.devices.generic import GenericDecoder, topic_device
from wattlake.devices.identity import bound_identity, check
from wattlake.devices.status import DeviceStatus, StatusRegistry
from wattlake.errors import ConfigError, DecodeError
from wattlake.schema import Reading

log = logging.getLogger(__name__)

FORMATS_SETTING: Final = "devices.formats"
# The dead-letter reason of a message a decoder failed on with an unexpected exception.
DECODER_ERROR: Final = "decoder-error"
# Topic pattern -> (format, index of the level that names the device, None: in the payload).
ROUTES: Final[tuple[tuple[tuple[str, ...], str, int | None], ...]] = tuple(
    (route.levels, fmt, route.device_level) for route, fmt in routes()
)
TOPIC_CACHE_MAX: Final = 100_000
# The format whose arrays and lines have batch fast paths (:meth:`DecoderRouter.decode_many`).
GENERIC: Final = GenericDecoder.source
FORMATS: Final = frozenset(DEVICE_FORMATS)


@runtime_checkable
class HoldsReadings(Protocol):
    """A decoder that keeps readings between messages until they are complete."""

    def drain(self, now_ms: int | None = None) -> list[Reading]:
        """Return held readings: all (``now_ms`` None) or those quiet long enough [ms]."""
        ...


@runtime_checkable
class KeepsState(Protocol):
    """A decoder whose readings depend on the messages before (Gen2 sends only what changed)."""

    def state(self) -> list[list[Any]]:
        """Return what the decoder knows from earlier messages, JSON-ready."""
        ...

    def restore(self, state: list[list[Any]]) -> None:
        """Take what :meth:`state` returned (of an earlier decoder of the same format)."""
        ...


def decoder_error(fmt: str, exc: Exception) -> DecodeError:
    """Return the decode error that stands for decoder ``fmt`` failing with ``exc`` (a bug)."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return DecodeError(
        DECODER_ERROR,
        f"the {fmt} decoder failed with {type(exc).__name__}"
        + (f": {text}" if text else "")
        + " (a bug in wattlake's decoder; please report it with this payload)",
    )


def parse_formats(text: str) -> dict[str, str]:
    """Parse the ``devices.formats`` setting, ``device_id=format,...``, into a mapping.

    Raises:
        ConfigError: an entry is not ``device=format`` or names an unknown format.
    """
    formats: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        device_id, sep, fmt = (part.strip() for part in entry.partition("="))
        if not sep or not device_id or not fmt:
            raise ConfigError(
                f"{FORMATS_SETTING} entry {entry!r} is not device_id=format; fix the setting."
            )
        formats[device_id] = fmt
    return formats


def match(pattern: tuple[str, ...], parts: list[str]) -> bool:
    """Return True when topic levels ``parts`` match an MQTT-style ``pattern``."""
    if pattern[-1] == "#":
        fixed = pattern[:-1]
        if len(parts) <= len(fixed):
            return False
    elif len(parts) != len(pattern):
        return False
    else:
        fixed = pattern
    return all(p == "+" or p == part for p, part in zip(fixed, parts, strict=False))


class DecoderRouter:
    """Route each message to the decoder of its format; keep device status for all formats."""

    def __init__(
        self,
        *,
        max_payload_bytes: int = 262_144,
        formats: Mapping[str, str] | str | None = None,
        decoders: Mapping[str, Callable[[StatusRegistry], Decoder]] | None = None,
    ) -> None:
        """Create the decoders.

        ``formats`` maps device ids to a format name (or is the ``devices.formats`` text).
        ``decoders`` replaces the decoder of a format (name -> factory taking the status
        registry), e.g. to try a new decoder.

        Raises:
            ConfigError: ``formats`` names a format that does not exist.
        """
        self.max_payload_bytes = max_payload_bytes
        overrides = parse_formats(formats) if isinstance(formats, str) else dict(formats or {})
        unknown = sorted(f for f in overrides.values() if f not in FORMATS)
        if unknown:
            raise ConfigError(
                f"{FORMATS_SETTING} names unknown format {unknown[0]!r}; "
                f"use one of {', '.join(sorted(FORMATS))}."
            )
        self.formats = overrides
        # topic -> format: topics repeat (a few per device), matching them is not free
        self._topic_formats: dict[str, str] = {}
        self.status = StatusRegistry()
        self._decoders: dict[str, Decoder] = {
            name: fmt.decoder(self.status) for name, fmt in DEVICE_FORMATS.items()
        }
        builtin = dict(self._decoders)
        for fmt, factory in (decoders or {}).items():
            if fmt not in FORMATS:
                raise ConfigError(f"There is no device format {fmt!r} to replace.")
            self._decoders[fmt] = factory(self.status)
        # Decoders that hold readings between messages (Gen1 cycles) are drained before flushes.
        self._holding = [d for d in builtin.values() if isinstance(d, HoldsReadings)]
        # Batches of generic arrays and lines take the fast path of the built-in decoder only.
        self._generic = cast(GenericDecoder, builtin[GENERIC])
        self._batch_generic = self._decoders[GENERIC] is self._generic

    def format_for(self, topic: str) -> str:
        """Return the name of the format that decodes ``topic``.

        Raises:
            DecodeError: ``unknown-topic`` when no route and no override covers the topic.
        """
        fmt = self._topic_formats.get(topic)
        if fmt is None:
            fmt = self._route(topic)
            if len(self._topic_formats) >= TOPIC_CACHE_MAX:
                self._topic_formats.clear()
            self._topic_formats[topic] = fmt
        return fmt

    def _route(self, topic: str) -> str:
        parts = topic.split("/")
        for pattern, fmt, device_at in ROUTES:
            if match(pattern, parts):
                device_id = parts[device_at] if device_at is not None else None
                return self.formats.get(device_id, fmt) if device_id is not None else fmt
        if self.formats:
            for level in parts:
                if level in self.formats:
                    return self.formats[level]
        raise DecodeError("unknown-topic", f"no device format uses topic {topic[:200]!r}")

    def decode(self, message: RawMessage) -> Decoded:
        """Decode ``message`` into readings (dicts, or an Arrow table for large batches).

        Raises:
            DecodeError: the payload is too large, the topic unknown, or the payload bad; a
                decoder failing with another exception is a ``decoder-error``.
        """
        if len(message.payload) > self.max_payload_bytes:
            raise DecodeError(
                "oversized-payload",
                f"payload of {len(message.payload)} bytes exceeds {self.max_payload_bytes}",
            )
        fmt = self.format_for(message.topic)
        binding = self.status.binding
        binding.expected = expected = bound_identity(message.topic)
        binding.topic = message.topic
        try:
            decoded = self._decoders[fmt].decode(message)
        except DecodeError:
            raise
        except Exception as exc:
            # The dead letter names the exception; the traceback is for whoever fixes the bug.
            log.debug("the %s decoder failed on topic %s", fmt, message.topic[:200], exc_info=True)
            raise decoder_error(fmt, exc) from exc
        finally:
            binding.expected = None
        if expected is not None:
            check(expected, message.topic, decoded)
        return decoded

    def _batchable(self, message: RawMessage) -> bool:
        """Return True for a generic message the batch decoders may take: one whose topic's
        device is its publisher, so the readings they build from the topic are bound to it
        (the others take :meth:`decode`, which checks)."""
        payload = message.payload
        if not (
            self._batch_generic
            and payload[:1] in b"[{"
            and len(payload) <= self.max_payload_bytes
            and self.format_for(message.topic) == GENERIC
        ):
            return False
        return topic_device(message.topic) == bound_identity(message.topic)

    def decode_many(
        self, messages: Iterable[RawMessage]
    ) -> tuple[list[Decoded], list[tuple[RawMessage, DecodeError]]]:
        """Decode a batch of messages; return what they hold and each refused one with why.

        Generic-format arrays, and newline-delimited generic messages, are decoded together
        into one Arrow table each (the fast paths for device-side batches); everything else
        goes through :meth:`decode` one by one, and so does any batched message whose readings
        name a device (the identity check is :meth:`decode`'s). Every message is either
        decoded or refused, whatever a decoder raises.
        """
        decoded: list[Decoded] = []
        failed: list[tuple[RawMessage, DecodeError]] = []
        arrays: list[RawMessage] = []
        lines: list[RawMessage] = []
        for message in messages:
            try:
                payload = message.payload
                if self._batchable(message):
                    if payload[:1] == b"[":
                        arrays.append(message)
                        continue
                    if b"\n" in payload.strip():
                        lines.append(message)
                        continue
                decoded.append(self.decode(message))
            except DecodeError as exc:
                failed.append((message, exc))
        for batch, decode in (
            (arrays, self._generic.decode_arrays),
            (lines, self._generic.decode_ndjson),
        ):
            if batch:
                try:
                    table, refused = decode(batch, self.decode)
                except Exception as exc:  # a bug: find the message(s) it fails on, one by one
                    log.debug("the generic batch decoder failed; one by one now", exc_info=exc)
                    for message in batch:
                        try:
                            decoded.append(self.decode(message))
                        except DecodeError as one:
                            failed.append((message, one))
                    continue
                if table is not None:
                    decoded.append(table)
                failed += refused
        return decoded, failed

    def drain(self, now_ms: int | None = None) -> list[Reading]:
        """Return readings held in decoder state (Gen1 cycles not yet complete).

        ``now_ms`` None returns all of them (call it before a flush, so nothing sits only in
        memory); otherwise only cycles quiet for the cycle timeout at ``now_ms`` [ms].
        """
        return [reading for decoder in self._holding for reading in decoder.drain(now_ms)]

    def decoder_state(self) -> dict[str, list[list[Any]]]:
        """Return the state of every decoder that keeps some between messages (format ->
        state), JSON-ready: a decoder restarted with it decodes the next messages as this one
        would (the lake writer keeps it with each commit, for the WAL replayed after it)."""
        return {
            name: decoder.state()
            for name, decoder in self._decoders.items()
            if isinstance(decoder, KeepsState)
        }

    def restore_decoder_state(self, state: Mapping[str, list[list[Any]]]) -> None:
        """Take the decoder states that :meth:`decoder_state` returned (of an earlier router)."""
        for name, value in state.items():
            decoder = self._decoders.get(name)
            if isinstance(decoder, KeepsState):
                decoder.restore(value)

    def device_status(self) -> dict[str, DeviceStatus]:
        """Return what is known about every device seen: online, last seen, model, firmware."""
        return self.status.snapshot()

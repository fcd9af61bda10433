"""What every device decoder receives and returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

import pyarrow as pa

from wattlake.schema import Reading

Decoded: TypeAlias = list[Reading] | pa.Table
"""What a decoder returns: reading dicts, or for large batches an Arrow table that already has
exactly :data:`wattlake.schema.READING_SCHEMA` (the fast path that skips Python objects)."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as the gateway received it, before any decoding."""

    topic: str
    payload: bytes
    received_at_ms: int


class Decoder(Protocol):
    """A decoder for one payload format.

    Decoders may keep state between messages (Gen2 ``NotifyStatus`` carries only changed keys;
    Gen1 sends one value per topic), so the router keeps one instance per format.
    """

    source: str

    def decode(self, message: RawMessage) -> Decoded:
        """Return the readings in ``message`` (possibly none, e.g. a status message).

        Raises:
            wattlake.errors.DecodeError: the payload cannot be decoded; its ``reason`` names why.
        """
        ...

"""Choose the decoder for a message by its topic, and decode it."""

from __future__ import annotations

from typing import Final

from wattlake.devices.base import Decoder, RawMessage
from wattlake.devices.shelly_gen2 import ShellyGen2Decoder
from wattlake.errors import DecodeError
from wattlake.schema import Reading


class DecoderRouter:
    """Route each message to the decoder of its format, chosen by topic pattern."""

    def __init__(self, *, max_payload_bytes: int = 262_144) -> None:
        self.max_payload_bytes = max_payload_bytes
        self._gen2 = ShellyGen2Decoder()

    def decoder_for(self, topic: str) -> Decoder | None:
        """Return the decoder for ``topic``, or None for a topic that carries no readings."""
        parts = topic.split("/")
        if len(parts) == 3 and parts[1:] == ["events", "rpc"]:
            return self._gen2
        if len(parts) == 2 and parts[1] == "online":
            return None
        raise DecodeError("unknown-topic", f"no device format uses topic {topic!r}")

    def decode(self, message: RawMessage) -> list[Reading]:
        """Decode ``message`` into readings.

        Raises:
            DecodeError: the payload is too large, the topic unknown, or the payload bad.
        """
        if len(message.payload) > self.max_payload_bytes:
            raise DecodeError(
                "oversized-payload",
                f"payload of {len(message.payload)} bytes exceeds {self.max_payload_bytes}",
            )
        decoder = self.decoder_for(message.topic)
        return [] if decoder is None else decoder.decode(message)


STATUS_ONLY: Final = ("online",)

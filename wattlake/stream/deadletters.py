"""Dead letters: every payload that could not be decoded, kept with its reason and raw bytes.

Written like Firehose's error output: JSON lines under
``errors/<reason>/date=YYYY-MM-DD/<stream>-<seq>-<time>-<rand>.jsonl``.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from wattlake.devices.base import RawMessage
from wattlake.lake.storage import ERRORS, Lake
from wattlake.stream.naming import date_partition, object_name


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message that could not be turned into readings, and why."""

    message: RawMessage
    error_code: str
    error_message: str
    attempts: int = 1

    def to_record(self, stream: str) -> dict[str, object]:
        """Return the JSON record written to the lake."""
        raw = self.message.payload
        try:
            text: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        arrival = datetime.fromtimestamp(self.message.received_at_ms / 1000, UTC)
        return {
            "attempts": self.attempts,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "arrival_time": arrival.isoformat(timespec="milliseconds"),
            "arrival_ms": self.message.received_at_ms,
            "stream": stream,
            "topic": self.message.topic,
            "raw_base64": base64.b64encode(raw).decode("ascii"),
            "raw_text": text,
        }


def write_dead_letters(lake: Lake, stream: str, seq: int, letters: list[DeadLetter]) -> list[str]:
    """Write ``letters`` grouped by reason and arrival date; return the objects written.

    Raises:
        wattlake.errors.TransientStorageError: the lake could not be written.
    """
    groups: dict[tuple[str, str], list[bytes]] = defaultdict(list)
    encoder = msgspec.json.Encoder()
    for letter in letters:
        key = (letter.error_code, date_partition(letter.message.received_at_ms))
        groups[key].append(encoder.encode(letter.to_record(stream)))
    written = []
    for (reason, date), lines in sorted(groups.items()):
        name = object_name(stream, seq, ".jsonl")
        written.append(
            lake.write_bytes(f"{ERRORS}/{reason}/{date}/{name}", b"\n".join(lines) + b"\n")
        )
    return written

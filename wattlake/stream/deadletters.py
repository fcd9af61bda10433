"""Dead letters: every payload that could not be decoded, kept with its reason and raw bytes.

Written like Firehose's error output, to the lake's ``dead_letters`` table (partitioned by
arrival day); before the Iceberg tables they were JSON lines under ``errors/<reason>/``
(``jobs run migrate`` moves those into the table).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from wattlake.devices.base import RawMessage
from wattlake.schema import DEAD_LETTERS_STORED


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


def dead_letters_table(letters: list[DeadLetter], stream: str) -> pa.Table:
    """Return ``letters`` as rows of table ``dead_letters``."""
    texts: list[str | None] = []
    for letter in letters:
        try:
            texts.append(letter.message.payload.decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
    columns = {
        "received_at": pa.array(
            [d.message.received_at_ms * 1000 for d in letters], pa.int64()
        ).cast(DEAD_LETTERS_STORED.field("received_at").type),
        "stream": [stream] * len(letters),
        "topic": [d.message.topic for d in letters],
        "error_code": [d.error_code for d in letters],
        "error_message": [d.error_message for d in letters],
        "attempts": [d.attempts for d in letters],
        "payload": [bytes(d.message.payload) for d in letters],
        "raw_text": texts,
    }
    return pa.Table.from_pydict(columns, schema=DEAD_LETTERS_STORED)

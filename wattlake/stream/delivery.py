"""Buffer decoded readings and deliver them to the lake as Parquet, Firehose-style.

A flush happens when the buffer reaches ``buffer_max_bytes`` or ``buffer_max_rows``, or when
``flush_interval_s`` has passed since the last one, whichever comes first. Readings are
partitioned by their own UTC date and hour, so late data lands in its own partition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow.compute as pc

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.errors import DecodeError
from wattlake.lake.storage import RAW_READINGS, Lake
from wattlake.schema import Reading, readings_to_table
from wattlake.stream.deadletters import DeadLetter, write_dead_letters
from wattlake.stream.naming import MS_PER_HOUR, hour_partition, object_name

log = logging.getLogger(__name__)

# Rough in-memory size of one buffered reading, for the byte limit [bytes].
READING_BYTES_ESTIMATE = 400


@dataclass(slots=True)
class StreamStats:
    """Counters a stream keeps for logs and metrics."""

    messages: int = 0
    readings: int = 0
    dead_letters: int = 0
    files_written: int = 0
    rows_written: int = 0
    flushes: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlushLimits:
    """When a stream flushes: whichever limit is reached first."""

    flush_interval_s: float = 60.0
    buffer_max_bytes: int = 5 * 1024 * 1024
    buffer_max_rows: int = 500_000


class DeliveryStream:
    """Decode raw messages, buffer readings, and write them to the lake's ``raw/`` area."""

    def __init__(
        self,
        lake: Lake,
        *,
        name: str = "ingest",
        router: DecoderRouter | None = None,
        limits: FlushLimits | None = None,
        compression: str = "zstd",
    ) -> None:
        self.lake = lake
        self.name = name
        self.router = router or DecoderRouter()
        self.limits = limits or FlushLimits()
        self.compression = compression
        self.stats = StreamStats()
        self._lock = threading.RLock()
        self._partitions: dict[int, list[Reading]] = defaultdict(list)
        self._dead: list[DeadLetter] = []
        self._rows = 0
        self._seq = 0
        self._last_flush = time.monotonic()

    @property
    def buffered_rows(self) -> int:
        """Return how many readings wait in the buffer."""
        return self._rows

    def accept(self, messages: Iterable[RawMessage]) -> None:
        """Decode ``messages`` into the buffer; undecodable ones become dead letters.

        Flushes when a size limit is reached.
        """
        with self._lock:
            for message in messages:
                self.stats.messages += 1
                try:
                    readings = self.router.decode(message)
                except DecodeError as exc:
                    self._dead_letter(DeadLetter(message, exc.reason, str(exc)))
                    continue
                for reading in readings:
                    self._partitions[reading["ts"] // MS_PER_HOUR].append(reading)
                self._rows += len(readings)
                self.stats.readings += len(readings)
            if self._rows >= self.limits.buffer_max_rows or (
                self._rows * READING_BYTES_ESTIMATE >= self.limits.buffer_max_bytes
            ):
                self.flush()

    def _dead_letter(self, letter: DeadLetter) -> None:
        self._dead.append(letter)
        self.stats.dead_letters += 1
        by_reason = self.stats.dead_letters_by_reason
        by_reason[letter.error_code] = by_reason.get(letter.error_code, 0) + 1
        log.warning(
            "dead letter %s on topic %s: %s",
            letter.error_code,
            letter.message.topic,
            letter.error_message,
        )

    def flush_due(self) -> bool:
        """Return True when ``flush_interval_s`` has passed since the last flush."""
        return time.monotonic() - self._last_flush >= self.limits.flush_interval_s

    def flush(self) -> list[str]:
        """Write every buffered reading and dead letter to the lake; return the objects written.

        Raises:
            wattlake.errors.TransientStorageError: the lake could not be written; the buffer is
                kept and the flush can be retried.
        """
        with self._lock:
            written: list[str] = []
            for hour_index in sorted(self._partitions):
                readings = self._partitions[hour_index]
                table = readings_to_table(readings)
                order = pc.sort_indices(
                    table,
                    sort_keys=[
                        ("device_id", "ascending"),
                        ("channel", "ascending"),
                        ("ts", "ascending"),
                    ],
                )
                table = table.take(order)
                name = object_name(self.name, self._next_seq(), ".parquet")
                relative = f"{RAW_READINGS}/{hour_partition(hour_index)}/{name}"
                written.append(self.lake.write_table(relative, table, compression=self.compression))
                del self._partitions[hour_index]
                self._rows -= len(readings)
                self.stats.files_written += 1
                self.stats.rows_written += table.num_rows
            if self._dead:
                written += write_dead_letters(self.lake, self.name, self._next_seq(), self._dead)
                self._dead = []
            self._last_flush = time.monotonic()
            self.stats.flushes += 1
            if written:
                log.info("flushed %d object(s) to %s", len(written), self.lake.url)
            return written

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

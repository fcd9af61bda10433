"""Buffer decoded readings and deliver them to the lake's Iceberg tables, Firehose-style.

A flush is wanted when the buffer reaches ``buffer_max_bytes`` or ``buffer_max_rows``, or when
``flush_interval_s`` has passed since the last one, whichever comes first; the owner of the
stream decides when to flush (the ingest worker first makes the messages durable in its WAL).
The buffer holds Arrow tables, not Python objects, so its memory is what ``buffer_max_bytes``
counts. A flush appends the readings to table ``readings`` in one Iceberg commit (one data file
per UTC day of the readings' own time, so late data lands in its own partition, sorted by
device, channel and time) and the dead letters to table ``dead_letters``. The commit may carry
snapshot summary properties: the lake writer records its WAL position there, so a restarted
writer knows what is already committed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy.exc

from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.errors import TransientStorageError
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import DEAD_LETTERS_TABLE, READINGS_TABLE, Reading, readings_to_table
from wattlake.stream.deadletters import DeadLetter, dead_letters_table
from wattlake.stream.metrics import IngestCounters

log = logging.getLogger(__name__)


@contextlib.contextmanager
def catalog_failures(lake: Lake) -> Iterator[None]:
    """Report a SQL catalog whose database cannot be used (disk full, locked, gone) as the lake
    being unwritable, like a data file that cannot be written: the writer retries later."""
    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        raise TransientStorageError(
            f"Cannot write the catalog of {lake.url}: {exc.orig or exc}"
        ) from exc


@dataclass(slots=True, kw_only=True)
class StreamStats(IngestCounters):
    """Counters a stream keeps for logs and metrics (the lake writer also counts into it what
    it replays, per device format, and its latencies)."""

    flushes: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlushLimits:
    """When a stream flushes: whichever limit is reached first."""

    flush_interval_s: float = 60.0
    buffer_max_bytes: int = 5 * 1024 * 1024
    buffer_max_rows: int = 500_000
    # When set, the first flush of readings comes this soon [s] and the interval doubles with
    # each one up to ``flush_interval_s``: readings are queryable at once after a start, and
    # files grow big once the stream runs.
    first_flush_interval_s: float = 0.0


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
        self._tables: list[pa.Table] = []
        self._bytes = 0
        self._dead: list[DeadLetter] = []
        self._rows = 0
        self._last_flush = time.monotonic()
        self._interval_s = self.limits.first_flush_interval_s or self.limits.flush_interval_s

    @property
    def buffered_rows(self) -> int:
        """Return how many readings wait in the buffer."""
        return self._rows

    @property
    def buffered_bytes(self) -> int:
        """Return the memory held by buffered readings [bytes]."""
        return self._bytes

    def accept(self, messages: Iterable[RawMessage]) -> None:
        """Decode ``messages`` into the buffer; undecodable ones become dead letters."""
        with self._lock:
            batch = list(messages)
            self.stats.messages += len(batch)
            decoded, failed = self.router.decode_many(batch)
            for message, exc in failed:
                self._dead_letter(DeadLetter(message, exc.reason, str(exc)))
            dicts: list[Reading] = []
            for item in decoded:
                if isinstance(item, pa.Table):
                    self._add(item)
                else:
                    dicts += item
            dicts += self.router.drain(time.time_ns() // 1_000_000)
            if dicts:
                self._add(readings_to_table(dicts))

    def reject(self, message: RawMessage, reason: str, text: str) -> None:
        """Keep ``message`` as a dead letter with ``reason`` without decoding it.

        For input that a source already knows to be bad (a file row without a timestamp).
        """
        with self._lock:
            self.stats.messages += 1
            self._dead_letter(DeadLetter(message, reason, text))

    def _add(self, table: pa.Table) -> None:
        too_large = tables.unstorable(table)
        if too_large:  # kept as dead letters, the rest goes on
            for row, why in too_large.items():
                one = table.slice(row, 1)
                reading = {k: v for k, v in one.to_pylist()[0].items() if v is not None}
                self._dead_letter(
                    DeadLetter(
                        RawMessage(
                            f"reading of {reading.get('device_id')}",
                            json.dumps(reading, default=str).encode(),
                            one["received_at"].cast(pa.int64())[0].as_py(),
                        ),
                        "out-of-range",
                        why,
                    )
                )
            keep = np.ones(table.num_rows, dtype=np.bool_)
            keep[list(too_large)] = False
            table = table.filter(pa.array(keep))
        if table.num_rows:
            self._tables.append(table)
            self._rows += table.num_rows
            self._bytes += table.nbytes
            self.stats.readings += table.num_rows

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
        return time.monotonic() - self._last_flush >= self._interval_s

    def flush_wanted(self) -> bool:
        """Return True when a buffering limit (time, bytes or rows) has been reached."""
        return (
            self._rows >= self.limits.buffer_max_rows
            or self._bytes >= self.limits.buffer_max_bytes
            or self.flush_due()
        )

    def flush(self) -> list[str]:
        """Write every buffered reading and dead letter to the lake; return the objects written.

        Raises:
            wattlake.errors.TransientStorageError: the lake could not be written; whatever was
                not written stays in the buffer and the flush can be retried.
        """
        batch = self.detach()
        try:
            return self.write(batch)
        except BaseException:
            self.reattach(batch)
            raise

    def detach(self) -> FlushBatch:
        """Take everything buffered out of the buffer, to be written by :meth:`write`.

        Readings that decoders still hold (e.g. an incomplete Gen1 publish cycle) are taken
        too, so nothing stays only in memory after a flush. New messages may be accepted while
        the batch is written (e.g. in another thread).
        """
        with self._lock:
            held = self.router.drain(None)
            if held:
                self._add(readings_to_table(held))
            batch = FlushBatch(self._tables, self._dead, self._rows, self._bytes)
            self._tables, self._dead, self._rows, self._bytes = [], [], 0, 0
            self._last_flush = time.monotonic()
            if batch.rows:  # the warm-up ramp (first_flush_interval_s) grows with data only
                self._interval_s = min(self.limits.flush_interval_s, self._interval_s * 2)
            return batch

    def reattach(self, batch: FlushBatch) -> None:
        """Put back what :meth:`write` could not write, ahead of newer readings."""
        with self._lock:
            self._tables = batch.tables + self._tables
            self._dead = batch.dead + self._dead
            self._rows += batch.rows
            self._bytes += batch.nbytes

    def write(self, batch: FlushBatch, properties: Mapping[str, str] | None = None) -> list[str]:
        """Append ``batch`` to the lake's tables: dead letters first, then the readings in one
        commit with snapshot summary ``properties``; return the data files written.

        Safe to run in another thread than :meth:`accept`. On failure ``batch`` keeps exactly
        what was not committed yet.

        Raises:
            wattlake.errors.TransientStorageError: the lake could not be written.
        """
        with catalog_failures(self.lake):
            return self._write(batch, properties)

    def _write(self, batch: FlushBatch, properties: Mapping[str, str] | None) -> list[str]:
        written: list[str] = []
        if batch.dead:
            files = tables.append(
                self.lake, DEAD_LETTERS_TABLE, dead_letters_table(batch.dead, self.name)
            )
            written += [f.file_path for f in files]
            batch.dead = []
        if batch.tables or properties:
            table = pa.concat_tables(batch.tables) if batch.tables else None
            files = tables.append(
                self.lake,
                READINGS_TABLE,
                table if table is not None else readings_to_table([]),
                properties,
            )
            written += [f.file_path for f in files]
            rows = 0 if table is None else table.num_rows
            batch.tables, batch.rows, batch.nbytes = [], 0, 0
            with self._lock:
                self.stats.files_written += len(files)
                self.stats.rows_written += rows
        with self._lock:
            self.stats.flushes += 1
        if written:
            log.info("flushed %d data file(s) to %s", len(written), self.lake.url)
        return written

    def warm_up(self) -> None:
        """Pay the first-call costs (lazy imports, Arrow's JSON reader, sorting, the Parquet
        writer) before real data comes, on a sample that goes nowhere; a router of its own
        keeps the sample out of device status."""
        now_ms = time.time_ns() // 1_000_000
        topic = "wattlake/warm-up/readings"
        sample = [
            RawMessage(topic, b'{"ts": 1767225600, "power_w": 1.0}\n{"ts": 1767225601}', now_ms),
            RawMessage(topic, b'[{"ts": 1767225600, "power_w": 1.0}]', now_ms),
        ]
        decoded, _ = DecoderRouter().decode_many(sample)
        table = pa.concat_tables([t for t in decoded if isinstance(t, pa.Table)])
        table = table.take(pc.sort_indices(table, sort_keys=[("device_id", "ascending")]))
        pq.write_table(table, io.BytesIO(), compression=self.compression)


@dataclass(slots=True)
class FlushBatch:
    """Buffered readings and dead letters on their way to the lake."""

    tables: list[pa.Table]
    dead: list[DeadLetter]
    rows: int
    nbytes: int


def stream_from_settings(settings: Settings, lake: Lake) -> DeliveryStream:
    """Return a delivery stream configured by ``settings``."""
    limits = FlushLimits(
        flush_interval_s=settings["stream.flush_interval_s"],
        buffer_max_bytes=settings["stream.buffer_max_bytes"],
        buffer_max_rows=settings["stream.buffer_max_rows"],
        first_flush_interval_s=settings["stream.first_flush_s"],
    )
    return DeliveryStream(
        lake,
        name=settings["stream.name"],
        router=DecoderRouter(
            max_payload_bytes=settings["ingest.max_payload_bytes"],
            formats=settings["devices.formats"],
        ),
        limits=limits,
        compression=settings["stream.compression"],
    )

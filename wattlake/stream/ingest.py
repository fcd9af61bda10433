"""An ingest worker: MQTT messages in, readings delivered to the lake, nothing acknowledged lost.

Each batch of messages taken from the broker goes through the same steps, in this order:

1. append the raw messages to the write-ahead log and ``fsync`` once (group commit);
2. acknowledge them to the broker (PUBACK): only now may a device forget them;
3. decode them into the stream's buffer.

When the buffer is due, the WAL's open segment is closed, the buffer is written to the lake,
and only then are the closed segments deleted. A crash anywhere leaves every acknowledged
message in the WAL or in committed lake files; on start the WAL is replayed. A message may
reach the lake twice (written, then replayed or sent again by the broker): the ``readings``
view and compaction keep one row per (device_id, channel, ts).

When the lake cannot be written the worker keeps the buffer, goes on logging messages to the
WAL (not decoding them) and retries with exponential backoff; when the WAL reaches
``stream.wal_max_bytes`` it stops taking messages, so the broker stops sending and devices
keep their data until the lake is back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from wattlake.config import Settings
from wattlake.devices.router import DecoderRouter
from wattlake.errors import ConfigError, StorageError
from wattlake.gateway.mqtt import BrokerAddress, Delivery, MqttSource, TlsOptions
from wattlake.lake.storage import Lake
from wattlake.stream.delivery import DeliveryStream, FlushBatch, FlushLimits
from wattlake.stream.metrics import WRITE_EVERY_S, IngestFigures, MetricsFile
from wattlake.stream.wal import WriteAheadLog, read_segment

log = logging.getLogger(__name__)

# How long the broker may stay silent before a draining worker decides it has everything [s].
DRAIN_QUIET_S = 0.5
# The longest a draining worker keeps taking messages after it was asked to stop [s].
DRAIN_MAX_S = 10.0
# First wait before retrying a failed lake write or WAL append [s]; it doubles each time.
RETRY_FIRST_S = 0.5


def stream_from_settings(settings: Settings, lake: Lake) -> DeliveryStream:
    """Return a delivery stream configured by ``settings``."""
    limits = FlushLimits(
        flush_interval_s=settings["stream.flush_interval_s"],
        buffer_max_bytes=settings["stream.buffer_max_bytes"],
        buffer_max_rows=settings["stream.buffer_max_rows"],
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


def wal_dir_from_settings(settings: Settings, lake: Lake) -> Path:
    """Return the WAL folder: ``stream.wal_dir``, else ``wal/<stream>`` in a local lake, else
    ``~/.local/state/wattlake/wal/<stream>`` for a lake in S3.

    Raises:
        ConfigError: a WAL cannot live in object storage.
    """
    configured = settings["stream.wal_dir"]
    if configured:
        if "://" in configured:
            raise ConfigError(f"stream.wal_dir {configured!r} must be a local folder.")
        return Path(configured)
    if lake.is_local:
        return Path(lake.root) / "wal" / settings["stream.name"]
    return Path.home() / ".local/state/wattlake/wal" / settings["stream.name"]


@dataclass(slots=True)
class Backoff:
    """Exponential retry delays, from ``first_s`` doubling up to ``max_s``."""

    first_s: float
    max_s: float
    delay_s: float = 0.0
    next_at: float = 0.0
    failures: int = 0

    def failed(self) -> float:
        """Record a failure and return the wait before the next attempt [s]."""
        self.failures += 1
        self.delay_s = min(self.max_s, self.first_s if self.delay_s == 0 else self.delay_s * 2)
        self.next_at = time.monotonic() + self.delay_s
        return self.delay_s

    def due(self) -> bool:
        """Return True when the next attempt may start."""
        return time.monotonic() >= self.next_at

    def reset(self) -> None:
        """Forget earlier failures."""
        self.delay_s, self.failures = 0.0, 0


@dataclass(slots=True)
class IngestHealth:
    """What is wrong, if anything, for logs and metrics."""

    lake_ok: bool = True
    wal_ok: bool = True
    acknowledging: bool = True
    last_error: str = ""
    acked: int = 0
    replayed: int = 0


class IngestWorker:
    """Subscribe to a broker and deliver what arrives until told to stop."""

    def __init__(
        self,
        settings: Settings,
        broker_url: str,
        *,
        client_id: str | None = None,
        lake: Lake | None = None,
        mqtt5: bool = True,
        shared_group: str = "",
        drain: bool = False,
    ) -> None:
        self.lake = lake or Lake.from_settings(settings)
        self.stream = stream_from_settings(settings, self.lake)
        self.wal = WriteAheadLog(
            wal_dir_from_settings(settings, self.lake),
            segment_max_bytes=settings["stream.wal_segment_bytes"],
        )
        self.wal_max_bytes: int = settings["stream.wal_max_bytes"]
        self.backoff = Backoff(RETRY_FIRST_S, settings["stream.retry_max_s"])
        self.health = IngestHealth()
        self.drain = drain
        topics = [t.strip() for t in settings["ingest.topics"].split(",") if t.strip()]
        if client_id is None:
            client_id = f"wattlake-{settings['stream.name']}-{socket.gethostname()}"
        self.source = MqttSource(
            BrokerAddress.parse(broker_url),
            topics=topics,
            qos=settings["ingest.qos"],
            client_id=client_id,
            mqtt5=mqtt5,
            shared_group=shared_group,
            session_expiry_s=settings["ingest.session_expiry_s"],
            max_inflight=settings["ingest.max_inflight"],
            username=settings["ingest.username"],
            password=settings["ingest.password"],
            tls=TlsOptions(
                ca_file=settings["ingest.tls_ca_file"],
                cert_file=settings["ingest.tls_cert_file"],
                key_file=settings["ingest.tls_key_file"],
                insecure=settings["ingest.tls_insecure"],
            ),
        )
        self.ready = threading.Event()
        metrics_path = settings["stream.metrics_file"]
        self.metrics = MetricsFile(
            Path(metrics_path) if metrics_path else self.wal.directory / "metrics.prom",
            self.figures,
        )
        self._metrics_written_at = 0.0
        # Closed WAL segments whose messages are all in the stream's buffer ...
        self._loaded: list[Path] = []
        # ... and those that are not (left by an earlier run, or logged while the lake was
        # unwritable); they are read back into the buffer once the lake takes writes.
        self._pending: deque[Path] = deque()
        # Deliveries that could not be written to the WAL, retried before anything new, and
        # whether they are in the buffer already (decoding overlaps the WAL sync).
        self._held: list[Delivery] = []
        self._held_buffered = False
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-sync")
        # At most one flush runs in the background: (its future, its batch, its segments).
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-flush")
        self._in_flight: tuple[Future[list[str]], FlushBatch, list[Path]] | None = None

    @property
    def degraded(self) -> bool:
        """Return True while the lake cannot be written (messages only go to the WAL)."""
        return not self.health.lake_ok

    def run(self, stop: threading.Event) -> None:
        """Replay the WAL, then ingest until ``stop`` is set; flush and return.

        Raises:
            wattlake.errors.BrokerError: the broker cannot be reached.
            wattlake.errors.ConfigError: the WAL folder is in use or unusable.
            wattlake.errors.StorageError: at exit, readings remain in the WAL only (the lake
                could not be written); they are delivered on the next start.
        """
        self._pending.extend(self.wal.open())
        try:
            if self._pending:
                log.info(
                    "replaying %d WAL segment(s) from %s", len(self._pending), self.wal.directory
                )
                self._catch_up()
            self.source.start()
            try:
                self.ready.set()
                while not stop.is_set():
                    self._step()
                self._finish_taking()
            finally:
                self.source.stop()
            self._final_flush()
        finally:
            self._syncer.shutdown()
            self._flusher.shutdown()
            self.wal.close()
            self.write_metrics()

    def _finish_taking(self) -> None:
        """After a stop: take what the broker already sent (all of it, when draining)."""
        started = quiet_since = time.monotonic()
        limit_s = DRAIN_MAX_S if self.drain else 1.0
        while self._step(timeout_s=0.05) and time.monotonic() - started < limit_s:
            quiet_since = time.monotonic()
        if not self.drain:
            return
        while time.monotonic() - quiet_since < DRAIN_QUIET_S and (
            time.monotonic() - started < DRAIN_MAX_S
        ):
            if self._step():
                quiet_since = time.monotonic()

    def _step(self, timeout_s: float = 0.1) -> bool:
        """Take one batch from the broker through WAL, ack and buffer; flush or retry when due.

        Returns True when messages were taken.
        """
        took = False
        self._collect_flush()
        if self._held:
            if self.backoff.due():
                self._log_to_wal(self._held)
            else:
                time.sleep(min(timeout_s, 0.05))
        elif self.wal.total_bytes >= self.wal_max_bytes and self.degraded:
            if self.health.acknowledging:
                self.health.acknowledging = False
                log.error(
                    "the WAL holds %d bytes, its limit (stream.wal_max_bytes); no longer taking "
                    "messages until the lake can be written: the broker and devices keep them",
                    self.wal.total_bytes,
                )
                self.write_metrics()
            time.sleep(min(timeout_s, 0.05))
        elif self._buffer_full():
            time.sleep(0.005)  # memory bound: the broker waits until the flush in flight ends
        else:
            batch = self.source.take(timeout_s=timeout_s)
            if batch:
                took = True
                self._log_to_wal(batch)
        if self.degraded:
            if self.backoff.due():
                self._recover()
        elif self._in_flight is None and (
            self.stream.flush_wanted() or self.wal.total_bytes >= self.wal_max_bytes
        ):
            self._start_flush()
        if time.monotonic() - self._metrics_written_at >= WRITE_EVERY_S:
            self.write_metrics()
        return took

    def figures(self) -> IngestFigures:
        """Return what the worker has done and how it is, for metrics."""
        stats = self.stream.stats
        return IngestFigures(
            stream=self.stream.name,
            lake_writable=self.health.lake_ok,
            wal_writable=self.health.wal_ok,
            acknowledging=self.health.acknowledging,
            wal_bytes=self.wal.total_bytes,
            buffered_rows=self.stream.buffered_rows,
            messages=stats.messages,
            readings=stats.readings,
            dead_letters=stats.dead_letters,
            acknowledged=self.health.acked,
            replayed=self.health.replayed,
            files_written=stats.files_written,
        )

    def write_metrics(self) -> None:
        """Rewrite the metrics file now (a failure is logged, never fatal)."""
        self._metrics_written_at = time.monotonic()
        try:
            self.metrics.write()
        except OSError as exc:
            log.warning("cannot write the metrics file %s: %s", self.metrics.path, exc)

    def _log_to_wal(self, batch: list[Delivery]) -> None:
        """Make ``batch`` durable, acknowledge it, and buffer it unless the lake is down.

        The ``fsync`` runs in a helper thread, which acknowledges the batch as soon as it is
        durable, while this thread decodes it: the broker sends more meanwhile.
        """
        messages = [d.message for d in batch]
        if self.wal.current_bytes >= self.wal.segment_max_bytes:
            self._rotate()
        try:
            self.wal.append(messages)
            syncing = self._syncer.submit(self.wal.sync)
            # Acknowledge the moment the sync is done, so the broker refills its window while
            # the batch is decoded here.
            syncing.add_done_callback(lambda done: self._ack_if_synced(done, batch))
            if not self.degraded and not self._held_buffered:
                self.stream.accept(messages)
                self._held_buffered = True
            syncing.result()
        except OSError as exc:
            self._rotate()  # the segment a failed write closed keeps its synced records
            self._held = batch
            wait = self.backoff.failed()
            self.health.wal_ok = False
            self.health.last_error = f"cannot write the WAL in {self.wal.directory}: {exc}"
            log.error(
                "%s; %d message(s) not acknowledged (the broker keeps them); retrying in %.1f s",
                self.health.last_error,
                len(batch),
                wait,
            )
            return
        if not self.health.wal_ok:
            log.warning("the WAL in %s takes writes again", self.wal.directory)
            self.health.wal_ok = True
            if self.health.lake_ok:
                self.backoff.reset()
        self._held, self._held_buffered = [], False
        self.health.acked += len(batch)

    def _ack_if_synced(self, sync: Future[None], batch: list[Delivery]) -> None:
        if sync.exception() is None:
            self.source.ack(batch)

    def _rotate(self) -> None:
        """Close the WAL's open segment; file it by whether its messages are in the buffer."""
        closed = self.wal.rotate()
        if closed is not None:
            (self._pending if self.degraded else self._loaded).append(closed)

    def _buffer_full(self) -> bool:
        """Return True when a flush is in flight and the buffer has filled twice over since."""
        limits = self.stream.limits
        return self._in_flight is not None and (
            self.stream.buffered_rows >= 2 * limits.buffer_max_rows
            or self.stream.buffered_bytes >= 2 * limits.buffer_max_bytes
        )

    def _start_flush(self) -> None:
        """Write the buffer to the lake in the background; intake goes on meanwhile."""
        self._rotate()
        segments, self._loaded = self._loaded, []
        batch = self.stream.detach()
        self._in_flight = (self._flusher.submit(self.stream.write, batch), batch, segments)

    def _collect_flush(self, *, wait: bool = False) -> bool | None:
        """Finish the background flush if it is done (or ``wait``): drop the WAL segments it
        covered, or on failure put its readings back.

        Returns None when no flush finished, else whether it succeeded.
        """
        if self._in_flight is None:
            return None
        future, batch, segments = self._in_flight
        if not wait and not future.done():
            return None
        self._in_flight = None
        try:
            future.result()
        except StorageError as exc:
            self.stream.reattach(batch)
            self._loaded = segments + self._loaded
            self._lake_failed(exc)
            return False
        self.wal.delete(segments)
        return True

    def _flush(self) -> bool:
        """Write the buffer to the lake now, then drop the WAL segments it covered.

        Returns False when the lake cannot be written (the worker is then degraded).
        """
        if self._collect_flush(wait=True) is False:
            return False
        self._start_flush()
        return self._collect_flush(wait=True) is True

    def _lake_failed(self, exc: StorageError) -> None:
        """Go (or stay) degraded: messages only go to the WAL until a retry succeeds."""
        self._rotate()  # close the open segment while it is still filed by the current mode
        wait = self.backoff.failed()
        if self.health.lake_ok:
            log.error(
                "cannot write to the lake %s: %s. Messages are kept in the WAL (%s, up to "
                "%d bytes) and acknowledged; retrying in %.1f s",
                self.lake.url,
                exc,
                self.wal.directory,
                self.wal_max_bytes,
                wait,
            )
        else:
            log.error("the lake is still unwritable (%s); retrying in %.1f s", exc, wait)
        self.health.lake_ok = False
        self.health.last_error = f"cannot write to the lake {self.lake.url}: {exc}"
        self.write_metrics()

    def _recover(self) -> None:
        """Retry the lake; when it takes writes, read back what only the WAL holds."""
        if not self._flush():
            return
        log.warning("the lake %s takes writes again; catching up from the WAL", self.lake.url)
        self.health.lake_ok = True
        self.health.acknowledging = True
        self.health.last_error = ""
        self.backoff.reset()
        self._catch_up()
        self.write_metrics()

    def _catch_up(self) -> None:
        """Read pending WAL segments into the buffer, oldest first, flushing as limits say."""
        self._rotate()
        while self._pending:
            segment = self._pending[0]
            for messages in read_segment(segment):
                self.stream.accept(messages)
                self.health.replayed += len(messages)
            self._loaded.append(self._pending.popleft())
            if self.stream.flush_wanted() and not self._flush():
                return
        self._flush()

    def _final_flush(self) -> None:
        """Flush at exit; if the lake is still down, say where the data waits."""
        if self.degraded:
            self._recover()
        else:
            self._flush()
        if self.degraded or self._held:
            raise StorageError(
                f"{self.health.last_error}. {self.wal.total_bytes} bytes of acknowledged "
                f"messages stay in the WAL at {self.wal.directory}; the next start of the "
                "ingest delivers them."
            )

    def describe(self) -> str:
        """Return a one-line summary of what the worker did, for the console."""
        stats = self.stream.stats
        return (
            f"{stats.messages} message(s), {stats.readings} reading(s) in {stats.files_written} "
            f"file(s), {stats.dead_letters} dead letter(s), {self.health.replayed} replayed "
            "from the WAL"
        )

"""An ingest worker: MQTT messages in, readings delivered to the lake, nothing acknowledged lost.

The worker is two processes. This one takes batches of messages from the broker and, for each
batch, in this order:

1. appends the raw messages to the write-ahead log and ``fsync``s once (group commit);
2. acknowledges them to the broker (PUBACK): only now may a device forget them.

Every second (or when it is full) the WAL's open segment is closed and handed to the lake
writer (:mod:`wattlake.stream.writer`), a child process that decodes closed segments into the
stream's buffer, writes Parquet files as the buffering hints say and deletes a segment only
once its readings are in committed files. A crash anywhere leaves every acknowledged message in
the WAL or in committed lake files; on start the writer reads what the WAL holds. A message may
reach the lake twice (written, then read again or sent again by the broker): the ``readings``
view and compaction keep one row per (device_id, channel, ts). While the lake takes writes,
this process stays at most a few segments ahead of what the writer has read (flow control: the
broker keeps the rest), so a burst keeps both processes busy.

With ``ingest.http_listen`` set, devices may also publish over HTTP
(:mod:`wattlake.gateway.http`): those messages join the same batches, and each request is
answered 200 only after the sync that made it durable.

When the lake cannot be written the writer keeps its buffer and retries with exponential
backoff while this process goes on acknowledging into the WAL; when the WAL reaches
``stream.wal_max_bytes`` it stops taking messages, so the broker stops sending and devices keep
their data until the lake is back.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wattlake.config import Settings
from wattlake.errors import ConfigError, StorageError
from wattlake.gateway.mqtt import BrokerAddress, Delivery, Intake, MqttSource, TlsOptions, take
from wattlake.gateway.retry import Backoff, RetryPolicy
from wattlake.gateway.source import Source
from wattlake.lake.identity import ensure_identity
from wattlake.lake.storage import Lake
from wattlake.state import lake_state_dir
from wattlake.stream.metrics import WRITE_EVERY_S, IngestFigures, MetricsFile
from wattlake.stream.wal import HEADER as WAL_HEADER
from wattlake.stream.wal import MAGIC as WAL_MAGIC
from wattlake.stream.wal import WriteAheadLog, segment_number
from wattlake.stream.writer import WriterProcess, WriterReport

if TYPE_CHECKING:
    from wattlake.gateway.http import HttpSource

log = logging.getLogger(__name__)

# Without a way to ask the broker what it holds (an external broker): how long the broker may
# stay silent before a draining worker decides it has everything, and the longest a draining
# worker keeps taking messages after it was asked to stop [s].
DRAIN_QUIET_S: Final = 0.5
DRAIN_MAX_S: Final = 10.0
# With the broker's backlog known (the embedded broker): a drain gives up only when neither the
# backlog nor the WAL has moved for this long (e.g. the lake is down and the WAL full) [s].
DRAIN_STUCK_S: Final = 60.0
# First wait before retrying a failed WAL append [s]; it doubles each time.
RETRY_FIRST_S: Final = 0.5
# The open WAL segment is handed to the lake writer when it is this old [s] (or full, or a
# quarter of the flush interval old: the writer cannot flush what it has not been handed).
HAND_OVER_EVERY_S: Final = 1.0
# A batch smaller than this waits LINGER_S [s] for more messages before it is made durable.
LINGER_BELOW: Final = 500
LINGER_S: Final = 0.002
# The most messages made durable (and acknowledged) together, appended this many at a time.
MAX_BATCH: Final = 2_000
APPEND_SLICE: Final = 500
# A segment at least this big is handed over as soon as the broker goes quiet [bytes]: the end
# of a burst reaches the writer at once, while a trickle still makes few, larger segments.
HAND_OVER_IDLE_BYTES: Final = 64 * 1024
# How many segments' worth of WAL this process may hold ahead of its writer, and how long it
# waits when it is that far ahead [s].
LEAD_SEGMENTS: Final = 4
LEAD_WAIT_S: Final = 0.002
# A lake writer that keeps dying is started again at most this often [s].
WRITER_RESTART_MAX_S: Final = 30.0
# At exit, how long the worker waits for the writer to say anything before giving up on it [s].
WRITER_SILENCE_MAX_S: Final = 120.0


def default_client_id(settings: Settings) -> str:
    """Return the MQTT client id an ingest worker uses unless told another (a fixed one: the
    broker keeps its persistent session while it is away)."""
    return f"wattlake-{settings['stream.name']}-{socket.gethostname()}"


def wal_dir_from_settings(settings: Settings, lake: Lake, lake_id: str | None = None) -> Path:
    """Return the WAL folder: ``stream.wal_dir``, else ``wal/<stream>`` in a local lake, else
    ``wal/<lake-id>/<stream>`` in the local state folder (:mod:`wattlake.state`) for a lake in
    S3 (one folder per lake: a WAL belongs to exactly one lake).

    ``lake_id`` is the lake's identity; it is read (or created) in the lake when not given.

    Raises:
        ConfigError: a WAL cannot live in object storage.
        wattlake.errors.StorageError: the lake's identity cannot be read or written.
    """
    configured = settings["stream.wal_dir"]
    if configured:
        if "://" in configured:
            raise ConfigError(f"stream.wal_dir {configured!r} must be a local folder.")
        return Path(configured)
    if lake.is_local:
        return Path(lake.root) / "wal" / settings["stream.name"]
    if lake_id is None:
        lake_id = ensure_identity(lake).lake_id
    return lake_state_dir("wal", lake_id) / settings["stream.name"]


def broker_metrics_file(wal_dir: Path) -> Path:
    """Return where a stack writes its embedded broker's counters (Prometheus text): beside
    the WAL folder ``wal_dir``, read by the web's ``/metrics``."""
    return wal_dir.parent / "broker.prom"


def jobs_metrics_file(wal_dir: Path) -> Path:
    """Return where a stack writes its scheduled jobs' runs and failures (Prometheus text):
    beside the WAL folder ``wal_dir``, read by the web's ``/metrics``."""
    return wal_dir.parent / "jobs.prom"


BrokerBacklog = Callable[[str], int | None]
"""Returns how many messages a broker still holds for a client id (None: cannot tell)."""


@dataclass(slots=True)
class DrainState:
    """How a drain after a stop goes, for a progress display (read from another thread)."""

    started: bool = False
    # Messages the broker held for this worker when the drain began, and holds now.
    first_left: int = 0
    left: int = 0
    done: bool = False
    aborted: bool = False
    gave_up: str = ""


@dataclass(slots=True)
class IngestHealth:
    """What is wrong, if anything, for logs and metrics."""

    lake_ok: bool = True
    wal_ok: bool = True
    acknowledging: bool = True
    last_error: str = ""
    acked: int = 0


class IngestWorker:
    """Subscribe to a broker (and take HTTP publishes, if configured) and deliver what arrives
    until told to stop.

    Raises:
        wattlake.errors.UsageError: the broker URL or the HTTP settings are malformed.
        wattlake.errors.StorageError: the lake's identity cannot be read or written.
    """

    def __init__(
        self,
        settings: Settings,
        broker_url: str,
        *,
        client_id: str | None = None,
        mqtt5: bool = True,
        shared_group: str = "",
        drain: bool = False,
        broker_backlog: BrokerBacklog | None = None,
    ) -> None:
        """Set the worker up; :meth:`run` starts it.

        With ``drain``, a stop takes what the broker holds for this worker before it returns:
        until ``broker_backlog(client_id)`` says nothing is left, when given (the embedded
        broker can tell), else until the broker is quiet for a moment. Setting :attr:`abort`
        ends a drain (and the final write) at once; the WAL keeps what was taken.
        """
        self.name: str = settings["stream.name"]
        self.lake = Lake.from_settings(settings)
        self.lake_id = ensure_identity(self.lake).lake_id
        self.wal = WriteAheadLog(
            wal_dir_from_settings(settings, self.lake, self.lake_id),
            segment_max_bytes=settings["stream.wal_segment_bytes"],
            lake_id=self.lake_id,
            lake_url=self.lake.url,
        )
        self.writer = WriterProcess(settings, self.wal.directory)
        self.wal_max_bytes: int = settings["stream.wal_max_bytes"]
        # While the lake takes writes, this process stays at most a few segments ahead of what
        # its writer has read: a burst then keeps both cores busy to the end, instead of
        # leaving the writer a backlog to work through alone (the broker keeps what waits).
        self.lead_max_bytes = min(self.wal_max_bytes, LEAD_SEGMENTS * self.wal.segment_max_bytes)
        self.backoff = Backoff(RetryPolicy(RETRY_FIRST_S, settings["stream.retry_max_s"]))
        self.health = IngestHealth()
        self.drain = drain
        self.hand_over_every_s = min(HAND_OVER_EVERY_S, settings["stream.flush_interval_s"] / 4)
        topics = [t.strip() for t in settings["ingest.topics"].split(",") if t.strip()]
        if client_id is None:
            client_id = default_client_id(settings)
        self.client_id = client_id
        self.broker_backlog = broker_backlog
        self.abort = threading.Event()
        self.drain_state = DrainState()
        # One queue for every source, so a batch mixes MQTT and HTTP messages: one sync for all.
        self.intake: Intake = queue.SimpleQueue()
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
            intake=self.intake,
        )
        self.http: HttpSource | None = None
        if settings["ingest.http_listen"]:
            from wattlake.gateway.http import HttpSource  # FastAPI and uvicorn only when asked

            self.http = HttpSource.from_settings(
                settings, intake=self.intake, taking=self.takes_http
            )
        # Every source behind one protocol (gateway/source.py), started in this order and
        # stopped in the reverse one; add_source() adds more before run().
        self.sources: list[Source] = [self.source, *([self.http] if self.http else [])]
        self.ready = threading.Event()
        metrics_path = settings["stream.metrics_file"]
        self.metrics = MetricsFile(
            Path(metrics_path) if metrics_path else self.wal.directory / "metrics.prom",
            self.figures,
        )
        self._metrics_written_at = 0.0
        self._segment_opened_at = time.monotonic()
        # Deliveries that could not be written to the WAL, retried before anything new.
        self._held: list[Delivery] = []
        self._writer_started = False
        self._writer_restarts = Backoff(RetryPolicy(RETRY_FIRST_S, WRITER_RESTART_MAX_S))

    def add_source(self, source: Source) -> None:
        """Take messages from ``source`` too (before :meth:`run`); it feeds :attr:`intake`."""
        self.sources.append(source)

    def start_writer(self) -> None:
        """Take the WAL folder and start the lake writer on what earlier runs left in it.

        :meth:`run` does this when it has not been done; call it first to have the writer
        ready (its imports done) before the broker is reached.

        Raises:
            wattlake.errors.ConfigError: the WAL folder is in use or unusable.
        """
        if self._writer_started:
            return
        leftovers = self.wal.open()
        self._writer_started = True
        self.writer.start(segment_number(leftovers[-1]) if leftovers else 0)
        if leftovers:
            log.info("replaying %d WAL segment(s) from %s", len(leftovers), self.wal.directory)

    def run(self, stop: threading.Event) -> None:
        """Replay the WAL, then ingest until ``stop`` is set; flush and return.

        Raises:
            wattlake.errors.BrokerError: the broker cannot be reached.
            wattlake.errors.ConfigError: the WAL folder is in use or unusable.
            wattlake.errors.StorageError: at exit, readings remain in the WAL only (the lake
                could not be written); they are delivered on the next start.
        """
        try:
            self.start_writer()
            started: list[Source] = []
            try:
                for source in self.sources:
                    source.start()
                    started.append(source)
                    log.info("taking messages from %s", source.describe())
                self.ready.set()
                while not stop.is_set():
                    self._step()
                for source in self.sources:
                    source.close()  # nothing new; the drain takes what the broker holds
                self._finish_taking()
            finally:
                # What a source acknowledged is in the WAL; what it did not stays with the
                # sender (the broker keeps it, an HTTP publisher gets 503).
                for source in reversed(started):
                    source.stop()
            self._hand_over()
            if not self.abort.is_set():
                self._finish_writing()
        finally:
            self.writer.kill()
            self.wal.close()
            if self._writer_started:  # not when the folder (and its metrics) is another's
                self.write_metrics()

    def _finish_taking(self) -> None:
        """After a stop: take what the broker already sent (all it holds, when draining)."""
        if self.drain and self.broker_backlog is not None:
            self._drain_backlog(self.broker_backlog)
            return
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

    def _drain_backlog(self, backlog: BrokerBacklog) -> None:
        """Take messages until the broker holds none for this worker and all are acknowledged
        (each acknowledgement follows its WAL sync), unless aborted or stuck."""
        state = self.drain_state
        left = backlog(self.client_id)
        state.first_left = state.left = left or 0
        state.started = True
        moved_at, last = time.monotonic(), (left, self.wal.total_bytes)
        while not self.abort.is_set():
            if self._step(timeout_s=0.05):
                moved_at = time.monotonic()
                continue
            left = backlog(self.client_id)
            if left is None:
                state.gave_up = "the broker stopped answering"
                break
            state.left = left
            if left == 0 and self.intake.empty() and not self._held:
                state.done = True
                return
            if (left, self.wal.total_bytes) != last:
                moved_at, last = time.monotonic(), (left, self.wal.total_bytes)
            elif time.monotonic() - moved_at > DRAIN_STUCK_S:
                state.gave_up = f"nothing moved for {DRAIN_STUCK_S:.0f} s" + (
                    f" ({self.health.last_error})" if self.health.last_error else ""
                )
                break
        if self.abort.is_set():
            state.aborted = True
            # Counted now: once this worker disconnects, the broker drops what it held for it.
            state.left = backlog(self.client_id) or state.left
        if state.gave_up:
            log.error(
                "stopped draining: %s; %d message(s) were still in the broker", state.gave_up, left
            )

    def _step(self, timeout_s: float = 0.1) -> bool:
        """Take one batch from the broker into the WAL and acknowledge it; hand closed
        segments to the writer and hear from it.

        Returns True when messages were taken.
        """
        took = False
        self._hear_writer()
        if self._held:
            if self.backoff.due():
                self._log_to_wal(self._held)
            else:
                time.sleep(min(timeout_s, 0.05))
        elif not self.health.wal_ok and not self.backoff.due():
            # The failed batch held only HTTP messages (answered 503): wait all the same.
            time.sleep(min(timeout_s, 0.05))
        elif (
            self.health.lake_ok
            and self.wal.total_bytes - self.writer.last.held_bytes >= self.lead_max_bytes
        ):
            time.sleep(LEAD_WAIT_S)  # the writer is behind: let it have the CPU for a moment
        elif self.wal.total_bytes >= self.wal_max_bytes:
            if self.health.acknowledging:
                self.health.acknowledging = False
                log.error(
                    "the WAL holds %d bytes, its limit (stream.wal_max_bytes); no longer taking "
                    "messages until the lake writer has caught up%s: the broker and devices "
                    "keep them",
                    self.wal.total_bytes,
                    "" if self.health.lake_ok else f" ({self.health.last_error})",
                )
                self.write_metrics()
            time.sleep(min(timeout_s, 0.05))
        else:
            if not self.health.acknowledging:
                log.warning("the WAL is below its limit again; taking messages")
                self.health.acknowledging = True
                self.write_metrics()
            batch = take(self.intake, max_items=MAX_BATCH, timeout_s=timeout_s)
            if 0 < len(batch) < LINGER_BELOW:
                # Group commit: let the batch grow for a moment rather than pay a sync, a
                # write of acknowledgements and a thread wake-up for every few messages.
                time.sleep(LINGER_S)
                batch += take(self.intake, max_items=MAX_BATCH - len(batch), timeout_s=0)
            if batch:
                took = True
                self._log_to_wal(batch)
        if (
            self.wal.current_bytes >= self.wal.segment_max_bytes
            or time.monotonic() - self._segment_opened_at >= self.hand_over_every_s
            or (not took and self.wal.current_bytes >= HAND_OVER_IDLE_BYTES)
        ):
            self._hand_over()
        if time.monotonic() - self._metrics_written_at >= WRITE_EVERY_S:
            self.write_metrics()
        return took

    def _hand_over(self) -> None:
        """Close the WAL's open segment and tell the writer it may read it."""
        self._segment_opened_at = time.monotonic()
        closed = self.wal.rotate()
        if closed is not None:
            self.writer.closed(segment_number(closed))

    def _log_to_wal(self, batch: list[Delivery]) -> None:
        """Make ``batch`` durable, then acknowledge it; on failure hold it and retry later.

        A big batch is appended in slices, and a full segment is handed over between two (its
        records synced as it closes), so segments stay near their size for the writer.
        """
        messages = [d.message for d in batch]
        try:
            for start in range(0, len(messages), APPEND_SLICE):
                if self.wal.current_bytes >= self.wal.segment_max_bytes:
                    self._hand_over()
                self.wal.append(messages[start : start + APPEND_SLICE])
            self.wal.sync()
        except OSError as exc:
            self._hand_over()  # the segment a failed write closed keeps its synced records
            # MQTT messages are held for the retry; HTTP publishers are told to send again.
            held = batch
            for source in self.sources:
                held = source.refuse(held)
            self._held = held
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
        for source in self.sources:
            source.ack(batch)
        if not self.health.wal_ok:
            log.warning("the WAL in %s takes writes again", self.wal.directory)
            self.health.wal_ok = True
            self.backoff.reset()
        self._held = []
        self.health.acked += len(batch)

    def takes_http(self) -> bool:
        """Return whether an HTTP publish may wait for durability now: not while the WAL is at
        its limit (read here, so the request right after the one that filled it is refused),
        nor while a failed WAL append waits for its retry."""
        return self.wal.total_bytes < self.wal_max_bytes and (
            self.health.wal_ok or self.backoff.due()
        )

    def _hear_writer(self) -> None:
        """Take the writer's reports: free the WAL bytes it deleted, say what changed in the
        lake; start a new writer if this one died."""
        before = self.writer.last
        for report in self.writer.reports():
            self._heard(before, report)
            before = report
        code = self.writer.exit_code
        if code is not None and self._writer_restarts.due():
            wait = self._writer_restarts.failed()
            log.error(
                "the lake writer stopped unexpectedly (exit code %d); starting another, which "
                "reads again what the WAL holds (next restart not before %.1f s)",
                code,
                wait,
            )
            self.wal.recount()
            self.writer.start(self.writer.closed_through)

    def _heard(self, before: WriterReport, report: WriterReport) -> None:
        self.wal.forget(report.deleted_bytes - before.deleted_bytes)
        if not report.lake_ok and report.failures > before.failures:
            if self.health.lake_ok:
                log.error(
                    "%s. Messages are kept in the WAL (%s, up to %d bytes) and acknowledged; "
                    "retrying in %.1f s",
                    report.last_error,
                    self.wal.directory,
                    self.wal_max_bytes,
                    report.retry_in_s,
                )
            else:
                log.error(
                    "the lake is still unwritable (%s); retrying in %.1f s",
                    report.last_error,
                    report.retry_in_s,
                )
            self.health.lake_ok = False
            self.health.last_error = report.last_error
            self.write_metrics()
        elif report.lake_ok and not self.health.lake_ok:
            log.warning("the lake %s takes writes again; catching up from the WAL", self.lake.url)
            self.health.lake_ok = True
            self.health.last_error = ""
            self.write_metrics()

    def _finish_writing(self) -> None:
        """Let the writer write everything closed (once more, if the lake is down) and exit;
        if the lake is still down, say where the data waits."""
        self.writer.stop()
        before = self.writer.last
        silent_since = time.monotonic()
        while not before.finished:
            if self.abort.is_set():
                self.drain_state.aborted = True
                return  # the WAL keeps what the writer has not written
            report = self.writer.wait_report(0.2)
            if report is None and self.writer.exit_code is not None:
                report = self.writer.wait_report(1.0)  # its last words may still be in the pipe
            if report is None:
                code = self.writer.exit_code
                if code is None and time.monotonic() - silent_since < WRITER_SILENCE_MAX_S:
                    continue
                self.health.lake_ok = False
                self.health.last_error = (
                    "the lake writer did not finish"
                    if code is None
                    else f"the lake writer stopped unexpectedly (exit code {code})"
                )
                break
            silent_since = time.monotonic()
            self._heard(before, report)
            before = report
        self.writer.join(10)
        self.wal.recount()
        if not self.health.lake_ok or self._held:
            raise StorageError(
                f"{self.health.last_error}. {self.wal.total_bytes} bytes of acknowledged "
                f"messages stay in the WAL at {self.wal.directory}; the next start of the "
                "ingest delivers them."
            )

    def undelivered(self) -> tuple[int, int]:
        """Return how many messages, holding how many readings, the WAL keeps undelivered
        (call it after :meth:`run`; the next start of an ingest for this lake delivers them)."""
        from wattlake.devices.router import DecoderRouter
        from wattlake.stream.wal import read_segment

        router = DecoderRouter()
        messages = readings = 0
        for segment in self.wal.segments():
            for chunk in read_segment(segment):
                messages += len(chunk)
                decoded, _ = router.decode_many(chunk)
                readings += sum(len(d) if isinstance(d, list) else d.num_rows for d in decoded)
        return messages, readings + len(router.drain())

    def figures(self) -> IngestFigures:
        """Return what the worker and its writer have done and how they are, for metrics."""
        written = self.writer.totals
        return IngestFigures(
            **written.counters(),
            stream=self.name,
            lake_writable=self.health.lake_ok,
            wal_writable=self.health.wal_ok,
            acknowledging=self.health.acknowledging,
            wal_bytes=self.wal.total_bytes,
            buffered_rows=written.buffered_rows,
            acknowledged=self.health.acked,
            wal_oldest_age_s=self.wal_oldest_age_s(),
        )

    def wal_oldest_age_s(self) -> float:
        """Return the age of the oldest message the WAL holds (0 when it holds none) [s]:
        the first record of its oldest segment (its header only is read)."""
        try:
            segments = self.wal.segments()
            if not segments:
                return 0.0
            with segments[0].open("rb") as f:
                head = f.read(len(WAL_MAGIC) + WAL_HEADER.size)
        except OSError:  # deleted by the writer meanwhile: the next call sees the next one
            return 0.0
        if len(head) < len(WAL_MAGIC) + WAL_HEADER.size:
            return 0.0
        _, _, received_at_ms, _ = WAL_HEADER.unpack_from(head, len(WAL_MAGIC))
        return max(0.0, (time.time_ns() // 1_000_000 - received_at_ms) / 1000)

    def write_metrics(self) -> None:
        """Rewrite the metrics file now (a failure is logged, never fatal)."""
        self._metrics_written_at = time.monotonic()
        try:
            self.metrics.write()
        except OSError as exc:
            log.warning("cannot write the metrics file %s: %s", self.metrics.path, exc)

    def describe(self) -> str:
        """Return a one-line summary of what the worker did, for the console."""
        f = self.figures()
        return (
            f"{f.messages} message(s), {f.readings} reading(s) in {f.files_written} "
            f"file(s), {f.dead_letters} dead letter(s), {f.replayed} replayed from the WAL"
        )

"""The lake writer: closed WAL segments in, Parquet files in the lake out, in a process of its own.

The ingest worker (:mod:`wattlake.stream.ingest`) only appends messages to the write-ahead log,
syncs and acknowledges them; it tells its writer, one JSON line on the writer's standard input,
up to which segment number the WAL is closed. The writer reads those segments in order,
decodes them into the delivery stream's buffer, flushes the buffer to the lake when the
buffering hints say so, and deletes a segment once every reading in it is in a committed file.
It reports its figures back, one JSON line on its standard output, whenever they change.

Decoding and Parquet writing run here, in a separate process, so they do not contend with the
MQTT client for one interpreter lock: the two halves of the ingest use both cores.

The WAL is the hand-off and the recovery path at once. A writer killed anywhere leaves every
segment it has not deleted. Exactly once: each commit to table ``readings`` records the WAL
position it covers (segment number, messages taken from it, and the segment file's identity, as
segment numbers restart in an emptied folder) in the snapshot summary property
``wattlake.wal.<stream>``; the next writer skips what the last such commit covers, so a crash
between writing files, committing and deleting segments adds no duplicate rows.
When the lake cannot be written the writer keeps its buffer, reads nothing more and retries
with exponential backoff; the WAL grows meanwhile, and the ingest worker stops acknowledging
when it reaches its limit.

Run by the ingest worker as ``python -m wattlake.stream.writer``; not a user command.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import IO, Any, Final

from wattlake import faults
from wattlake.config import REGISTRY, Settings
from wattlake.devices.base import RawMessage
from wattlake.errors import DecodeError, StorageError
from wattlake.gateway.retry import Backoff, RetryPolicy
from wattlake.lake import tables
from wattlake.lake.storage import Lake, fsync_dir
from wattlake.schema import READINGS_TABLE
from wattlake.stream.delivery import FlushBatch, catalog_failures, stream_from_settings
from wattlake.stream.metrics import (
    COMMIT_BUCKETS_S,
    FLUSH_BUCKETS_S,
    IngestCounters,
    observe,
)
from wattlake.stream.wal import delete_segments, read_segment, segment_number

log = logging.getLogger(__name__)

# First wait before retrying a failed lake write [s]; it doubles each time.
RETRY_FIRST_S: Final = 0.5
# The writer reports its figures at most this often, unless something important changed [s].
REPORT_EVERY_S: Final = 0.1
# How long the writer waits for a command when it has nothing to do [s].
IDLE_WAIT_S: Final = 0.05
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# In the WAL folder: the decoders' state at the WAL position of the last commit (and of the
# commit in flight), so a writer that starts again decodes the rest of the WAL as this one would.
DECODER_STATE_FILE: Final = "decoder-state.json"


@dataclass(slots=True, kw_only=True)
class WriterReport(IngestCounters):
    """What a writer has done so far (its counters since it started) and how the lake is."""

    buffered_rows: int = 0
    deleted_bytes: int = 0
    held_bytes: int = 0
    lake_ok: bool = True
    last_error: str = ""
    failures: int = 0
    retry_in_s: float = 0.0
    finished: bool = False


class LakeWriter:
    """Turn closed WAL segments into lake files until told to stop (the child's side)."""

    def __init__(
        self,
        settings: Settings,
        wal_dir: Path,
        closed_through: int,
        commands: queue.SimpleQueue[dict[str, Any]],
        send: Callable[[WriterReport], None],
    ) -> None:
        self.lake = Lake.from_settings(settings)
        self.stream = stream_from_settings(settings, self.lake)
        self.wal_dir = wal_dir
        # Segments numbered up to here are closed; those up to replay_through were left by an
        # earlier run (or an earlier writer) and count as replayed.
        self.closed_through = self.replay_through = closed_through
        self.commands = commands
        self.send = send
        # One writer per lake: no crowd to spread out, so the waits are not jittered.
        self.backoff = Backoff(
            RetryPolicy(RETRY_FIRST_S, settings["stream.retry_max_s"], jitter=0.0)
        )
        self.lake_ok = True
        self.last_error = ""
        self.stopping = False
        self.deleted_bytes = 0
        self._started_through = 0
        # The segment being read (a segment may span flushes) and those read whole.
        self._current: tuple[Path, Iterator[list[RawMessage]]] | None = None
        self._loaded: list[Path] = []
        # Bytes of the segments being read or read whole, not yet deleted.
        self._held_bytes = 0
        self._reported_at = 0.0
        self._unreported = False
        # At most one flush runs in the helper thread: (its future, its batch, its segments,
        # when it started [monotonic s], the arrival of its oldest message [ms] or None).
        self._flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lake-flush")
        self._in_flight: (
            tuple[Future[list[str]], FlushBatch, list[Path], float, int | None] | None
        ) = None
        # Metrics: messages per device format, the oldest arrival in the buffer, latencies.
        self._oldest_ms: int | None = None
        # Exactly once: the WAL position of the last commit of an earlier writer, this
        # writer's position after the last message it took, and what to skip of the segment
        # being read.
        self._wal_key = tables.WAL_PROPERTY_PREFIX + settings["stream.name"]
        # The committed position as the commit wrote it, and the decoder state at each
        # position named in the state file (that one and the one of the flush in flight).
        self._committed_value: str | None = None
        self._committed = self._committed_position()
        self._decoder_states: dict[str, Any] = {}
        self._flushing_value: str | None = None
        self._restore_decoder_state()
        self._position: dict[str, Any] | None = None
        self._taken = 0
        self._skip = 0

    def _committed_position(self) -> dict[str, Any] | None:
        try:
            with catalog_failures(self.lake):
                table = tables.open_table(self.lake, READINGS_TABLE)
                value = tables.last_property(table, self._wal_key)
        except StorageError as exc:  # replaying may repeat readings; the views keep one
            log.warning("cannot read the last committed WAL position: %s", exc)
            return None
        self._committed_value = value
        return None if value is None else dict(json.loads(value))

    def _restore_decoder_state(self) -> None:
        """Give the decoders the state they had at the committed WAL position.

        Gen2 notifications carry only what changed: the messages after that position (replayed
        from the WAL) decode onto the component values before it, as they would have without
        the restart; without it a notification that changed no value gave no reading at all.
        """
        path = self.wal_dir / DECODER_STATE_FILE
        try:
            states = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("cannot read the decoder state %s (%s); starting without it", path, exc)
            return
        state = states.get(self._committed_value) if isinstance(states, dict) else None
        if state is None:
            return
        try:
            self.stream.router.restore_decoder_state(state)
        except (TypeError, ValueError, AttributeError) as exc:
            log.warning("the decoder state %s is damaged (%s); starting without it", path, exc)
            return
        self._decoder_states = {str(self._committed_value): state}

    def _keep_decoder_state(self, value: str) -> None:
        """Write the decoders' state at WAL position ``value`` (the property the commit about
        to start records) beside the state at the committed one, before that commit."""
        states = {
            key: state
            for key, state in self._decoder_states.items()
            if key == self._committed_value
        }
        states[value] = self.stream.router.decoder_state()
        path = self.wal_dir / DECODER_STATE_FILE
        tmp = path.with_name(f".{DECODER_STATE_FILE}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(states, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            fsync_dir(self.wal_dir)
        except OSError as exc:  # a replay after a crash may then decode changes without it
            log.warning("cannot write the decoder state %s: %s", path, exc)
            return
        self._decoder_states = states

    def _skip_for(self, path: Path) -> int | None:
        """Return how many messages of segment ``path`` an earlier commit covers (None: all)."""
        committed = self._committed
        if committed is None:
            return 0
        last = self.wal_dir / f"{committed['segment']:016d}.wal"
        if not last.exists() or segment_identity(last) != committed["id"]:
            self._committed = None  # that segment is gone: nothing left was committed
            return 0
        number = segment_number(path)
        if number < committed["segment"]:
            return None
        return int(committed["messages"]) if number == committed["segment"] else 0

    def run(self) -> None:
        """Read, decode and flush until stopped; then flush what is left (once, if the lake is
        down) and send the final report."""
        self.stream.warm_up()
        self._report(force=True)
        while not self._step():
            pass
        self._flusher.shutdown()
        self._report(force=True, finished=True)

    def _step(self) -> bool:
        """Do one piece of work; return True when the writer is done."""
        self._take_commands(wait_s=0)
        self._collect_flush()
        if not self.lake_ok:
            if self.stopping or self.backoff.due():
                self._flush()
            if self.stopping and not self.lake_ok:
                return True  # the rest stays in the WAL for the next start
            self._take_commands(wait_s=min(IDLE_WAIT_S, self.backoff.delay_s))
            return False
        if self._in_flight is None and self.stream.flush_wanted():
            self._start_flush()
            return False
        if self._buffer_full():
            self._collect_flush(wait=True)  # memory bound: one buffer in flight, one filling
            return False
        chunk = self._next_chunk()
        if chunk is not None:
            self._accept(chunk)
            self._report()
            return False
        if self.stopping:
            self._flush()
            return self.lake_ok
        self._report(force=self._unreported)  # idle: say where things stand
        self._take_commands(wait_s=IDLE_WAIT_S)
        return False

    def _accept(self, chunk: list[RawMessage]) -> None:
        """Decode ``chunk`` into the buffer, counting messages received and accepted per device
        format (one call per format: a device's messages keep their order)."""
        groups: dict[str, list[RawMessage]] = {}
        for message in chunk:
            try:
                fmt = self.stream.router.format_for(message.topic)
            except DecodeError:
                fmt = "unknown"
            groups.setdefault(fmt, []).append(message)
        for fmt, messages in groups.items():
            stats = self.stream.stats
            dead_before = stats.dead_letters
            self.stream.accept(messages)
            dead = stats.dead_letters - dead_before
            stats.received_by_format[fmt] = stats.received_by_format.get(fmt, 0) + len(messages)
            stats.accepted_by_format[fmt] = (
                stats.accepted_by_format.get(fmt, 0) + len(messages) - dead
            )
        oldest = min(m.received_at_ms for m in chunk) if chunk else None
        if oldest is not None and (self._oldest_ms is None or oldest < self._oldest_ms):
            self._oldest_ms = oldest

    def _take_commands(self, wait_s: float) -> None:
        try:
            command = self.commands.get(timeout=max(wait_s, 1e-6))
        except queue.Empty:
            return
        while True:
            if "eof" in command:  # the ingest worker is gone: a new one starts its own writer
                os._exit(3)
            self.closed_through = max(self.closed_through, int(command.get("closed", 0)))
            self.stopping = self.stopping or bool(command.get("stop"))
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return

    def _next_chunk(self) -> list[RawMessage] | None:
        """Return the next messages of the closed segments, oldest first, or None."""
        while True:
            if self._current is None:
                path = self._next_segment()
                if path is None:
                    return None
                skip = self._skip_for(path)
                if skip is None:  # committed before a crash; only its deletion was missing
                    self.deleted_bytes += delete_segments(self.wal_dir, [path])
                    continue
                self._current = (path, read_segment(path))
                self._taken, self._skip = 0, skip
                self._held_bytes += path.stat().st_size
                self._report(force=True)  # the ingest process may go ahead by that much
            path, chunks = self._current
            chunk = next(chunks, None)
            if chunk is not None:
                if self._skip:
                    dropped = min(self._skip, len(chunk))
                    chunk, self._skip = chunk[dropped:], self._skip - dropped
                    self._taken += dropped
                    if not chunk:
                        continue
                self._taken += len(chunk)
                self._position = {
                    "segment": segment_number(path),
                    "messages": self._taken,
                    "id": segment_identity(path),
                }
                if segment_number(path) <= self.replay_through:
                    self.stream.stats.replayed += len(chunk)
                return chunk
            self._loaded.append(path)
            self._current = None

    def _next_segment(self) -> Path | None:
        if self.closed_through <= self._started_through:
            return None
        waiting = [
            (number, path)
            for path in self.wal_dir.glob("*.wal")
            if self._started_through < (number := segment_number(path)) <= self.closed_through
        ]
        if not waiting:
            self._started_through = self.closed_through
            return None
        number, path = min(waiting)
        self._started_through = number
        return path

    def _buffer_full(self) -> bool:
        """Return True when a flush is in flight and the buffer has filled again since."""
        limits = self.stream.limits
        return self._in_flight is not None and (
            self.stream.buffered_rows >= limits.buffer_max_rows
            or self.stream.buffered_bytes >= limits.buffer_max_bytes
        )

    def _start_flush(self) -> None:
        """Write the buffer to the lake in a helper thread while decoding goes on here (Arrow
        sorts, compresses and writes without holding the interpreter lock)."""
        segments, self._loaded = self._loaded, []
        batch = self.stream.detach()
        properties = None
        self._flushing_value = None
        if self._position is not None and (batch.rows or batch.dead or segments):
            value = json.dumps(self._position)
            self._keep_decoder_state(value)
            self._flushing_value = value
            properties = {self._wal_key: value}
        future = self._flusher.submit(self.stream.write, batch, properties)
        oldest, self._oldest_ms = self._oldest_ms, None
        self._in_flight = (future, batch, segments, time.monotonic(), oldest)

    def _collect_flush(self, *, wait: bool = False) -> None:
        """Finish the flush in flight if it is done (or ``wait``): delete the segments it
        covered, or on failure put its readings back and retry later."""
        if self._in_flight is None:
            return
        future, batch, segments, started, oldest = self._in_flight
        if not wait and not future.done():
            return
        self._in_flight = None
        try:
            written = future.result()
        except StorageError as exc:
            self.stream.reattach(batch)
            if oldest is not None and (self._oldest_ms is None or oldest < self._oldest_ms):
                self._oldest_ms = oldest
            self._loaded = segments + self._loaded
            self.lake_ok = False
            self.last_error = f"cannot write to the lake {self.lake.url}: {exc}"
            self.backoff.failed()
            self._report(force=True)
            return
        faults.crash_point("commit-done")
        if self._flushing_value is not None:
            self._committed_value, self._flushing_value = self._flushing_value, None
        if written:  # a flush that wrote nothing (only a WAL position) is no latency
            took_s = time.monotonic() - started
            stats = self.stream.stats
            stats.flush_counts = observe(FLUSH_BUCKETS_S, stats.flush_counts, took_s)
            stats.flush_sum_s += took_s
            if oldest is not None:
                age_s = max(0.0, (time.time_ns() // 1_000_000 - oldest) / 1000)
                stats.commit_counts = observe(COMMIT_BUCKETS_S, stats.commit_counts, age_s)
                stats.commit_sum_s += age_s
        freed = delete_segments(self.wal_dir, segments[:1])
        if len(segments) > 1:
            faults.crash_point("wal-partly-trimmed")
            freed += delete_segments(self.wal_dir, segments[1:])
        self.deleted_bytes += freed
        self._held_bytes -= freed
        if not self.lake_ok:
            self.lake_ok, self.last_error = True, ""
            self.backoff.reset()
        self._report(force=True)

    def _flush(self) -> None:
        """Write the buffer to the lake now, then delete the segments read whole."""
        self._collect_flush(wait=True)
        self._start_flush()
        self._collect_flush(wait=True)

    def _report(self, *, force: bool = False, finished: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._reported_at < REPORT_EVERY_S:
            self._unreported = True
            return
        self._reported_at, self._unreported = now, False
        self.send(
            WriterReport(
                **self.stream.stats.counters(),
                buffered_rows=self.stream.buffered_rows,
                deleted_bytes=self.deleted_bytes,
                held_bytes=self._held_bytes,
                lake_ok=self.lake_ok,
                last_error=self.last_error,
                failures=self.backoff.failures,
                retry_in_s=self.backoff.delay_s,
                finished=finished,
            )
        )


def segment_identity(path: Path) -> str:
    """Return what tells a closed segment file from a later one with the same number."""
    status = path.stat()
    return f"{status.st_ino}-{status.st_mtime_ns}"


class WriterProcess:
    """The ingest worker's handle on its lake writer process (the parent's side)."""

    def __init__(self, settings: Settings, wal_dir: Path) -> None:
        self.settings = settings
        self.wal_dir = wal_dir
        self.closed_through = 0
        # The last report of this writer, and the counters of writers that came before it.
        self.last = WriterReport()
        self.earlier = WriterReport()
        self._process: subprocess.Popen[bytes] | None = None
        self._reports: queue.SimpleQueue[WriterReport] = queue.SimpleQueue()
        self._ready = threading.Event()

    @property
    def totals(self) -> WriterReport:
        """Return the last report with the counters of earlier writers added."""
        return self.last.plus(self.earlier)

    @property
    def pid(self) -> int | None:
        """Return the writer's process id (None before it started)."""
        return None if self._process is None else self._process.pid

    @property
    def exit_code(self) -> int | None:
        """Return the writer's exit code, or None while it runs (or before it started)."""
        return None if self._process is None else self._process.poll()

    def start(self, closed_through: int) -> None:
        """Start a writer for the segments numbered up to ``closed_through`` and those closed
        later; a writer that ran before is counted in :attr:`totals`."""
        self.closed_through = closed_through
        if self._process is not None:
            self.earlier = self.totals
            self.last = replace(WriterReport(), lake_ok=self.last.lake_ok)
        self._ready.clear()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "wattlake.stream.writer"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own process group: a Ctrl-C at the terminal goes to the ingest, which stops
            # its writer in order, even while the writer is still starting (before it ignores
            # SIGINT itself).
            process_group=0,
        )
        config = {
            # The ingest's own secrets (broker password, HTTP token) stay in this process.
            "settings": {
                name: "" if name.startswith("ingest.") and REGISTRY[name].unit == "secret" else v
                for name, v in self.settings.items()
            },
            "origins": self.settings.origins,
            "wal_dir": str(self.wal_dir),
            "closed_through": closed_through,
            "log_level": logging.getLogger("wattlake").getEffectiveLevel(),
            "parent": os.getpid(),
        }
        self._send(config)
        threading.Thread(
            target=self._read_reports, args=(self._process.stdout,), daemon=True
        ).start()

    def wait_ready(self, timeout_s: float = 60) -> bool:
        """Wait until the writer has started and sent its first report."""
        return self._ready.wait(timeout_s)

    def closed(self, number: int) -> None:
        """Tell the writer that segments up to ``number`` are closed."""
        self.closed_through = max(self.closed_through, number)
        self._send({"closed": self.closed_through})

    def stop(self) -> None:
        """Ask the writer to write everything closed, then exit."""
        self._send({"stop": True})

    def reports(self) -> list[WriterReport]:
        """Return the reports that arrived since the last call, oldest first."""
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self._reports.get_nowait())
        if out:
            self.last = out[-1]
        return out

    def wait_report(self, timeout_s: float) -> WriterReport | None:
        """Return the next report, waiting up to ``timeout_s``; None if none came."""
        try:
            report = self._reports.get(timeout=timeout_s)
        except queue.Empty:
            return None
        self.last = report
        return report

    def kill(self) -> None:
        """Stop the writer at once (it leaves what it has not written in the WAL)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def join(self, timeout_s: float) -> int | None:
        """Wait for the writer to exit; return its exit code (None if it is still running)."""
        if self._process is None:
            return 0
        try:
            return self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _send(self, command: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # a dead writer is noticed and restarted
            self._process.stdin.write(json.dumps(command).encode() + b"\n")
            self._process.stdin.flush()

    def _read_reports(self, stream: IO[bytes]) -> None:
        names = {f.name for f in fields(WriterReport)}
        for line in stream:
            with contextlib.suppress(ValueError, TypeError):
                values = json.loads(line)
                self._reports.put(WriterReport(**{k: v for k, v in values.items() if k in names}))
                self._ready.set()


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this process when the ingest worker dies (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(3)


def _read_commands(stream: IO[bytes], commands: queue.SimpleQueue[dict[str, Any]]) -> None:
    for line in stream:
        commands.put(json.loads(line))
    commands.put({"eof": True})


def main() -> None:
    """Run a writer as the ingest worker asked (configuration on the first line of stdin)."""
    config = json.loads(sys.stdin.buffer.readline())
    _die_with_parent(config["parent"])
    # Ctrl-C and SIGTERM reach the whole process group: the ingest worker decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=config["log_level"], format=LOG_FORMAT)
    logging.getLogger("pyiceberg").setLevel(logging.WARNING)  # one line per table load
    settings = Settings(config["settings"], config["origins"])
    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    threading.Thread(target=_read_commands, args=(sys.stdin.buffer, commands), daemon=True).start()
    out = sys.stdout.buffer

    def send(report: WriterReport) -> None:
        out.write(json.dumps(asdict(report)).encode() + b"\n")
        out.flush()

    wal_dir, closed_through = Path(config["wal_dir"]), config["closed_through"]
    code = 0
    try:
        LakeWriter(settings, wal_dir, closed_through, commands, send).run()
    except BaseException:  # the ingest process starts another writer, which reads the WAL again
        log.exception("the lake writer failed")
        code = 1
    logging.shutdown()
    os._exit(code)  # not a normal exit: the thread reading stdin may still hold its lock


if __name__ == "__main__":
    main()

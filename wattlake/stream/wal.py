"""The write-ahead log: every accepted message is on disk before the device hears "accepted".

A WAL is a folder of numbered segment files. Each record holds one raw message exactly as the
gateway received it (topic, payload, receive time), framed by its length and a CRC-32, so a
record torn by a crash is recognised and ignored: it was never synced, hence never acknowledged.
Appends are cheap; :meth:`WriteAheadLog.sync` makes everything appended so far durable with one
``fsync`` (group commit: one sync per batch of messages, not per message).

One process appends to a WAL folder at a time (an exclusive ``flock``); its lake writer
(:mod:`wattlake.stream.writer`) reads the closed segments and deletes each once the readings of
all its records are in committed lake files.

A WAL belongs to exactly one lake: ``lake.json`` in its folder records the lake's identity
(:mod:`wattlake.lake.identity`) when the folder is first taken, and a WAL of another lake is
refused rather than replayed into this one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from wattlake.devices.base import RawMessage
from wattlake.errors import ConfigError
from wattlake.lake.storage import fsync_dir

log = logging.getLogger(__name__)

MAGIC: Final = b"WLWAL01\n"
# Record header: CRC-32 of everything after it, payload length, receive time [ms], topic length.
HEADER: Final = struct.Struct("<IIqH")
SUFFIX: Final = ".wal"
# The file in a WAL folder that names the lake the WAL belongs to.
OWNER_FILE: Final = "lake.json"
# Messages handed back per chunk when a segment is read.
READ_CHUNK: Final = 5_000


class WriteAheadLog:
    """Append-only, CRC-framed segments of raw messages in one folder."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_max_bytes: int = 4 * 1024 * 1024,
        lake_id: str | None = None,
        lake_url: str = "",
    ) -> None:
        """Describe the WAL in ``directory``; :meth:`open` takes it.

        ``lake_id`` (with ``lake_url``, for messages) is the identity of the lake the WAL feeds;
        None for a WAL that belongs to no lake (tests, tools).
        """
        self.directory = directory
        self.segment_max_bytes = segment_max_bytes
        self.lake_id = lake_id
        self.lake_url = lake_url
        self._lock_fd: int | None = None
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self._synced = 0
        self._records = 0
        self._next = 0
        self._closed_bytes = 0
        self._cut: Path | None = None

    def open(self) -> list[Path]:
        """Take ownership of the folder and return the segments left by an earlier run, oldest
        first; they are not reopened for appending.

        Raises:
            ConfigError: another process owns the folder, it cannot be created, or it holds the
                WAL of another lake.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"Cannot use the WAL folder {self.directory}: {exc}.") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise ConfigError(
                f"Another ingest process uses the WAL folder {self.directory}; give each worker "
                "its own stream.name or stream.wal_dir."
            ) from exc
        try:
            self._claim()
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        existing = self.segments()
        self._closed_bytes = sum(p.stat().st_size for p in existing)
        self._next = segment_number(existing[-1]) + 1 if existing else 1
        return existing

    def _claim(self) -> None:
        """Check that the folder's WAL belongs to this WAL's lake; record the lake if new.

        Raises:
            ConfigError: the folder holds the WAL of another lake, or cannot be written.
        """
        if self.lake_id is None:
            return
        owner_path = self.directory / OWNER_FILE
        owner = read_owner(self.directory)
        if owner is None:
            if self.segments():
                log.warning(
                    "the WAL in %s names no lake (written by an older wattlake); its segments "
                    "are delivered to %s",
                    self.directory,
                    self.lake_url or self.lake_id,
                )
            document = {"lake_id": self.lake_id, "lake_url": self.lake_url}
            tmp = owner_path.with_name(f".{OWNER_FILE}.tmp")
            try:
                tmp.write_text(json.dumps(document) + "\n")
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, owner_path)
                fsync_dir(self.directory)
            except OSError as exc:
                raise ConfigError(f"Cannot use the WAL folder {self.directory}: {exc}.") from exc
            return
        their_id, their_url = owner
        if their_id != self.lake_id:
            raise ConfigError(
                f"The write-ahead log in {self.directory} belongs to another lake "
                f"({their_url or 'unknown location'}, identity {their_id}), not to "
                f"{self.lake_url or 'this lake'} (identity {self.lake_id}); it is never replayed "
                "into another lake. Run the ingest for its own lake to deliver what it holds, "
                "or give this lake its own WAL folder (stream.wal_dir)."
            )

    def segments(self) -> list[Path]:
        """Return every segment file in the folder, oldest first, the open one included."""
        return sorted(self.directory.glob(f"*{SUFFIX}"))

    @property
    def total_bytes(self) -> int:
        """Return the bytes held by all segments, the open one included."""
        return self._closed_bytes + self._size

    @property
    def current_bytes(self) -> int:
        """Return the size of the open segment; the owner rotates past ``segment_max_bytes``."""
        return self._size

    @property
    def current(self) -> Path | None:
        """Return the segment that appends go to, or None before the first append."""
        return self._path

    def append(self, messages: Sequence[RawMessage]) -> None:
        """Append ``messages`` to the open segment (not yet durable: call :meth:`sync`).

        On failure the segment is cut back to its last whole record and closed, so a later
        append never follows a torn record.

        Raises:
            OSError: the disk is full or failing; nothing of ``messages`` counts as written.
        """
        if not messages:
            return
        if self._file is None:
            self._start_segment()
        assert self._file is not None
        parts: list[bytes] = []
        for message in messages:
            topic = message.topic.encode()
            body = topic + message.payload
            head = HEADER.pack(0, len(message.payload), message.received_at_ms, len(topic))[4:]
            crc = zlib.crc32(body, zlib.crc32(head))
            parts += (struct.pack("<I", crc), head, body)
        data = b"".join(parts)
        try:
            self._file.write(data)
        except OSError:
            self._cut_back()
            raise
        self._size += len(data)
        self._records += len(messages)

    def sync(self) -> None:
        """Make every appended record durable (one ``fsync``: the group commit).

        Raises:
            OSError: the data may not be on disk; do not acknowledge it.
        """
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            self._cut_back()
            raise
        self._synced = self._size

    def _cut_back(self) -> None:
        """Drop the unsynced tail of the open segment after a failed write and close it."""
        if self._file is None or self._path is None:
            return
        path, synced = self._path, self._synced
        with contextlib.suppress(OSError):
            self._file.close()
        try:
            os.truncate(path, synced)
        except OSError as exc:
            log.error("could not cut back WAL segment %s: %s", path, exc)
        self._file, self._path = None, None
        self._size = self._synced = 0
        self._closed_bytes += synced
        if synced <= len(MAGIC):
            path.unlink(missing_ok=True)
            self._closed_bytes -= synced
        else:
            self._cut = path

    def _start_segment(self) -> None:
        path = self.directory / f"{self._next:016d}{SUFFIX}"
        self._next += 1
        handle = open(path, "xb")  # noqa: SIM115 - kept open until rotated
        try:
            handle.write(MAGIC)
        except OSError:
            handle.close()
            path.unlink(missing_ok=True)
            raise
        self._file, self._path = handle, path
        self._size, self._synced, self._records = len(MAGIC), 0, 0
        fsync_dir(self.directory)

    def rotate(self) -> Path | None:
        """Close the open segment and return it (None when there is none or it is empty).

        A segment that a failed write closed (cut back to its synced records) is returned by the
        next call. The next append starts a new segment.

        Raises:
            OSError: the final sync failed.
        """
        if self._file is None or self._path is None:
            cut, self._cut = self._cut, None
            return cut
        path, records = self._path, self._records
        self.sync()
        self._file.close()
        self._closed_bytes += self._size
        self._file, self._path, self._size, self._synced, self._records = None, None, 0, 0, 0
        if records == 0:
            self.delete([path])
            return None
        return path

    def delete(self, paths: Sequence[Path]) -> None:
        """Delete closed segments whose readings are committed to the lake."""
        self._closed_bytes -= delete_segments(self.directory, paths)

    def forget(self, nbytes: int) -> None:
        """Account for ``nbytes`` of closed segments deleted by another process (the writer)."""
        self._closed_bytes = max(0, self._closed_bytes - nbytes)

    def recount(self) -> None:
        """Count the closed segments' bytes again from the folder."""
        self._closed_bytes = sum(
            size for p in self.segments() if p != self._path and (size := _size(p)) is not None
        )

    def close(self) -> None:
        """Sync and close the open segment and give up ownership of the folder."""
        try:
            self.rotate()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def read_owner(directory: Path) -> tuple[str, str] | None:
    """Return the identity and URL of the lake that the WAL in ``directory`` belongs to, or
    None when the folder names no lake.

    Raises:
        ConfigError: the owner file is unreadable or damaged.
    """
    path = directory / OWNER_FILE
    try:
        document = json.loads(path.read_text())
        return str(document["lake_id"]), str(document.get("lake_url", ""))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"The WAL folder {directory} has a damaged {OWNER_FILE} ({exc}); it cannot be told "
            "which lake its messages belong to. Restore the file, or move the folder away."
        ) from exc


def segment_number(path: Path) -> int:
    """Return the number of a segment file (segments are read and deleted in this order)."""
    return int(path.name.removesuffix(SUFFIX))


def delete_segments(directory: Path, paths: Sequence[Path]) -> int:
    """Delete closed segments whose readings are committed to the lake; return bytes freed."""
    freed = 0
    for path in paths:
        size = _size(path)
        if size is None:
            continue
        path.unlink(missing_ok=True)
        freed += size
    if paths:
        fsync_dir(directory)
    return freed


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def read_segment(path: Path, chunk: int = READ_CHUNK) -> Iterator[list[RawMessage]]:
    """Yield the messages of a segment in chunks, stopping at the first torn or corrupt record.

    A torn tail is what a crash leaves of an append that was never synced, so never
    acknowledged; it is ignored with a warning. Corruption before the tail keeps the segment's
    bytes in ``<name>.corrupt`` beside it for inspection.
    """
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        log.error("WAL segment %s has no WAL header; kept as %s.corrupt", path, path.name)
        _keep_corrupt(path, data)
        return
    offset, out = len(MAGIC), []
    while offset < len(data):
        end_of_header = offset + HEADER.size
        if end_of_header > len(data):
            break
        crc, payload_len, received_at_ms, topic_len = HEADER.unpack_from(data, offset)
        end = end_of_header + topic_len + payload_len
        if end > len(data):
            break
        head = data[offset + 4 : end_of_header]
        body = data[end_of_header:end]
        if zlib.crc32(body, zlib.crc32(head)) != crc:
            break
        topic = body[:topic_len].decode()
        out.append(RawMessage(topic, body[topic_len:], received_at_ms))
        offset = end
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out
    if offset < len(data):
        log.warning(
            "WAL segment %s: %d byte(s) after the last whole record ignored (an append that "
            "was never synced, so never acknowledged)",
            path,
            len(data) - offset,
        )
        _keep_corrupt(path, data)


def _keep_corrupt(path: Path, data: bytes) -> None:
    path.with_name(path.name + ".corrupt").write_bytes(data)

"""The write-ahead log: what was synced comes back, a torn tail does not, one owner at a time."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.conftest import run_on_tiny_disk
from wattlake.devices.base import RawMessage
from wattlake.errors import ConfigError
from wattlake.stream.wal import WriteAheadLog, read_segment


def messages(count: int, start: int = 0) -> list[RawMessage]:
    return [
        RawMessage(f"dev-{i % 3}/events/rpc", f'{{"n": {i}}}'.encode() + b"\x00\xff", 1_700_000 + i)
        for i in range(start, start + count)
    ]


def read_all(path: Path) -> list[RawMessage]:
    return [m for chunk in read_segment(path, chunk=7) for m in chunk]


def test_synced_messages_read_back_byte_for_byte_in_order(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    assert wal.open() == []
    wal.append(messages(10))
    wal.append(messages(15, start=10))
    wal.sync()
    segment = wal.rotate()
    assert segment is not None
    assert read_all(segment) == messages(25)
    assert wal.total_bytes == segment.stat().st_size
    wal.close()


def test_a_crash_leaves_segments_for_the_next_owner(tmp_path: Path) -> None:
    first = WriteAheadLog(tmp_path / "wal")
    first.open()
    first.append(messages(5))
    first.sync()
    # The process dies here: no rotate, no close; the OS releases the lock.
    os.close(first._lock_fd)  # type: ignore[arg-type]
    second = WriteAheadLog(tmp_path / "wal")
    left = second.open()
    assert [m for path in left for m in read_all(path)] == messages(5)
    second.append(messages(1, start=5))
    second.sync()
    assert second.current not in left, "a new run never appends to an old segment"
    second.close()


def test_a_torn_tail_is_ignored_and_the_rest_kept(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    wal.open()
    wal.append(messages(4))
    wal.sync()
    segment = wal.rotate()
    assert segment is not None
    whole = segment.read_bytes()
    for cut in (1, 5, 17):
        segment.write_bytes(whole[:-cut])
        assert read_all(segment) == messages(3)
    # A flipped bit in the last record fails its CRC.
    segment.write_bytes(whole[:-3] + bytes([whole[-3] ^ 1]) + whole[-2:])
    assert read_all(segment) == messages(3)
    assert segment.with_name(segment.name + ".corrupt").exists()
    wal.close()


def test_a_file_without_the_header_yields_nothing_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "0000000000000001.wal"
    path.write_bytes(b"not a wal")
    assert read_all(path) == []
    assert (tmp_path / "0000000000000001.wal.corrupt").read_bytes() == b"not a wal"


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    first = WriteAheadLog(tmp_path / "wal")
    first.open()
    with pytest.raises(ConfigError, match="Another ingest process"):
        WriteAheadLog(tmp_path / "wal").open()
    first.close()
    WriteAheadLog(tmp_path / "wal").open()


def test_empty_segments_are_not_kept_and_deleted_ones_stop_counting(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "wal")
    wal.open()
    assert wal.rotate() is None
    wal.append(messages(2))
    wal.sync()
    first = wal.rotate()
    wal.append(messages(2, start=2))
    wal.sync()
    assert first is not None and wal.total_bytes > first.stat().st_size
    wal.delete([first])
    assert not first.exists()
    assert wal.total_bytes == wal.current_bytes
    wal.close()
    assert [p.name for p in (tmp_path / "wal").glob("*.wal")] == ["0000000000000002.wal"]


FILL_THE_DISK = """
import errno, sys
from pathlib import Path
from wattlake.devices.base import RawMessage
from wattlake.stream.wal import WriteAheadLog
wal = WriteAheadLog(Path(sys.argv[1]))
wal.open()
synced = 0
try:
    while True:
        wal.append([RawMessage("dev/events/rpc", bytes(1000), 1)] * 10)
        wal.sync()
        synced += 10
except OSError as exc:
    assert exc.errno == errno.ENOSPC, exc
print(synced)
# The WAL is usable again once there is room: a new segment after the cut-back one.
for path in wal.segments():
    path.unlink()
wal.delete(wal.segments())
wal.append([RawMessage("dev/events/rpc", b"after", 2)])
wal.sync()
print(sum(1 for p in wal.segments()))
"""


def test_a_full_disk_fails_the_append_and_keeps_every_synced_record(tmp_path: Path) -> None:
    """On a real, tiny file system: the append that hits ENOSPC counts as not written."""
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    out = run_on_tiny_disk(wal_dir, "96k", [sys.executable, "-c", FILL_THE_DISK, str(wal_dir)])
    synced, segments_after = (int(x) for x in out.split())
    assert 0 < synced < 96
    assert segments_after == 1


def test_a_cut_back_segment_holds_exactly_the_synced_records(tmp_path: Path) -> None:
    """What a full disk leaves: synced records, then a torn append that was cut away."""
    wal = WriteAheadLog(tmp_path / "wal")
    wal.open()
    wal.append(messages(3))
    wal.sync()
    path = wal.current
    assert path is not None
    synced = path.stat().st_size
    wal.append(messages(2, start=3))  # appended, never synced: the disk filled up meanwhile
    wal._cut_back()
    assert path.stat().st_size == synced
    assert read_all(path) == messages(3)
    assert wal.current is None and wal.total_bytes == synced
    wal.close()

"""Commits that replace files (compaction's): each manifest of the parent read once, the files
of a manifest that are not replaced kept, a replaced file that is gone refused."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.manifest import ManifestFile

from wattlake.errors import StorageError
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _rows(days: int, first: int = 0) -> pa.Table:
    return readings_to_table(
        [
            {
                "ts": T0 + d * DAY_MS + i * 10_000,
                "received_at": T0 + d * DAY_MS + i * 10_000 + 5,
                "device_id": "m1",
                "channel": 0,
                "source": "generic",
                "power_w": float(first + i),
            }
            for d in range(days)
            for i in range(10)
        ]
    )


def _paths(lake: Lake) -> set[str]:
    return {t.file.file_path for t in tables.scan_files(lake, READINGS_TABLE)}


def test_replacing_some_files_of_a_manifest_keeps_the_others(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tables.append(lake, READINGS_TABLE, _rows(3))  # one manifest, three days' files
    second = tables.append(lake, READINGS_TABLE, _rows(1, first=100))  # another manifest
    table = tables.open_table(lake, READINGS_TABLE)
    stored = tables.to_stored(READINGS_TABLE, _rows(1, first=200))
    (new,) = tables.write_data_files(table, READINGS_TABLE, stored)
    day0 = [  # as a scan plan gives them (compaction's)
        t.file
        for t in tables.scan_files(lake, READINGS_TABLE)
        if t.file.partition[0] == first[0].partition[0]
    ]
    assert {f.file_path for f in day0} == {first[0].file_path, second[0].file_path}
    reads: list[str] = []
    fetch = ManifestFile.fetch_manifest_entry

    def counted(self: ManifestFile, *args: object, **kwargs: object) -> object:
        reads.append(self.manifest_path)
        return fetch(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(ManifestFile, "fetch_manifest_entry", counted)
        tables.commit(table, [new], removed=day0)
    assert len(reads) == len(set(reads)) == 2  # both manifests hold a replaced file
    assert _paths(lake) == {new.file_path} | {f.file_path for f in first[1:]}
    back = tables.read_table(lake, READINGS_TABLE)
    assert back.num_rows == 30
    # Days 1 and 2 of the first append, day 0 from the new file only.
    assert sorted(back["power_w"].to_pylist()) == sorted(
        [float(i) for i in range(10)] * 2 + [float(200 + i) for i in range(10)]
    )


def test_replacing_a_file_that_is_gone_fails(lake: Lake) -> None:
    tables.append(lake, READINGS_TABLE, _rows(1))
    (old,) = [t.file for t in tables.scan_files(lake, READINGS_TABLE)]
    table = tables.open_table(lake, READINGS_TABLE)
    stored = tables.to_stored(READINGS_TABLE, _rows(1, first=50))
    (a,) = tables.write_data_files(table, READINGS_TABLE, stored)
    (b,) = tables.write_data_files(table, READINGS_TABLE, stored)
    table = tables.commit(table, [a], removed=[old])
    with pytest.raises(StorageError):
        tables.commit(table, [b], removed=[old])
    assert _paths(lake) == {a.file_path}

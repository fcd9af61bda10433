"""Compaction: the data files of a day of table ``readings`` into one sorted, deduplicated file.

Small files cost two to three times more per row to store and to scan. For each UTC day with
more than one data file, compaction reads exactly the files of the current scan plan, keeps one
row per (device_id, channel, ts) (the earliest received), sorts by device, channel and time and
commits one Iceberg snapshot that replaces exactly the files it read with the new one. Files
appended meanwhile (late data, a running ingest) are not touched and survive; a reader sees the
day either before or after, never half of it; a crash before the commit leaves an orphan file
that ``jobs run maintain`` removes.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, TABLES


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What compacting one day did."""

    date: str
    files_read: int
    rows_read: int
    rows_written: int
    data_file: str

    def as_row(self) -> dict[str, object]:
        """Return the result as a row for the CLI."""
        return {
            "date": self.date,
            "files_read": self.files_read,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "duplicates_removed": self.rows_read - self.rows_written,
            "data_file": self.data_file,
        }


def deduplicate(stored: pa.Table) -> pa.Table:
    """Return ``stored`` readings with each (device_id, channel, ts) once, the earliest
    received (then the first source by name) kept, sorted by device, channel and ts."""
    keys = tables._sort_keys(stored, ("device_id", "channel", "ts", "received_at", "source"))
    order = np.lexsort(tuple(reversed(keys)))
    device, channel, ts = (k[order] for k in keys[:3])
    first = np.ones(len(order), dtype=bool)
    first[1:] = (device[1:] != device[:-1]) | (channel[1:] != channel[:-1]) | (ts[1:] != ts[:-1])
    return stored.take(order[first])


def compact(lake: Lake, *, dates: list[str] | None = None) -> list[CompactionResult]:
    """Compact every day of ``readings`` that has several data files (or only ``dates``,
    as ``YYYY-MM-DD``).

    Raises:
        wattlake.errors.StorageError: the lake could not be read or written; nothing changed
            that a reader can see.
    """
    table = tables.open_table(lake, READINGS_TABLE)
    by_day: dict[int, list[DataFile]] = defaultdict(list)
    for task in tables.scan_files(lake, READINGS_TABLE):
        if task.delete_files:
            continue  # rows deleted by another engine: left to that engine's own compaction
        by_day[int(task.file.partition[0])].append(task.file)
    results = []
    for day in sorted(by_day):
        date = str(np.datetime64(day, "D"))
        files = by_day[day]
        if (dates is not None and date not in dates) or len(files) < 2:
            continue
        parts = [pq.read_table(tables.local_path(f.file_path), filesystem=lake.fs) for f in files]
        stored = pa.concat_tables(parts, promote_options="permissive").cast(
            TABLES[READINGS_TABLE].schema
        )
        kept = deduplicate(stored)
        written = tables.write_data_files(table, READINGS_TABLE, kept)
        table = tables.commit(
            table, written, removed=files, properties={"wattlake.compacted-day": date}
        )
        results.append(
            CompactionResult(date, len(files), stored.num_rows, kept.num_rows, written[0].file_path)
        )
    return results


def run(settings: Settings, *, dates: list[str] | None = None, **_: Any) -> list[dict[str, Any]]:
    """Run compaction as the ``compact`` job."""
    return [r.as_row() for r in compact(Lake.from_settings(settings), dates=dates)]

"""Compaction: many small raw files of a day into one sorted, deduplicated curated file.

Small Parquet files cost two to three times more per row to store and to scan; compaction
rewrites each UTC day of ``raw/readings`` (and what an earlier run already curated for it) as
``curated/readings/date=YYYY-MM-DD/part-*.parquet``, sorted by device, channel and time, with each
(device_id, channel, ts) once. Only the raw files it read are deleted, after the curated file is
in place, so ingest may keep writing meanwhile and a crash at any point loses nothing (at worst
a reading is in both areas for a while, and the ``readings`` view shows it once).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import duckdb

from wattlake.lake.catalog import DEDUP_WINDOW, parquet_view
from wattlake.lake.storage import CURATED_READINGS, RAW_READINGS, Lake
from wattlake.schema import COLUMNS, READING_SCHEMA
from wattlake.stream.naming import object_name

_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What compacting one day did."""

    date: str
    files_read: int
    rows_read: int
    rows_written: int
    curated_file: str

    def as_row(self) -> dict[str, object]:
        """Return the result as a row for the CLI."""
        return {
            "date": self.date,
            "files_read": self.files_read,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "duplicates_removed": self.rows_read - self.rows_written,
            "curated_file": self.curated_file,
        }


def files_by_date(files: list[str]) -> dict[str, list[str]]:
    """Group lake object paths by their ``date=`` partition."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for path in files:
        match = _DATE.search(path)
        if match:
            grouped[match.group(1)].append(path)
    return grouped


def compact(lake: Lake, *, dates: list[str] | None = None) -> list[CompactionResult]:
    """Compact every day that has raw files (or only ``dates``, as ``YYYY-MM-DD``).

    Raises:
        wattlake.errors.TransientStorageError: the lake could not be read or written; nothing
            was deleted that is not also in a curated file.
    """
    raw = files_by_date(lake.list_files(RAW_READINGS, ".parquet"))
    curated = files_by_date(lake.list_files(CURATED_READINGS, ".parquet"))
    results = []
    for date in sorted(raw):
        if dates is not None and date not in dates:
            continue
        results.append(_compact_day(lake, date, raw[date], curated.get(date, [])))
    return results


def _compact_day(lake: Lake, date: str, raw: list[str], curated: list[str]) -> CompactionResult:
    con = duckdb.connect()
    parquet_view(con, "day", lake, curated + raw)
    rows_read = int(con.sql("SELECT count(*) FROM day").fetchall()[0][0])
    table = con.sql(
        f"SELECT {', '.join(COLUMNS)} FROM day QUALIFY row_number() OVER ({DEDUP_WINDOW}) = 1 "
        "ORDER BY device_id, channel, ts"
    ).to_arrow_table()
    table = table.cast(READING_SCHEMA)
    name = object_name("part", 0, ".parquet")
    target = lake.write_table(f"{CURATED_READINGS}/date={date}/{name}", table)
    for path in curated + raw:
        lake.delete(path)
    return CompactionResult(date, len(raw) + len(curated), rows_read, table.num_rows, target)

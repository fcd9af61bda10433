"""Compaction: the data files of a day of table ``readings`` into one sorted, deduplicated file.

Small files cost two to three times more per row to store and to scan. For each UTC day with
more than one data file, compaction reads exactly the files of the current scan plan, keeps one
row per (device_id, channel, ts) (the earliest received) and sorts by device, channel and time.
Whole days are committed in batches (see COMMIT_ROWS): one Iceberg snapshot replaces exactly
the files the batch read with one new file per day. Files appended meanwhile (late data, a
running ingest) are not touched and survive; a reader sees each day either before or after,
never half of it; a crash before a commit leaves orphan files that ``jobs run maintain``
removes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile, DataFileContent

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE

if TYPE_CHECKING:
    from wattlake.progress import ProgressCallback

# Days prepared at once.
COMPACT_THREADS: Final = 2
# Days are committed together until they hold this many rows read (or MAX_DAYS_PER_COMMIT
# days, or the last day): a commit costs about as much CPU as preparing a day of a small fleet
# (pyiceberg's metadata, manifests, the catalog's transaction), and a crash loses at most the
# work of one batch.
COMMIT_ROWS: Final = 4_000_000
MAX_DAYS_PER_COMMIT: Final = 32
COMPACTED_PROPERTY: Final = "wattlake.compacted-day"
# Text columns read as dictionaries.
TEXT_COLUMNS: Final = ("device_id", "source")


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


def _one_key(
    device: npt.NDArray[np.int64], channel: npt.NDArray[np.int64], ts: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """Return each reading's series number and one int64 key that orders readings as
    (device, channel, ts) do, or None when the key would not fit in 62 bits."""
    series = device * (int(channel.max()) + 1) + channel - int(min(0, channel.min()))
    first_ts = int(ts.min())
    span = int(ts.max()) - first_ts + 1
    if int(series.max()) >= (1 << 62) // span:
        return None
    return series, series * span + (ts - first_ts)


def merge_order(stored: pa.Table, file_rows: Sequence[int]) -> npt.NDArray[np.int64] | None:
    """Return the order that sorts ``stored`` readings (the rows of several files one after
    the other, each file ``file_rows`` long) by device, channel and ts, found without sorting
    them, when each file is sorted so without a repeated reading and the runs of a series in
    different files do not overlap in time (stream flushes, the slices of a day): then no
    reading has a copy to choose from. Return None otherwise (:func:`deduplicate` sorts).
    """
    n = stored.num_rows
    if n == 0 or sum(file_rows) != n:
        return None
    keyed = _one_key(*tables._sort_keys(stored, ("device_id", "channel", "ts")))
    if keyed is None:
        return None
    series, key = keyed  # one int64 per reading, in the table's order
    starts_file = np.zeros(n, dtype=bool)
    starts_file[np.cumsum(file_rows)[:-1]] = True
    if np.any((np.diff(key) <= 0) & ~starts_file[1:]):
        return None  # a file out of order, or holding a reading twice
    # Runs: the readings of one series in one file.
    starts = np.flatnonzero(starts_file[1:] | (series[1:] != series[:-1])) + 1
    starts = np.concatenate(([0], starts))
    stops = np.append(starts[1:], n)
    runs = np.lexsort((key[starts], series[starts]))  # by series, then first reading
    starts, stops = starts[runs], stops[runs]
    same = series[starts][1:] == series[starts][:-1]
    if np.any(key[stops[:-1] - 1][same] >= key[starts[1:]][same]):
        return None  # two files' runs of a series overlap in time
    lengths = stops - starts
    # Position p of the output, in run j placed at output offset o_j, is row p - o_j + start_j.
    return np.arange(n) - np.repeat(np.cumsum(lengths) - lengths - starts, lengths)


def deduplicate(stored: pa.Table) -> pa.Table:
    """Return ``stored`` readings with each (device_id, channel, ts) once, the earliest
    received (then the first source by name) kept, sorted by device, channel and ts."""
    keys = tables._sort_keys(stored, ("device_id", "channel", "ts"))
    n = stored.num_rows
    if n == 0:
        return stored
    device, channel, ts = keys
    # One int64 key per row when it fits (a day of microseconds takes 37 bits): one sort.
    keyed = _one_key(device, channel, ts)
    if keyed is not None:
        key = keyed[1]
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        if not np.any(sorted_key[1:] == sorted_key[:-1]):  # no copies: no choice to make
            return tables.take_rows(stored, order)
    received = tables.received_at_us(stored).view(pa.int64()).fill_null(0).to_numpy()
    (source,) = tables._sort_keys(stored, ("source",))
    order = np.lexsort((source, received, ts, channel, device))
    device, channel, ts = (k[order] for k in keys)
    first = np.ones(len(order), dtype=bool)
    first[1:] = (device[1:] != device[:-1]) | (channel[1:] != channel[:-1]) | (ts[1:] != ts[:-1])
    return tables.take_rows(stored, order[first])


def compact(
    lake: Lake,
    *,
    dates: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[CompactionResult]:
    """Compact every day of ``readings`` that has several data files (or only ``dates``,
    as ``YYYY-MM-DD``); ``on_progress(done, total)`` counts the days written (committed in
    batches of whole days).

    Raises:
        wattlake.errors.StorageError: the lake could not be read or written; nothing changed
            that a reader can see.
    """
    with _arrow_memory_from_jemalloc():
        return _compact(lake, dates, on_progress)


@contextmanager
def _arrow_memory_from_jemalloc() -> Iterator[None]:
    """Have pyarrow allocate from jemalloc meanwhile, unless told otherwise
    (``ARROW_DEFAULT_MEMORY_POOL``) or built without it.

    Compaction takes and frees about 100 MB per day prepared. pyarrow's default allocator,
    mimalloc, gives such memory back to the kernel and takes it again, and the kernel zeroes
    every page it hands out: on the benchmark fleet 0.5-1.0 s of system CPU against 0.7 s of
    work (0.2 s with jemalloc, which keeps freed memory for a second). The default pool is the
    process's: buffers made meanwhile by other threads come from jemalloc too, which changes
    nothing else (each buffer is freed to the pool it came from).
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        yield
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        yield
        return
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


def _compact(
    lake: Lake, dates: list[str] | None, on_progress: ProgressCallback | None
) -> list[CompactionResult]:
    table = tables.open_table(lake, READINGS_TABLE)
    # The plan from the manifests' entries, which the commit uses again (one read of each).
    read = tables.live_entries(table)
    files = [e.data_file for entries in read.values() for e in entries]
    spec_id = table.metadata.default_spec_id
    by_day: dict[int, list[DataFile]] = defaultdict(list)
    if all(f.content == DataFileContent.DATA and f.spec_id == spec_id for f in files):
        for f in files:
            by_day[int(f.partition[0])].append(f)
    else:  # delete files (or an older partition spec) from another engine: a scan plan
        for task in tables.scan_files(lake, READINGS_TABLE):
            if task.delete_files:
                continue  # rows deleted by another engine: left to that engine's own compaction
            by_day[int(task.file.partition[0])].append(task.file)
    todo = [
        (day, by_day[day])
        for day in sorted(by_day)
        if len(by_day[day]) >= 2 and (dates is None or str(np.datetime64(day, "D")) in dates)
    ]

    # Workers write through a copy of the table's layout: the table object itself changes
    # with each commit of the main thread.
    writer = tables.DataFileWriter.of(table, READINGS_TABLE)

    def prepare(day: int, files: list[DataFile]) -> tuple[DataFile, int, int]:
        # Text columns as dictionaries: no string per reading is made, hashed or compared.
        # One thread per file read: the days themselves are prepared in parallel.
        parts = [
            pq.read_table(
                tables.local_path(f.file_path),
                filesystem=lake.fs,
                read_dictionary=TEXT_COLUMNS,
                use_threads=False,
            )
            for f in files
        ]
        # Files written before the receive lag existed hold received_at: the new form.
        stored = tables.to_stored(
            READINGS_TABLE,
            pa.concat_tables(parts, promote_options="permissive").unify_dictionaries(),
        )
        order = merge_order(stored, [p.num_rows for p in parts])
        # Sorted as the table is: written as it is.
        kept = deduplicate(stored) if order is None else tables.take_rows(stored, order)
        return writer.write_day(day, kept), stored.num_rows, kept.num_rows

    results: list[CompactionResult] = []
    if on_progress is not None:
        on_progress(0, len(todo))
    # Days are read, sorted and written two at a time (Parquet and numpy release the GIL)
    # while the main thread commits them in order, in batches of whole days: a reader sees a
    # day either before or after its compaction.
    with ThreadPoolExecutor(max_workers=COMPACT_THREADS) as pool:
        futures = [pool.submit(prepare, day, files) for day, files in todo]
        done: list[tuple[int, list[DataFile], DataFile, int, int]] = []
        for number, ((day, files), future) in enumerate(zip(todo, futures, strict=True)):
            done.append((day, files, *future.result()))
            if on_progress is not None:
                on_progress(number + 1, len(todo))
            if (
                number + 1 < len(todo)
                and sum(rows_read for *_, rows_read, _ in done) < COMMIT_ROWS
                and len(done) < MAX_DAYS_PER_COMMIT
            ):
                continue
            dates = [str(np.datetime64(day, "D")) for day, *_ in done]
            table = tables.commit(
                table,
                [written for _, _, written, _, _ in done],
                removed=[f for _, files, *_ in done for f in files],
                properties={COMPACTED_PROPERTY: ",".join(dates)},
                read=read,
            )
            results += [
                CompactionResult(date, len(files), rows_read, rows_kept, written.file_path)
                for date, (_, files, written, rows_read, rows_kept) in zip(dates, done, strict=True)
            ]
            done = []
    return results


def run(
    settings: Settings,
    *,
    dates: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
    **_: Any,
) -> list[dict[str, Any]]:
    """Run compaction as the ``compact`` job (``on_progress`` counts days)."""
    lake = Lake.from_settings(settings)
    return [r.as_row() for r in compact(lake, dates=dates, on_progress=on_progress)]

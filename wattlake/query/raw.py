"""The raw energy path: bracketed readings straight from the data files of the readings table.

What ``energy``, ``cost`` and ``pv`` read when rollups cannot answer: the readings of a range and,
per device channel, the nearest reading of each kind on either side, deduplicated and sorted
without a DuckDB view (:mod:`wattlake.query.engine` holds the views).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from wattlake.errors import StorageError
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import DEDUP_KEY, READING_SCHEMA, READINGS_TABLE, TABLES

_DAY_MS: Final = 86_400_000
_STORED_READINGS: Final = TABLES[READINGS_TABLE].schema
_STRINGS: Final = ("device_id", "source")
_BRACKET_COLUMNS: Final = (
    "ts",
    "device_id",
    "channel",
    "power_w",
    "energy_wh",
    "returned_energy_wh",
)
_BRACKET_KINDS: Final = 4  # any reading, finite power, import counter >= 0, export counter >= 0
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class _Rows:
    """Stored rows (one chunk per column, strings dictionary-encoded) and their order:
    ``order`` lists the rows deduplicated on (device_id, channel, ts), earliest received copy
    first as the ``readings`` view keeps it, sorted by device, channel and ts."""

    table: pa.Table
    order: IntArray
    series: IntArray  # series number of each row of ``order``
    keys: list[tuple[str, int]]  # (device_id, channel) of each series number
    ts_us: IntArray  # ts of each row of ``order``


def _ints(column: pa.ChunkedArray) -> IntArray:
    """Return integer, timestamp or decimal values as int64 (decimals in units of their scale,
    dictionary strings as their indices; nulls as 0)."""
    parts = []
    for array in column.chunks:
        if pa.types.is_decimal(array.type):
            words = np.frombuffer(array.buffers()[1], dtype=np.int64).reshape(-1, 2)
            parts.append(words[array.offset : array.offset + len(array), 0])
            continue
        if pa.types.is_dictionary(array.type):
            array = array.indices
        elif pa.types.is_timestamp(array.type):
            array = array.view(pa.int64())
        if array.null_count:
            array = array.fill_null(0)
        parts.append(array.to_numpy(zero_copy_only=False))
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.int64, copy=False)


def _valid(column: pa.ChunkedArray) -> BoolArray:
    if column.null_count == 0:
        return np.ones(len(column), dtype=np.bool_)
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=np.bool_)


def _codes(column: pa.ChunkedArray) -> tuple[IntArray, list[str]]:
    """Return each row's rank among the column's sorted distinct strings, and those strings
    (``column`` dictionary-encoded with one dictionary, or plain strings)."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    names = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank[_ints(column)], [names[i] for i in order]


def _sort_rows(table: pa.Table, more: Callable[[list[str]], pa.Table]) -> _Rows:
    """Order stored rows as :class:`_Rows` describes (``more(columns)`` returns the same rows'
    ``received_at`` and ``source``, needed only when copies of a reading must be chosen)."""
    table = table.unify_dictionaries()
    dev, names = _codes(table["device_id"])
    ch = _ints(table["channel"])
    ts = _ints(table["ts"])
    low = int(ch.min()) if ch.size else 0
    width = int(ch.max()) - low + 1 if ch.size else 1
    key = dev * width + (ch - low)
    order = np.arange(key.size, dtype=np.int64)
    if not np.all((key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (ts[1:] > ts[:-1]))):
        # Each file is sorted: a stable sort by series keeps their (day, so time) order. Small
        # integers sort by radix.
        small = key.astype(np.uint16) if key.size and key.max() < 1 << 16 else key
        order = np.argsort(small, kind="stable")
        k, t = key[order], ts[order]
        if np.any((k[1:] == k[:-1]) & (t[1:] <= t[:-1])):  # overlapping files, duplicates
            extra = more(["received_at", "source"]).unify_dictionaries()
            received = _ints(extra["received_at"])
            source, _ = _codes(extra["source"])
            order = np.lexsort((source, received, ts, key))
            k, t = key[order], ts[order]
            first = np.ones(k.size, dtype=np.bool_)
            first[1:] = (k[1:] != k[:-1]) | (t[1:] != t[:-1])
            order = order[first]
    key, ts = key[order], ts[order]
    change = np.ones(key.size, dtype=np.bool_)
    change[1:] = key[1:] != key[:-1]
    series = np.cumsum(change) - 1
    keys = [(names[int(d) // width], int(d) % width + low) for d in key[change]]
    return _Rows(table, order, series, keys, ts)


def _brackets(
    rows: _Rows, start_us: int, end_us: int, index: IntArray, nseries: int
) -> tuple[IntArray, IntArray]:
    """Return, per series (``index`` maps the rows' series numbers to these) and bracket kind,
    the position in ``rows.order`` of the nearest reading before ``start_us`` and of the first
    at or after ``end_us`` (-1: none)."""
    before = np.full((nseries, _BRACKET_KINDS), -1, dtype=np.int64)
    after = np.full((nseries, _BRACKET_KINDS), -1, dtype=np.int64)
    n = rows.order.size
    if n == 0:
        return before, after
    t = rows.table
    power = _valid(t["power_w"])[rows.order]
    imp = (_valid(t["energy_wh"]) & (_ints(t["energy_wh"]) >= 0))[rows.order]
    exp = (_valid(t["returned_energy_wh"]) & (_ints(t["returned_energy_wh"]) >= 0))[rows.order]
    position = np.arange(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, rows.series[1:] != rows.series[:-1]])
    which = index[rows.series[starts]]
    early, late = rows.ts_us < start_us, rows.ts_us >= end_us
    for j, mask in enumerate((np.ones(n, dtype=np.bool_), power, imp, exp)):
        last = np.maximum.reduceat(np.where(mask & early, position, -1), starts)
        first = np.minimum.reduceat(np.where(mask & late, position, n), starts)
        before[which, j] = last
        after[which, j] = np.where(first < n, first, -1)
    return before, after


def read_bracketed(
    lake: Lake,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table | None:
    """Return the readings in [start, end) and, per device channel, the nearest reading of each
    kind on each side (as :func:`wattlake.query.energy.bracketed_readings` does over the
    ``readings`` view), read from the data files of the table's scan plan with pyarrow.

    Rows are deduplicated on (device_id, channel, ts), earliest received first, and sorted by
    device, channel and ts; ``columns`` of :data:`wattlake.schema.READING_SCHEMA` (default all;
    ``ts``, ``device_id`` and ``channel`` always). The files of the
    days around the range are read whole; further files only for the series whose nearest
    reading lies beyond them. Returns None when the plan has delete files or files not
    partitioned by day (read the views then).

    Raises:
        wattlake.errors.StorageError: the catalog or a data file cannot be read.
    """
    plan = tables.scan_files(lake, READINGS_TABLE)
    if any(task.delete_files for task in plan):
        return None
    wanted = [c for c in READING_SCHEMA.names if columns is None or c in columns or c in DEDUP_KEY]
    by_day: dict[int, list[str]] = {}
    for task in plan:
        day = task.file.partition[0] if len(task.file.partition) else None
        if not isinstance(day, int):  # not partitioned by day (another engine's spec)
            return None
        by_day.setdefault(day, []).append(tables.local_path(task.file.file_path))
    lo, hi = start_ms // _DAY_MS - 1, end_ms // _DAY_MS + 1
    start_us, end_us = start_ms * 1000, end_ms * 1000

    def read(days: Iterable[int], devices: Sequence[str] | None) -> _Rows:
        paths = [p for d in sorted(days) for p in by_day[d]]
        table = _read_files(lake, paths, devices, wanted)
        return _sort_rows(table, lambda extra: _read_files(lake, paths, devices, extra))

    window = read([d for d in by_day if lo <= d <= hi], device_ids)
    earlier = sorted((d for d in by_day if d < lo), reverse=True)
    later = sorted(d for d in by_day if d > hi)
    keys = list(window.keys)
    if earlier or later:  # a series silent around the range still gets its brackets
        seen = set(keys)
        outside = [p for d in earlier + later for p in by_day[d]]
        keys += [k for k in _series_in(lake, outside, device_ids) if k not in seen]
    before, after = _brackets(
        window, start_us, end_us, np.arange(len(window.keys), dtype=np.int64), len(keys)
    )
    picked = (window.ts_us >= start_us) & (window.ts_us < end_us)
    picked[before[before >= 0]] = True
    picked[after[after >= 0]] = True
    parts = [_readings(window.table, window.order[picked], wanted)]
    number = {key: i for i, key in enumerate(keys)}
    for side, days in ((before, earlier), (after, later)):
        chunk = 7
        while days and np.any(side < 0):
            devices = sorted({keys[i][0] for i in np.flatnonzero((side < 0).any(axis=1))})
            batch, days = days[:chunk], days[chunk:]
            chunk *= 4
            rows = read(batch, devices)
            index = np.array([number[k] for k in rows.keys], dtype=np.int64)
            found = _brackets(rows, start_us, end_us, index, len(keys))[0 if side is before else 1]
            new = (side < 0) & (found >= 0)
            side[new] = found[new]
            if new.any():
                rows_found = rows.order[np.unique(found[new])]
                parts.append(_readings(rows.table, rows_found, wanted))
    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables(parts)
    return table.take(pc.sort_indices(table, [(c, "ascending") for c in DEDUP_KEY]))


def _read_files(
    lake: Lake, paths: list[str], devices: Sequence[str] | None, columns: Sequence[str]
) -> pa.Table:
    """Return ``columns`` (and what deduplication and brackets need) of the rows of readings
    data files (strings dictionary-encoded), only those of ``devices`` if given."""
    if not paths:
        return _STORED_READINGS.empty_table()
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=_STRINGS))
    schema = pa.schema(
        [
            f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in _STRINGS else f
            for f in _STORED_READINGS
        ]
    )
    try:
        dataset = ds.dataset(paths, schema=schema, format=fmt, filesystem=lake.fs)
        flt = (
            None if devices is None else ds.field("device_id").isin(pa.array(devices, pa.string()))
        )
        needed = {*columns, *_BRACKET_COLUMNS}
        return dataset.to_table(columns=[c for c in schema.names if c in needed], filter=flt)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"Cannot read the readings of {lake.url}: {exc}") from exc


def _series_in(
    lake: Lake, paths: list[str], devices: Sequence[str] | None
) -> list[tuple[str, int]]:
    """Return the distinct (device_id, channel) of readings data files."""
    dataset = ds.dataset(paths, schema=_STORED_READINGS, format="parquet", filesystem=lake.fs)
    con = duckdb.connect()
    con.register("files", dataset)
    query = "SELECT DISTINCT device_id, channel FROM files"
    if devices is None:
        rows = con.sql(query).fetchall()
    else:
        rows = con.sql(
            query + " WHERE list_contains($devices, device_id)", params={"devices": list(devices)}
        ).fetchall()
    return sorted((str(d), int(c)) for d, c in rows)


def _readings(stored: pa.Table, rows: IntArray, columns: Sequence[str]) -> pa.Table:
    """Return ``rows`` of stored readings with ``columns`` in the in-memory schema (ms
    timestamps, float64 values)."""
    arrays: list[pa.Array] = []
    indices = pa.array(rows, pa.int64())
    for name in columns:
        field = READING_SCHEMA.field(name)
        column = stored[name]
        if pa.types.is_decimal(column.type):
            values = _ints(column)[rows] / 10.0**column.type.scale  # one rounding, as CAST
            mask = None if column.null_count == 0 else ~_valid(column)[rows]
            arrays.append(pa.array(values, pa.float64(), mask=mask))
        elif pa.types.is_timestamp(column.type):
            arrays.append(pa.array(_ints(column)[rows] // 1000, pa.int64()).cast(field.type))
        elif pa.types.is_dictionary(column.type):
            dictionary = (
                column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
            )
            picked = pa.DictionaryArray.from_arrays(
                pa.array(_ints(column)[rows], pa.int32()), dictionary
            )
            arrays.append(picked.cast(field.type))
        else:
            arrays.append(column.take(indices).combine_chunks().cast(field.type))
    return pa.Table.from_arrays(
        arrays, schema=pa.schema([READING_SCHEMA.field(c) for c in columns])
    )

"""The raw energy path: bracketed readings straight from the data files of the readings table.

What ``energy``, ``cost`` and ``pv`` read when rollups cannot answer: the readings of a range and,
per device channel, the nearest reading of each kind on either side, deduplicated and sorted
without a DuckDB view (:mod:`wattlake.query.engine` holds the views). :func:`read_bracketed`
returns them as an Arrow table in the in-memory schema; :func:`read_series` returns the same
readings as one :class:`~wattlake.energy.series.Series` per device channel, straight from the
stored integers to numpy arrays (no table in between), which is what the energy kernel takes.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.errors import StorageError
from wattlake.lake.storage import Lake
from wattlake.query.engine import kept_plan
from wattlake.schema import (
    DEDUP_KEY,
    READING_SCHEMA,
    READINGS_TABLE,
    RECEIVE_LAG_COLUMN,
    SERIES_COLUMNS,
    TABLES,
)

# wattlake.lake.tables (pyiceberg) and pyarrow.dataset (which imports pandas) are imported in
# the functions that use them: a short command answered from the plan cache needs neither.
if TYPE_CHECKING:
    from wattlake.energy.series import Series

_DAY_MS: Final = 86_400_000
GROUP_ROWS = 4_000_000
"""About how many readings :func:`read_series` reads at once over a long range (default)."""
_Part = TypeVar("_Part")
_STORED_READINGS: Final = TABLES[READINGS_TABLE].schema
_STRINGS: Final = ("device_id", "source")
_SERIES_VALUES: Final = ("power_w", "energy_wh", "returned_energy_wh")
_BRACKET_KINDS: Final = 4  # any reading, finite power, import counter >= 0, export counter >= 0
_KIND_COLUMNS: Final = (None, "power_w", "energy_wh", "returned_energy_wh")
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Rows:
    """Stored rows (strings dictionary-encoded) and their order: the rows deduplicated on
    (device_id, channel, ts), earliest received copy first as the ``readings`` view keeps it,
    sorted by device, channel and ts (:meth:`stored` gives the row at each position of that
    order); series ``j`` (``keys[j]``, its (device_id, channel)) holds positions
    ``bounds[j]`` to ``bounds[j + 1]``."""

    table: pa.Table
    bounds: IntArray
    keys: list[tuple[str, int]]
    ts_ms: IntArray  # ts of each position [ms] (the stored µs, floored)
    order: IntArray | None  # the stored row of each position; None: see ``pieces``
    # Else the order is runs of rows of one record batch each: per run, the batch, its first
    # and end row in the batch, and its first row in the table.
    pieces: IntArray | None = None
    _ints: dict[str, IntArray] = field(default_factory=dict)
    _valid: dict[str, BoolArray | None] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Return the number of rows in order."""
        return int(self.bounds[-1])

    def stored(self, positions: IntArray | None = None) -> IntArray:
        """Return the stored row at each of ``positions`` of the order (default: all)."""
        if self.order is not None:
            return self.order if positions is None else self.order[positions]
        assert self.pieces is not None
        lengths = self.pieces[2] - self.pieces[1]
        first = np.cumsum(lengths) - lengths  # position of each run's first row
        if positions is None:
            positions = np.arange(self.size, dtype=np.int64)
        run = np.searchsorted(first, positions, side="right") - 1
        return np.asarray(self.pieces[3][run] + (positions - first[run]), dtype=np.int64)

    def ints(self, name: str) -> IntArray:
        """Return column ``name`` as int64 per stored row (see :func:`_ints`), computed once."""
        if name not in self._ints:
            self._ints[name] = _ints(self.table[name])
        return self._ints[name]

    def valid(self, name: str) -> BoolArray | None:
        """Return whether column ``name`` holds a value, per stored row (None: every row)."""
        if name not in self._valid:
            column = self.table[name]
            self._valid[name] = _valid(column) if column.null_count else None
        return self._valid[name]


def _chunk_ints(array: pa.Array) -> npt.NDArray[np.signedinteger[Any]]:
    """Return integer, timestamp or decimal values of one array as integers, without a copy
    where possible (decimals in units of their scale, dictionary strings as their indices;
    nulls as 0)."""
    if pa.types.is_decimal(array.type):  # decimal128 (as read), or 64/32 (as written)
        width = array.type.byte_width
        if width == 16:
            words = np.frombuffer(array.buffers()[1], dtype=np.int64).reshape(-1, 2)
            return words[array.offset : array.offset + len(array), 0]
        dtype = np.dtype(np.int64) if width == 8 else np.dtype(np.int32)
        values: npt.NDArray[np.signedinteger[Any]] = np.frombuffer(array.buffers()[1], dtype)
        return values[array.offset : array.offset + len(array)]
    if pa.types.is_dictionary(array.type):
        array = array.indices
    elif pa.types.is_timestamp(array.type):
        array = array.view(pa.int64())
    if array.null_count:
        array = array.fill_null(0)
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _ints(column: pa.ChunkedArray) -> IntArray:
    """Return integer, timestamp or decimal values as int64 (see :func:`_chunk_ints`)."""
    parts = [_chunk_ints(array) for array in column.chunks]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(parts).astype(np.int64, copy=False)


def _valid(column: pa.ChunkedArray) -> BoolArray:
    if column.null_count == 0:
        return np.ones(len(column), dtype=np.bool_)
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=np.bool_)


def _names(column: pa.ChunkedArray) -> tuple[list[str], IntArray]:
    """Return the sorted distinct strings of a column dictionary-encoded with one dictionary,
    and the rank among them of each dictionary entry."""
    names = column.chunk(0).dictionary.to_pylist() if column.num_chunks else []
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return [names[i] for i in order], rank


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


def _runs_in_order(key: IntArray, ts: IntArray, breaks: IntArray) -> IntArray | None:
    """Return the rows in order of (key, ts) when they are runs each sorted by (key, ts) without
    repeats (split at ``breaks``; each file is such a run) and a series' readings in a later run
    all follow those of an earlier one (a file per day keeps a series' days in time order); else
    None."""
    n = key.size
    # Pieces: rows of one series within one run, each sorted by ts; stable by series.
    starts = np.unique(np.concatenate(([0], breaks, np.flatnonzero(key[1:] != key[:-1]) + 1)))
    lengths = np.diff(np.append(starts, n))
    by = np.argsort(key[starts], kind="stable")
    starts, lengths, piece_key = starts[by], lengths[by], key[starts[by]]
    same = piece_key[1:] == piece_key[:-1]
    if not np.all(ts[starts[1:][same]] > ts[(starts + lengths - 1)[:-1][same]]):
        return None  # runs overlap in time (late data, resent copies)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(n, dtype=np.int64) + np.repeat(starts - offsets, lengths)


def _batch_runs(
    table: pa.Table, names: list[str], rank: IntArray, low: int, width: int
) -> _Rows | None:
    """Return the rows in order when each record batch is sorted by (device, channel, ts)
    without repeats and, per series, the batches' readings do not interleave in time (files of
    one day each, or stream flushes of one day in any order); else None (copies of a reading to
    choose between, late data inside another file's span, unsorted files). Works a batch at a
    time (in the processor's cache) and copies each column once."""
    batches = [b for b in table.to_batches() if b.num_rows]
    found = []  # per run of one series in one batch: batch, start, stop, key, first ts, last ts
    for i, batch in enumerate(batches):
        key = rank[_chunk_ints(batch.column("device_id"))] * width
        key += _chunk_ints(batch.column("channel")) - low
        ts = _chunk_ints(batch.column("ts"))
        same = key[1:] == key[:-1]
        if not np.all((key[1:] > key[:-1]) | (same & (ts[1:] > ts[:-1]))):
            return None
        starts = np.concatenate(([0], np.flatnonzero(~same) + 1))
        stops = np.append(starts[1:], key.size)
        found.append(
            np.stack(
                (np.full(starts.size, i), starts, stops, key[starts], ts[starts], ts[stops - 1])
            )
        )
    if not found:
        return None
    runs = np.concatenate(found, axis=1)
    runs = runs[:, np.lexsort((runs[4], runs[3]))]  # by series, then time
    batch_no, starts, stops, key, first_ts, last_ts = runs
    same = key[1:] == key[:-1]
    if not np.all(first_ts[1:][same] > last_ts[:-1][same]):
        return None  # batches interleave in time (late data, resent copies)
    lengths = stops - starts
    offsets = np.cumsum([0] + [b.num_rows for b in batches])
    pieces = np.stack((batch_no, starts, stops, offsets[batch_no] + starts))
    ts_columns = [_chunk_ints(b.column("ts")) for b in batches]
    ts_ms = np.empty(int(lengths.sum()), dtype=np.int64)
    at = 0
    for b, a, z in pieces[:3].T.tolist():
        np.floor_divide(ts_columns[b][a:z], 1000, out=ts_ms[at : at + z - a])
        at += z - a
    firsts = np.concatenate(([0], np.flatnonzero(~same) + 1))
    bounds = np.append(np.cumsum(np.concatenate(([0], lengths)))[firsts], ts_ms.size)
    keys = [(names[int(d) // width], int(d) % width + low) for d in key[firsts]]
    return _Rows(table, bounds, keys, ts_ms, None, pieces)


def _sort_rows(table: pa.Table, more: Callable[[list[str]], pa.Table]) -> _Rows:
    """Order stored rows as :class:`_Rows` describes (``more(columns)`` returns the same rows'
    receive time columns and ``source``, needed only when copies of a reading must be
    chosen)."""
    from wattlake.lake import tables

    table = table.unify_dictionaries()
    if table.num_rows and pa.types.is_dictionary(table["device_id"].type):
        names, rank = _names(table["device_id"])
        ch_range = pc.min_max(table["channel"]).as_py()
        low, width = int(ch_range["min"]), int(ch_range["max"]) - int(ch_range["min"]) + 1
        fast = _batch_runs(table, names, rank, low, width)
        if fast is not None:
            return fast
    dev, names = _codes(table["device_id"])
    ch = _ints(table["channel"])
    ts = _ints(table["ts"])
    low = int(ch.min()) if ch.size else 0
    width = int(ch.max()) - low + 1 if ch.size else 1
    key = dev * width + (ch - low)
    ahead = (key[1:] > key[:-1]) | ((key[1:] == key[:-1]) & (ts[1:] > ts[:-1]))
    breaks = np.flatnonzero(~ahead) + 1
    if breaks.size == 0:  # sorted already (one file, or one series per file in order)
        order = np.arange(key.size, dtype=np.int64)
        key_o, ts_o = key, ts
    else:
        runs = _runs_in_order(key, ts, breaks)
        if runs is not None:
            order = runs
        else:
            # A stable sort by series keeps each file's (day, so time) order. Small integers
            # sort by radix.
            small = key.astype(np.uint16) if key.max() < 1 << 16 else key
            order = np.argsort(small, kind="stable")
            k, t = key[order], ts[order]
            if np.any((k[1:] == k[:-1]) & (t[1:] <= t[:-1])):  # overlapping files, duplicates
                extra = more(["received_at", RECEIVE_LAG_COLUMN, "source"]).unify_dictionaries()
                # The receive time as the views give it: received_at, else ts + receive_lag_ms.
                received = _ints(pa.chunked_array([tables.received_at_us(extra)]))
                source, _ = _codes(extra["source"])
                order = np.lexsort((source, received, ts, key))
                k, t = key[order], ts[order]
                first = np.ones(k.size, dtype=np.bool_)
                first[1:] = (k[1:] != k[:-1]) | (t[1:] != t[:-1])
                order = order[first]
        key_o, ts_o = key[order], ts[order]
    change = np.flatnonzero(key_o[1:] != key_o[:-1]) + 1
    firsts = np.concatenate(([0], change)) if key_o.size else change
    bounds = np.append(firsts, key_o.size).astype(np.int64)
    keys = [(names[int(d) // width], int(d) % width + low) for d in key_o[firsts]]
    return _Rows(table, bounds, keys, ts_o // 1000, order)


@dataclass(frozen=True, slots=True)
class _Brackets:
    """Per series and bracket kind, the position in ``order`` of the nearest reading before the
    range and of the first at or after its end (-1: none); per series of the rows read, the
    positions where the range begins and ends."""

    before: IntArray
    after: IntArray
    first: IntArray
    stop: IntArray


def _kind_ok(rows: _Rows, kind: int, positions: IntArray) -> BoolArray:
    """Return whether the readings at ``positions`` of the order are of bracket ``kind``."""
    name = _KIND_COLUMNS[kind]
    if name is None:
        return np.ones(positions.size, dtype=np.bool_)
    stored = rows.stored(positions)
    valid = rows.valid(name)
    ok = np.ones(positions.size, dtype=np.bool_) if valid is None else valid[stored]
    if name != "power_w":
        ok &= rows.ints(name)[stored] >= 0
    return ok


def _nearest(rows: _Rows, kind: int, lo: int, hi: int, *, last: bool) -> int:
    """Return the last (or first) position in [lo, hi) of the order with a reading of
    bracket ``kind``, or -1; looks at a few positions first and widens the search."""
    width = 8
    while hi > lo:
        a, b = (max(lo, hi - width), hi) if last else (lo, min(hi, lo + width))
        hits = np.flatnonzero(_kind_ok(rows, kind, np.arange(a, b, dtype=np.int64)))
        if hits.size:
            return a + int(hits[-1] if last else hits[0])
        if last:
            hi = a
        else:
            lo = b
        width *= 8
    return -1


def _brackets(rows: _Rows, start_ms: int, end_ms: int, index: IntArray, nseries: int) -> _Brackets:
    """Return the brackets (see :class:`_Brackets`); ``index`` maps the rows' series numbers to
    the ``nseries`` series of the answer."""
    before = np.full((nseries, _BRACKET_KINDS), -1, dtype=np.int64)
    after = np.full((nseries, _BRACKET_KINDS), -1, dtype=np.int64)
    nkeys = len(rows.keys)
    first = np.zeros(nkeys, dtype=np.int64)
    stop = np.zeros(nkeys, dtype=np.int64)
    for j in range(nkeys):
        a, b = int(rows.bounds[j]), int(rows.bounds[j + 1])
        ts = rows.ts_ms[a:b]  # floored: before a whole ms exactly when the µs are
        p0 = a + int(np.searchsorted(ts, start_ms, side="left"))
        p1 = a + int(np.searchsorted(ts, end_ms, side="left"))
        first[j], stop[j] = p0, p1
        which = int(index[j])
        for kind in range(_BRACKET_KINDS):
            before[which, kind] = _nearest(rows, kind, a, p0, last=True)
            after[which, kind] = _nearest(rows, kind, p1, b, last=False)
    return _Brackets(before, after, first, stop)


def _window_positions(rows: _Rows, found: _Brackets) -> IntArray | None:
    """Return the positions of the order in the range or bracketing it, ascending (None:
    all of them)."""
    nkeys = len(rows.keys)
    edges = [
        (
            np.unique(found.before[j][found.before[j] >= 0]),
            np.unique(found.after[j][found.after[j] >= 0]),
        )
        for j in range(nkeys)
    ]
    total = sum(b.size + a.size for b, a in edges) + int((found.stop - found.first).sum())
    if total == rows.size:
        return None
    pieces: list[IntArray] = [np.zeros(0, dtype=np.int64)]
    for j, (before, after) in enumerate(edges):
        pieces += [before, np.arange(found.first[j], found.stop[j], dtype=np.int64), after]
    return np.concatenate(pieces)


def _window_groups(
    days: dict[int, int], start_ms: int, end_ms: int, group_rows: int | None
) -> list[list[int]]:
    """Return the window's days (and their row counts) cut into groups of about ``group_rows``
    rows, in time order (None, or at most twice that many rows in all: one group). Cuts only
    between a day at or after the range's first day and one at or before its last: every
    reading before the range is then in the first group and every reading at or after its end
    in the last, so each group's brackets are those of the whole window and a group between
    them holds only readings in the range."""
    ordered = sorted(days)
    if group_rows is None or sum(days.values()) <= 2 * group_rows:
        return [ordered]  # joining groups would cost more than holding them at once
    first, last = start_ms // _DAY_MS, end_ms // _DAY_MS
    groups, rows = [[ordered[0]]], days[ordered[0]]
    for before, day in itertools.pairwise(ordered):
        if rows >= group_rows and before >= first and day <= last:
            groups.append([])
            rows = 0
        groups[-1].append(day)
        rows += days[day]
    return groups


_MEMO_LOCK = threading.Lock()


def _plan(lake: Lake) -> list[Any]:
    """Return :func:`wattlake.lake.tables.scan_files` of the readings table, planned once per
    table state (kept as the web server's views keep it)."""
    from wattlake.lake import tables

    snapshot = tables.open_table(lake, READINGS_TABLE).current_snapshot()
    if snapshot is None:
        return []
    return kept_plan(lake, READINGS_TABLE, snapshot.snapshot_id)[0]


def _bracketed(
    lake: Lake,
    start_ms: int,
    end_ms: int,
    device_ids: Sequence[str] | None,
    wanted: list[str],
    take: Callable[[_Rows, IntArray | None, int], _Part],
    group_rows: int | None = None,
) -> tuple[list[_Part], list[tuple[str, int]]] | None:
    """Return the parts of the bracketed readings, each rows read and the positions of their
    order picked (None: all) as ``take`` keeps them, in time order per series (the readings
    of a part are all before or all after those of the next); and the (device_id, channel)
    of every series; None when the scan plan has delete files or files not partitioned by
    day. The window's days are read in groups of about ``group_rows`` rows (None: at once),
    each given to ``take`` before the next is read, with the number of readings of the window
    in it and the groups after it (0 for readings outside the window)."""
    from wattlake.lake import tables

    plan = _plan(lake)
    if any(task.delete_files for task in plan):
        return None
    by_day: dict[int, list[str]] = {}
    day_rows: dict[int, int] = {}
    for task in plan:
        day = task.file.partition[0] if len(task.file.partition) else None
        if not isinstance(day, int):  # not partitioned by day (another engine's spec)
            return None
        by_day.setdefault(day, []).append(tables.local_path(task.file.file_path))
        day_rows[day] = day_rows.get(day, 0) + int(task.file.record_count)
    lo, hi = start_ms // _DAY_MS - 1, end_ms // _DAY_MS + 1

    def files(days: Iterable[int]) -> list[str]:
        return [p for d in sorted(days) for p in by_day[d]]

    def ordered(paths: list[str], table: pa.Table, devices: Sequence[str] | None) -> _Rows:
        return _sort_rows(table, lambda extra: _read_files(lake, paths, devices, extra))

    def read(days: Iterable[int], devices: Sequence[str] | None) -> _Rows:
        paths = files(days)
        return ordered(paths, _read_files(lake, paths, devices, wanted), devices)

    window_days = {d: n for d, n in day_rows.items() if lo <= d <= hi}
    inside: list[_Part] = []
    keys: list[tuple[str, int]] = []
    number: dict[tuple[str, int], int] = {}
    edges: list[tuple[IntArray, IntArray, IntArray]] = []  # per group: series, before, after
    day_groups = _window_groups(window_days, start_ms, end_ms, group_rows)
    groups = [files(group) for group in day_groups]
    left = np.cumsum([sum(window_days[d] for d in g) for g in day_groups][::-1])[::-1].tolist()
    # The next group's files are read while this one is worked on: Arrow decodes them in its
    # own threads, and most of the work on a group holds one core.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="raw-read") as reader:

        def read_ahead(g: int) -> Future[pa.Table] | None:
            if g >= len(groups):
                return None
            return reader.submit(_read_files, lake, groups[g], device_ids, wanted)

        coming = read_ahead(0)
        for g, paths in enumerate(groups):
            assert coming is not None
            table = coming.result()
            coming = read_ahead(g + 1)  # at most one group read ahead
            rows = ordered(paths, table, device_ids)
            del table
            for key in rows.keys:
                number.setdefault(key, len(keys))
                if len(keys) < len(number):
                    keys.append(key)
            nkeys = len(rows.keys)
            found = _brackets(rows, start_ms, end_ms, np.arange(nkeys, dtype=np.int64), nkeys)
            inside.append(take(rows, _window_positions(rows, found), left[g]))
            index = np.array([number[k] for k in rows.keys], dtype=np.int64)
            edges.append((index, found.before, found.after))
            del rows  # the next group is read without this one's table
    earlier = sorted((d for d in by_day if d < lo), reverse=True)
    later = sorted(d for d in by_day if d > hi)
    if earlier or later:  # a series silent around the range still gets its brackets
        seen = set(keys)
        outside = [p for d in earlier + later for p in by_day[d]]
        keys += [k for k in _series_in(lake, outside, device_ids) if k not in seen]
        number = {key: i for i, key in enumerate(keys)}
    # Whether each series has a bracket of each kind in the window (only the first group has
    # readings before the range, only the last readings after it).
    before = np.full((len(keys), _BRACKET_KINDS), -1, dtype=np.int64)
    after = np.full((len(keys), _BRACKET_KINDS), -1, dtype=np.int64)
    for index, group_before, group_after in edges:
        before[index] = np.maximum(before[index], group_before)
        after[index] = np.maximum(after[index], group_after)
    ahead: list[_Part] = []  # nearest readings before the window, latest days first
    behind: list[_Part] = []
    for side, days, out in ((before, earlier, ahead), (after, later, behind)):
        chunk = 7
        while days and np.any(side < 0):
            devices = sorted({keys[i][0] for i in np.flatnonzero((side < 0).any(axis=1))})
            batch, days = days[:chunk], days[chunk:]
            chunk *= 4
            rows = read(batch, devices)
            index = np.array([number[k] for k in rows.keys], dtype=np.int64)
            there = _brackets(rows, start_ms, end_ms, index, len(keys))
            near = there.before if side is before else there.after
            new = (side < 0) & (near >= 0)
            side[new] = near[new]
            if new.any():
                out.append(take(rows, np.unique(near[new]), 0))
    return ahead[::-1] + inside + behind, keys


def _wanted(columns: Sequence[str] | None) -> list[str]:
    return [c for c in READING_SCHEMA.names if columns is None or c in columns or c in DEDUP_KEY]


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
    wanted = _wanted(columns)
    found = _bracketed(
        lake,
        start_ms,
        end_ms,
        device_ids,
        wanted,
        lambda rows, at, _: _readings(rows, rows.stored(at), wanted),
    )
    if found is None:
        return None
    parts = found[0]
    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables(parts)
    return table.take(pc.sort_indices(table, [(c, "ascending") for c in DEDUP_KEY]))


def read_series(
    lake: Lake,
    start_ms: int,
    end_ms: int,
    *,
    device_ids: Sequence[str] | None = None,
    group_rows: int | None = None,
) -> list[Series] | None:
    """Return the readings :func:`read_bracketed` returns as one series per device channel, as
    :func:`wattlake.energy.series.split_series` cuts its table (times in ms, readings in the same
    ms after the first dropped, values as float64 with NaN where absent), without building the
    table.

    The days of a long range are read in groups of about ``group_rows`` readings (default
    :data:`GROUP_ROWS`), each written into its series' arrays before the next is read.

    Returns None when the plan has delete files or files not partitioned by day (read the views
    then).

    Raises:
        wattlake.errors.StorageError: the catalog or a data file cannot be read.
    """
    from wattlake.energy.series import Series

    filling = _Filling()

    def take(rows: _Rows, at: IntArray | None, left: int) -> _SeriesPart | None:
        if left == 0:  # the nearest readings outside the window: a few per series
            return _series_part(rows, at)
        filling.add(rows, at, left)
        return None

    found = _bracketed(
        lake,
        start_ms,
        end_ms,
        device_ids,
        list(SERIES_COLUMNS),
        take,
        GROUP_ROWS if group_rows is None else group_rows,
    )
    if found is None:
        return None
    parts, keys = found
    # In time order: the parts before the window, its readings (filled), the parts after it.
    inside = [p for p, part in enumerate(parts) if part is None]
    split = inside[0] if inside else len(parts)
    before = [part for part in parts[:split] if part is not None]
    after = [part for part in parts[split:] if part is not None]
    result = []
    for key in sorted(keys):
        edges = [[_cut(part, key) for part in side] for side in (before, after)]
        cols = filling.series(key, *([c for c in cut if c is not None] for cut in edges))
        if cols is not None:
            result.append(Series(*key, *cols))
    return result


_SeriesPart = tuple[list[tuple[str, int]], IntArray, IntArray, list[npt.NDArray[Any]]]


def _cut(part: _SeriesPart, key: tuple[str, int]) -> list[npt.NDArray[Any]] | None:
    """Return the columns of series ``key`` in ``part`` (None: it has no reading there)."""
    keys, firsts, sizes, cols = part
    if key not in keys:
        return None
    j = keys.index(key)
    a, n = int(firsts[j]), int(sizes[j])
    return [c[a : a + n] for c in cols]


_HEAD: Final = _BRACKET_KINDS  # the most readings before the window a series is given
_TAIL: Final = _BRACKET_KINDS  # and after it


@dataclass(slots=True)
class _Filling:
    """The readings of each series in the window, group by group in time order, written into
    one array per column and series (room left before them for the nearest readings before
    the window, found last, and after them for those after it).

    Writing each group's readings where they end (instead of arrays per group joined at the
    end) takes half the memory and one pass over it less: fresh memory is most of the cost
    of a long range."""

    arrays: dict[tuple[str, int], list[npt.NDArray[Any]]] = field(default_factory=dict)
    filled: dict[tuple[str, int], int] = field(default_factory=dict)  # end of the readings

    def add(self, rows: _Rows, at: IntArray | None, left: int) -> None:
        """Write the readings at positions ``at`` of the order of a group (None: all) after
        those of the groups before; ``left``: readings in the window from this group on."""
        keys, firsts, size, ts, keep = _layout(rows, at)
        group = max(int(size.sum()), 1)
        offsets = []
        for key, n in zip(keys, size.tolist(), strict=True):
            offsets.append(self._room(key, n, n * left // group))
        outs = [self.arrays[key] for key in keys]
        places = list(zip(outs, firsts.tolist(), size.tolist(), offsets, strict=True))
        for cols, a, n, o in places:
            cols[0][o : o + n] = ts[a : a + n]
        if at is None and rows.pieces is not None and keep is None:
            # Decimals divided straight into place, run by run (each run is of one series).
            lengths = rows.pieces[2] - rows.pieces[1]
            position = np.cumsum(lengths) - lengths  # of each run's first reading
            series = np.searchsorted(firsts, position, side="right") - 1
            to = np.asarray(offsets, dtype=np.int64)[series] + position - firsts[series]
            _on_cores(
                [
                    functools.partial(_piece_floats, rows, name, [o[c] for o in outs], series, to)
                    for c, name in enumerate(_SERIES_VALUES, start=1)
                ]
            )
        else:
            stored = rows.stored(at)
            if keep is not None:
                stored = stored[keep]
            for c, name in enumerate(_SERIES_VALUES, start=1):
                values = _floats(rows, name, stored)
                for cols, a, n, o in places:
                    cols[c][o : o + n] = values[a : a + n]
        for key, n in zip(keys, size.tolist(), strict=True):
            self.filled[key] += n

    def _room(self, key: tuple[str, int], n: int, expected: int) -> int:
        """Return where the next ``n`` readings of ``key`` go, making room for them (and, for a
        new series, for about ``expected`` in all from here on: memory never written to is
        never taken)."""
        at = self.filled.get(key, _HEAD)
        cols = self.arrays.get(key)
        need = at + n + _TAIL
        if cols is None or need > cols[0].size:
            size = max(need, _HEAD + expected * 9 // 8 + _TAIL)
            if cols is not None:  # more readings than expected: a larger array, copied once
                size = max(size, cols[0].size * 3 // 2)
            fresh = [np.empty(size, dtype=np.int64)]
            fresh += [np.empty(size, dtype=np.float64) for _ in _SERIES_VALUES]
            if cols is not None:
                for new, old in zip(fresh, cols, strict=True):
                    new[_HEAD:at] = old[_HEAD:at]
            self.arrays[key] = fresh
            self.filled[key] = at
        return at

    def series(
        self,
        key: tuple[str, int],
        before: list[list[npt.NDArray[Any]]],
        after: list[list[npt.NDArray[Any]]],
    ) -> list[npt.NDArray[Any]] | None:
        """Return the columns of series ``key``: ``before`` (parts' columns in time order),
        the window's readings, ``after`` (None: no reading at all)."""
        cols = self.arrays.get(key)
        if cols is None:
            pieces = before + after
            if not pieces:
                return None
            return [np.concatenate([p[c] for p in pieces]) for c in range(len(pieces[0]))]
        a, b = _HEAD, self.filled[key]
        n_before = sum(p[0].size for p in before)
        n_after = sum(p[0].size for p in after)
        if n_before > a or b + n_after > cols[0].size:  # more than the room left (not seen)
            inside = [[c[a:b] for c in cols]]
            pieces = before + inside + after
            return [np.concatenate([p[c] for p in pieces]) for c in range(len(cols))]
        for p in before[::-1]:
            for c, column in enumerate(cols):
                column[a - p[c].size : a] = p[c]
            a -= p[0].size
        for p in after:
            for c, column in enumerate(cols):
                column[b : b + p[c].size] = p[c]
            b += p[0].size
        return [c[a:b] for c in cols]


def _layout(
    rows: _Rows, at: IntArray | None
) -> tuple[list[tuple[str, int]], IntArray, IntArray, IntArray, BoolArray | None]:
    """Return, for the readings at positions ``at`` of the order (None: all), the series with
    readings, where each begins and its size, and the readings' ts [ms], once readings in the
    same ms after a series' first are dropped (the first stays, as split_series keeps it); and
    which readings were kept (None: all)."""
    size = np.diff(rows.bounds if at is None else np.searchsorted(at, rows.bounds))
    ts = rows.ts_ms if at is None else rows.ts_ms[at]
    keys = [k for k, n in zip(rows.keys, size.tolist(), strict=True) if n]
    size = size[size > 0]
    firsts = np.cumsum(size) - size
    repeated = ts[1:] == ts[:-1]
    repeated[firsts[1:] - 1] = False  # a series' first reading repeats nothing
    if not repeated.any():
        return keys, firsts, size, ts, None
    keep = np.concatenate(([True], ~repeated))
    size = np.add.reduceat(keep.astype(np.int64), firsts)
    return keys, np.cumsum(size) - size, size, ts[keep], keep


def _series_part(rows: _Rows, at: IntArray | None) -> _SeriesPart:
    """Return the readings at positions ``at`` of the order (None: all) as per-series arrays:
    the series with readings, where each begins and its size, and the columns ts [ms], power,
    import and export counters (float64, NaN where absent), readings in the same ms after a
    series' first dropped."""
    keys, firsts, size, ts, keep = _layout(rows, at)
    stored = rows.stored(at)
    if keep is not None:
        stored = stored[keep]
    cols: list[npt.NDArray[Any]] = [ts]
    cols += [_floats(rows, name, stored) for name in _SERIES_VALUES]
    return keys, firsts, size, cols


_R = TypeVar("_R")


def _on_cores(tasks: Sequence[Callable[[], _R]]) -> list[_R]:
    """Return the results of ``tasks``, run on a thread per core (numpy and Arrow let go of
    the GIL in their passes over arrays)."""
    from wattlake.energy.series import usable_cores

    workers = min(usable_cores(), len(tasks))
    if workers < 2:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raw") as pool:
        return list(pool.map(lambda task: task(), tasks))


def _piece_floats(
    rows: _Rows, name: str, outs: list[FloatArray], series: IntArray, to: IntArray
) -> None:
    """Write decimal column ``name`` as float64 (NaN where absent) run by run
    (``rows.pieces``): run ``i`` into ``outs[series[i]]`` from ``to[i]`` on."""
    assert rows.pieces is not None
    batches = [b for b in rows.table.to_batches() if b.num_rows]
    scale = 10.0 ** rows.table.schema.field(name).type.scale
    units = [_chunk_ints(b.column(name)) for b in batches]
    nulls = [
        None if not b.column(name).null_count else ~_valid(pa.chunked_array([b.column(name)]))
        for b in batches
    ]
    runs = zip(*rows.pieces[:3].tolist(), series.tolist(), to.tolist(), strict=True)
    for b, a, z, j, at in runs:
        part = outs[j][at : at + z - a]
        np.divide(units[b][a:z], scale, out=part)  # one rounding, as in _floats
        absent = nulls[b]
        if absent is not None:
            part[absent[a:z]] = np.nan


def _floats(rows: _Rows, name: str, stored: IntArray) -> FloatArray:
    """Return decimal column ``name`` at rows ``stored`` as float64, NaN where absent."""
    column = rows.table[name]
    values: FloatArray = rows.ints(name)[stored] / 10.0**column.type.scale  # one rounding
    valid = rows.valid(name)
    if valid is not None:
        values[~valid[stored]] = np.nan
    return values


def _read_type(stored: pa.Field) -> pa.DataType:
    """Return the type a stored column is read as: strings dictionary-encoded, decimals of at
    most 18 digits as decimal64 (Parquet's reader gives decimal128: twice the memory, and
    fresh memory is much of the cost of a long range)."""
    if stored.name in _STRINGS:
        return pa.dictionary(pa.int32(), stored.type)
    if pa.types.is_decimal(stored.type) and stored.type.precision <= 18:
        return pa.decimal64(stored.type.precision, stored.type.scale)
    return stored.type


_READ_SCHEMA: Final = pa.schema([f.with_type(_read_type(f)) for f in _STORED_READINGS])


def _read_files(
    lake: Lake, paths: list[str], devices: Sequence[str] | None, columns: Sequence[str]
) -> pa.Table:
    """Return ``columns`` (and what deduplication and brackets need) of the rows of readings
    data files (strings dictionary-encoded), only those of ``devices`` if given."""
    import pyarrow.dataset as ds

    if not paths:
        return _STORED_READINGS.empty_table()
    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=_STRINGS))
    try:
        dataset = ds.dataset(paths, schema=_READ_SCHEMA, format=fmt, filesystem=lake.fs)
        flt = (
            None if devices is None else ds.field("device_id").isin(pa.array(devices, pa.string()))
        )
        needed = {*columns, *SERIES_COLUMNS}
        if "received_at" in needed:  # stored as a lag behind ts (older files: received_at)
            needed.add(RECEIVE_LAG_COLUMN)
        return dataset.to_table(columns=[c for c in _READ_SCHEMA.names if c in needed], filter=flt)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StorageError(f"Cannot read the readings of {lake.url}: {exc}") from exc


# The distinct (device_id, channel) of each readings data file, by lake and path. Data files are
# never rewritten in place (compaction writes new ones and drops the old from the plan), so a
# long-running process (the web server) reads each file's two columns once, not every file
# outside the window on every call (6.8 s for a year of 10 devices at 10 s, loaded machine).
_FILE_SERIES: dict[tuple[str, str], frozenset[tuple[str, int]]] = {}


def _series_in(
    lake: Lake, paths: list[str], devices: Sequence[str] | None
) -> list[tuple[str, int]]:
    """Return the distinct (device_id, channel) of readings data files."""
    import pyarrow.dataset as ds

    with _MEMO_LOCK:
        known = {p: _FILE_SERIES.get((str(lake.url), p)) for p in paths}
    missing = [p for p, found in known.items() if found is None]
    if missing:
        dataset = ds.dataset(missing, schema=_STORED_READINGS, format="parquet", filesystem=lake.fs)
        for fragment in dataset.get_fragments():
            pairs = (
                fragment.to_table(columns=["device_id", "channel"])
                .group_by(["device_id", "channel"])
                .aggregate([])
            )
            found = frozenset(
                zip(pairs["device_id"].to_pylist(), pairs["channel"].to_pylist(), strict=True)
            )
            known[fragment.path] = found
            with _MEMO_LOCK:
                _FILE_SERIES[(str(lake.url), fragment.path)] = found
    wanted = None if devices is None else set(devices)
    return sorted(
        {
            (str(d), int(c))
            for found in known.values()
            for d, c in found or ()
            if wanted is None or d in wanted
        }
    )


def _readings(rows: _Rows, stored: IntArray, columns: Sequence[str]) -> pa.Table:
    """Return ``stored`` rows of readings with ``columns`` in the in-memory schema (ms
    timestamps, float64 values)."""
    from wattlake.lake import tables

    arrays: list[pa.Array] = []
    indices = pa.array(stored, pa.int64())
    for name in columns:
        field_ = READING_SCHEMA.field(name)
        column = rows.table[name]
        if pa.types.is_decimal(column.type):
            values = rows.ints(name)[stored] / 10.0**column.type.scale  # one rounding, as CAST
            valid = rows.valid(name)
            mask = None if valid is None else ~valid[stored]
            arrays.append(pa.array(values, pa.float64(), mask=mask))
        elif name == "received_at":  # received_at, else ts + receive_lag_ms [µs]
            received = pa.chunked_array([tables.received_at_us(rows.table)])
            values = pa.array(
                _ints(received)[stored] // 1000, pa.int64(), mask=~_valid(received)[stored]
            )
            arrays.append(values.cast(field_.type))
        elif pa.types.is_timestamp(column.type):
            arrays.append(pa.array(rows.ints(name)[stored] // 1000, pa.int64()).cast(field_.type))
        elif pa.types.is_dictionary(column.type):
            dictionary = (
                column.chunk(0).dictionary if column.num_chunks else pa.array([], pa.string())
            )
            picked = pa.DictionaryArray.from_arrays(
                pa.array(rows.ints(name)[stored], pa.int32()), dictionary
            )
            arrays.append(picked.cast(field_.type))
        else:
            arrays.append(column.take(indices).combine_chunks().cast(field_.type))
    return pa.Table.from_arrays(
        arrays, schema=pa.schema([READING_SCHEMA.field(c) for c in columns])
    )

"""The column path of ``wattlake import``: Parquet and CSV files of readings read in blocks of
columns, checked with vectorised kernels, appended to the lake in large data files.

A block is taken only when every row of it passes what the generic format's decoder checks
(:mod:`wattlake.devices.generic`): a time (epoch seconds, or ISO 8601 with an offset; naive is
UTC, as :mod:`wattlake.gateway.files` reads it) from 2000 to a day after the import, a device
id, a whole channel in 0-32767, finite numbers; and every value fits its lake decimal. The
readings are then exactly those the row path gives. At the first block that does not pass, the
column path stops and says how many rows it took; the row path goes on from there and keeps
each bad row as a dead letter with its number (a value too large as ``out-of-range``, named by
its column and value instead).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from wattlake.devices.generic import SOURCE
from wattlake.devices.validate import MAX_FUTURE_MS, MIN_TS_MS
from wattlake.gateway.files import (
    LAKE_SET_COLUMNS,
    NUMBER_COLUMNS,
    READING_COLUMNS,
    FileFormat,
    FileRows,
)
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.progress import ProgressCallback, no_progress
from wattlake.schema import (
    DECIMALS,
    MEASUREMENT_COLUMNS,
    READING_SCHEMA,
    READINGS_TABLE,
    TS_TYPE,
)

# Rows per block read from a Parquet file; readings gathered before one append by default (the
# import takes the stream's ``buffer_max_rows``).
BLOCK_ROWS: Final = 1 << 16
APPEND_ROWS: Final = 2_000_000
CSV_BLOCK_BYTES: Final = 256 << 10  # several blocks even for a small file: progress moves
_MAX_CHANNEL: Final = 32_767


@dataclass(frozen=True, slots=True)
class ColumnImport:
    """What the column path did: the first ``rows`` rows of the file are in the lake, and
    ``complete`` when that is every row."""

    rows: int
    complete: bool


def import_columns(
    lake: Lake,
    rows: FileRows,
    columns: tuple[str, ...],
    received_at_ms: int,
    *,
    append_rows: int = APPEND_ROWS,
    on_progress: ProgressCallback | None = None,
) -> ColumnImport:
    """Append the leading blocks of a checked file that pass every check; return how far.

    ``columns`` are the file's columns as :meth:`FileRows.check` found them; readings are
    appended (one commit, one data file per day) whenever ``append_rows`` are gathered, which
    bounds memory and the size of a data file.

    Raises:
        wattlake.errors.StorageError: the lake could not be written.
    """
    report = on_progress or no_progress
    if rows.file_format not in (FileFormat.parquet, FileFormat.csv):
        return ColumnImport(0, False)
    if any(c not in READING_COLUMNS and c not in LAKE_SET_COLUMNS for c in columns):
        return ColumnImport(0, False)
    taken = 0
    pending = READING_SCHEMA.empty_table()
    complete = True
    for block in _blocks(rows, columns):
        readings = None if block is None else _readings(block, rows, received_at_ms)
        if readings is None:
            complete = False
            break
        pending = pa.concat_tables([pending, readings])
        taken += readings.num_rows
        while pending.num_rows >= append_rows:
            tables.append(lake, READINGS_TABLE, pending.slice(0, append_rows))
            pending = pending.slice(append_rows)
        report(taken, None)
    if pending.num_rows:
        tables.append(lake, READINGS_TABLE, pending)
    return ColumnImport(taken, complete)


def _blocks(rows: FileRows, columns: tuple[str, ...]) -> Iterator[pa.RecordBatch | None]:
    """Yield the file's blocks of rows; None where the file cannot be read in columns."""
    try:
        if rows.file_format is FileFormat.parquet:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(rows.path)
            wanted = [c for c in parquet.schema_arrow.names if c not in LAKE_SET_COLUMNS]
            yield from parquet.iter_batches(batch_size=BLOCK_ROWS, columns=wanted)
            return
        import pyarrow.csv as pa_csv

        reader = pa_csv.open_csv(
            rows.path,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            # Numbers parsed by the reader itself; only an empty cell is null (the row path
            # refuses "NA" or "null" as text in a number column). A cell that is not a number
            # fails its whole block: the row path takes over there and says which row.
            convert_options=pa_csv.ConvertOptions(
                column_types={
                    c: pa.float64() if c in NUMBER_COLUMNS else pa.string() for c in columns
                },
                null_values=[""],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
        if tuple(reader.schema.names) != columns:  # spaces around names, a BOM: the row path
            yield None
            return
        for batch in reader:
            yield batch.drop_columns([c for c in LAKE_SET_COLUMNS if c in batch.schema.names])
    except (OSError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        yield None


def _readings(block: pa.RecordBatch, rows: FileRows, received_at_ms: int) -> pa.Table | None:
    """Return a block as canonical readings, or None when any row fails a check."""
    n = block.num_rows
    names = block.schema.names
    if "ts" not in names:
        return None
    millis = _times_ms(block.column("ts"), received_at_ms)
    if millis is None:
        return None
    if rows.device_id is not None:
        devices = pa.repeat(pa.scalar(rows.device_id), n) if n else pa.array([], pa.string())
    elif "device_id" in names:
        devices = block.column("device_id")
        if not pa.types.is_string(devices.type) or devices.null_count:
            return None
        if n and pc.any(pc.equal(devices, "")).as_py():
            return None
    else:
        return None
    arrays: dict[str, pa.Array] = {}
    for name in NUMBER_COLUMNS:
        if name not in names:
            arrays[name] = pa.nulls(n, pa.float64())
            continue
        # A value too large for its lake decimal: the row path keeps that row as a dead letter
        # (out-of-range) and stores the rest.
        limit = tables.storable_limit(name) if name in DECIMALS else None
        values = _numbers(block.column(name), limit)
        if values is None:
            return None
        arrays[name] = values
    channel = pc.fill_null(arrays.pop("channel"), 0.0).to_numpy(zero_copy_only=False)
    if n and (
        np.any(channel != np.floor(channel)) or channel.min() < 0 or channel.max() > _MAX_CHANNEL
    ):
        return None
    columns: dict[str, pa.Array] = {
        "ts": pa.array(millis, TS_TYPE),
        "received_at": pa.array(np.full(n, received_at_ms, dtype=np.int64), TS_TYPE),
        "device_id": devices,
        "channel": pa.array(channel.astype(np.int16), pa.int16()),
        "source": pa.repeat(pa.scalar(SOURCE), n) if n else pa.array([], pa.string()),
        **{name: arrays[name] for name in MEASUREMENT_COLUMNS},
    }
    return pa.Table.from_arrays([columns[f.name] for f in READING_SCHEMA], schema=READING_SCHEMA)


def _numbers(values: pa.Array, limit: float | None = None) -> pa.Array | None:
    """Return a column as float64 (empty text as null), or None when a value is not a finite
    number (or, given a ``limit``, not below it in magnitude)."""
    if pa.types.is_string(values.type):
        values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
        try:
            values = values.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        values = values.cast(pa.float64())
    elif pa.types.is_null(values.type):
        return values.cast(pa.float64())
    else:
        return None
    # NaN and infinity are not below any limit.
    ok = pc.is_finite(values) if limit is None else pc.less(pc.abs(values), limit)
    if values.null_count < len(values) and not pc.all(pc.fill_null(ok, True)).as_py():
        return None
    return values


def _times_ms(ts: pa.Array, received_at_ms: int) -> npt.NDArray[np.int64] | None:
    """Return each row's time [epoch ms] as the generic decoder computes it, or None when a
    time is missing, not a time or out of range."""
    if ts.null_count:
        return None
    if pa.types.is_timestamp(ts.type) and ts.type.unit in ("s", "ms", "us"):
        micros = ts.cast(pa.timestamp("us", tz=ts.type.tz)).view(pa.int64())
        seconds = micros.to_numpy(zero_copy_only=False) / 1e6
    elif pa.types.is_integer(ts.type) or pa.types.is_floating(ts.type):
        seconds = ts.cast(pa.float64()).to_numpy(zero_copy_only=False)
    elif pa.types.is_string(ts.type):
        seconds = _text_seconds(ts)
        if seconds is None:
            return None
    else:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        millis = np.round(seconds * 1000.0)
        if np.any(~np.isfinite(millis)) or np.any(
            (millis < MIN_TS_MS) | (millis > received_at_ms + MAX_FUTURE_MS)
        ):
            return None
    return millis.astype(np.int64)


def _text_seconds(ts: pa.Array) -> npt.NDArray[np.float64] | None:
    """Return text times (epoch seconds, or ISO 8601; naive is UTC) as epoch seconds."""
    first = ts[0].as_py() if len(ts) else ""
    if "-" not in first[1:]:  # not a date: epoch seconds (a time before 1970 is refused anyway)
        try:
            return ts.cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    for unit_type in (pa.timestamp("us", tz="UTC"), pa.timestamp("us")):
        try:
            micros = ts.cast(unit_type).view(pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return micros.to_numpy(zero_copy_only=False) / 1e6
    return None

"""The lake's Apache Iceberg tables: open or create them, write data files, commit, plan scans.

Tables are defined once in :mod:`wattlake.schema` (``TABLES``); each lives under
``<lake>/tables/<name>/`` (``data/`` and ``metadata/``), partitioned by the UTC day of its time
column and sorted within each file. Data files are written here rather than by pyiceberg's
writer so that each column gets its own Parquet encoding: DELTA_BINARY_PACKED for time and
counters, dictionaries for the rest, measured values as decimals stored as integers (see
``docs/lake.md``). A data file is written whole (one PUT, or one local write) before a commit
names it; a file no commit names is an orphan that ``jobs run maintain`` removes.

Commits are optimistic: when another writer committed meanwhile, the commit is rebuilt on the
new table state and tried again (appends never conflict; a replacement fails only when a file
it replaces is gone).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchTableError,
    TableAlreadyExistsError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestEntry,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.typedef import Record
from pyiceberg.types import (
    BinaryType,
    DecimalType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)
from pyiceberg.utils.concurrent import ExecutorFactory

from wattlake import faults
from wattlake.errors import BadInputError, StorageError, TransientStorageError
from wattlake.lake import pyiceberg_compat
from wattlake.lake.catalog import open_catalog
from wattlake.lake.storage import TABLES_DIR, Lake
from wattlake.schema import DECIMALS, READINGS_TABLE, RECEIVE_LAG_COLUMN, TABLES, TableDefinition

log = logging.getLogger(__name__)

US_PER_DAY: Final = 86_400_000_000
COMPRESSION_LEVEL_PROPERTY: Final = "write.parquet.compression-level"
# zstd level of a data file of at least LARGE_FILE_ROWS rows (what an import or compaction
# writes, and keeps), when the table has this property (unset: write.parquet.compression-level):
# on the noisy bench fleet level 17 stores 7.91 bytes per reading where level 3 stores 8.86,
# for about ten times the encoding CPU (377 against 36 ms per 172,800 readings), which makes
# imports and compaction 3-5x slower; so it is a choice for a lake that values bytes over write
# speed, not the default (docs/lake.md, Seventh pass).
LARGE_FILE_LEVEL_PROPERTY: Final = "wattlake.parquet.large-file-compression-level"
LARGE_FILE_ROWS: Final = 1 << 16
# Table properties every wattlake table is created with.
TABLE_PROPERTIES: Final = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    # zstd's own default level (and Iceberg Java's); pyarrow's default is 1. Level 3 stores
    # readings in about 4 % fewer bytes for more write CPU (docs/lake.md, Figures).
    "write.parquet.compression-level": "3",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    # Compaction replaces files while writers append: snapshot isolation, as Iceberg's
    # RewriteFiles (a replacement fails only when a file it replaces is gone).
    "write.delete.isolation-level": "snapshot",
    "write.update.isolation-level": "snapshot",
}
# Rows per Parquet row group (one row group per file for a day of a small fleet), and per data
# page: one page per column chunk lets zstd see a whole column (Parquet's default, 20,000 rows
# per page, stores the benchmark fleet in 8.6 bytes per reading instead of 8.1).
ROW_GROUP_ROWS: Final = 1 << 20
PAGE_BYTES: Final = 64 << 20
COMMIT_ATTEMPTS: Final = 20
# Values scaled and rounded at once when floats become decimals.
DECIMAL_BLOCK: Final = 1 << 15
# take_rows copies runs of rows whole when they hold this many rows on average.
RUN_COPY_ROWS: Final = 64
# Data files encoded and written at once by one large write (one per day).
WRITE_THREADS: Final = max(1, min(4, os.cpu_count() or 1))
FIELD_ID_KEY: Final = b"PARQUET:field_id"
# Snapshot summary property holding a writer's WAL position: ``wattlake.wal.<stream>``.
WAL_PROPERTY_PREFIX: Final = "wattlake.wal."


def _iceberg_type(arrow_type: pa.DataType) -> IcebergType:
    if pa.types.is_timestamp(arrow_type):
        return TimestamptzType()
    if pa.types.is_decimal(arrow_type):
        return DecimalType(arrow_type.precision, arrow_type.scale)
    simple: dict[pa.DataType, IcebergType] = {
        pa.string(): StringType(),
        pa.int32(): IntegerType(),
        pa.int64(): LongType(),
        pa.float64(): DoubleType(),
        pa.binary(): BinaryType(),
    }
    return simple[arrow_type]


def iceberg_schema(definition: TableDefinition) -> Schema:
    """Return the Iceberg schema of a table definition (field ids 1, 2, … in column order)."""
    return Schema(
        *(
            NestedField(i, f.name, _iceberg_type(f.type), required=not f.nullable)
            for i, f in enumerate(definition.schema, start=1)
        )
    )


def _spec_and_order(definition: TableDefinition, schema: Schema) -> tuple[PartitionSpec, SortOrder]:
    day_id = schema.find_field(definition.day_column).field_id
    spec = PartitionSpec(
        PartitionField(day_id, 1000, DayTransform(), f"{definition.day_column}_day")
    )
    order = SortOrder(
        *(
            SortField(schema.find_field(c).field_id, IdentityTransform())
            for c in definition.sort_columns
        )
    )
    return spec, order


def open_table(lake: Lake, name: str) -> Table:
    """Return table ``name`` of ``lake``, creating it (or adding new columns) as defined.

    Raises:
        StorageError: the catalog or the table's metadata cannot be read or written.
    """
    definition = TABLES[name]
    catalog = open_catalog(lake)
    identifier = (lake.catalog.namespace, name)
    try:
        try:
            table = catalog.load_table(identifier)
        except NoSuchTableError:
            schema = iceberg_schema(definition)
            spec, order = _spec_and_order(definition, schema)
            location = None if lake.catalog.type != "sql" else f"{lake.uri}/{TABLES_DIR}/{name}"
            try:
                table = catalog.create_table(
                    identifier,
                    schema=schema,
                    location=location,
                    partition_spec=spec,
                    sort_order=order,
                    properties=TABLE_PROPERTIES,
                )
            except TableAlreadyExistsError:
                table = catalog.load_table(identifier)
    except (OSError, ValueError) as exc:
        raise TransientStorageError(f"Cannot open table {name} of {lake.url}: {exc}") from exc
    unset = {
        k: v
        for k, v in TABLE_PROPERTIES.items()
        if k != "format-version" and k not in table.properties
    }
    if unset:  # a table made by an older wattlake
        with table.transaction() as tx:
            tx.set_properties(unset)
    current = table.schema()
    changed = [
        f.name
        for f in definition.schema
        if f.name not in current.column_names
        or (f.nullable and current.find_field(f.name).required)
    ]
    if changed:  # schema evolution: a newer wattlake adds columns or makes one optional
        with table.update_schema() as update:
            update.union_by_name(iceberg_schema(definition))
        table = catalog.load_table(identifier)
    return table


# -- values in and out of the stored form -------------------------------------------------------


@functools.cache
def _decimal64_written() -> bool:
    """Return whether this pyarrow has decimal64 and writes it to Parquet (as decimal128 is)."""
    if not hasattr(pa, "decimal64"):
        return False
    try:
        one = pa.py_buffer(np.array([150], dtype=np.int64))
        values = pa.Array.from_buffers(pa.decimal64(9, 2), 1, [None, one])
        pq.write_table(
            pa.table({"x": values}), pa.BufferOutputStream(), store_decimal_as_integer=True
        )
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return False
    return True


def stored_decimal(precision: int, scale: int) -> pa.DataType:
    """Return the Arrow type of a stored decimal column: decimal64 up to 18 digits where
    pyarrow writes it (8 bytes per value in memory instead of 16: the same Parquet column,
    written with less memory and CPU), decimal128 otherwise."""
    if precision <= 18 and _decimal64_written():
        return pa.decimal64(precision, scale)
    return pa.decimal128(precision, scale)


def _to_decimal(
    column: pa.ChunkedArray | pa.Array, precision: int, scale: int
) -> pa.Array | pa.ChunkedArray:
    """Round float values to ``scale`` decimals and return them as decimals
    (:func:`stored_decimal`); a column of decimals at this precision and scale as it is,
    chunks and all (compaction reads them so).

    Raises:
        BadInputError: a value does not fit ``precision`` digits.
    """
    target = stored_decimal(precision, scale)
    if (
        pa.types.is_decimal(column.type)
        and column.type.precision == precision
        and column.type.scale == scale
    ):
        if column.type.byte_width == 16 and target.byte_width == 8:
            return _narrow_decimals(column, target)  # as files are read
        return column
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_decimal(array.type):
        return array.cast(target)
    values = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
    valid = ~np.isnan(values)  # nulls (and NaN) become nulls
    all_valid = bool(valid.all())
    units = np.empty(len(values), dtype=np.int64)
    # Scaled and rounded a block at a time in one small buffer: fresh memory costs the
    # kernel's zeroing of every page, and the block stays in the cache.
    scratch = np.empty(min(len(values), DECIMAL_BLOCK), dtype=np.float64)
    bound = 10.0**precision
    for start in range(0, len(values), DECIMAL_BLOCK):
        block = scratch[: min(DECIMAL_BLOCK, len(values) - start)]
        np.multiply(values[start : start + len(block)], 10.0**scale, out=block)
        if not all_valid:
            block[~valid[start : start + len(block)]] = 0.0
        np.rint(block, out=block)
        if block.max() >= bound or block.min() <= -bound:
            raise BadInputError(
                f"A value of {np.max(np.abs(values[valid]))} does not fit the lake's decimal "
                f"({precision} digits, {scale} decimals); it cannot be stored."
            )
        units[start : start + len(block)] = block
    validity = None if all_valid else pa.array(valid).buffers()[1]
    if target.byte_width == 8:
        data = pa.py_buffer(units)
    else:  # decimal128: two 64-bit words per value, the high one the sign extension
        words = np.empty((len(units), 2), dtype=np.int64)
        words[:, 0] = units
        np.right_shift(units, 63, out=words[:, 1])
        data = pa.py_buffer(words)
    return pa.Array.from_buffers(target, len(units), [validity, data])


def _narrow_decimals(column: pa.ChunkedArray | pa.Array, target: pa.DataType) -> pa.ChunkedArray:
    """Return decimal128 values of at most 18 digits as ``target`` (decimal64): the low word
    of each value, which holds all of it (cheaper than Arrow's cast, and cheaper to gather
    and write than decimal128)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    narrowed = []
    for chunk in chunks:
        if chunk.offset:
            narrowed.append(chunk.cast(target))
            continue
        words = np.frombuffer(chunk.buffers()[1], dtype=np.int64).reshape(-1, 2)
        low = np.ascontiguousarray(words[: len(chunk), 0])
        validity = chunk.buffers()[0] if chunk.null_count else None
        narrowed.append(pa.Array.from_buffers(target, len(chunk), [validity, pa.py_buffer(low)]))
    return pa.chunked_array(narrowed, target)


def storable_limit(name: str) -> float:
    """Return the magnitude a value of measurement ``name`` must stay below to fit its lake
    decimal (:data:`wattlake.schema.DECIMALS`): the largest that still rounds to its digits."""
    precision, scale = DECIMALS[name]
    return float(10.0 ** (precision - scale) - 0.5 * 10.0**-scale)


def unstorable(table: pa.Table) -> dict[int, str]:
    """Return the rows of readings (in memory form) holding a value too large for its lake
    decimal (:data:`wattlake.schema.DECIMALS`), each with one sentence saying which."""
    found: dict[int, str] = {}
    for name, (precision, scale) in DECIMALS.items():
        if name not in table.column_names:
            continue
        limit = storable_limit(name)
        big = pc.greater_equal(pc.abs(table[name]), limit)
        if not pc.any(big).as_py():
            continue
        for i in np.flatnonzero(big.fill_null(False).to_numpy(zero_copy_only=False)):
            found.setdefault(
                int(i),
                f"{name} {table[name][int(i)].as_py()} does not fit the lake, which keeps "
                f"{precision - scale} digits before the point",
            )
    return found


def decimal_to_float(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Return decimal values as float64, each the double nearest its decimal value."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not pa.types.is_decimal(array.type):
        return array.cast(pa.float64())
    if array.type.byte_width not in (4, 8, 16):  # decimal256
        array = array.cast(pa.decimal128(array.type.precision, array.type.scale))
    if array.type.byte_width == 16:
        words = np.frombuffer(array.buffers()[1], dtype=np.int64).reshape(-1, 2)
        low = words[array.offset : array.offset + len(array), 0]
    else:  # decimal32, decimal64: one integer per value
        ints = np.frombuffer(array.buffers()[1], dtype=f"<i{array.type.byte_width}")
        low = ints[array.offset : array.offset + len(array)]
    values = low / 10.0**array.type.scale  # exact integer / exact power of ten: one rounding
    mask = None if array.null_count == 0 else pc.is_null(array).to_numpy(zero_copy_only=False)
    return pa.array(values, pa.float64(), mask=mask)


def _micros(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """Return timestamps as epoch µs (nulls as 0)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    array = array.cast(pa.timestamp("us", tz="UTC")).view(pa.int64())
    return array.fill_null(0).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def receive_lag(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """Return the stored ``received_at`` and ``receive_lag_ms`` of readings in memory or stored
    form: the lag [ms] wherever the receive time is a whole number of ms after ``ts`` (then
    ``received_at`` is null), else ``received_at`` as it was (µs), so that
    ``coalesce(received_at, ts + receive_lag_ms)`` gives every receive time back exactly."""
    n = table.num_rows
    ts_type = TABLES[READINGS_TABLE].schema.field("ts").type
    lag_in = table[RECEIVE_LAG_COLUMN] if RECEIVE_LAG_COLUMN in table.column_names else None
    if "received_at" not in table.column_names or table["received_at"].null_count == n:
        lag = pa.nulls(n, pa.int64()) if lag_in is None else lag_in.combine_chunks()
        return pa.nulls(n, ts_type), lag.cast(pa.int64())
    received = table["received_at"]
    diff_us = _micros(received) - _micros(table["ts"])
    exact = diff_us % 1000 == 0
    if received.null_count:
        exact &= pc.is_valid(received).to_numpy(zero_copy_only=False)
    if lag_in is not None and lag_in.null_count < n:  # rows already stored as a lag
        exact &= pc.is_null(lag_in).to_numpy(zero_copy_only=False)
    if exact.all():
        return pa.nulls(n, ts_type), pa.array(diff_us // 1000, pa.int64())
    lag_values = diff_us // 1000
    lag_valid = exact
    if lag_in is not None and lag_in.null_count < n:
        old = lag_in.cast(pa.int64())
        lag_values = np.where(exact, lag_values, old.fill_null(0).to_numpy())
        lag_valid = exact | pc.is_valid(old).to_numpy(zero_copy_only=False)
    kept = pc.if_else(pa.array(exact), pa.scalar(None, ts_type), received.cast(ts_type))
    return kept.combine_chunks(), pa.array(lag_values, pa.int64(), mask=~lag_valid)


def to_stored(name: str, table: pa.Table) -> pa.Table:
    """Return ``table`` in table ``name``'s stored schema: µs timestamps, measured values as
    decimals at their resolution, receive times as lags (table ``readings``), absent columns
    as nulls. Text columns given dictionary-encoded stay so (compaction reads them so: the
    writer then writes their dictionaries as they are instead of hashing every value).

    Raises:
        BadInputError: a value does not fit its column.
    """
    definition = TABLES[name]
    lagged = receive_lag(table) if name == READINGS_TABLE else None
    columns: list[pa.Array | pa.ChunkedArray] = []
    fields = []
    for field in definition.schema:
        if lagged is not None and field.name in ("received_at", RECEIVE_LAG_COLUMN):
            columns.append(lagged[0] if field.name == "received_at" else lagged[1])
        elif field.name in table.column_names:
            column = table[field.name]
            if pa.types.is_decimal(field.type):
                columns.append(_to_decimal(column, field.type.precision, field.type.scale))
                field = field.with_type(columns[-1].type)  # decimal64 or decimal128
            elif _is_text_dictionary(column.type) and pa.types.is_string(field.type):
                columns.append(column)
                field = field.with_type(column.type)
            else:
                columns.append(column.cast(field.type))
        else:
            if pa.types.is_decimal(field.type):
                field = field.with_type(stored_decimal(field.type.precision, field.type.scale))
            columns.append(pa.nulls(table.num_rows, field.type))
        fields.append(field)
    return pa.Table.from_arrays(
        [c if isinstance(c, pa.ChunkedArray) else pa.chunked_array([c]) for c in columns],
        schema=pa.schema(fields),
    )


def _is_text_dictionary(arrow_type: pa.DataType) -> bool:
    return pa.types.is_dictionary(arrow_type) and pa.types.is_string(arrow_type.value_type)


def received_at_us(table: pa.Table) -> pa.Array:
    """Return the receive times of stored readings, ``coalesce(received_at, ts + lag)`` [µs]."""
    ts_type = TABLES[READINGS_TABLE].schema.field("ts").type
    n = table.num_rows
    received = (
        table["received_at"].cast(ts_type).combine_chunks()
        if "received_at" in table.column_names
        else pa.nulls(n, ts_type)
    )
    if RECEIVE_LAG_COLUMN not in table.column_names or received.null_count == 0:
        return received
    lag = table[RECEIVE_LAG_COLUMN].combine_chunks().cast(pa.int64())
    from_lag = pa.array(
        _micros(table["ts"]) + lag.fill_null(0).to_numpy() * 1000,
        pa.int64(),
        mask=pc.is_null(lag).to_numpy(zero_copy_only=False),
    ).cast(ts_type)
    return pc.coalesce(received, from_lag)


def from_stored(table: pa.Table) -> pa.Table:
    """Return a stored table with its decimals as float64 (timestamps stay µs) and, for
    readings, the receive lag turned back into ``received_at``."""
    if RECEIVE_LAG_COLUMN in table.column_names:
        received = received_at_us(table)
        table = table.drop_columns([RECEIVE_LAG_COLUMN])
        if "received_at" in table.column_names:
            table = table.set_column(
                table.column_names.index("received_at"), "received_at", received
            )
    columns = [
        decimal_to_float(c) if pa.types.is_decimal(c.type) else c for c in table.itercolumns()
    ]
    return pa.Table.from_arrays(columns, names=table.column_names)


# -- writing data files -------------------------------------------------------------------------


def _sort_keys(table: pa.Table, columns: Sequence[str]) -> list[npt.NDArray[Any]]:
    """Return numpy keys per column (strings as ranks of their sorted distinct values)."""
    keys = []
    for name in columns:
        column = table[name]
        if (
            _is_text_dictionary(column.type)
            or pa.types.is_string(column.type)
            or pa.types.is_large_string(column.type)
        ):
            encoded = column.combine_chunks()  # the chunks' dictionaries unified
            if not pa.types.is_dictionary(encoded.type):
                encoded = encoded.dictionary_encode()
            # Dense ranks: a dictionary that holds a value twice gives both the same rank.
            ranks = pc.rank(encoded.dictionary, tiebreaker="dense").to_numpy().astype(np.int64)
            indices = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            keys.append(np.where(indices >= 0, ranks[np.maximum(indices, 0)], -1))
        elif pa.types.is_timestamp(column.type):
            keys.append(column.cast(pa.int64()).fill_null(0).to_numpy())
        else:
            keys.append(column.fill_null(0).to_numpy())
    return keys


def take_rows(table: pa.Table, order: npt.NDArray[np.int64]) -> pa.Table:
    """Return ``table.take(order)``; copied as whole runs when ``order`` runs through rows one
    after the other for long stretches (files merged in sorted order): a copy of a run costs
    a memcpy per column, a take a lookup per value."""
    n = len(order)
    if n == 0:
        return table.take(order)
    breaks = np.flatnonzero(np.diff(order) != 1) + 1
    if (len(breaks) + 1) * RUN_COPY_ROWS > n:
        return table.take(order)
    starts = np.concatenate(([0], breaks)).tolist()
    stops = [*starts[1:], n]
    runs = [table.slice(int(order[a]), b - a) for a, b in zip(starts, stops, strict=True)]
    return pa.concat_tables(runs).combine_chunks()


def _is_sorted(keys: Sequence[npt.NDArray[Any]]) -> bool:
    """Return whether rows are in lexicographic order of ``keys`` (first key first)."""
    if not keys or len(keys[0]) < 2:
        return True
    undecided = np.ones(len(keys[0]) - 1, dtype=np.bool_)  # steps equal on the keys so far
    for key in keys:
        step_up = key[1:] > key[:-1]
        step_down = key[1:] < key[:-1]
        if np.any(undecided & step_down):
            return False
        undecided &= ~step_up
    return True


def sorted_by_day(name: str, stored: pa.Table) -> list[tuple[int, pa.Table]]:
    """Split a stored table into (UTC day number, rows sorted by the table's sort order)."""
    definition = TABLES[name]
    if stored.num_rows == 0:
        return []
    days = stored[definition.day_column].cast(pa.int64()).to_numpy() // US_PER_DAY
    # Text sort columns dictionary-encoded once: for the sort keys, and for the writer, which
    # then writes their dictionaries instead of hashing every value again.
    for column in definition.sort_columns:
        if pa.types.is_string(stored.schema.field(column).type):
            field = stored.schema.field(column)
            encoded = stored[column].combine_chunks().dictionary_encode()
            stored = stored.set_column(
                stored.schema.get_field_index(column), field.with_type(encoded.type), [encoded]
            )
    keys = _sort_keys(stored, definition.sort_columns)
    if _is_sorted([days, *keys]):  # e.g. a file exported sorted, or compaction's output
        table = stored
    else:
        order = np.lexsort((*reversed(keys), days)) if keys else np.argsort(days, kind="stable")
        table = take_rows(stored, order)
        days = days[order]
    starts = [0, *(np.flatnonzero(days[1:] != days[:-1]) + 1).tolist()]
    ends = [*starts[1:], len(days)]
    return [(int(days[s]), table.slice(s, e - s)) for s, e in zip(starts, ends, strict=True)]


def _file_schema(definition: TableDefinition, schema: Schema) -> pa.Schema:
    """Return the Arrow schema of a data file: the definition's columns with the table's field
    ids, decimals at the table's own precision (a table made with a wider decimal than today's
    definition keeps it: Iceberg cannot narrow a column)."""
    fields = []
    for f in definition.schema:
        column = schema.find_field(f.name)
        if isinstance(column.field_type, DecimalType) and pa.types.is_decimal(f.type):
            f = f.with_type(pa.decimal128(column.field_type.precision, column.field_type.scale))
        fields.append(f.with_metadata({FIELD_ID_KEY: str(column.field_id).encode()}))
    return pa.schema(fields)


def encode_parquet(
    definition: TableDefinition, schema: Schema, part: pa.Table, compression_level: int | None
) -> tuple[bytes, Any]:
    """Return ``part`` as Parquet bytes with the table's encodings and zstd at
    ``compression_level`` (None: pyarrow's default), and the file's metadata."""
    encodings = {c: e for c, e in definition.encodings if c in part.column_names}
    for column, limit in definition.dictionary_below:
        # Counted in the first rows first: an import's lags reach the limit there.
        if column in encodings and all(
            pc.count_distinct(values).as_py() < limit
            for values in (part[column].slice(0, 4 * limit), part[column])
        ):
            del encodings[column]  # few distinct values in this file: a dictionary is smaller
    # Text columns given dictionary-encoded are written from their dictionaries (not hashed
    # value by value again); the file holds plain strings either way, and no Arrow schema
    # (which would make pyarrow read them back as dictionaries): the Parquet schema's types and
    # field ids read back as the table's columns.
    file_schema = _file_schema(definition, schema)
    # Decimals of the file's precision and scale are written as they are (decimal64 or
    # decimal128: the same Parquet column).
    for i, f in enumerate(file_schema):
        given = part.schema.field(f.name).type if f.name in part.column_names else None
        if given is None or given == f.type:
            continue
        if _is_text_dictionary(given) or (
            pa.types.is_decimal(given)
            and pa.types.is_decimal(f.type)
            and (given.precision, given.scale) == (f.type.precision, f.type.scale)
        ):
            file_schema = file_schema.set(i, f.with_type(given))
    buffer = pa.BufferOutputStream()
    writer = pq.ParquetWriter(
        buffer,
        file_schema,
        store_schema=False,
        compression="zstd",
        compression_level=compression_level,
        store_decimal_as_integer=True,
        use_dictionary=[c for c in part.column_names if c not in encodings],
        column_encoding=encodings,
        write_statistics=True,
        max_rows_per_page=ROW_GROUP_ROWS,
        write_batch_size=ROW_GROUP_ROWS,
        data_page_size=PAGE_BYTES,
    )
    writer.write_table(part.cast(file_schema), row_group_size=ROW_GROUP_ROWS)
    writer.close()
    return buffer.getvalue().to_pybytes(), writer.writer.metadata


def _compression_level(
    properties: Mapping[str, str], name: str = COMPRESSION_LEVEL_PROPERTY
) -> int | None:
    value = properties.get(name)
    try:
        return None if value is None else int(value)
    except ValueError:
        log.warning("table property %s=%r is not a number; ignored", name, value)
        return None


@dataclass(frozen=True, slots=True)
class DataFileWriter:
    """What writing data files of one table needs, taken from the table once: a copy of its
    schema and layout, so that threads may write while the table object commits."""

    name: str
    schema: Schema
    stats_plan: dict[int, Any]
    id_mapping: dict[str, int]
    location: str
    io: FileIO
    sort_order_id: int
    spec_id: int
    # zstd level from the table property write.parquet.compression-level (None: unset).
    compression_level: int | None = None
    # zstd level of files of at least LARGE_FILE_ROWS rows (None: compression_level).
    large_file_level: int | None = None

    @classmethod
    def of(cls, table: Table, name: str) -> DataFileWriter:
        """Return the writer of table ``name`` as ``table`` is now."""
        schema = copy.deepcopy(table.schema())
        return cls(
            name,
            schema,
            compute_statistics_plan(schema, table.metadata.properties),
            parquet_path_to_id_mapping(schema),
            table.location(),
            table.io,
            table.sort_order().order_id,
            table.metadata.default_spec_id,
            _compression_level(table.metadata.properties),
            _compression_level(table.metadata.properties, LARGE_FILE_LEVEL_PROPERTY),
        )

    def write(self, stored: pa.Table) -> list[DataFile]:
        """Write a stored table as one sorted data file per UTC day; return them, uncommitted.

        Raises:
            TransientStorageError: a file could not be written.
        """
        parts = sorted_by_day(self.name, stored)
        if len(parts) < 2:
            return [self.write_day(day, part) for day, part in parts]
        # Encoding and compression release the GIL: the days of a large write go in parallel.
        with ThreadPoolExecutor(max_workers=min(WRITE_THREADS, len(parts))) as pool:
            return list(pool.map(lambda item: self.write_day(*item), parts))

    def write_day(self, day: int, part: pa.Table) -> DataFile:
        """Write the stored rows of UTC ``day`` (already in the table's sort order) as one
        data file; return it, uncommitted.

        Raises:
            TransientStorageError: the file could not be written.
        """
        definition = TABLES[self.name]
        level = self.compression_level
        if part.num_rows >= LARGE_FILE_ROWS and self.large_file_level is not None:
            level = self.large_file_level
        data, metadata = encode_parquet(definition, self.schema, part, level)
        date = np.datetime64(day, "D")
        path = (
            f"{self.location}/data/{definition.day_column}_day={date}/"
            f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{uuid.uuid4().hex}.parquet"
        )
        try:
            with self.io.new_output(path).create(overwrite=True) as out:
                out.write(data)
        except OSError as exc:
            raise TransientStorageError(f"Could not write {path}: {exc}") from exc
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=metadata,
            stats_columns=self.stats_plan,
            parquet_column_mapping=self.id_mapping,
        )
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=path,
            file_format=FileFormat.PARQUET,
            partition=Record(day),
            file_size_in_bytes=len(data),
            sort_order_id=self.sort_order_id,
            spec_id=self.spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )


def write_data_files(table: Table, name: str, stored: pa.Table) -> list[DataFile]:
    """Write a stored table as one sorted data file per UTC day; return them, uncommitted.

    Raises:
        TransientStorageError: a file could not be written.
    """
    return DataFileWriter.of(table, name).write(stored)


# -- commits ------------------------------------------------------------------------------------


def live_entries(table: Table) -> dict[str, list[ManifestEntry]]:
    """Return the live entries (data and delete files) of each manifest of the table's current
    snapshot, by manifest path, read in parallel: a scan plan without filters, which a commit
    that replaces files can use again (``commit(read=...)``) instead of reading them twice.

    Raises:
        StorageError: a manifest cannot be read.
    """
    snapshot = table.current_snapshot()
    if snapshot is None:
        return {}
    manifests = snapshot.manifests(table.io)
    try:
        found = ExecutorFactory.get_or_create().map(
            lambda m: m.fetch_manifest_entry(io=table.io, discard_deleted=True), manifests
        )
        return {m.manifest_path: e for m, e in zip(manifests, found, strict=True)}
    except (OSError, ValueError) as exc:
        raise StorageError(f"Cannot read the manifests of table {table.name()}: {exc}") from exc


def commit(
    table: Table,
    added: Sequence[DataFile],
    *,
    removed: Sequence[DataFile] = (),
    properties: Mapping[str, str] | None = None,
    read: Mapping[str, list[ManifestEntry]] | None = None,
) -> Table:
    """Commit ``added`` files (replacing exactly ``removed``) as one snapshot with summary
    ``properties``; return the table as committed. ``read``: manifests' live entries already
    read (:func:`live_entries`), used instead of reading those manifests again.

    Raises:
        StorageError: the commit failed, or a file to replace is no longer in the table.
    """
    props = dict(properties or {})
    if faults.armed("commit-in-flight"):
        pyiceberg_compat.after_metadata_written(
            table, lambda: faults.crash_point("commit-in-flight")
        )
    for attempt in range(COMMIT_ATTEMPTS):
        try:
            with pyiceberg_compat.Transaction(table) as tx:
                producer = pyiceberg_compat.snapshot_producer(tx, props, bool(removed), read)
                with producer as files:
                    for data_file in removed:
                        files.delete_data_file(data_file)
                    for data_file in added:
                        files.append_data_file(data_file)
            return table
        except CommitFailedException:
            log.debug("commit to %s raced another writer (attempt %d)", table.name(), attempt + 1)
            time.sleep(0.01 * (attempt + 1))
            table.refresh()
        except (OSError, ValueError, ValidationException) as exc:  # validation: a file to
            # replace is no longer in the table
            raise StorageError(f"Could not commit to table {table.name()}: {exc}") from exc
    raise TransientStorageError(
        f"Could not commit to table {table.name()}: other writers kept committing first; try again."
    )


def append(
    lake: Lake,
    name: str,
    table: pa.Table,
    snapshot_properties: Mapping[str, str] | None = None,
) -> list[DataFile]:
    """Append the rows of ``table`` (in memory or stored form) to table ``name`` in one
    snapshot with ``snapshot_properties``; return the data files written.

    Raises:
        BadInputError: a value does not fit its column.
        StorageError: the lake or catalog could not be written.
    """
    iceberg = open_table(lake, name)
    files = write_data_files(iceberg, name, to_stored(name, table))
    faults.crash_point("files-written")
    if files or snapshot_properties:
        commit(iceberg, files, properties=snapshot_properties)
    return files


# -- reading ------------------------------------------------------------------------------------


def scan_files(
    lake: Lake,
    name: str,
    row_filter: BooleanExpression | None = None,
    *,
    snapshot_id: int | None = None,
) -> list[FileScanTask]:
    """Return the scan plan of table ``name``: the data files (with their delete files) that
    may hold rows matching ``row_filter``, pruned by partition and column statistics.

    Raises:
        StorageError: the table cannot be read.
    """
    table = open_table(lake, name)
    if table.current_snapshot() is None:
        return []
    scan = table.scan(row_filter=row_filter or AlwaysTrue(), snapshot_id=snapshot_id)
    return list(scan.plan_files())


def local_path(file_path: str) -> str:
    """Return a data file's path as the lake's filesystem names it (no scheme)."""
    for scheme in ("file://", "s3://", "s3a://"):
        if file_path.startswith(scheme):
            return file_path[len(scheme) :]
    return file_path


def snapshot_as_of(table: Table, as_of_ms: int) -> Snapshot | None:
    """Return the table's snapshot current at ``as_of_ms`` (epoch ms), or None before the
    first."""
    return table.snapshot_as_of_timestamp(as_of_ms)


def ancestors(table: Table) -> Iterable[Snapshot]:
    """Yield the current snapshot and its ancestors, newest first."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        yield snapshot
        if snapshot.parent_snapshot_id is None:
            return
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id)


def last_property(table: Table, key: str) -> str | None:
    """Return the newest value of snapshot summary property ``key`` among the table's kept
    snapshots (``maintain`` keeps the newest one of each writer, though it may expire the
    snapshots between it and the current one)."""
    for snapshot in sorted(table.snapshots(), key=lambda s: s.sequence_number or 0, reverse=True):
        summary = snapshot.summary
        if summary is not None and key in summary.additional_properties:
            return str(summary.additional_properties[key])
    return None


def read_table(lake: Lake, name: str, row_filter: BooleanExpression | None = None) -> pa.Table:
    """Return table ``name``'s rows through pyiceberg's reader (which applies delete files),
    decimals as float64.

    Raises:
        StorageError: the table cannot be read.
    """
    table = open_table(lake, name)
    if table.current_snapshot() is None:
        return from_stored(TABLES[name].schema.empty_table())
    return from_stored(table.scan(row_filter=row_filter or AlwaysTrue()).to_arrow())


def ensure_tables(lake: Lake) -> None:
    """Create every table the lake defines that does not exist yet."""
    for name in TABLES:
        open_table(lake, name)

"""DuckDB views over the lake's Iceberg tables (Athena's role).

Each view reads the data files of an Iceberg scan plan, pruned by partition and column
statistics when the caller gives a time range or device: with ``read_parquet([...])`` for a
local lake, through a pyarrow dataset for S3 (DuckDB's S3 extension cannot be installed here),
and through pyiceberg's own reader when the plan has delete files (written by Spark or Trino),
which it applies.

Views: ``readings`` (each (device_id, channel, ts) once: delivery, imports and refills may
repeat a reading, and the earliest received copy wins), ``raw_readings`` (every stored row),
``dead_letters``, and the rollups ``energy_15min``, ``power_1min``, ``power_1h``. Measured
values are stored as decimals and read as DOUBLE; timestamps are TIMESTAMPTZ (µs). The receive
time is stored as a lag behind ``ts`` (files written before it hold ``received_at``): the views
give ``received_at`` back as ``coalesce(received_at, ts + receive_lag_ms)``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
)
from pyiceberg.table import FileScanTask
from pyiceberg.transforms import DayTransform

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.catalog import DEDUP_WINDOW, sql_string
from wattlake.lake.storage import Lake
from wattlake.schema import (
    COLUMNS,
    DEAD_LETTERS_TABLE,
    ENERGY_15MIN_TABLE,
    POWER_1H_TABLE,
    POWER_1MIN_TABLE,
    READING_SCHEMA,
    READINGS_TABLE,
    RECEIVE_LAG_COLUMN,
    TABLES,
)

_RECEIVED_AT = (
    f"coalesce(received_at, make_timestamptz(epoch_us(ts) + {RECEIVE_LAG_COLUMN} * 1000))"
)
_READING_COLUMNS = ", ".join(
    f"CAST({c} AS DOUBLE) AS {c}"
    if READING_SCHEMA.field(c).type == pa.float64()
    else "CAST(channel AS SMALLINT) AS channel"
    if c == "channel"
    else f"{_RECEIVED_AT} AS received_at"
    if c == "received_at"
    else c
    for c in COLUMNS
)
_DEAD_LETTER_COLUMNS = (
    "attempts, error_code, error_message, received_at AS arrival_time, "
    "epoch_ms(received_at) AS arrival_ms, stream, topic, to_base64(payload) AS raw_base64, "
    "raw_text"
)
# The column each table is partitioned by (by day) and views are pruned on.
TIME_COLUMNS: Final = {
    READINGS_TABLE: "ts",
    DEAD_LETTERS_TABLE: "received_at",
    ENERGY_15MIN_TABLE: "start",
    POWER_1MIN_TABLE: "start",
    POWER_1H_TABLE: "start",
}


@dataclass(frozen=True, slots=True)
class ViewFilter:
    """What the views may be pruned to: a time range [ms UTC, end exclusive] and a device."""

    start_ms: int | None = None
    end_ms: int | None = None
    device_id: str | None = None

    def expression(self, time_column: str, *, with_device: bool = True) -> BooleanExpression:
        """Return this filter as a pyiceberg expression over ``time_column``."""
        parts: list[BooleanExpression] = []
        if self.start_ms is not None:
            parts.append(GreaterThanOrEqual(time_column, _iso(self.start_ms)))  # type: ignore[call-arg, arg-type]
        if self.end_ms is not None:
            parts.append(LessThan(time_column, _iso(self.end_ms)))  # type: ignore[call-arg, arg-type]
        if with_device and self.device_id is not None:
            parts.append(EqualTo("device_id", self.device_id))  # type: ignore[call-arg, arg-type]
        expression: BooleanExpression = AlwaysTrue()
        for part in parts:
            expression = part if isinstance(expression, AlwaysTrue) else And(expression, part)
        return expression


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


# Whole-table scan plans kept per table state for a long-running process (the web server):
# a table is planned once per snapshot (a year of readings: about 0.3 s in pyiceberg) and a
# view of a time range prunes that plan by day partition (under a millisecond), so a short
# range reads the footers of its few files, not of every file in the table.
_PLANS: OrderedDict[tuple[str, str, int], tuple[list[FileScanTask], bool]] = OrderedDict()
_PLANS_LOCK = threading.Lock()
PLANS_KEPT: Final = 16
DAY_MS: Final = 86_400_000


def _kept_plan(lake: Lake, name: str, snapshot_id: int) -> tuple[list[FileScanTask], bool]:
    """Return the whole scan plan of table ``name`` at ``snapshot_id`` and whether every file
    in it is partitioned by day of the table's time column (planned once per snapshot)."""
    key = (str(lake.url), name, snapshot_id)
    with _PLANS_LOCK:
        found = _PLANS.get(key)
    if found is None:
        table = tables.open_table(lake, name)
        plan = tables.scan_files(lake, name, snapshot_id=snapshot_id)
        specs, schema = table.specs(), table.schema()
        time_column = TIME_COLUMNS[name]

        def by_day(task: FileScanTask) -> bool:
            spec = specs.get(task.file.spec_id)
            first = spec.fields[0] if spec is not None and spec.fields else None
            return (
                first is not None
                and isinstance(first.transform, DayTransform)
                and schema.find_column_name(first.source_id) == time_column
            )

        found = (plan, all(by_day(task) for task in plan))
        with _PLANS_LOCK:
            _PLANS[key] = found
            while len(_PLANS) > PLANS_KEPT:
                _PLANS.popitem(last=False)
    return found


def _scan_plan(
    lake: Lake,
    name: str,
    view_filter: ViewFilter,
    *,
    snapshot_id: int | None,
    keep_plans: bool,
) -> list[FileScanTask]:
    """Return the data files of table ``name`` that may hold rows of ``view_filter``."""
    row_filter = None if name == DEAD_LETTERS_TABLE else view_filter.expression(TIME_COLUMNS[name])
    if not keep_plans:
        return tables.scan_files(lake, name, row_filter, snapshot_id=snapshot_id)
    if snapshot_id is None:
        snapshot = tables.open_table(lake, name).current_snapshot()
        if snapshot is None:
            return []
        snapshot_id = snapshot.snapshot_id
    plan, by_day = _kept_plan(lake, name, snapshot_id)
    if row_filter is None or not by_day:  # all files (rows outside the range may remain)
        return plan
    first = -(1 << 62) if view_filter.start_ms is None else view_filter.start_ms // DAY_MS
    last = (1 << 62) if view_filter.end_ms is None else (view_filter.end_ms - 1) // DAY_MS
    return [task for task in plan if first <= int(task.file.partition[0]) <= last]


def table_view(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    name: str,
    view: str,
    *,
    view_filter: ViewFilter | None = None,
    snapshot_id: int | None = None,
    keep_plans: bool = False,
) -> None:
    """Create view ``view`` over the files of table ``name``'s scan plan (stored columns),
    pruned to ``view_filter``; with ``keep_plans``, from the table's whole plan kept for
    its snapshot and pruned by day partition."""
    flt = view_filter or ViewFilter()
    plan = _scan_plan(lake, name, flt, snapshot_id=snapshot_id, keep_plans=keep_plans)
    source = f"{view}_source"
    stored = TABLES[name].schema
    if not plan:
        con.register(source, stored.empty_table())
    elif any(task.delete_files for task in plan):
        table = tables.open_table(lake, name)
        row_filter = flt.expression(TIME_COLUMNS[name]) if name != DEAD_LETTERS_TABLE else None
        scan = table.scan(row_filter=row_filter or AlwaysTrue(), snapshot_id=snapshot_id)
        con.register(source, scan.to_arrow())
    elif lake.is_local:
        listing = ", ".join(sql_string(tables.local_path(t.file.file_path)) for t in plan)
        # Files written before a schema change lack its columns: then match columns by name
        # (which reads every file's footer first: about 60 ms for 400 files, so only then).
        columns = {frozenset(t.file.column_sizes or ()) for t in plan}
        by_name = len(columns) > 1 or not next(iter(columns))
        options = ", union_by_name = true" if by_name else ""
        con.execute(f"CREATE VIEW {source} AS SELECT * FROM read_parquet([{listing}]{options})")
    else:
        paths = [tables.local_path(t.file.file_path) for t in plan]
        dataset = ds.dataset(paths, schema=stored, format="parquet", filesystem=lake.fs)
        con.register(source, dataset)
    present = set(con.sql(f"SELECT * FROM {source} LIMIT 0").columns)
    if all(c in present for c in stored.names):
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM {source}")
    else:  # no file has a column defined later (e.g. a lake written before it): nulls
        con.register(f"{view}_empty", stored.empty_table())
        con.execute(
            f"CREATE VIEW {view} AS SELECT * FROM {view}_empty "
            f"UNION ALL BY NAME SELECT * FROM {source}"
        )


def connect(
    lake: Lake,
    *,
    view_filter: ViewFilter | None = None,
    as_of_ms: int | None = None,
    snapshot_ids: Mapping[str, int | None] | None = None,
    keep_plans: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with the lake's views defined.

    ``view_filter`` prunes the readings and rollup views to a time range and device (rows
    outside it may remain: files are pruned, rows are not filtered); ``as_of_ms`` shows the
    tables as they were at that instant (epoch ms; time travel over the kept snapshots);
    ``snapshot_ids`` shows each table named in it at that snapshot (None: empty).
    ``keep_plans`` (for a long-running process) plans each table once per snapshot and prunes
    that plan for each range asked (by day partition only: the device is not pruned).

    Raises:
        wattlake.errors.StorageError: the catalog or a table cannot be read.
    """
    con = duckdb.connect()
    for name, view in (
        (READINGS_TABLE, "raw_readings_stored"),
        (DEAD_LETTERS_TABLE, "dead_letters_stored"),
        (ENERGY_15MIN_TABLE, ENERGY_15MIN_TABLE),
        (POWER_1MIN_TABLE, POWER_1MIN_TABLE),
        (POWER_1H_TABLE, POWER_1H_TABLE),
    ):
        snapshot_id = None
        if as_of_ms is not None:
            snapshot = tables.snapshot_as_of(tables.open_table(lake, name), as_of_ms)
            snapshot_id = -1 if snapshot is None else snapshot.snapshot_id
        elif snapshot_ids is not None and name in snapshot_ids:
            snapshot_id = snapshot_ids[name]
            snapshot_id = -1 if snapshot_id is None else snapshot_id
        if snapshot_id == -1:  # the table did not exist yet at that instant
            con.register(f"{view}_source", TABLES[name].schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_source")
        else:
            table_view(
                con,
                lake,
                name,
                view,
                view_filter=view_filter,
                snapshot_id=snapshot_id,
                keep_plans=keep_plans,
            )
    con.execute(f"CREATE VIEW raw_readings AS SELECT {_READING_COLUMNS} FROM raw_readings_stored")
    con.execute(
        "CREATE VIEW readings AS SELECT * FROM raw_readings "
        f"QUALIFY row_number() OVER ({DEDUP_WINDOW}) = 1"
    )
    con.execute(
        f"CREATE VIEW dead_letters AS SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters_stored"
    )
    return con


def load_readings(
    settings: Settings, *, device_id: str | None, start_ms: int, end_ms: int
) -> pa.Table:
    """Return deduplicated readings sorted by device, channel and ts.

    The range [``start_ms``, ``end_ms``) is widened by ``energy.max_gap_s`` on both sides so that
    intervals crossing its edges can be interpolated.
    """
    margin_ms = int(settings["energy.max_gap_s"] * 1000)
    first, last = start_ms - margin_ms, end_ms + margin_ms
    con = connect(
        Lake.from_settings(settings),
        view_filter=ViewFilter(first, last, device_id),
    )
    query = (
        "SELECT * FROM readings WHERE ts >= make_timestamptz(?::BIGINT * 1000) "
        "AND ts < make_timestamptz(?::BIGINT * 1000)"
        + (" AND device_id = ?" if device_id is not None else "")
        + " ORDER BY device_id, channel, ts"
    )
    params: list[object] = [first, last]
    if device_id is not None:
        params.append(device_id)
    table = con.sql(query, params=params).to_arrow_table()
    return table.cast(READING_SCHEMA, safe=False)

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

A short command defines only the views its statement reads (:func:`tables_read_by`) and takes
each table's plan from the plan cache beside a SQLite catalog (:func:`cached_plan`), keyed by
the table's metadata file: the table is opened and planned only after it changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import duckdb
import pyarrow as pa

from wattlake.config import Settings
from wattlake.lake.catalog import (
    DEDUP_WINDOW,
    current_metadata_location,
    plan_cache_dir,
    sql_string,
)
from wattlake.lake.storage import Lake
from wattlake.schema import (
    COLUMNS,
    DEAD_LETTERS_TABLE,
    READING_SCHEMA,
    READINGS_TABLE,
    RECEIVE_LAG_COLUMN,
    TABLES,
)

# pyiceberg (with the SQL catalog's sqlalchemy) and pyarrow.dataset (which imports pandas) cost a
# short command about half a second of imports: they are imported where a table is planned or
# read through them, which a command whose plans are in the plan cache never does.
if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import FileScanTask, Table

log = logging.getLogger(__name__)

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
TIME_COLUMNS: Final = {t.name: t.day_column for t in TABLES.values()}


@dataclass(frozen=True, slots=True)
class ViewFilter:
    """What the views may be pruned to: a time range [ms UTC, end exclusive] and a device."""

    start_ms: int | None = None
    end_ms: int | None = None
    device_id: str | None = None

    def expression(self, time_column: str, *, with_device: bool = True) -> BooleanExpression:
        """Return this filter as a pyiceberg expression over ``time_column``."""
        from pyiceberg.expressions import (
            AlwaysTrue,
            And,
            EqualTo,
            GreaterThanOrEqual,
            LessThan,
        )

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
# A table other than readings with at most this many rows (the rollups of a small fleet, the
# dead letters; power_1h holds 175,000 rows for 10 devices over a year, in 366 day files) is
# held in memory by a long-running process, each data file read once (files never change):
# DuckDB spends about 0.4 ms opening a Parquet file, so a year of small day files costs more
# to open than to query.
IN_MEMORY_ROWS: Final = 1_000_000
_FILE_ROWS: dict[tuple[str, str], dict[str, pa.Table]] = {}


def _by_day(table: Table, name: str) -> Callable[[FileScanTask], bool]:
    """Return a test of whether a scan task's file of ``table`` is partitioned by day of the
    table's time column (the first field of its partition spec)."""
    from pyiceberg.transforms import DayTransform

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

    return by_day


def kept_plan(lake: Lake, name: str, snapshot_id: int) -> tuple[list[FileScanTask], bool]:
    """Return the whole scan plan of table ``name`` at ``snapshot_id`` and whether every file
    in it is partitioned by day of the table's time column (planned once per snapshot)."""
    from wattlake.lake import tables

    key = (str(lake.url), name, snapshot_id)
    with _PLANS_LOCK:
        found = _PLANS.get(key)
    if found is None:
        table = tables.open_table(lake, name)
        plan = list(table.scan(snapshot_id=snapshot_id).plan_files())  # (opened once)
        by_day = _by_day(table, name)
        found = (plan, all(by_day(task) for task in plan))
        with _PLANS_LOCK:
            _PLANS[key] = found
            while len(_PLANS) > PLANS_KEPT:
                _PLANS.popitem(last=False)
    return found


@dataclass(frozen=True, slots=True)
class PlanFile:
    """What a view needs of one data file of a scan plan."""

    path: str
    """Its path as the lake's file system names it (no scheme)."""
    record_count: int
    day: int | None
    """The UTC day [days since 1970-01-01] of its partition, None when the file is not
    partitioned by day of the table's time column."""
    columns: frozenset[int]
    """The field ids of the columns it stores."""
    deletes: bool
    """Whether delete files apply to it (written by Spark or Trino)."""


def plan_files(
    tasks: Iterable[FileScanTask], by_day: Callable[[FileScanTask], bool]
) -> list[PlanFile]:
    """Return :class:`PlanFile` of each scan task (``by_day``: see :func:`_by_day`)."""
    from wattlake.lake import tables

    return [
        PlanFile(
            path=tables.local_path(task.file.file_path),
            record_count=int(task.file.record_count),
            day=int(task.file.partition[0])
            if by_day(task) and task.file.partition[0] is not None
            else None,
            columns=frozenset(task.file.column_sizes or ()),
            deletes=bool(task.delete_files),
        )
        for task in tasks
    ]


# The plan cache: what a short command learns from a table's metadata (a table's whole scan
# plan, the state of the rollups), kept in a small JSON file per table state beside the catalog
# (wattlake.lake.catalog.plan_cache_dir), so that the next command skips opening and planning a
# table that did not change (planning the five tables of a small lake: about 0.3 s). The key is
# the metadata file (a commit writes a new one), so a changed table is never answered from an
# old entry; a file that cannot be read is computed again and rewritten.
PLAN_CACHE_VERSION: Final = 1
PLAN_CACHE_KEPT: Final = 8  # files per kind (older table states are removed)


def _kept_file(folder: Path, kind: str, key: str) -> Path:
    return folder / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def read_kept(lake: Lake, kind: str, key: str) -> object | None:
    """Return the value kept for ``kind`` (a table name, ``rollup-files``) and ``key`` (the
    metadata files it was learnt from) in ``lake``'s plan cache, or None: absent, kept for
    another key, or unreadable (a damaged file is ignored)."""
    folder = plan_cache_dir(lake)
    if folder is None:
        return None
    path = _kept_file(folder, kind, key)
    try:
        kept = json.loads(path.read_bytes())
        if kept["version"] != PLAN_CACHE_VERSION or kept["metadata"] != key:
            return None
        return kept["value"]  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("ignoring the damaged plan cache file %s: %s", path, exc)
        return None


def keep(lake: Lake, kind: str, key: str, value: object) -> None:
    """Keep ``value`` (JSON) for ``kind`` and ``key`` in ``lake``'s plan cache, atomically (a
    reader sees the whole file or none), removing the oldest files of ``kind`` beyond
    :data:`PLAN_CACHE_KEPT`; a lake folder this process cannot write to keeps nothing."""
    folder = plan_cache_dir(lake)
    if folder is None:
        return
    target = _kept_file(folder, kind, key)
    body = {"version": PLAN_CACHE_VERSION, "metadata": key, "value": value}
    temporary = folder / f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(body, separators=(",", ":")))
        os.replace(temporary, target)
        kept = sorted(folder.glob(f"{kind}-*.json"), key=lambda p: p.stat().st_mtime)
        for old in kept[:-PLAN_CACHE_KEPT]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("cannot keep %s in %s: %s", kind, folder, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _plan_from_json(value: object) -> list[PlanFile] | None:
    try:
        return [
            PlanFile(
                path=str(f[0]),
                record_count=int(f[1]),
                day=None if f[2] is None else int(f[2]),
                columns=frozenset(int(c) for c in f[3]),
                deletes=bool(f[4]),
            )
            for f in value  # type: ignore[attr-defined]
        ]
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def cached_plan(lake: Lake, name: str) -> list[PlanFile] | None:
    """Return the whole current scan plan of table ``name``, from the plan cache when the
    table did not change since it was kept (else planned and kept); None when the catalog is
    not a SQLite catalog or does not hold the table yet (the caller plans through the catalog).

    Raises:
        wattlake.errors.StorageError: the table cannot be read.
    """
    location = current_metadata_location(lake, name)
    if location is None or plan_cache_dir(lake) is None:
        return None
    found = _plan_from_json(read_kept(lake, name, location))
    if found is not None:
        return found
    from wattlake.lake import tables

    table = tables.open_table(lake, name)  # (may add columns a newer wattlake defines)
    snapshot = table.current_snapshot()
    tasks = [] if snapshot is None else list(table.scan().plan_files())
    plan = plan_files(tasks, _by_day(table, name))
    files = [[f.path, f.record_count, f.day, sorted(f.columns), f.deletes] for f in plan]
    keep(lake, name, str(table.metadata_location), files)
    return plan


def _in_memory(lake: Lake, name: str, plan: list[PlanFile], whole: bool) -> pa.Table:
    """Return the rows of ``plan``'s files (stored columns; a column a file lacks is null),
    each file read once per process; with ``whole`` (the table's whole plan), files no
    longer in the table are forgotten."""
    import pyarrow.dataset as ds

    stored = TABLES[name].schema
    paths = [f.path for f in plan]
    with _PLANS_LOCK:
        known = _FILE_ROWS.setdefault((str(lake.url), name), {})
        missing = [p for p in paths if p not in known]

    def read(path: str) -> pa.Table:
        dataset = ds.dataset([path], schema=stored, format="parquet", filesystem=lake.fs)
        return dataset.to_table().combine_chunks()

    with ThreadPoolExecutor(max_workers=2) as pool:
        fresh = dict(zip(missing, pool.map(read, missing), strict=True))
    with _PLANS_LOCK:
        known.update(fresh)
        parts = [known[p] for p in paths]
        if whole:
            for gone in set(known) - set(paths):
                del known[gone]
    return pa.concat_tables(parts) if parts else stored.empty_table()


@dataclass(frozen=True, slots=True)
class _Files:
    """The data files a view reads, whether they are the table's whole plan, and whether the
    table is small enough to be held in memory (with ``keep_plans`` only)."""

    files: list[PlanFile]
    whole: bool = True
    small: bool = False


def _scan_plan(
    lake: Lake,
    name: str,
    view_filter: ViewFilter,
    *,
    snapshot_id: int | None,
    keep_plans: bool,
) -> _Files:
    """Return the data files of table ``name`` that may hold rows of ``view_filter``: a whole
    plan (kept by the process with ``keep_plans``, else from the plan cache) pruned by day
    partition, or a plan pyiceberg prunes by partition and column statistics."""
    small = False
    if keep_plans:
        from wattlake.lake import tables

        if snapshot_id is None:
            snapshot = tables.open_table(lake, name).current_snapshot()
            if snapshot is None:
                return _Files([])
            snapshot_id = snapshot.snapshot_id
        tasks, by_day = kept_plan(lake, name, snapshot_id)
        plan = plan_files(tasks, lambda _task: by_day)
        small = name != READINGS_TABLE and sum(f.record_count for f in plan) <= IN_MEMORY_ROWS
    else:
        found = cached_plan(lake, name) if snapshot_id is None else None
        if found is None:
            from wattlake.lake import tables

            table = tables.open_table(lake, name)
            if table.current_snapshot() is None:
                return _Files([])
            row_filter = (
                _always_true()
                if name == DEAD_LETTERS_TABLE
                else view_filter.expression(TIME_COLUMNS[name])
            )
            scan = table.scan(row_filter=row_filter, snapshot_id=snapshot_id)
            return _Files(plan_files(scan.plan_files(), _by_day(table, name)))
        plan, by_day = found, all(f.day is not None for f in found)
    if name == DEAD_LETTERS_TABLE or not by_day:  # all files (rows outside the range remain)
        return _Files(plan, small=small)
    first = -(1 << 62) if view_filter.start_ms is None else view_filter.start_ms // DAY_MS
    last = (1 << 62) if view_filter.end_ms is None else (view_filter.end_ms - 1) // DAY_MS
    kept = [f for f in plan if f.day is not None and first <= f.day <= last]
    return _Files(kept, whole=len(kept) == len(plan), small=small)


def _always_true() -> BooleanExpression:
    from pyiceberg.expressions import AlwaysTrue

    return AlwaysTrue()


def table_view(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    name: str,
    view: str,
    *,
    view_filter: ViewFilter | None = None,
    snapshot_id: int | None = None,
    keep_plans: bool = False,
) -> list[str]:
    """Create view ``view`` over the files of table ``name``'s scan plan (stored columns),
    pruned to ``view_filter``; with ``keep_plans``, from the table's whole plan kept for
    its snapshot and pruned by day partition. Return the paths of the files DuckDB itself
    opens for it (local files read with ``read_parquet``; none when pyarrow reads them)."""
    flt = view_filter or ViewFilter()
    files = _scan_plan(lake, name, flt, snapshot_id=snapshot_id, keep_plans=keep_plans)
    plan = files.files
    source = f"{view}_source"
    stored = TABLES[name].schema
    by_path: list[str] = []
    if not plan:
        con.register(source, stored.empty_table())
    elif files.small and not any(f.deletes for f in plan):
        con.register(source, _in_memory(lake, name, plan, files.whole))
    elif any(f.deletes for f in plan):
        from wattlake.lake import tables

        table = tables.open_table(lake, name)
        row_filter = flt.expression(TIME_COLUMNS[name]) if name != DEAD_LETTERS_TABLE else None
        scan = table.scan(row_filter=row_filter or _always_true(), snapshot_id=snapshot_id)
        con.register(source, scan.to_arrow())
    elif lake.is_local:
        by_path = [f.path for f in plan]
        listing = ", ".join(sql_string(path) for path in by_path)
        # Files written before a schema change lack its columns: then match columns by name
        # (which reads every file's footer first: about 60 ms for 400 files, so only then).
        columns = {f.columns for f in plan}
        by_name = len(columns) > 1 or not next(iter(columns))
        options = ", union_by_name = true" if by_name else ""
        # The partition is not a column (as in other engines and on S3): no hive_partitioning
        # from the folder names.
        con.execute(
            f"CREATE VIEW {source} AS SELECT * FROM read_parquet([{listing}], "
            f"hive_partitioning = false{options})"
        )
    else:
        import pyarrow.dataset as ds

        paths = [f.path for f in plan]
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
    return by_path


def connect(
    lake: Lake,
    *,
    view_filter: ViewFilter | None = None,
    as_of_ms: int | None = None,
    snapshot_ids: Mapping[str, int | None] | None = None,
    keep_plans: bool = False,
    only: Collection[str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with the lake's views defined (those of the
    tables named in ``only`` when given, e.g. :func:`tables_read_by` a statement).

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
    define_views(
        con,
        lake,
        view_filter=view_filter,
        as_of_ms=as_of_ms,
        snapshot_ids=snapshot_ids,
        keep_plans=keep_plans,
        only=only,
    )
    return con


# The views define_views creates (each name followed by its suffix), and the relations each
# may read from (registered Arrow data or views), for drop_views.
# (VIEWS: the view over each table's stored rows, by table name.)
VIEWS: Final = {t.name: t.view for t in TABLES.values()}
VIEW_NAMES: Final = tuple(VIEWS.values())
DERIVED_VIEWS: Final = ("raw_readings", "readings", "dead_letters")
# The table each view (and the relations defined for it) reads.
_VIEW_TABLES: Final = {
    **{view: name for name, view in VIEWS.items()},
    "raw_readings": READINGS_TABLE,
    "readings": READINGS_TABLE,
    "dead_letters": DEAD_LETTERS_TABLE,
}
# Words of a statement that lists or describes the catalog rather than naming a view.
_CATALOG_WORDS: Final = re.compile(
    r"\b(show|describe|pragma|information_schema|pg_catalog|sqlite_master|duckdb_\w+)\b"
)
_WORD: Final = re.compile(r"[a-z_][a-z0-9_]*")


def tables_read_by(sql: str) -> frozenset[str]:
    """Return the lake's tables whose views ``sql`` may read: every table whose view name (or
    the name of a relation defined for it, such as ``raw_readings_stored``) appears in it as a
    word, and every table when it lists or describes the catalog (``SHOW TABLES``,
    ``information_schema``, ``duckdb_views()``).

    A word scan, not a parse: it may name a table the statement does not read (a column or
    string of that name), which only defines a view more, never fewer; DuckDB's own
    ``get_table_names`` binds the statement and fails on some that run (an ``INSERT`` into a
    table made earlier), and misses none that this finds.
    """
    text = sql.lower()
    if _CATALOG_WORDS.search(text):
        return frozenset(TIME_COLUMNS)
    found: set[str] = set()
    for word in set(_WORD.findall(text)):
        for view, name in _VIEW_TABLES.items():
            if word == view or word.startswith(f"{view}_"):
                found.add(name)
    return frozenset(found)


def define_views(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    *,
    suffix: str = "",
    view_filter: ViewFilter | None = None,
    as_of_ms: int | None = None,
    snapshot_ids: Mapping[str, int | None] | None = None,
    keep_plans: bool = False,
    only: Collection[str] | None = None,
) -> list[str]:
    """Define the lake's views on ``con`` as :func:`connect` does, each name followed by
    ``suffix`` (``readings`` + ``_r1``: ``readings_r1``), so that views of several ranges
    or states can live on one connection (a new connection costs about 30 ms); only those of
    the tables in ``only`` when given. Return the paths of the files DuckDB itself opens for
    them (see :func:`table_view`)."""
    by_path: list[str] = []
    for name, view in VIEWS.items():
        if only is not None and name not in only:
            continue
        view = f"{view}{suffix}"
        snapshot_id = None
        if as_of_ms is not None:
            from wattlake.lake import tables

            snapshot = tables.snapshot_as_of(tables.open_table(lake, name), as_of_ms)
            snapshot_id = -1 if snapshot is None else snapshot.snapshot_id
        elif snapshot_ids is not None and name in snapshot_ids:
            snapshot_id = snapshot_ids[name]
            snapshot_id = -1 if snapshot_id is None else snapshot_id
        if snapshot_id == -1:  # the table did not exist yet at that instant
            con.register(f"{view}_source", TABLES[name].schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM {view}_source")
        else:
            by_path += table_view(
                con,
                lake,
                name,
                view,
                view_filter=view_filter,
                snapshot_id=snapshot_id,
                keep_plans=keep_plans,
            )
    if only is None or READINGS_TABLE in only:
        con.execute(
            f"CREATE VIEW raw_readings{suffix} AS SELECT {_READING_COLUMNS} "
            f"FROM raw_readings_stored{suffix}"
        )
        con.execute(
            f"CREATE VIEW readings{suffix} AS SELECT * FROM raw_readings{suffix} "
            f"QUALIFY row_number() OVER ({DEDUP_WINDOW}) = 1"
        )
    if only is None or DEAD_LETTERS_TABLE in only:
        con.execute(
            f"CREATE VIEW dead_letters{suffix} AS SELECT {_DEAD_LETTER_COLUMNS} "
            f"FROM dead_letters_stored{suffix}"
        )
    return by_path


def drop_views(con: duckdb.DuckDBPyConnection, suffix: str) -> None:
    """Drop the views :func:`define_views` created with ``suffix`` (and what they read)."""
    for view in DERIVED_VIEWS:
        con.execute(f"DROP VIEW IF EXISTS {view}{suffix}")
    for view in VIEW_NAMES:
        con.execute(f"DROP VIEW IF EXISTS {view}{suffix}")
        for source in (f"{view}{suffix}_source", f"{view}{suffix}_empty"):
            con.execute(f"DROP VIEW IF EXISTS {source}")  # a view over local files
            con.unregister(source)  # Arrow data


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
        only=(READINGS_TABLE,),
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

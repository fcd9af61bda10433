"""Migration of a lake from the Hive-style folders (before the Iceberg tables) into the tables.

The old layout, as wattlake wrote it before the tables:

* ``raw/readings/date=YYYY-MM-DD/hour=HH/*.parquet`` — readings as delivered (the canonical
  columns, millisecond timestamps, float64 values);
* ``curated/readings/date=YYYY-MM-DD/*.parquet`` — the same after compaction (sorted,
  deduplicated days);
* ``errors/<reason>/date=YYYY-MM-DD/*.jsonl`` — dead letters, one JSON record a line
  (``arrival_ms``, ``stream``, ``topic``, ``error_code``, ``error_message``, ``attempts``,
  ``raw_base64``, ``raw_text``).

Readings go into table ``readings`` (timestamps to microseconds, values rounded to the
column's decimal resolution, see docs/lake.md), dead letters into ``dead_letters``. Files are
migrated in batches; each batch is one commit whose snapshot summary names the files it holds
(property ``wattlake.migrate.files``), and after the commit the batch's old files are moved to
``legacy/<their old path>`` under the lake root (delete that folder once satisfied). A run that
was killed resumes: files a commit already names are only moved, never imported twice.

A file that cannot be migrated (unreadable, not a readings file, a value outside its decimal
column) stops the job with one sentence naming it, before anything of its batch is written;
earlier batches stay migrated. Readings in both the raw and curated folders (a compaction
interrupted before the tables) are stored twice and shown once: the views and compaction
remove duplicates on (device_id, channel, ts).
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import pyarrow as pa

from wattlake import faults
from wattlake.config import Settings
from wattlake.errors import BadInputError, StorageError
from wattlake.lake import tables
from wattlake.lake.storage import CURATED_READINGS, ERRORS, RAW_READINGS, Lake
from wattlake.progress import ProgressCallback, no_progress
from wattlake.schema import (
    COLUMNS,
    DEAD_LETTERS_STORED,
    DEAD_LETTERS_TABLE,
    READING_SCHEMA,
    READINGS_TABLE,
)

log = logging.getLogger(__name__)

# Snapshot summary property: JSON list of the old files (relative to the lake root) a commit holds.
MIGRATED_PROPERTY: Final = "wattlake.migrate.files"
# Where migrated files are moved, under the lake root.
LEGACY_DIR: Final = "legacy"
FILES_PER_COMMIT: Final = 200
ROWS_PER_COMMIT: Final = 4_000_000
_DATE = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_REQUIRED: Final = ("ts", "device_id", "channel")


@dataclass(frozen=True, slots=True)
class LegacyFile:
    """One file of the old layout: its path relative to the lake root and its target table."""

    relative: str
    table: str

    @property
    def date(self) -> str | None:
        match = _DATE.search(self.relative)
        return match.group(1) if match else None


def legacy_files(lake: Lake, dates: Iterable[str] | None = None) -> list[LegacyFile]:
    """Return the old layout's files still in place (only of ``dates`` when given)."""
    wanted = set(dates or ())
    found = []
    for folder, suffix, table in (
        (CURATED_READINGS, ".parquet", READINGS_TABLE),
        (RAW_READINGS, ".parquet", READINGS_TABLE),
        (ERRORS, ".jsonl", DEAD_LETTERS_TABLE),
    ):
        for path in lake.list_files(folder, suffix):
            item = LegacyFile(path[len(lake.root) + 1 :], table)
            if not wanted or item.date in wanted:
                found.append(item)
    return found


def migrated_files(lake: Lake) -> set[str]:
    """Return the old files (relative paths) that commits of the tables already hold."""
    done: set[str] = set()
    for name in (READINGS_TABLE, DEAD_LETTERS_TABLE):
        table = tables.open_table(lake, name)
        for snapshot in table.snapshots():
            props = snapshot.summary.additional_properties if snapshot.summary else {}
            if MIGRATED_PROPERTY in props:
                done.update(json.loads(props[MIGRATED_PROPERTY]))
    return done


def _refuse(item: LegacyFile, lake: Lake, why: str) -> BadInputError:
    return BadInputError(
        f"Cannot migrate {lake.path(item.relative)}: {why}; fix or move that file away and run "
        "the migration again (files migrated so far stay migrated)."
    )


def read_readings_file(lake: Lake, item: LegacyFile) -> pa.Table:
    """Return an old readings file in the table's stored form.

    Raises:
        BadInputError: the file is unreadable, lacks the reading columns, or holds a value
            outside its decimal column.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(lake.path(item.relative), filesystem=lake.fs)
    except (OSError, pa.ArrowException) as exc:
        raise _refuse(item, lake, f"it is not a readable Parquet file ({exc})") from exc
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise _refuse(item, lake, f"it has no column {', '.join(missing)}")
    columns = []
    for field in READING_SCHEMA:
        if field.name in table.column_names:
            columns.append(table[field.name])
        elif field.name == "received_at":
            columns.append(table["ts"])
        elif field.name == "source":
            columns.append(pa.array(["migrated"] * table.num_rows, pa.string()))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    try:
        canonical = pa.Table.from_arrays(columns, names=list(COLUMNS)).cast(READING_SCHEMA)
        if any(canonical[c].null_count for c in (*_REQUIRED, "received_at", "source")):
            raise ValueError("a reading without ts, device_id or channel")
        return tables.to_stored(READINGS_TABLE, canonical)
    except BadInputError as exc:
        raise _refuse(item, lake, str(exc).rstrip(".")) from exc
    except (pa.ArrowException, ValueError) as exc:
        raise _refuse(item, lake, f"its columns do not fit the readings ({exc})") from exc


def read_dead_letters_file(lake: Lake, item: LegacyFile) -> pa.Table:
    """Return an old dead-letter JSON-lines file as rows of table ``dead_letters``.

    Raises:
        BadInputError: the file is unreadable or a line is not a dead-letter record.
    """
    try:
        with lake.fs.open_input_stream(lake.path(item.relative)) as stream:
            data = bytes(stream.read())
    except OSError as exc:
        raise _refuse(item, lake, f"it cannot be read ({exc})") from exc
    reason = item.relative.split("/")[1] if item.relative.count("/") >= 2 else ""
    rows: dict[str, list[Any]] = {name: [] for name in DEAD_LETTERS_STORED.names}
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            payload = base64.b64decode(record.get("raw_base64") or "", validate=True)
            rows["received_at"].append(int(record["arrival_ms"]) * 1000)
            rows["stream"].append(str(record.get("stream") or ""))
            rows["topic"].append(str(record.get("topic") or ""))
            rows["error_code"].append(str(record.get("error_code") or reason))
            rows["error_message"].append(str(record.get("error_message") or ""))
            rows["attempts"].append(int(record.get("attempts") or 1))
            rows["payload"].append(payload)
            text = record.get("raw_text")
            rows["raw_text"].append(None if text is None else str(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _refuse(item, lake, f"line {number} is not a dead-letter record ({exc})") from exc
    arrays = [
        pa.array(rows["received_at"], pa.int64()).cast(
            DEAD_LETTERS_STORED.field("received_at").type
        )
        if name == "received_at"
        else pa.array(rows[name], DEAD_LETTERS_STORED.field(name).type)
        for name in DEAD_LETTERS_STORED.names
    ]
    return pa.Table.from_arrays(arrays, schema=DEAD_LETTERS_STORED)


def _batches(items: Sequence[LegacyFile], files_per_commit: int) -> list[list[LegacyFile]]:
    batches: list[list[LegacyFile]] = []
    for item in items:
        if (
            not batches
            or len(batches[-1]) >= files_per_commit
            or batches[-1][0].table != item.table
        ):
            batches.append([])
        batches[-1].append(item)
    return batches


def _move_away(lake: Lake, item: LegacyFile) -> None:
    """Move a migrated file to ``legacy/<old path>``."""
    source = lake.path(item.relative)
    target = lake.path(f"{LEGACY_DIR}/{item.relative}")
    try:
        lake.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        lake.fs.move(source, target)
    except FileNotFoundError:
        return  # moved by an earlier, interrupted run
    except OSError as exc:
        raise StorageError(f"Could not move the migrated {source} to {target}: {exc}") from exc


@dataclass
class _Progress:
    files: int = 0
    rows: int = 0
    moved_only: int = 0


def migrate(
    lake: Lake,
    *,
    dates: Iterable[str] | None = None,
    files_per_commit: int = FILES_PER_COMMIT,
    rows_per_commit: int = ROWS_PER_COMMIT,
    on_progress: ProgressCallback | None = None,
) -> list[dict[str, Any]]:
    """Migrate the old layout's files into the tables; return one row per table.

    ``on_progress(done, total)`` counts the old files read for a commit or moved away.

    Raises:
        BadInputError: a file cannot be migrated (named in the message); earlier batches stay.
        StorageError: the lake or catalog cannot be read or written.
    """
    items = legacy_files(lake, dates)
    report = on_progress or no_progress
    report(0, len(items))
    if not items:
        return []
    done = migrated_files(lake)
    progress = {READINGS_TABLE: _Progress(), DEAD_LETTERS_TABLE: _Progress()}

    def files_done() -> int:
        return sum(p.files + p.moved_only for p in progress.values())

    for item in (i for i in items if i.relative in done):  # committed before a crash
        _move_away(lake, item)
        progress[item.table].moved_only += 1
    report(files_done(), len(items))
    pending = [i for i in items if i.relative not in done]
    for batch in _batches(pending, files_per_commit):
        name = batch[0].table
        parts: list[pa.Table] = []
        held: list[LegacyFile] = []
        rows = 0
        for item in batch:
            part = (
                read_readings_file(lake, item)
                if name == READINGS_TABLE
                else read_dead_letters_file(lake, item)
            )
            parts.append(part)
            held.append(item)
            rows += part.num_rows
            report(files_done() + len(held), len(items))
            if rows >= rows_per_commit:
                _commit(lake, name, parts, held, progress[name])
                report(files_done(), len(items))
                parts, held, rows = [], [], 0
        if held:
            _commit(lake, name, parts, held, progress[name])
            report(files_done(), len(items))
    return [
        {
            "table": name,
            "files_migrated": p.files,
            "rows": p.rows,
            "files_moved_after_a_crash": p.moved_only,
            "old_files_now_in": lake.path(LEGACY_DIR),
        }
        for name, p in progress.items()
        if p.files or p.moved_only
    ]


def _commit(
    lake: Lake, name: str, parts: list[pa.Table], held: list[LegacyFile], progress: _Progress
) -> None:
    """Write ``parts`` as data files of table ``name`` in one commit naming ``held``, then move
    the old files away."""
    stored = pa.concat_tables(parts)
    table = tables.open_table(lake, name)
    files = tables.write_data_files(table, name, stored)
    faults.crash_point("migrate-files-written")
    properties = {MIGRATED_PROPERTY: json.dumps([i.relative for i in held])}
    tables.commit(table, files, properties=properties)
    faults.crash_point("migrate-committed")
    for number, item in enumerate(held):
        _move_away(lake, item)
        if number == 0:
            faults.crash_point("migrate-moving")
    progress.files += len(held)
    progress.rows += stored.num_rows
    log.info("migrated %d files (%d rows) into %s", len(held), stored.num_rows, name)


def run(
    settings: Settings,
    *,
    dates: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
    **_: Any,
) -> list[dict[str, Any]]:
    """Run the migration as the ``migrate`` job (``on_progress`` counts old files)."""
    return migrate(Lake.from_settings(settings), dates=dates, on_progress=on_progress)

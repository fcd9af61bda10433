"""What a rollup table reflects of the readings table: the snapshot summary properties the rollup
job writes and the query side reads to tell whether rollups are up to date for a range.

The rollup job (:mod:`wattlake.jobs.rollup`) records in each commit of a rollup table the readings
snapshot it reflects; the query side (:mod:`wattlake.query`) compares that with the readings
table's history. Both import this module; neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING, Any, Final

# wattlake.lake.tables (pyiceberg) is imported in the functions that use it: a short command
# answered from the plan cache does not need it.
if TYPE_CHECKING:
    from wattlake.energy.sites import Site

DAY_MS: Final = 86_400_000
# Snapshot summary properties of a rollup table: the readings snapshot its contents reflect, by
# id and by sequence number. The id goes when ``maintain`` expires that snapshot; the sequence
# number stays comparable with the sequence numbers of the readings' data files.
READINGS_SNAPSHOT_PROPERTY: Final = "wattlake.readings-snapshot"
READINGS_SEQUENCE_PROPERTY: Final = "wattlake.readings-sequence"
# ... and the uuid of that readings table: a sequence number means nothing in a table made anew.
READINGS_TABLE_PROPERTY: Final = "wattlake.readings-table"
# Snapshot summary property of energy_15min: JSON {site name: hash of its configuration}.
SITES_PROPERTY: Final = "wattlake.sites"
# Properties whose newest snapshot ``maintain`` keeps (a later commit may not repeat them).
KEPT_PROPERTIES: Final = frozenset(
    {
        READINGS_SNAPSHOT_PROPERTY,
        READINGS_SEQUENCE_PROPERTY,
        READINGS_TABLE_PROPERTY,
        SITES_PROPERTY,
    }
)


def site_hash(site: Site) -> str:
    """Return a hash of what a site's energy depends on: its channels' roles (with their
    validity, parents, names and directions) and its phase netting; not its tariff."""
    channels = sorted(
        [c.device_id, c.channel, c.role, c.name, c.parent, c.valid_from_ms, c.valid_until_ms,
         c.invert]
        for c in site.channels
    )  # fmt: skip
    document = json.dumps({"phases": site.phases, "channels": channels}, sort_keys=True)
    return hashlib.sha256(document.encode()).hexdigest()[:16]


def file_day(task_file: Any) -> int:
    """Return the UTC day (days since the epoch) of a data file of a day-partitioned table."""
    return int(task_file.partition[0])


def readings_mark(readings: Any, snapshot: Any) -> dict[str, str]:
    """Return the properties a rollup commit records for snapshot ``snapshot`` of table
    ``readings``."""
    return {
        READINGS_SNAPSHOT_PROPERTY: str(snapshot.snapshot_id),
        READINGS_SEQUENCE_PROPERTY: str(snapshot.sequence_number),
        READINGS_TABLE_PROPERTY: str(readings.metadata.table_uuid),
    }


def reflected_sequence(readings: Any, rollup: Any) -> int | None:
    """Return the sequence number of the readings snapshot that table ``rollup`` reflects, or
    None when it reflects none (never rolled up, or rolled up by a wattlake that recorded only
    the snapshot id and that snapshot has since expired, or rolled up from a readings table
    made anew since)."""
    from wattlake.lake import tables

    sequence = tables.last_property(rollup, READINGS_SEQUENCE_PROPERTY)
    if sequence is not None:
        if tables.last_property(rollup, READINGS_TABLE_PROPERTY) != str(
            readings.metadata.table_uuid
        ):
            return None
        return int(sequence)
    snapshot_id = tables.last_property(rollup, READINGS_SNAPSHOT_PROPERTY)
    if snapshot_id is None:
        return None
    snapshot = readings.snapshot_by_id(int(snapshot_id))
    return None if snapshot is None else int(snapshot.sequence_number)


def days_added_since(readings: Any, since: int | None) -> set[int] | None:
    """Return the UTC days of the live data files of ``readings`` committed after the snapshot
    of sequence number ``since``, or None (everything must be recomputed) when ``since`` is.

    Data files keep the sequence number of the commit that added them through expiry of
    snapshots and merges of manifests, so this holds after ``maintain``; files that a commit
    only removed do not count.
    """
    if since is None:
        return None
    current = readings.current_snapshot()
    days: set[int] = set()
    if current is None:
        return days
    for manifest in current.manifests(readings.io):
        if manifest.sequence_number <= since:
            continue  # every entry of a manifest is at most as new as the manifest
        for entry in manifest.fetch_manifest_entry(readings.io, discard_deleted=True):
            added = entry.file_sequence_number
            if added is None:
                added = entry.sequence_number
            if added is None or added > since:
                days.add(file_day(entry.data_file))
    return days


# What readers learnt from the table metadata, kept for the next call of the process (the web
# server asks many times per table state): the days of readings data files added since the
# readings snapshot a rollup run reflects, by (lake, that snapshot's sequence number), with the
# sequence number they were counted up to; and a table's data files by day, by its metadata file.
_ADDED_DAYS: dict[tuple[str, int], tuple[int, frozenset[int]]] = {}
_TABLE_FILES: dict[tuple[str, str], tuple[bool, dict[int, list[str]]]] = {}
_MEMO_LOCK = threading.Lock()
_MEMO_ENTRIES: Final = 64


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    with _MEMO_LOCK:
        memo[key] = value
        while len(memo) > _MEMO_ENTRIES:
            memo.pop(next(iter(memo)))


def stale_days(lake: Any, readings: Any, rollup: Any) -> set[int] | None:
    """Return the UTC days of the readings data files committed after the readings snapshot
    that rollup table ``rollup`` reflects (:func:`days_added_since`), or None when it reflects
    none; reading only the manifests newer than the previous call's for this lake (their days
    are kept)."""
    done = reflected_sequence(readings, rollup)
    if done is None:
        return None
    current = readings.current_snapshot()
    if current is None:
        return set()
    key = (str(lake.url), done)
    with _MEMO_LOCK:
        memo = _ADDED_DAYS.get(key)
    checked, days = memo if memo is not None else (done, frozenset())
    if checked != current.sequence_number:
        days = days | (days_added_since(readings, checked) or set())
        _remember(_ADDED_DAYS, key, (current.sequence_number, days))
    return set(days)


def files_by_day(lake: Any, table: Any) -> tuple[bool, dict[int, list[str]]]:
    """Return whether the scan plan of day-partitioned ``table`` has delete files, and its data
    files (local paths) by UTC day; planned once per metadata file."""
    from wattlake.lake import tables

    key = (str(lake.url), str(table.metadata_location))
    with _MEMO_LOCK:
        known = _TABLE_FILES.get(key)
    if known is not None:
        return known
    tasks = list(table.scan().plan_files()) if table.current_snapshot() is not None else []
    by_day: dict[int, list[str]] = {}
    for t in tasks:
        by_day.setdefault(file_day(t.file), []).append(tables.local_path(t.file.file_path))
    found = (any(t.delete_files for t in tasks), by_day)
    _remember(_TABLE_FILES, key, found)
    return found

"""Maintenance of the lake's tables: expire old snapshots, rewrite small manifests, remove
orphan files.

Snapshots younger than ``lake.snapshot_history_s`` stay for time travel (``query --as-of``); the
newest snapshot carrying each lake writer's WAL position is always kept, so a restarted writer still
finds where it stopped, and so is the newest snapshot of a rollup table recording which readings it
reflects (:mod:`wattlake.lake.freshness`); so is every snapshot of an unfinished migration
(old-layout files still in place), which names the files it migrated. Orphans are data files under a
table's ``data/`` folder that no kept snapshot names and that are older than the history (a writer
killed before its commit leaves them; a file younger than that may belong to a commit in flight).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pyarrow.fs as pafs

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import TABLES


def maintain(lake: Lake, *, history_s: float) -> list[dict[str, Any]]:
    """Expire, rewrite manifests and remove orphans in every table; return one row per table.

    Raises:
        wattlake.errors.StorageError: a table could not be read or written.
    """
    from wattlake.jobs.migrate import MIGRATED_PROPERTY, legacy_files
    from wattlake.lake.freshness import KEPT_PROPERTIES

    rows = []
    cutoff_ms = int((time.time() - history_s) * 1000)
    # While a migration is unfinished its commits say which old files are in: keep them.
    migrating = bool(legacy_files(lake))
    for name in TABLES:
        table = tables.open_table(lake, name)
        current = table.current_snapshot()
        keep = {current.snapshot_id} if current is not None else set()
        wal_keys: set[str] = set()
        for snapshot in tables.ancestors(table):
            props = snapshot.summary.additional_properties if snapshot.summary else {}
            new = {
                k for k in props if k.startswith(tables.WAL_PROPERTY_PREFIX) or k in KEPT_PROPERTIES
            } - wal_keys
            if new or (migrating and MIGRATED_PROPERTY in props):
                keep.add(snapshot.snapshot_id)
                wal_keys |= new
        old = [
            s.snapshot_id
            for s in table.snapshots()
            if s.timestamp_ms < cutoff_ms and s.snapshot_id not in keep
        ]
        if old:
            table.maintenance.expire_snapshots().by_ids(old).commit()
            table = tables.open_table(lake, name)
        manifests_before = len(current.manifests(table.io)) if current is not None else 0
        if current is not None and manifests_before > 1:
            # pyiceberg 0.12 has no RewriteManifests: an empty merge-append that merges
            # every manifest into one does the same.
            with table.transaction() as tx:
                tx.set_properties(
                    {
                        "commit.manifest-merge.enabled": "true",
                        "commit.manifest.min-count-to-merge": "2",
                    }
                )
                with tx.update_snapshot(
                    snapshot_properties={"wattlake.maintain": "rewrite-manifests"}
                ).merge_append():
                    pass
            table = tables.open_table(lake, name)
        orphans = remove_orphans(lake, table, cutoff_ms)
        rows.append(
            {
                "table": name,
                "snapshots_expired": len(old),
                "manifests_before": manifests_before,
                "orphans_removed": orphans,
            }
        )
    return rows


def remove_orphans(lake: Lake, table: Any, cutoff_ms: int) -> int:
    """Delete data files of ``table`` that no snapshot names and older than ``cutoff_ms``."""
    named = set()
    for snapshot in table.snapshots():
        for manifest in snapshot.manifests(table.io):
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                named.add(tables.local_path(entry.data_file.file_path))
    folder = tables.local_path(f"{table.location()}/data")
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    removed = 0
    for info in lake.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or info.path in named:
            continue
        modified = info.mtime or datetime.now(UTC)
        if modified.timestamp() * 1000 < cutoff_ms:
            lake.delete(info.path)
            removed += 1
    return removed


def run(settings: Settings, **_: Any) -> list[dict[str, Any]]:
    """Run maintenance as the ``maintain`` job."""
    return maintain(Lake.from_settings(settings), history_s=settings["lake.snapshot_history_s"])

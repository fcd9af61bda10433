"""What a rollup table reflects of the readings table: the snapshot summary properties the rollup
job writes and the query side reads to tell whether rollups are up to date for a range.

The rollup job (:mod:`wattlake.jobs.rollup`) records in each commit of a rollup table the readings
snapshot it reflects; the query side (:mod:`wattlake.query`) compares that with the readings
table's history. Both import this module; neither imports the other.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Final

from wattlake.lake import tables

if TYPE_CHECKING:
    from wattlake.energy.sites import Site

DAY_MS: Final = 86_400_000
# Snapshot summary property of a rollup table: the readings snapshot its contents reflect.
READINGS_SNAPSHOT_PROPERTY: Final = "wattlake.readings-snapshot"
# Snapshot summary property of energy_15min: JSON {site name: hash of its configuration}.
SITES_PROPERTY: Final = "wattlake.sites"


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


def days_added_since(readings: Any, since: int | None) -> set[int] | None:
    """Return the UTC days of data files added to ``readings`` after snapshot ``since``.

    None means everything must be recomputed: no earlier run, or its snapshot is no longer in
    the table's history (expired).
    """
    if since is None:
        return None
    days: set[int] = set()
    for snapshot in tables.ancestors(readings):
        if snapshot.snapshot_id == since:
            return days
        for manifest in snapshot.manifests(readings.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(readings.io, discard_deleted=True):
                if entry.snapshot_id == snapshot.snapshot_id:
                    days.add(file_day(entry.data_file))
    return None

"""Maintenance: old snapshots expired (the writer's WAL position kept), manifests merged,
orphan files removed, and the readings unchanged."""

from __future__ import annotations

from pathlib import Path

from wattlake.jobs.maintain import maintain
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.schema import READINGS_TABLE, readings_to_table

T0 = 1_767_225_600_000


def test_maintain_expires_merges_and_removes_orphans(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    for i in range(4):
        row = {"ts": T0 + i, "received_at": T0, "device_id": "m1", "channel": 0,
               "power_w": float(i), "source": "generic"}  # fmt: skip
        props = {"wattlake.wal.ingest": f'{{"segment": {i}}}'} if i == 1 else None
        tables.append(lake, READINGS_TABLE, readings_to_table([row]), props)
    table = tables.open_table(lake, READINGS_TABLE)
    orphan = Path(tables.local_path(table.location())) / "data" / "ts_day=2026-01-01" / "x.parquet"
    orphan.write_bytes(b"left by a writer killed before its commit")

    rows = {r["table"]: r for r in maintain(lake, history_s=-1.0)}

    assert rows[READINGS_TABLE]["snapshots_expired"] == 2  # the current one and the WAL one stay
    assert rows[READINGS_TABLE]["orphans_removed"] == 1
    assert not orphan.exists()
    table = tables.open_table(lake, READINGS_TABLE)
    assert tables.last_property(table, "wattlake.wal.ingest") == '{"segment": 1}'
    current = table.current_snapshot()
    assert current is not None and len(current.manifests(table.io)) == 1
    assert connect(lake).sql("SELECT sum(power_w) FROM readings").fetchall() == [(6.0,)]

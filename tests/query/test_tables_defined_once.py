"""Tables defined once, in ``schema.TABLES``: the rollup job fills exactly the tables with a
rollup spec, at the spec's bucket length, and :func:`connect` defines every table's view."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from wattlake.energy.rollup import QUARTER_HOUR_MS
from wattlake.jobs.rollup import run_rollup
from wattlake.lake import tables
from wattlake.lake.freshness import DAY_MS, READINGS_SNAPSHOT_PROPERTY
from wattlake.lake.storage import Lake
from wattlake.query.engine import DERIVED_VIEWS, connect
from wattlake.schema import ENERGY_ROLLUP, READINGS_TABLE, TABLES, readings_to_table

T0 = 20_454 * DAY_MS  # 2026-01-01 [ms UTC]
STEP_MS = 10_000


def _readings(first_ms: int, hours: int) -> pa.Table:
    """Return readings of one channel every ``STEP_MS`` for ``hours``, power and counter."""
    n = hours * 3_600_000 // STEP_MS
    power = 300 + 200 * np.sin(np.arange(n) / 50)
    energy = 1_000 + np.cumsum(power) * STEP_MS / 3_600_000
    return readings_to_table(
        [
            {
                "ts": first_ms + i * STEP_MS,
                "received_at": first_ms + i * STEP_MS + 50,
                "device_id": "m1",
                "channel": 0,
                "power_w": round(float(power[i]), 1),
                "energy_wh": round(float(energy[i]), 2),
                "source": "generic",
            }
            for i in range(n)
        ]
    )


def test_rollup_job_fills_every_table_with_a_rollup_spec_at_its_bucket(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    tables.append(lake, READINGS_TABLE, _readings(T0 + 22 * 3_600_000, 3))  # crosses midnight
    run = run_rollup(lake)
    specs = {t.name: t.rollup for t in TABLES.values() if t.rollup is not None}
    assert specs, "no table has a rollup spec"
    assert set(run.rows) == set(specs)  # and no table without a spec
    snapshot = tables.open_table(lake, READINGS_TABLE).current_snapshot()
    assert snapshot is not None
    for name, spec in specs.items():
        assert spec.source == READINGS_TABLE, f"{name}: the job reads table readings only"
        rows = tables.read_table(lake, name)
        assert rows.num_rows == run.rows[name] > 0, name
        start_ms = np.unique(rows["start"].cast(pa.int64()).to_numpy() // 1000)
        assert not np.any(start_ms % spec.bucket_ms), name
        assert np.diff(start_ms).min() == spec.bucket_ms, name  # readings every 10 s: no gaps
        recorded = tables.last_property(tables.open_table(lake, name), READINGS_SNAPSHOT_PROPERTY)
        assert recorded == str(snapshot.snapshot_id), name


def test_connect_defines_the_view_of_every_table(tmp_path: Path) -> None:
    lake = Lake.open(str(tmp_path / "lake"))
    tables.append(lake, READINGS_TABLE, _readings(T0, 1))
    run_rollup(lake)
    con = connect(lake)
    defined = {row[0] for row in con.sql("SELECT view_name FROM duckdb_views()").fetchall()}
    views = [t.view for t in TABLES.values()]
    assert len(set(views) | set(DERIVED_VIEWS)) == len(views) + len(DERIVED_VIEWS)  # no clash
    for t in TABLES.values():
        assert t.view in defined, t.name
        columns = con.sql(f"SELECT * FROM {t.view} LIMIT 0").columns
        assert set(columns) <= set(t.schema.names), t.name
    for t in TABLES.values():
        if t.rollup is not None:  # a rollup's view holds what the job wrote
            [(count,)] = con.execute(f"SELECT count(*) FROM {t.view}").fetchall()
            assert count == tables.read_table(lake, t.name).num_rows > 0, t.name
    assert set(DERIVED_VIEWS) <= defined


def test_energy_rollup_bucket_is_the_one_the_query_side_sums() -> None:
    # query/rollups.py sums energy rollup rows into buckets whose edges are QUARTER_HOUR_MS.
    energy = [t.rollup for t in TABLES.values() if t.rollup and t.rollup.kind == ENERGY_ROLLUP]
    assert [spec.bucket_ms for spec in energy] == [QUARTER_HOUR_MS]

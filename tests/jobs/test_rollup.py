"""The rollup job: incremental from the readings' snapshot history, idempotent, crash-safe."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wattlake.energy.rollup import MINUTE_MS, power_stats
from wattlake.jobs import rollup
from wattlake.jobs.rollup import (
    DAY_MS,
    READINGS_SNAPSHOT_PROPERTY,
    ArrowReadings,
    compute_days,
    run_rollup,
)
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import (
    ENERGY_15MIN_TABLE,
    POWER_1H_TABLE,
    POWER_1MIN_TABLE,
    READINGS_TABLE,
    readings_to_table,
)

DAY0 = 20_454  # 2026-01-01 as days since the epoch
T0 = DAY0 * DAY_MS


def _readings(first_ms: int, hours: float, device: str = "m1", step_ms: int = 10_000) -> pa.Table:
    rows = []
    n = int(hours * 3_600_000 // step_ms)
    energy = 1_000.0
    for i in range(n):
        power = round(300 + 200 * np.sin(i / 50), 1)
        energy += power * step_ms / 3_600_000
        ts = first_ms + i * step_ms
        for channel in (0, 1):
            rows.append(
                {
                    "ts": ts,
                    "received_at": ts + 50,
                    "device_id": device,
                    "channel": channel,
                    "power_w": power if channel == 0 else -power / 2,
                    "energy_wh": round(energy, 2) if channel == 0 else None,
                    "source": "generic",
                }
            )
    return readings_to_table(rows)


def _sorted(table: pa.Table) -> pa.Table:
    keys = [("device_id", "ascending"), ("channel", "ascending"), ("start", "ascending")]
    return table.sort_by(keys)


def _assert_tables_equal(stored: pa.Table, expected: pa.Table) -> None:
    a, b = _sorted(stored.select(expected.column_names)), _sorted(expected)
    assert a.num_rows == b.num_rows
    for name in expected.column_names:
        x, y = a[name], b[name]
        if pa.types.is_floating(y.type):
            np.testing.assert_allclose(
                x.fill_null(np.nan).to_numpy(), y.fill_null(np.nan).to_numpy(), rtol=1e-12
            )
        else:
            assert x.cast(y.type).to_pylist() == y.to_pylist(), name


def _all_readings(lake: Lake) -> pa.Table:
    return tables.read_table(lake, READINGS_TABLE)


def test_first_run_rolls_up_every_day_then_nothing_is_left(lake: Lake) -> None:
    tables.append(lake, READINGS_TABLE, _readings(T0 + 22 * 3_600_000, 5))  # crosses midnight
    run = run_rollup(lake)
    assert run.days == tuple(range(DAY0 - 1, DAY0 + 3))
    expected = compute_days(ArrowReadings(_all_readings(lake)), list(run.days))
    _assert_tables_equal(tables.read_table(lake, ENERGY_15MIN_TABLE), expected.energy_15min)
    _assert_tables_equal(tables.read_table(lake, POWER_1MIN_TABLE), expected.power_1min)
    _assert_tables_equal(tables.read_table(lake, POWER_1H_TABLE), expected.power_1h)
    energy = tables.read_table(lake, ENERGY_15MIN_TABLE)
    assert energy.num_rows == 4 * 96 * 2  # every quarter-hour of the four days, two channels
    assert sum(energy["samples"].to_pylist()) == 5 * 360 * 2

    again = run_rollup(lake)
    assert again.days == ()
    snapshot = tables.open_table(lake, READINGS_TABLE).current_snapshot()
    assert snapshot is not None
    for name in (ENERGY_15MIN_TABLE, POWER_1MIN_TABLE, POWER_1H_TABLE):
        table = tables.open_table(lake, name)
        assert tables.last_property(table, READINGS_SNAPSHOT_PROPERTY) == str(snapshot.snapshot_id)


def test_late_data_recomputes_only_its_day_and_neighbours(lake: Lake) -> None:
    for day in range(6):
        tables.append(lake, READINGS_TABLE, _readings(T0 + day * DAY_MS, 2))
    run_rollup(lake)
    before = tables.read_table(lake, ENERGY_15MIN_TABLE)
    # Late data for day 1 from another device, after days 2..5 were written.
    tables.append(lake, READINGS_TABLE, _readings(T0 + DAY_MS + 3_600_000, 1, device="late"))
    run = run_rollup(lake)
    assert run.days == (DAY0, DAY0 + 1, DAY0 + 2)
    after = tables.read_table(lake, ENERGY_15MIN_TABLE)
    full = compute_days(ArrowReadings(_all_readings(lake)), list(range(DAY0 - 1, DAY0 + 7)))
    _assert_tables_equal(after, full.energy_15min)
    late = after.filter(pa.compute.equal(after["device_id"], "late"))
    assert late.num_rows == 3 * 96 * 2
    untouched = before.filter(pa.compute.equal(before["device_id"], "m1"))
    assert untouched.num_rows == after.num_rows - late.num_rows

    # Idempotent: a forced full recomputation gives the same rows.
    run_rollup(lake, full=True)
    _assert_tables_equal(tables.read_table(lake, ENERGY_15MIN_TABLE), full.energy_15min)


def test_a_crash_between_tables_is_finished_by_the_next_run(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    tables.append(lake, READINGS_TABLE, _readings(T0, 3))
    real = rollup._replace_days

    def crash_on_minutes(lake_: Lake, name: str, *args: object) -> None:
        if name == POWER_1MIN_TABLE:
            raise OSError("killed")
        real(lake_, name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(rollup, "_replace_days", crash_on_minutes)
    with pytest.raises(OSError):
        run_rollup(lake)
    assert tables.read_table(lake, ENERGY_15MIN_TABLE).num_rows > 0
    assert tables.read_table(lake, POWER_1MIN_TABLE).num_rows == 0
    monkeypatch.setattr(rollup, "_replace_days", real)
    run = run_rollup(lake)
    assert run.days  # the minute table was stale: its days are computed again
    expected = compute_days(ArrowReadings(_all_readings(lake)), list(run.days))
    _assert_tables_equal(tables.read_table(lake, POWER_1MIN_TABLE), expected.power_1min)
    assert run_rollup(lake).days == ()


def test_power_stats_per_minute() -> None:
    ts = np.array([0, 10_000, 59_999, 60_000, 200_000], dtype=np.int64)
    power = np.array([1.0, 3.0, np.nan, -2.0, 5.0])
    stats = power_stats(ts, power, MINUTE_MS)
    assert stats.start_ms.tolist() == [0, 60_000, 180_000]
    assert stats.min_w.tolist() == [1.0, -2.0, 5.0]
    assert stats.max_w.tolist() == [3.0, -2.0, 5.0]
    assert stats.mean_w.tolist() == [2.0, -2.0, 5.0]
    assert stats.samples.tolist() == [2, 1, 1]

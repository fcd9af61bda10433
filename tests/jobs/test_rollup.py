"""The rollup job: incremental from the readings' snapshot history, idempotent, crash-safe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from wattlake.config import Settings
from wattlake.energy.buckets import bucket_edges_ms
from wattlake.energy.rollup import MINUTE_MS, power_stats
from wattlake.energy.sites import parse_sites
from wattlake.jobs import rollup
from wattlake.jobs.rollup import ArrowReadings, compute_days, run_rollup
from wattlake.lake import tables
from wattlake.lake.freshness import DAY_MS, READINGS_SNAPSHOT_PROPERTY, SITES_PROPERTY, site_hash
from wattlake.lake.storage import Lake
from wattlake.query.energy import site_request
from wattlake.query.engine import connect
from wattlake.query.readings import site_energy_from_readings
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


SITE_TOML = """
[sites.home]
timezone = "UTC"

[[sites.home.channels]]
device = "m1"
channel = 0
role = "grid"

[[sites.home.channels]]
device = "m1"
channel = 1
role = "solar"

[[sites.home.channels]]
device = "m2"
channel = 0
role = "{circuit_role}"
name = "heat"
"""


def _site_settings(lake: Lake, folder: Path, circuit_role: str) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    toml = folder / "wattlake.toml"
    toml.write_text(SITE_TOML.format(circuit_role=circuit_role))
    values = {"data_dir": lake.url, "lake.s3_endpoint_url": lake.s3_endpoint_url}
    return Settings.load(config_file=toml, overrides=values, environ={})


def _site_days(lake: Lake) -> dict[tuple[str, str], list[float]]:
    """Sum the site rows of energy_15min per role and UTC day: {(role, column): per day}."""
    rows = (
        connect(lake)
        .sql(
            "SELECT role, CAST(start AS DATE) AS day, sum(import_wh), sum(export_wh) "
            "FROM energy_15min WHERE site = 'home' GROUP BY ALL ORDER BY role, day"
        )
        .fetchall()
    )
    out: dict[tuple[str, str], list[float]] = {}
    for role, _, imp, exp in rows:
        out.setdefault((role, "import"), []).append(imp)
        out.setdefault((role, "export"), []).append(exp)
    return out


def _assert_site_matches_raw(lake: Lake, settings: Settings, days: int) -> None:
    last = str(np.datetime64(DAY0 + days, "D"))
    request = site_request(settings, "home", "2026-01-01", last, "day")
    assert request.site is not None
    edges = bucket_edges_ms(request.start_ms, request.end_ms, "day", request.tz)
    raw = site_energy_from_readings(settings, request.site, edges)
    got = _site_days(lake)
    b = raw.balance
    expected = {
        ("grid", "import"): b.grid_import_wh,
        ("grid", "export"): b.grid_export_wh,
        ("solar", "import"): b.solar_wh,
        ("consumption", "import"): b.consumption_wh,
        ("untracked", "import"): b.untracked_wh,
        **{(f"circuit:{c}", "import"): wh for c, wh in b.circuits_wh.items()},
    }
    assert {k[0] for k in got} == {"grid", "solar", "battery", "consumption", "untracked"} | {
        f"circuit:{c}" for c in b.circuits_wh
    }
    for key, want in expected.items():
        # rollup days beyond the data hold zeros; compare the days of the report
        np.testing.assert_allclose(got[key][1 : 1 + days], want, rtol=1e-9, atol=1e-9)


def test_site_rollups_equal_the_site_energy_of_raw_readings(lake: Lake, tmp_path: Path) -> None:
    tables.append(lake, READINGS_TABLE, _readings(T0, 30))  # m1: grid (counter) and solar
    heat = _readings(T0 + 2 * 3_600_000, 40, device="m2")
    ts = heat["ts"].cast(pa.int64()).to_numpy()
    gap = (ts >= T0 + 10 * 3_600_000) & (ts < T0 + 13 * 3_600_000)  # a 3-hour gap
    tables.append(lake, READINGS_TABLE, heat.filter(pa.array(~gap)))
    settings = _site_settings(lake, tmp_path / "config", "circuit")
    sites = parse_sites(settings.tables["sites"])
    first = run_rollup(lake, sites=sites)
    assert first.days == tuple(range(DAY0 - 1, DAY0 + 3))
    _assert_site_matches_raw(lake, settings, days=2)
    energy = tables.open_table(lake, ENERGY_15MIN_TABLE)
    hashes = json.loads(tables.last_property(energy, SITES_PROPERTY) or "{}")
    assert hashes == {"home": site_hash(sites["home"])}
    # the device rows are what they are without sites
    device_rows = (
        connect(lake)
        .sql("SELECT * FROM energy_15min WHERE site = '' ORDER BY device_id, channel, start")
        .to_arrow_table()
    )
    alone = compute_days(ArrowReadings(_all_readings(lake)), list(first.days)).energy_15min
    _assert_tables_equal(device_rows, alone)
    assert run_rollup(lake, sites=sites).days == ()  # nothing changed: nothing to do

    # The circuit is ignored from now on: only the site is recomputed, over every day.
    minutes = len(tables.open_table(lake, POWER_1MIN_TABLE).snapshots())
    changed = _site_settings(lake, tmp_path / "config", "ignore")
    again = rollup.run(changed)  # the job as `jobs run rollup` runs it: sites from the file
    assert len(again) == 1 and again[0]["days"] == len(first.days)
    assert len(tables.open_table(lake, POWER_1MIN_TABLE).snapshots()) == minutes
    _assert_site_matches_raw(lake, changed, days=2)
    assert not any(role.startswith("circuit:") for role, _ in _site_days(lake))
    after = (
        connect(lake)
        .sql("SELECT * FROM energy_15min WHERE site = '' ORDER BY device_id, channel, start")
        .to_arrow_table()
    )
    assert after.equals(device_rows)  # device rows untouched

    # A site removed from the configuration loses its rows.
    run_rollup(lake, sites={})
    assert _site_days(lake) == {}


def test_of_two_copies_of_a_reading_the_rollups_count_the_one_the_views_keep(lake: Lake) -> None:
    """A device resends a reading with another value: the earliest received copy counts, in the
    rollups as in the readings view and the raw path, whatever the order of the files (m1's
    later copy is in the first file, m2's in the second)."""

    def reading(device: str, s: int, received_s: int, power_w: float) -> dict[str, object]:
        return {"ts": T0 + s * 1000, "received_at": T0 + received_s * 1000, "device_id": device,
                "channel": 0, "power_w": power_w, "source": "generic"}  # fmt: skip

    around = [reading(d, s, s, 100.0) for d in ("m1", "m2") for s in (0, 30, 90, 120)]
    first = [reading("m1", 60, 90, 9_000.0), reading("m2", 60, 61, 100.0)]
    second = [reading("m1", 60, 61, 100.0), reading("m2", 60, 90, 9_000.0)]
    tables.append(lake, READINGS_TABLE, readings_to_table([*around, *first]))
    tables.append(lake, READINGS_TABLE, readings_to_table(second))
    run_rollup(lake)
    con = connect(lake)
    assert con.sql("SELECT DISTINCT power_w FROM readings").fetchall() == [(100.0,)]
    for name in (POWER_1MIN_TABLE, POWER_1H_TABLE):
        found = con.sql(f"SELECT device_id, max(max_power_w) FROM {name} GROUP BY 1 ORDER BY 1")
        assert found.fetchall() == [("m1", 100.0), ("m2", 100.0)]
    # Energy from the rollups equals energy from the readings (100 W for 2 minutes).
    found = con.sql(f"SELECT sum(import_wh) FROM {ENERGY_15MIN_TABLE} GROUP BY device_id")
    for (wh,) in found.fetchall():
        assert wh == pytest.approx(100.0 * 120 / 3600, rel=1e-12)

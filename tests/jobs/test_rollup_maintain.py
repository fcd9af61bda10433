"""Rollups stay usable after ``maintain`` expires the readings snapshot the newest rollup run
recorded: ``energy`` keeps answering from them, and the next run recomputes only the days
whose readings changed (issue 27)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from wattlake.config import Settings
from wattlake.jobs.maintain import maintain
from wattlake.jobs.rollup import run_rollup
from wattlake.lake import tables
from wattlake.lake.catalog import open_catalog
from wattlake.lake.freshness import DAY_MS
from wattlake.lake.storage import Lake
from wattlake.query.energy import READINGS, ROLLUPS, EnergyRequest, energy_for
from wattlake.schema import READINGS_TABLE, readings_to_table

DAY0 = 20_454  # 2026-01-01 as days since the epoch
T0 = DAY0 * DAY_MS


def _day(day: int, device: str = "m1") -> object:
    rows = [
        {"ts": T0 + day * DAY_MS + i * 60_000, "received_at": T0 + day * DAY_MS + i * 60_000,
         "device_id": device, "channel": 0, "power_w": 100.0 + (i % 7), "source": "generic"}
        for i in range(0, 180)
    ]  # fmt: skip
    return readings_to_table(rows)


def _settings(lake: Lake, folder: Path) -> Settings:
    toml = folder / "wattlake.toml"
    toml.write_text("")
    values = {"data_dir": lake.url, "lake.s3_endpoint_url": lake.s3_endpoint_url}
    return Settings.load(config_file=toml, overrides=values, environ={})


def _energy(settings: Settings, method: str = "auto") -> tuple[list[float], str]:
    start, end = T0, T0 + 3 * DAY_MS
    request = EnergyRequest(start, end, ZoneInfo("UTC"), "day", device_id="m1", method=method)
    answer = energy_for(settings, request)
    assert len(answer.edges) == 4
    return [float(x) for x in np.sum([r.import_wh for r in answer.series], axis=0)], answer.source


def test_rollups_answer_after_maintain_expires_the_snapshot_they_recorded(
    lake: Lake, tmp_path: Path
) -> None:
    settings = _settings(lake, tmp_path)
    for day in range(3):
        tables.append(lake, READINGS_TABLE, _day(day))
    assert len(run_rollup(lake).days) == 5
    wanted, source = _energy(settings)
    assert source == ROLLUPS
    raw, source = _energy(settings, method="trapezoid")
    assert source == READINGS
    np.testing.assert_allclose(wanted, raw, rtol=1e-12)

    # Readings of a later day arrive; maintain expires every snapshot but the current one,
    # the snapshot the rollups recorded among them, and merges the manifests (a new snapshot).
    tables.append(lake, READINGS_TABLE, _day(6))
    rows = {r["table"]: r for r in maintain(lake, history_s=-1.0)}
    assert rows[READINGS_TABLE]["snapshots_expired"] >= 1
    assert _energy(settings) == (wanted, ROLLUPS)

    # The next run recomputes day 6 and its neighbours only, then nothing.
    assert run_rollup(lake).days == (DAY0 + 5, DAY0 + 6, DAY0 + 7)
    assert run_rollup(lake).days == ()
    # Two more maintain runs (the second expires the rollup's own snapshot, now not current
    # after the manifest merge) change nothing either.
    maintain(lake, history_s=-1.0)
    maintain(lake, history_s=-1.0)
    assert _energy(settings) == (wanted, ROLLUPS)
    assert run_rollup(lake).days == ()

    # A late reading for day 1 recomputes days 0..2 only.
    tables.append(lake, READINGS_TABLE, _day(1, device="late"))
    assert run_rollup(lake).days == (DAY0, DAY0 + 1, DAY0 + 2)
    assert _energy(settings) == (wanted, ROLLUPS)


def test_rollups_of_a_readings_table_made_anew_are_not_taken_for_fresh(
    lake: Lake, tmp_path: Path
) -> None:
    """Sequence numbers start again in a new readings table: the rollups of the old one do not
    answer for it, and the next run recomputes every day it holds."""
    settings = _settings(lake, tmp_path)
    for day in range(3):
        tables.append(lake, READINGS_TABLE, _day(day))
    run_rollup(lake)
    open_catalog(lake).drop_table((lake.catalog.namespace, READINGS_TABLE))
    tables.append(lake, READINGS_TABLE, _day(0))  # sequence number 1, below the one recorded
    assert _energy(settings)[1] != ROLLUPS
    assert run_rollup(lake).days == (DAY0 - 1, DAY0, DAY0 + 1)

"""A lake with a few days of generated history (bench/fleet.py, loaded with `wattlake import`)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bench.fleet import FleetSpec, make_meters, write_files
from wattlake.config import Settings
from wattlake.devices.sim.simulator import sites_toml
from wattlake.gateway.tokens import TokenStore

HISTORY_DAYS = 3


@dataclass(frozen=True)
class HistoryLake:
    """A lake folder with history up to today's start, and one token per scope."""

    data_dir: Path
    first_day: date
    tokens: dict[str, str]
    # Site name -> kind of home ("pv" or "circuit"), as in its wattlake.toml.
    sites: dict[str, str]

    def settings(self, **overrides: object) -> Settings:
        values = {"data_dir": str(self.data_dir), "cost.tariff": "pl-g11", **overrides}
        return Settings.load(overrides=values, environ={})


def cli(data_dir: Path, *args: str) -> str:
    """Run the wattlake CLI on ``data_dir`` and return its standard output."""
    done = subprocess.run(
        [sys.executable, "-m", "wattlake", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def fleet_sites(spec: FleetSpec, timezone: str = "Europe/Warsaw") -> tuple[str, dict[str, str]]:
    """Return ``[sites.*]`` TOML for a generated fleet (one home per meter: channel 0 the grid,
    channel 1 the PV inverter or the kitchen circuit behind the grid, as bench/fleet.py wires
    them) and each site's kind."""
    tables: dict[str, object] = {}
    kinds: dict[str, str] = {}
    for meter in make_meters(spec):
        grid = {"device": meter.device_id, "channel": 0, "role": "grid"}
        if meter.house.pv_kwp > 0:
            other = {"device": meter.device_id, "channel": 1, "role": "solar"}
        else:
            other = {
                "device": meter.device_id,
                "channel": 1,
                "role": "circuit",
                "name": "kitchen",
                "parent": f"{meter.device_id}:0",
            }
        name = f"home-{meter.index}"
        tables[name] = {"timezone": timezone, "tariff": "pl-g11", "channels": [grid, other]}
        kinds[name] = "pv" if meter.house.pv_kwp > 0 else "circuit"
    return sites_toml(tables), kinds


@pytest.fixture(scope="session")
def history_lake(tmp_path_factory: pytest.TempPathFactory) -> HistoryLake:
    """Generate HISTORY_DAYS days of two two-channel meters ending at today's UTC midnight and
    import them, as a user would."""
    root = tmp_path_factory.mktemp("history")
    today = datetime.now(UTC).date()
    # Seed 2: home-0 has PV (a solar site), home-1 a kitchen circuit behind the grid.
    spec = FleetSpec(
        devices=2, days=HISTORY_DAYS, start=today - timedelta(days=HISTORY_DAYS), seed=2
    )
    lake = root / "lake"
    for path in write_files(spec, root / "files"):
        cli(lake, "import", str(path))
    # The homes as sites (a site's devices must be in the lake first).
    text, kinds = fleet_sites(spec)
    with (lake / "wattlake.toml").open("a", encoding="utf-8") as f:
        f.write("\n" + text)
    store = TokenStore(lake / "tokens.json")
    tokens = {scope: store.create(scope)[0] for scope in ("read", "ingest", "admin")}
    return HistoryLake(lake, spec.start, tokens, kinds)

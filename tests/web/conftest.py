"""A lake with a few days of generated history (bench/fleet.py, loaded with `wattlake import`)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bench.fleet import FleetSpec, write_files
from wattlake.config import Settings
from wattlake.gateway.tokens import TokenStore

HISTORY_DAYS = 3


@dataclass(frozen=True)
class HistoryLake:
    """A lake folder with history up to today's start, and one token per scope."""

    data_dir: Path
    first_day: date
    tokens: dict[str, str]

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


@pytest.fixture(scope="session")
def history_lake(tmp_path_factory: pytest.TempPathFactory) -> HistoryLake:
    """Generate HISTORY_DAYS days of two two-channel meters ending at today's UTC midnight and
    import them, as a user would."""
    root = tmp_path_factory.mktemp("history")
    today = datetime.now(UTC).date()
    spec = FleetSpec(devices=2, days=HISTORY_DAYS, start=today - timedelta(days=HISTORY_DAYS))
    lake = root / "lake"
    for path in write_files(spec, root / "files"):
        cli(lake, "import", str(path))
    store = TokenStore(lake / "tokens.json")
    tokens = {scope: store.create(scope)[0] for scope in ("read", "ingest", "admin")}
    return HistoryLake(lake, spec.start, tokens)

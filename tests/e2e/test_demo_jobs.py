"""The demo runs lake jobs on a schedule (rollup: the dashboard reads rollups), stopped cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from wattlake.config import Settings
from wattlake.stack import DEMO_JOB_PERIODS_S, Stack, write_demo_sites


def test_the_demo_rolls_up_on_its_schedule_and_stops_its_jobs(tmp_path: Path) -> None:
    assert "rollup" in DEMO_JOB_PERIODS_S
    data_dir = tmp_path / "lake"
    overrides = {
        "data_dir": str(data_dir),
        "demo.devices": 2,
        "demo.interval_s": 0.2,
        "demo.history_days": 0.1,
    }
    assert write_demo_sites(Settings.load(overrides=overrides, environ={})) is not None
    settings = Settings.load(overrides=overrides, environ={})  # with the homes as sites
    stack = Stack(settings, simulate=True, web=False, broker_port=0, job_periods_s={"rollup": 1.0})
    stack.start()
    try:
        assert stack.jobs is not None and stack.worker is not None
        deadline = time.monotonic() + 120
        while stack.worker.figures().files_written == 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # on a loaded machine the first rollups may come before any data
        first = stack.jobs.runs["rollup"]
        while stack.jobs.runs["rollup"] < first + 2 and time.monotonic() < deadline:
            assert not stack.failed
            time.sleep(0.2)
        assert stack.jobs.runs["rollup"] >= first + 2, stack.jobs.failures
    finally:
        report = stack.stop()
    assert not stack.jobs.alive
    assert report.job_runs["rollup"] >= 2
    assert stack.jobs.failures == {"rollup": 0}
    done = subprocess.run(
        [sys.executable, "-m", "wattlake", "query", "--format", "json", "--data-dir", str(data_dir),
         "SELECT count(*) AS n, count(DISTINCT site) AS sites FROM energy_15min"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    row = json.loads(done.stdout)
    assert row["n"] > 0 and row["sites"] >= 2  # device rows ('') and the homes' site balances

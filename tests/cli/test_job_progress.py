"""``jobs run compact|rollup|migrate`` show a progress bar (days or files of the total, rate, ETA)
on a terminal, and stay quiet in a pipe and with ``--format json``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli.test_progress import WATTLAKE, run_on_a_terminal
from wattlake.config import Settings
from wattlake.gateway.files import FileFormat, FileRows
from wattlake.lake.storage import Lake
from wattlake.schema import readings_to_table
from wattlake.stream.file_import import import_file

T0_S = 1_767_225_600  # 2026-01-01T00:00:00Z
DAYS = 3
ROLLUP_DAYS = 10  # more than the 7 days a rollup reads at once: two reports give a rate


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")}


def import_twice(tmp_path: Path, days: int = DAYS) -> str:
    """A lake whose readings hold two data files on each of ``days`` days."""
    lake = str(tmp_path / "lake")
    for part in range(2):
        path = tmp_path / f"part{part}.csv"
        lines = "".join(
            f"{T0_S + day * 86_400 + part * 30 + i * 60},meter,0,{100 + i % 50}\n"
            for day in range(days)
            for i in range(200)
        )
        path.write_text("ts,device_id,channel,power_w\n" + lines)
        # What `wattlake import` calls, in this process (the jobs' output is under test).
        settings = Settings.load(overrides={"data_dir": lake}, environ=env())
        assert import_file(settings, FileRows(path, FileFormat.csv)).stored == days * 200
    return lake


def old_layout(tmp_path: Path) -> str:
    """A lake in the old layout: one raw readings file on each of three days."""
    lake = Lake.open(str(tmp_path / "old"))
    for day in range(DAYS):
        first_ms = (T0_S + day * 86_400) * 1000
        rows = [
            {"ts": first_ms + i * 10_000, "received_at": first_ms + i * 10_000 + 7,
             "device_id": "m1", "channel": 0, "source": "shelly-gen2", "power_w": 100.0 + i}
            for i in range(20)
        ]  # fmt: skip
        relative = f"raw/readings/date=2026-01-0{day + 1}/hour=00/part-0.parquet"
        lake.fs.create_dir(lake.path(relative).rsplit("/", 1)[0], recursive=True)
        pq.write_table(readings_to_table(rows), lake.path(relative), filesystem=lake.fs)
    return str(tmp_path / "old")


@pytest.mark.parametrize("job", ["compact", "rollup", "migrate"])
def test_a_job_on_a_terminal_shows_its_progress(tmp_path: Path, job: str) -> None:
    days = ROLLUP_DAYS if job == "rollup" else DAYS
    lake = old_layout(tmp_path) if job == "migrate" else import_twice(tmp_path, days)
    code, output = run_on_a_terminal(
        [WATTLAKE, "jobs", "run", job, "--format", "csv", "--data-dir", lake], tmp_path
    )
    assert code == 0, output
    unit = "files" if job == "migrate" else "days"
    # compact and migrate: 3 of 3; rollup: the days widened by the reach on each side.
    total = days + 2 if job == "rollup" else days
    assert f"{total}/{total}" in output, output
    assert f"{unit}/s" in output, output
    assert "ETA" in output, output


@pytest.mark.parametrize("job", ["compact", "rollup", "migrate"])
def test_a_job_with_json_on_a_terminal_prints_only_its_rows(tmp_path: Path, job: str) -> None:
    lake = old_layout(tmp_path) if job == "migrate" else import_twice(tmp_path)
    code, output = run_on_a_terminal(
        [WATTLAKE, "jobs", "run", job, "--format", "json", "--data-dir", lake], tmp_path
    )
    assert code == 0, output
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert rows, output
    assert "ETA" not in output and "━" not in output, output  # no bar (log lines may be there)


@pytest.mark.parametrize("job", ["compact", "rollup"])
def test_a_job_in_a_pipe_prints_no_bar(tmp_path: Path, job: str) -> None:
    lake = import_twice(tmp_path)
    done = subprocess.run(
        [WATTLAKE, "jobs", "run", job, "--format", "csv", "--data-dir", lake],
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.splitlines()) >= 2  # the header and what the job did


def test_the_job_functions_report_from_zero_to_the_total(tmp_path: Path) -> None:
    from wattlake.config import Settings
    from wattlake.jobs import compact, migrate, rollup

    calls: dict[str, list[tuple[int, int | None]]] = {}
    lake = import_twice(tmp_path)
    settings = Settings.load(overrides={"data_dir": lake})

    def recorder(name: str) -> Callable[[int, int | None], None]:
        return lambda done, total: calls.setdefault(name, []).append((done, total))

    compact.run(settings, on_progress=recorder("compact"))
    rollup.run(settings, on_progress=recorder("rollup"))
    old = Settings.load(overrides={"data_dir": old_layout(tmp_path)})
    migrate.run(old, on_progress=recorder("migrate"))
    assert calls["compact"] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert calls["rollup"][0] == (0, None) and calls["rollup"][-1] == (5, 5)
    assert calls["migrate"][0] == (0, 3) and calls["migrate"][-1] == (3, 3)

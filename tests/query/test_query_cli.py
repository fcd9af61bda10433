"""``wattlake query``: SQL over the lake's views, in every output format."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wattlake.jobs.maintain import maintain
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def reading(ts_ms: int, power_w: float, received_ms: int) -> dict[str, object]:
    return {
        "ts": ts_ms,
        "received_at": received_ms,
        "device_id": "meter-1",
        "channel": 0,
        "power_w": power_w,
        "source": "generic",
    }


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    """A lake with one reading delivered twice (in two files) and one delivered once."""
    lake = Lake.open(str(tmp_path / "lake"))
    first = readings_to_table([reading(T0, 100.0, T0 + 5), reading(T0 + 1000, 200.0, T0 + 1005)])
    again = readings_to_table([reading(T0 + 1000, 200.0, T0 + 9000)])
    tables.append(lake, READINGS_TABLE, first)  # two commits: two data files
    tables.append(lake, READINGS_TABLE, again)
    return tmp_path / "lake"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattlake", *args], capture_output=True, text=True, timeout=60
    )


def test_readings_holds_each_reading_once(lake_dir: Path) -> None:
    sql = "SELECT count(*) AS n, sum(power_w) AS p FROM readings"
    out = run("query", sql, "--format", "json", "--data-dir", str(lake_dir))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"n": 2, "p": 300.0}
    raw = run("query", "SELECT count(*) AS n FROM raw_readings", "--format", "json",
              "--data-dir", str(lake_dir))  # fmt: skip
    assert json.loads(raw.stdout) == {"n": 3}


def test_the_earliest_received_copy_wins(lake_dir: Path) -> None:
    sql = "SELECT epoch_ms(received_at) AS r FROM readings WHERE ts = epoch_ms(1767225601000)"
    out = run("query", sql, "--format", "json", "--data-dir", str(lake_dir))
    assert json.loads(out.stdout) == {"r": T0 + 1005}


def test_csv_and_table_output(lake_dir: Path) -> None:
    sql = "SELECT device_id, power_w FROM readings ORDER BY ts"
    out = run("query", sql, "--format", "csv", "--data-dir", str(lake_dir))
    assert list(csv.reader(io.StringIO(out.stdout))) == [
        ["device_id", "power_w"],
        ["meter-1", "100.0"],
        ["meter-1", "200.0"],
    ]
    table = run("query", sql, "--data-dir", str(lake_dir))
    assert "meter-1" in table.stdout and "power_w" in table.stdout


def test_timestamps_come_out_as_iso_8601_in_json(lake_dir: Path) -> None:
    out = run("query", "SELECT min(ts) AS t FROM readings", "--format", "json",
              "--data-dir", str(lake_dir))  # fmt: skip
    assert json.loads(out.stdout)["t"].startswith("2026-01-01T00:00:00")


def test_bad_sql_is_one_sentence_and_exit_code_2(lake_dir: Path) -> None:
    out = run("query", "SELEC 1", "--data-dir", str(lake_dir))
    assert out.returncode == 2
    assert out.stderr.startswith("Error: The query failed")
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_an_empty_lake_has_empty_views(tmp_path: Path) -> None:
    tables.ensure_tables(Lake.open(str(tmp_path / "nothing-here")))  # a lake, without readings
    out = run("query", "SELECT count(*) AS n FROM readings", "--format", "json",
              "--data-dir", str(tmp_path / "nothing-here"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"n": 0}


def test_bad_option_value_exits_2_without_traceback(tmp_path: Path) -> None:
    out = run("demo", "--devices", "many")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "Invalid value for '--devices'" in out.stderr


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def test_as_of_shows_the_lake_as_it_was(lake_dir: Path) -> None:
    lake = Lake.open(str(lake_dir))
    first, second = tables.open_table(lake, READINGS_TABLE).snapshots()
    sql = "SELECT count(*) AS n FROM raw_readings"

    def count(*more: str) -> object:
        out = run("query", sql, "--format", "json", "--data-dir", str(lake_dir), *more)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["n"]

    assert count() == 3
    assert count("--as-of", iso(first.timestamp_ms)) == 2  # after the first commit only
    assert count("--as-of", iso(second.timestamp_ms)) == 3
    assert count("--as-of", iso(first.timestamp_ms - 1)) == 0  # before the table had data
    # naive: local time in energy.tz (UTC here)
    assert count("--as-of", iso(first.timestamp_ms)[:-6].replace("+00:00", "")) == 2
    bad = run("query", sql, "--as-of", "yesterday-ish", "--data-dir", str(lake_dir))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_maintain_keeps_the_history_it_is_told_to(lake_dir: Path) -> None:
    lake = Lake.open(str(lake_dir))
    first = tables.open_table(lake, READINGS_TABLE).snapshots()[0]
    tables.append(lake, READINGS_TABLE, readings_to_table([reading(T0 + 2000, 5.0, T0 + 2001)]))
    maintain(lake, history_s=3600.0)  # a day of history: every snapshot stays
    assert len(tables.open_table(lake, READINGS_TABLE).snapshots()) >= 3
    sql = "SELECT count(*) AS n FROM raw_readings"
    kept = run("query", sql, "--format", "json", "--as-of", iso(first.timestamp_ms),
               "--data-dir", str(lake_dir))  # fmt: skip
    assert json.loads(kept.stdout) == {"n": 2}
    maintain(lake, history_s=0.0)  # no history: only the current snapshot stays
    gone = run("query", sql, "--as-of", iso(first.timestamp_ms), "--data-dir", str(lake_dir))
    assert gone.returncode == 2
    assert "keeps its history back to" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1 and "Traceback" not in gone.stderr
    now = run("query", sql, "--format", "json", "--data-dir", str(lake_dir))
    assert json.loads(now.stdout) == {"n": 4}  # the data itself is untouched

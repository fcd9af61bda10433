"""Short commands define only the views a statement names and keep each table's scan plan by
metadata file beside the catalog: a commit is seen at once, a damaged cache file is ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wattlake.config import Settings
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect, tables_read_by
from wattlake.query.sql import run_sql
from wattlake.schema import (
    DEAD_LETTERS_TABLE,
    ENERGY_15MIN_TABLE,
    POWER_1H_TABLE,
    READINGS_TABLE,
    TABLES,
    readings_to_table,
)
from wattlake.state import PLAN_CACHE_DIR

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_MS = 86_400_000


def reading(ts_ms: int, power_w: float, device_id: str = "meter-1") -> dict[str, object]:
    return {
        "ts": ts_ms,
        "received_at": ts_ms + 5,
        "device_id": device_id,
        "channel": 0,
        "power_w": power_w,
        "source": "generic",
    }


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    """A lake with readings on two days (two commits)."""
    lake = Lake.open(str(tmp_path / "lake"))
    tables.append(lake, READINGS_TABLE, readings_to_table([reading(T0, 100.0)]))
    tables.append(
        lake,
        READINGS_TABLE,
        readings_to_table([reading(T0 + DAY_MS, 200.0), reading(T0 + DAY_MS, 50.0, "meter-2")]),
    )
    return tmp_path / "lake"


def query(lake_dir: Path, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattlake", "query", sql, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WATTLAKE_DATA_DIR": str(lake_dir)},
    )


def answer(lake_dir: Path, sql: str) -> list[dict[str, object]]:
    done = query(lake_dir, sql)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tables_read_by_names_the_tables_of_the_views_a_statement_names() -> None:
    assert tables_read_by("select 1") == frozenset()
    assert tables_read_by("SELECT count(*) FROM Readings") == {READINGS_TABLE}
    assert tables_read_by(
        "with r as (select * from raw_readings) select * from r join energy_15min using (ts)"
    ) == {READINGS_TABLE, ENERGY_15MIN_TABLE}
    assert tables_read_by("select * from dead_letters, power_1h") == {
        DEAD_LETTERS_TABLE,
        POWER_1H_TABLE,
    }
    assert tables_read_by("select * from raw_readings_stored_source") == {READINGS_TABLE}
    # a statement that lists the catalog sees every view
    for sql in ("show tables", "select * from information_schema.tables", "from duckdb_views()"):
        assert tables_read_by(sql) == frozenset(TABLES), sql


def test_views_on_demand_answer_as_all_views_do(lake_dir: Path) -> None:
    """A statement over several views gives the same rows with only its views defined."""
    sql = (
        "select r.device_id, count(*) as n, sum(r.power_w) as p, "
        "(select count(*) from dead_letters) as dead, (select count(*) from power_1h) as hours "
        "from readings r join raw_readings w using (device_id, channel, ts) "
        "group by r.device_id order by r.device_id"
    )
    everything = connect(Lake.open(str(lake_dir))).sql(sql).fetchall()
    settings = Settings.load(overrides={"data_dir": str(lake_dir)})
    assert run_sql(settings, sql).rows == everything
    assert everything == [("meter-1", 2, 300.0, 0, 0), ("meter-2", 1, 50.0, 0, 0)]
    # only the views named were defined
    only = connect(Lake.open(str(lake_dir)), only=tables_read_by("select * from readings"))
    names = {row[0] for row in only.sql("select view_name from duckdb_views()").fetchall()}
    assert {"readings", "raw_readings"} <= names
    assert not names & {"dead_letters", "power_1h", "energy_15min", "power_1min"}


def test_a_commit_after_a_command_is_seen_by_the_next(lake_dir: Path) -> None:
    sql = "select count(*) as n, sum(power_w) as p from readings"
    assert answer(lake_dir, sql) == [{"n": 3, "p": 350.0}]
    cached = list((lake_dir / PLAN_CACHE_DIR).glob(f"{READINGS_TABLE}-*.json"))
    assert len(cached) == 1  # the plan is kept ...
    tables.append(
        Lake.open(str(lake_dir)),
        READINGS_TABLE,
        readings_to_table([reading(T0 + 2 * DAY_MS, 1000.0)]),
    )
    assert answer(lake_dir, sql) == [{"n": 4, "p": 1350.0}]  # ... and not used for a new state
    assert len(list((lake_dir / PLAN_CACHE_DIR).glob(f"{READINGS_TABLE}-*.json"))) == 2


def test_a_damaged_plan_cache_file_is_ignored_and_rewritten(lake_dir: Path) -> None:
    sql = "select count(*) as n from readings"
    assert answer(lake_dir, sql) == [{"n": 3}]
    (cached,) = (lake_dir / PLAN_CACHE_DIR).glob(f"{READINGS_TABLE}-*.json")
    for damage in (b"{not json", b'{"version": 1}', b""):
        cached.write_bytes(damage)
        assert answer(lake_dir, sql) == [{"n": 3}]
        assert json.loads(cached.read_bytes())["value"]  # planned again and kept


def test_a_plan_cache_naming_other_files_is_not_used_for_another_table_state(
    lake_dir: Path,
) -> None:
    """The cache file says which metadata file it is for: one copied over from another state
    (or a hash collision) is planned again."""
    sql = "select count(*) as n from readings"
    assert answer(lake_dir, sql) == [{"n": 3}]
    (cached,) = (lake_dir / PLAN_CACHE_DIR).glob(f"{READINGS_TABLE}-*.json")
    kept = json.loads(cached.read_bytes())
    kept["metadata"] = "file:///elsewhere/00009.metadata.json"
    kept["value"] = kept["value"][:1]
    cached.write_text(json.dumps(kept))
    assert answer(lake_dir, sql) == [{"n": 3}]


def energy(lake_dir: Path) -> tuple[str, list[dict[str, object]]]:
    """Return the source ``wattlake energy`` names on stderr and its rows (2026-01-01..03)."""
    done = subprocess.run(
        [sys.executable, "-m", "wattlake", "energy", "--start", "2026-01-01", "--end",
         "2026-01-03", "--every", "day", "--tz", "UTC", "--format", "json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "WATTLAKE_DATA_DIR": str(lake_dir)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr.strip(), [json.loads(line) for line in done.stdout.splitlines()]


def test_energy_sees_readings_committed_after_the_rollups_it_answered_from(
    lake_dir: Path,
) -> None:
    """The rollups' freshness is kept by both tables' metadata files: a commit of readings on
    a day of the range makes the next ``energy`` leave the rollups that no longer cover it."""
    rollup = subprocess.run(
        [sys.executable, "-m", "wattlake", "jobs", "run", "rollup"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "WATTLAKE_DATA_DIR": str(lake_dir)},
    )  # fmt: skip
    assert rollup.returncode == 0, rollup.stderr
    source, before = energy(lake_dir)
    assert "from rollups" in source
    assert energy(lake_dir) == (source, before)  # answered again from what was kept
    assert list((lake_dir / PLAN_CACHE_DIR).glob("rollup-state-*.json"))
    more = [reading(T0 + DAY_MS + 600_000 * k, 5000.0, "meter-3") for k in range(7)]
    tables.append(Lake.open(str(lake_dir)), READINGS_TABLE, readings_to_table(more))
    source, after = energy(lake_dir)
    assert "from rollups" not in source
    assert "meter-3" not in {row["device_id"] for row in before}
    assert "meter-3" in {row["device_id"] for row in after}

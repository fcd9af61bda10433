"""Readings table -> energy rows and cost; the energy, cost and tariffs commands end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from wattlake.energy.buckets import bucket_edges_ms, parse_time_ms, zone
from wattlake.energy.tariffs import load_tariff
from wattlake.lake.storage import Lake
from wattlake.query.reports import energy_rows, table_cost
from wattlake.schema import readings_to_table

# One pytest-xdist worker runs this module: its module-scoped fixture (the generated lake) is
# built once, not on every worker (./run test uses --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_query_energy")

WAW = zone("Europe/Warsaw")
M = 60_000
DAY0 = parse_time_ms("2026-03-29", WAW)  # the 23-hour day
DAY1 = parse_time_ms("2026-03-30", WAW)


def readings() -> list[dict[str, object]]:
    """Channel 0: 1 kW with a counter; channel 1: 500 W export; a duplicate; unsorted."""
    rows: list[dict[str, object]] = []
    for i in range(23 * 60, -1, -1):
        ts = DAY0 + i * M
        rows.append(
            {
                "ts": ts,
                "received_at": ts,
                "device_id": "em-1",
                "channel": 0,
                "power_w": 1000.0,
                "energy_wh": 5000 + i * 1000 / 60,
                "source": "generic",
            }
        )
        rows.append(
            {
                "ts": ts,
                "received_at": ts,
                "device_id": "em-1",
                "channel": 1,
                "power_w": -500.0,
                "source": "generic",
            }
        )
    rows.append(dict(rows[0]))  # an exact duplicate
    return rows


def test_rows_per_channel_never_summed_and_use_counters() -> None:
    table = readings_to_table(readings())
    edges = bucket_edges_ms(DAY0, DAY1, "day", WAW)
    rows, results = energy_rows(table, edges, WAW)
    first, second = rows
    # channel 0: 23 h at 1 kW import from its counter; channel 1: 23 h at 500 W export (power)
    assert (first["channel"], first["import_wh"], first["export_wh"]) == (0, 23000.0, 0.0)
    assert (second["channel"], second["import_wh"], second["export_wh"]) == (1, 0.0, 11500.0)
    assert first["start"] == "2026-03-29T00:00:00+01:00"
    assert first["end"] == "2026-03-30T00:00:00+02:00"
    assert (first["method"], second["method"]) == ("counter", "trapezoid")
    assert first["coverage"] == second["coverage"] == 1.0
    assert first["interpolated_wh"] == 0.0
    assert first["counter_minus_power_wh"] == pytest.approx(0.0)
    assert len(results) == 2


def test_one_channel_and_a_power_method() -> None:
    table = readings_to_table(readings())
    edges = bucket_edges_ms(DAY0, DAY1, "hour", WAW)
    rows, _ = energy_rows(table, edges, WAW, channel=1, method="left")
    assert len(rows) == 23
    assert {r["export_wh"] for r in rows} == {500.0}
    assert {r["method"] for r in rows} == {"left"}


def test_empty_table_gives_no_rows() -> None:
    edges = np.array([DAY0, DAY1], dtype=np.int64)
    rows, _ = energy_rows(readings_to_table([]), edges, WAW)
    assert rows == []


def test_table_cost_under_g12() -> None:
    table = readings_to_table(readings())
    cost = table_cost(table, load_tariff("pl-g12"), DAY0, DAY1, channel=0)
    # night 9 h, day 14 h at 1 kW (see the tariff tests): 9 * 0.66 + 14 * 1.12 = 21.62 PLN
    assert sum(z.import_cost for z in cost.zones) == pytest.approx(21.62)


def test_table_without_device_column_is_a_usage_error() -> None:
    from wattlake.errors import UsageError

    with pytest.raises(UsageError):
        energy_rows(pa.table({"ts": [1]}), np.array([0, 1]), WAW)


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wattlake.lake import tables
    from wattlake.schema import READINGS_TABLE

    root = tmp_path_factory.mktemp("lake") / "lake"
    lake = Lake.open(str(root))
    rows = readings()
    tables.append(lake, READINGS_TABLE, readings_to_table(rows[:-1]))  # each reading once
    return root


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattlake", *args], capture_output=True, text=True, timeout=60
    )


def test_energy_command_json(lake_dir: Path) -> None:
    out = run(
        "energy",
        "--data-dir",
        str(lake_dir),
        "--start",
        "2026-03-29",
        "--end",
        "2026-03-30",
        "--every",
        "day",
        "--tz",
        "Europe/Warsaw",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    first, second = [json.loads(line) for line in out.stdout.splitlines()]
    assert (first["import_wh"], second["export_wh"]) == (23000.0, 11500.0)


def test_cost_command_with_shift_and_compare(lake_dir: Path) -> None:
    common = [
        "--data-dir",
        str(lake_dir),
        "--start",
        "2026-03-29",
        "--end",
        "2026-03-30",
        "--tz",
        "Europe/Warsaw",
        "--channel",
        "0",
        "--format",
        "json",
    ]
    out = run("cost", "--tariff", "pl-g12", "--shift-share", "0.2", *common)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["zone"] for r in rows] == ["night", "day", "fixed", "total", "shift-0.2"]
    assert rows[0]["import_wh"] == 9000.0
    out = run("tariffs", "compare", "--tariffs", "pl-g11,pl-g12,pl-g13", *common)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3


def test_tariffs_list_and_show() -> None:
    out = run("tariffs", "list", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 6
    out = run("tariffs", "show", "pl-g12w", "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert "offpeak" in out.stdout


def test_bad_input_is_one_sentence_and_exit_2(lake_dir: Path) -> None:
    out = run(
        "cost",
        "--tariff",
        "nope",
        "--start",
        "2026-01-01",
        "--end",
        "2026-01-02",
        "--data-dir",
        str(lake_dir),
    )
    assert out.returncode == 2
    assert "No tariff named" in out.stderr and "Traceback" not in out.stderr
    out = run("energy", "--start", "soon", "--end", "2026-01-02", "--data-dir", str(lake_dir))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr

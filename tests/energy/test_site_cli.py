"""`energy --site`, `cost --site`, `cost --gaps` and `tariffs show` end to end on a lake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wattlake.energy.buckets import parse_time_ms, zone
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table

# One pytest-xdist worker runs this module: its module-scoped fixture (the lake of sites) is
# built once, not on every worker (./run test uses --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_site_cli")

WAW = zone("Europe/Warsaw")
M = 60_000
DAY = parse_time_ms("2026-06-01", WAW)

SITE = """
[sites.home]
timezone = "Europe/Warsaw"
tariff = "pl-g11"

[[sites.home.channels]]
device = "em"
channel = 0
role = "grid"

[[sites.home.channels]]
device = "em"
channel = 1
role = "circuit"
name = "kitchen"
parent = "em:0"
"""


def reading(channel: int, power_w: float, minute: int) -> dict[str, Any]:
    ts = DAY + minute * M
    return {
        "ts": ts,
        "received_at": ts,
        "device_id": "em",
        "channel": channel,
        "power_w": power_w,
        "source": "generic",
    }


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The simulator's wiring: grid 700 W on channel 0, the kitchen (300 W) behind it on 1; no
    # readings from 10:00 to 11:00.
    root = tmp_path_factory.mktemp("site") / "lake"
    lake = Lake.open(str(root))
    minutes = [m for m in range(24 * 60 + 1) if not 600 < m < 660]
    rows = [reading(0, 700.0, m) for m in minutes] + [reading(1, 300.0, m) for m in minutes]
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))
    (root / "wattlake.toml").write_text(SITE, encoding="utf-8")
    return root


def run(data_dir: Path, *args: str) -> tuple[list[dict[str, Any]], str]:
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", *args, "--data-dir", str(data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()], out.stderr


def test_energy_site_and_cost_site(data_dir: Path) -> None:
    (row,), _ = run(
        data_dir, "energy", "--site", "home", "--start", "2026-06-01", "--end", "2026-06-02",
        "--every", "day",
    )  # fmt: skip
    # 23 h measured (the hour without readings is skipped): grid 16.1 kWh, kitchen 6.9 kWh
    assert (row["grid_import_wh"], row["consumption_wh"]) == (16_100.0, 16_100.0)
    assert (row["circuit_kitchen_wh"], row["untracked_wh"]) == (6_900.0, 9_200.0)
    assert row["consumption_wh"] == row["circuit_kitchen_wh"] + row["untracked_wh"]
    assert row["coverage"] == round(23 / 24, 4)

    rows, err = run(
        data_dir, "cost", "--site", "home", "--start", "2026-06-01", "--end", "2026-06-02"
    )
    total = rows[-1]
    # only the grid channel is billed, under the site's tariff, dates in Warsaw time
    assert (total["tariff"], total["import_wh"], total["gaps"]) == ("pl-g11", 16_100.0, 1)
    assert "Warning: Only 95.8% of the period" not in err  # 95.8 % is above 95 %

    gaps, _ = run(
        data_dir, "cost", "--site", "home", "--gaps", "--start", "2026-06-01", "--end", "2026-06-02"
    )
    assert [(g["start"], g["end"], g["length_s"]) for g in gaps] == [
        ("2026-06-01T10:00:00+02:00", "2026-06-01T11:00:00+02:00", 3600.0)
    ]


def test_unknown_site_and_bad_role_are_one_sentence(data_dir: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", "energy", "--site", "cabin", "--start", "2026-06-01",
         "--end", "2026-06-02", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "No site named 'cabin'" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(SITE.replace('role = "circuit"', 'role = "fridge"'), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", "energy", "--site", "home", "--start", "2026-06-01",
         "--end", "2026-06-02", "--data-dir", str(data_dir), "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "role 'fridge', which does not exist" in out.stderr


def test_tariffs_show_says_what_the_bill_leaves_out() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", "tariffs", "show", "us-pge-e-tou-c", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[0])
    assert "baseline credit" in row["leaves_out"]
    assert "Base Services Charge" in row["models"]


def test_pv_site_compares_measured_solar_with_the_model(data_dir: Path) -> None:
    rows, _ = run(
        data_dir, "pv", "--site", "home", "--kwp", "4", "--lat", "52.2", "--lon", "21.0",
        "--start", "2026-06-01", "--end", "2026-06-02", "--tz", "Europe/Warsaw",
    )  # fmt: skip
    (row,) = rows
    # the home has no solar channel: nothing measured against a clear-sky June day of 4 kWp
    assert (row["day"], row["solar_wh"], row["performance_ratio"]) == ("2026-06-01", 0.0, 0.0)
    assert row["model_wh"] > 20_000
    assert (row["consumption_wh"], row["missing_hours"]) == (16_100.0, 1)


def test_a_bad_site_is_refused_even_without_site(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        SITE + SITE.replace("[sites.home]", "[sites.flat]").replace("sites.home.", "sites.flat.")
    )
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", "energy", "--start", "2026-06-01", "--end",
         "2026-06-02", "--data-dir", str(data_dir), "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "channel em:0 is already in site home" in out.stderr


def run_error(data_dir: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "wattlake", *args, "--data-dir", str(data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stdout == "" and "Traceback" not in out.stderr
    return out.stderr


DAY_ARGS = ("--start", "2026-06-01", "--end", "2026-06-02")


def test_cost_without_a_site_bills_each_channel_on_its_own(data_dir: Path) -> None:
    # 23 h measured: channel 0 (grid) 16.1 kWh, channel 1 (kitchen) 6.9 kWh; before, one total
    # of 23 kWh (the kitchen counted twice) with a warning.
    rows, _ = run(data_dir, "cost", "--tariff", "pl-g11", *DAY_ARGS)
    totals = [(r["device_id"], r["channel"], r["import_wh"]) for r in rows if r["zone"] == "total"]
    assert totals == [("em", 0, 16_100.0), ("em", 1, 6_900.0)]
    assert len(rows) == 6  # all-day, fixed, total for each channel
    rows, _ = run(data_dir, "cost", "--tariff", "pl-g11", "--channel", "1", *DAY_ARGS)
    assert [(r["channel"], r["zone"], r["import_wh"]) for r in rows] == [
        (1, "all-day", 6_900.0),
        (1, "fixed", 0.0),
        (1, "total", 6_900.0),
    ]
    err = run_error(data_dir, "cost", "--tariff", "pl-g11", "--compare", "pl-g12", *DAY_ARGS)
    assert "Device em has channels 0, 1" in err
    rows, _ = run(
        data_dir, "cost", "--tariff", "pl-g11", "--compare", "pl-g12", "--channel", "0", *DAY_ARGS
    )
    assert {r["import_wh"] for r in rows} == {16_100.0}


def test_pv_and_forecast_refuse_a_device_of_several_channels(data_dir: Path) -> None:
    model = ("--kwp", "4", "--lat", "52.2", "--lon", "21.0", "--tz", "Europe/Warsaw")
    err = run_error(data_dir, "pv", "--device", "em", *model, *DAY_ARGS)
    # one sentence naming the channels that exist (before: both channels summed, 23 kWh)
    assert "Device em has channels 0, 1 and no site says which" in err
    assert err.count(".") == 1 and len(err.strip().splitlines()) <= 2
    rows, _ = run(data_dir, "pv", "--device", "em", "--channel", "1", *model, *DAY_ARGS)
    day, total = rows
    assert (day["load_wh"], day["missing_hours"]) == (6_900.0, 1)
    assert total["load_wh"] == 6_900.0
    err = run_error(data_dir, "forecast", "--device", "em", "--until", "2026-06-02")
    assert "Device em has channels 0, 1" in err
    err = run_error(data_dir, "pv", "--site", "home", "--channel", "1", *model, *DAY_ARGS)
    assert "leave out --device and --channel" in err

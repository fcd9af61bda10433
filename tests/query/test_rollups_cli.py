"""``energy``, ``cost`` and ``pv`` print the same figures from rollups as from raw readings.

One lake (three Warsaw days around the spring DST change, counters with a reset and an outlier,
gaps, a power-only exporting channel, a site with grid, solar and a circuit), each command run
through the CLI before ``jobs run rollup`` (rollups unavailable: raw readings) and after it
(rollups): the JSON rows must agree to 1e-9, and stderr must say which source answered.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from wattlake.cli.app import app
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READING_SCHEMA, READINGS_TABLE

# One pytest-xdist worker runs this module: its module-scoped fixture (the outputs before and
# after the rollup job) is built once, not on every worker (./run test uses --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_rollups_cli")

_HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_rollup_readings", _HERE / "test_rollups.py")
assert _spec is not None and _spec.loader is not None
_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_helpers)

SITE_TOML = """
[sites.home]
timezone = "Europe/Warsaw"

[[sites.home.channels]]
device = "meter-a"
channel = 0
role = "grid"

[[sites.home.channels]]
device = "meter-c"
channel = 0
role = "solar"

[[sites.home.channels]]
device = "meter-b"
channel = 0
role = "circuit"
name = "heat"
"""

RANGE = ["--start", "2026-03-28", "--end", "2026-03-31", "--tz", "Europe/Warsaw"]
MONTHS = ["--start", "2026-03-01", "--end", "2026-05-01"]
METER_A0 = ["--device", "meter-a", "--channel", "0"]
PV_SYSTEM = ["--kwp", "5", "--lat", "52.2", "--lon", "21.0"]
COMMANDS: dict[str, list[str]] = {
    **{f"energy-{e}": ["energy", *RANGE, "--every", e] for e in ("15min", "hour", "day")},
    "energy-month": [
        "energy",
        "--start",
        "2026-03-01",
        "--end",
        "2026-05-01",
        "--every",
        "month",
        "--tz",
        "Europe/Warsaw",
    ],
    "energy-device-channel": ["energy", *RANGE, "--device", "meter-b", "--channel", "0"],
    "energy-site-hour": ["energy", "--site", "home", *RANGE, "--every", "hour"],
    "energy-site-day": ["energy", "--site", "home", *RANGE, "--every", "day"],
    "cost": ["cost", "--tariff", "pl-g12", *RANGE],
    "cost-channel": [
        "cost",
        "--tariff",
        "pl-g12",
        *RANGE,
        "--device",
        "meter-a",
        "--channel",
        "0",
    ],
    "cost-gaps": ["cost", "--tariff", "pl-g12", *RANGE, "--gaps"],
    "cost-site": ["cost", "--tariff", "pl-g12", "--site", "home", *RANGE],
    "cost-site-gaps": ["cost", "--tariff", "pl-g12", "--site", "home", *RANGE, "--gaps"],
    "pv-site": ["pv", "--site", "home", *RANGE, *PV_SYSTEM],
    "pv-device": ["pv", "--device", "meter-b", "--channel", "0", *RANGE, *PV_SYSTEM],
}


def _solar() -> pa.Table:
    """An inverter exporting more than the grid meter ever exports, power only."""
    ts = np.arange(1_774_400_000_000, 1_775_100_000_000, 10_000, dtype=np.int64)
    hours = (ts / 3_600_000.0) % 24
    power = np.round(-3000.0 * np.exp(-((hours - 12) ** 2) / 6), 1)
    nan = np.full(ts.size, np.nan)
    part = {"ts": ts, "device_id": np.full(ts.size, "meter-c", dtype=object),
            "channel": np.zeros(ts.size, dtype=np.int16), "power_w": power,
            "energy_wh": nan, "returned_energy_wh": nan}  # fmt: skip
    return _helpers._table([part])


def _lake_table() -> pa.Table:
    readings = _helpers._readings(date(2026, 3, 28), 3, "Europe/Warsaw")
    readings = pa.concat_tables([readings, _solar()])
    n = readings.num_rows
    columns = {}
    for f in READING_SCHEMA:
        if f.name in readings.column_names:
            columns[f.name] = readings[f.name].cast(f.type)
        elif f.name == "received_at":
            columns[f.name] = readings["ts"].cast(f.type)
        elif f.name == "source":
            columns[f.name] = pa.array(["generic"] * n, pa.string())
        else:
            columns[f.name] = pa.nulls(n, f.type)
    return pa.table(columns, schema=READING_SCHEMA)


def _run(args: list[str], folder: Path) -> tuple[Any, str]:
    full = [*args, "--format", "json", "--data-dir", str(folder / "lake")]
    full += ["--config", str(folder / "wattlake.toml")]
    result = CliRunner().invoke(app, full)
    assert result.exit_code == 0, (args, result.output, result.exception)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return rows, result.stderr


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[Any, str]]]:
    """Every command's output before the rollup job ran and after it."""
    folder = tmp_path_factory.mktemp("rollups-cli")
    (folder / "wattlake.toml").write_text(SITE_TOML)
    lake = Lake.open(str(folder / "lake"))
    tables.append(lake, READINGS_TABLE, _lake_table())
    before = {name: _run(args, folder) for name, args in COMMANDS.items()}
    job = CliRunner().invoke(
        app,
        [
            "jobs",
            "run",
            "rollup",
            "--data-dir",
            str(folder / "lake"),
            "--config",
            str(folder / "wattlake.toml"),
        ],
    )
    assert job.exit_code == 0, job.output
    after = {name: _run(args, folder) for name, args in COMMANDS.items()}
    return {"readings": before, "rollups": after}


_SHARES = {"coverage", "self_consumption", "self_sufficiency"}


def _assert_close(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for key in want:
            _assert_close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        # The commands print energies rounded to 1 mWh and shares to 1e-4: figures that agree
        # to 1e-9 may still round to neighbouring last digits, never further apart.
        assert isinstance(got, int | float), where
        digits = 4 if where.rsplit(".", 1)[-1] in _SHARES else 3
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1.01 * 10.0**-digits, err_msg=where)
    else:
        assert got == want, where


@pytest.mark.parametrize("name", list(COMMANDS))
def test_rollups_print_what_raw_readings_print(
    outputs: dict[str, dict[str, tuple[Any, str]]], name: str
) -> None:
    raw, raw_note = outputs["readings"][name]
    rolled, rolled_note = outputs["rollups"][name]
    assert raw, "the command printed rows"
    _assert_close(rolled, raw, name)
    assert "Energy from raw readings." in raw_note
    assert "Energy from rollups (table energy_15min)" in rolled_note


def test_the_lake_has_gaps_resets_and_both_methods(
    outputs: dict[str, dict[str, tuple[Any, str]]],
) -> None:
    rows, _ = outputs["rollups"]["energy-day"]
    assert {r["method"] for r in rows} >= {"counter", "trapezoid"}
    assert min(r["coverage"] for r in rows) < 1.0
    gaps, note = outputs["rollups"]["cost-gaps"]
    assert gaps and "gaps from raw readings" in note  # the gap list is read from readings

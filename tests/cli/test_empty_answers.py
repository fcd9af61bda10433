"""No data for what was asked is an answer: exit 0, an empty result, and what the lake does hold.

Every command that prints data, in every output format: stdout has the empty result (the CSV
header, nothing in JSON), stderr says which devices and time range exist.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from wattlake.cli import main

DAY = ["--start", "2026-03-01", "--end", "2026-03-02"]
PV_SYSTEM = ["--kwp", "5", "--lat", "50", "--lon", "8"]
HOLDS = "The lake holds readings of 1 device(s) from 2026-01-01T00:00Z to 2026-01-01T00:02Z"

# (case id, arguments) answered from a lake that has meter-1 on 2026-01-01 only.
CASES = [
    ("energy-unknown-device", ["energy", "--device", "nope", *DAY]),
    ("energy-empty-range", ["energy", "--device", "meter-1", *DAY]),
    ("energy-every-device-empty-range", ["energy", *DAY]),
    ("cost-unknown-device", ["cost", "--tariff", "pl-g11", "--device", "nope", *DAY]),
    ("cost-empty-range", ["cost", "--tariff", "pl-g11", "--device", "meter-1", *DAY]),
    ("cost-every-device-empty-range", ["cost", "--tariff", "pl-g11", *DAY]),
    ("cost-gaps-empty-range", ["cost", "--tariff", "pl-g11", "--gaps", *DAY]),
    ("pv-unknown-device", ["pv", "--device", "nope", *DAY, *PV_SYSTEM]),
    ("pv-empty-range", ["pv", "--device", "meter-1", *DAY, *PV_SYSTEM]),
    ("forecast-unknown-device", ["forecast", "--device", "nope", "--until", "2026-03-01"]),
    ("forecast-empty-range", ["forecast", "--device", "meter-1", "--until", "2026-03-01"]),
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def lake(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "history.csv"
    path.write_text(
        "ts,device_id,channel,power_w\n"
        "2026-01-01T00:00:00Z,meter-1,0,100\n"
        "2026-01-01T00:01:00Z,meter-1,0,120\n"
        "2026-01-01T00:02:00Z,meter-1,0,110\n"
    )
    data_dir = str(tmp_path / "lake")
    code, _, err = run(capsys, "import", str(path), "--data-dir", data_dir)
    assert code == 0, err
    return data_dir


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
@pytest.mark.parametrize(("args"), [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_no_data_is_an_empty_answer_and_says_what_exists(
    capsys: pytest.CaptureFixture[str], lake: str, args: list[str], fmt: str
) -> None:
    code, out, err = run(capsys, *args, "--format", fmt, "--data-dir", lake)
    assert code == 0, err
    assert "Traceback" not in out + err
    if fmt == "json":
        assert out == ""
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(out)))
        assert len(rows) == 1 and rows[0], out  # the header only
    assert "meter-1" not in out, out  # no rows in any format (a table has its header only)
    assert HOLDS in err, err
    assert "meter-1 (2026-01-01T00:00Z to 2026-01-01T00:02Z)" in err


@pytest.mark.parametrize(
    "args",
    [["energy", "--every", "day"], ["cost", "--tariff", "pl-g11"]],
    ids=["energy", "cost"],
)
def test_a_range_with_readings_keeps_its_rows(
    capsys: pytest.CaptureFixture[str], lake: str, args: list[str]
) -> None:
    day = ["--start", "2026-01-01", "--end", "2026-01-02", "--tz", "UTC"]
    code, out, err = run(capsys, *args, *day, "--format", "csv", "--data-dir", lake)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and {r["device_id"] for r in rows} == {"meter-1"}, out
    assert "No readings" not in err


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_query_without_rows_keeps_its_columns(
    capsys: pytest.CaptureFixture[str], lake: str, fmt: str
) -> None:
    sql = "SELECT device_id, power_w FROM readings WHERE device_id = 'nope'"
    code, out, err = run(capsys, "query", sql, "--format", fmt, "--data-dir", lake)
    assert code == 0, err
    assert out == ("device_id,power_w\n" if fmt == "csv" else "")


def test_an_empty_lake_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A lake without readings is an answer (a folder without a lake is not: see
    test_bad_inputs.py::test_a_mistyped_data_dir_is_no_lake_and_stays_uncreated)."""
    from wattlake.lake.catalog import forget_catalogs
    from wattlake.lake.storage import Lake
    from wattlake.lake.tables import ensure_tables

    ensure_tables(Lake.open(str(tmp_path / "empty")))
    forget_catalogs()
    args = ["energy", *DAY, "--format", "csv", "--data-dir", str(tmp_path / "empty")]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.startswith("device_id,channel,start,end,")
    assert "The lake holds no readings yet" in err

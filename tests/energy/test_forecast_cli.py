"""``wattlake forecast``: next-day rows from a real lake, backtest summary, mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wattlake.cli import main
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table

# One pytest-xdist worker runs this module: its module-scoped fixture (the generated lake) is
# built once, not on every worker (./run test uses --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_forecast_cli")

STEP_MS = 300_000  # one reading every 5 minutes (energy.max_gap_s is 300 s)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WATTLAKE_DATA_DIR", "WATTLAKE_ENERGY__TZ"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """22 days (1-22 April 2024, Europe/Berlin) of a daily pattern: 200 W at night, 900 W
    from 18:00 to 22:00 local, 400 W otherwise."""
    root = tmp_path_factory.mktemp("lake")
    lake = Lake.open(str(root))
    start = pd.Timestamp("2024-04-01", tz="Europe/Berlin").tz_convert("UTC")
    ts = pd.date_range(start, periods=22 * 24 * 3_600_000 // STEP_MS + 1, freq=f"{STEP_MS}ms")
    hour = np.asarray(ts.tz_convert("Europe/Berlin").hour)
    power_w = np.where(hour < 6, 200.0, np.where((hour >= 18) & (hour < 22), 900.0, 400.0))
    ts_ms = ts.as_unit("ms").asi8.tolist()
    rows = [
        {"ts": t, "received_at": t, "device_id": "house", "channel": 0, "power_w": float(p),
         "source": "generic"}
        for t, p in zip(ts_ms, power_w, strict=True)
    ]  # fmt: skip
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))
    return root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_forecast_prints_the_next_day_and_the_backtest(
    lake_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "forecast", "--until", "2024-04-23", "--days-history", "22", "--backtest-days",
        "3", "--tz", "Europe/Berlin", "--format", "json", "--data-dir", str(lake_dir),
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 24 and set(rows[0]) == {"hour_start", "predicted_wh"}
    assert rows[0]["hour_start"] == "2024-04-23T00:00:00+02:00"
    assert rows[23]["hour_start"] == "2024-04-23T23:00:00+02:00"
    # A pattern that repeats every day is predicted within 10 %, away from the steps.
    assert rows[3]["predicted_wh"] == pytest.approx(200, rel=0.1)
    assert rows[12]["predicted_wh"] == pytest.approx(400, rel=0.1)
    assert rows[20]["predicted_wh"] == pytest.approx(900, rel=0.1)
    summary = " ".join(err.split())  # the console wraps long lines
    assert "2024-04-20..2024-04-22: model MAPE" in summary
    assert "baseline (same hour last week) MAPE" in summary and "over 72 hours" in summary


def test_forecast_csv_without_backtest(lake_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "forecast", "--until", "2024-04-23", "--days-history", "22", "--backtest-days",
        "0", "--tz", "Europe/Berlin", "--format", "csv", "--data-dir", str(lake_dir),
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "hour_start,predicted_wh" and len(lines) == 25
    assert "MAPE" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days-history", "16", "--backtest-days", "7"], "--days-history must be at least"),
        (["--until", "2024-04-10", "--backtest-days", "0"], "at least 14 days"),
        (["--country", "XX"], "country"),
        (["--until", "yesterday"], "Cannot read time"),
    ],
)
def test_forecast_mistakes_exit_2(
    lake_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run(
        capsys, "forecast", "--tz", "Europe/Berlin", "--data-dir", str(lake_dir),
        *(["--until", "2024-04-23"] if "--until" not in args else []), *args,
    )  # fmt: skip
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_forecast_of_an_unknown_device_is_an_empty_answer(
    lake_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "forecast", "--tz", "Europe/Berlin", "--data-dir", str(lake_dir),
        "--until", "2024-04-23", "--device", "other", "--format", "json",
    )  # fmt: skip
    assert (code, out) == (0, "")
    assert "No readings of device other" in err


def test_forecast_of_a_site_is_its_consumption(
    lake_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The house's only channel is the site's grid: the site's consumption is the same hours.
    config = tmp_path / "wattlake.toml"
    config.write_text(
        '[sites.home]\ntimezone = "Europe/Berlin"\n'
        '[[sites.home.channels]]\ndevice = "house"\nchannel = 0\nrole = "grid"\n',
        encoding="utf-8",
    )
    common = ["forecast", "--until", "2024-04-23", "--days-history", "22", "--backtest-days",
              "0", "--tz", "Europe/Berlin", "--format", "json", "--data-dir", str(lake_dir),
              "--config", str(config)]  # fmt: skip
    code, by_site, err = run(capsys, *common, "--site", "home")
    assert code == 0, err
    code, by_device, err = run(capsys, *common, "--device", "house", "--channel", "0")
    assert code == 0, err
    assert by_site == by_device and len(by_site.splitlines()) == 24

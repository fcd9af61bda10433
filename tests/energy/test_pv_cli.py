"""``wattlake pv``: a real lake on disk, PVGIS sample files, every way of giving the system."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wattlake.cli import main
from wattlake.energy import pv as pvmod
from wattlake.lake import tables
from wattlake.lake.storage import Lake
from wattlake.schema import READINGS_TABLE, readings_to_table

DATA = Path(__file__).parent / "data"
SERIES_CSV = DATA / "pvgis_seriescalc_48.000_7.850_2020.csv"
TMY_JSON = DATA / "pvgis_tmy_48.000_7.850.json"
STEP_MS = 300_000  # one reading every 5 minutes


def write_constant_load(lake_dir: Path, device: str, start: str, days: int, power_w: float) -> None:
    """Readings of a constant load from an hour before ``start`` to an hour after the end."""
    lake = Lake.open(str(lake_dir))
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1_000_000) - 3_600_000
    ts = np.arange(t0, t0 + (days * 24 + 2) * 3_600_000 + 1, STEP_MS)
    rows = [
        {"ts": int(t), "received_at": int(t), "device_id": device, "channel": 0,
         "power_w": power_w, "source": "generic"}
        for t in ts
    ]  # fmt: skip
    tables.append(lake, READINGS_TABLE, readings_to_table(rows))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WATTLAKE_DATA_DIR", "WATTLAKE_ENERGY__TZ"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def json_rows(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_pv_from_a_pvgis_seriescalc_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_constant_load(tmp_path, "house", "2020-06-01", 3, 600.0)
    code, out, err = run(
        capsys, "pv", "--pvgis", str(SERIES_CSV), "--start", "2020-06-01", "--end", "2020-06-03",
        "--tz", "UTC", "--format", "json", "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    rows = json_rows(out)
    assert [r["day"] for r in rows] == ["2020-06-01", "2020-06-02", "total"]
    # Expected by hand from the file: 600 Wh of load every hour, PV is P [W] x 1 h.
    p_wh = pvmod.read_pvgis(SERIES_CSV).data["power_w"].to_numpy()[:48].reshape(2, 24)
    for row, day_pv in zip(rows, p_wh, strict=False):
        assert row["pv_wh"] == pytest.approx(day_pv.sum(), abs=0.1)
        assert row["load_wh"] == pytest.approx(24 * 600, abs=0.1)
        assert row["self_consumed_wh"] == pytest.approx(np.minimum(day_pv, 600).sum(), abs=0.1)
        assert row["export_wh"] == pytest.approx(np.maximum(day_pv - 600, 0).sum(), abs=0.1)
        assert row["import_wh"] == pytest.approx(np.maximum(600 - day_pv, 0).sum(), abs=0.1)
        assert row["missing_hours"] == 0
    total = rows[-1]
    assert total["load_wh"] == pytest.approx(48 * 600, abs=0.1)
    expected_ss = 100 * np.minimum(p_wh, 600).sum() / (48 * 600)
    assert total["self_sufficiency_pct"] == pytest.approx(expected_ss, abs=0.01)


def test_pv_clear_sky_model_and_tmy_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_constant_load(tmp_path, "house", "2026-01-01", 2, 400.0)
    common = ["--start", "2026-01-01", "--end", "2026-01-02", "--tz", "Europe/Berlin",
              "--format", "json", "--data-dir", str(tmp_path)]  # fmt: skip
    code, out, err = run(capsys, "pv", "--kwp", "4", "--lat", "48", "--lon", "7.85", *common)
    assert code == 0, err
    clear = json_rows(out)[-1]
    code, out, err = run(capsys, "pv", "--pvgis", str(TMY_JSON), "--kwp", "4", *common)
    assert code == 0, err
    tmy = json_rows(out)[-1]
    assert 0 < tmy["pv_wh"] < clear["pv_wh"]  # type: ignore[operator]
    assert clear["load_wh"] == pytest.approx(24 * 400, abs=0.1)


def test_pv_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_constant_load(tmp_path, "house", "2020-06-01", 1, 600.0)
    code, out, _ = run(
        capsys, "pv", "--pvgis", str(SERIES_CSV), "--start", "2020-06-01", "--end", "2020-06-02",
        "--tz", "UTC", "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0 and "self_consumed_wh" in out and "total" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kwp", "4"], "--lat"),
        (["--pvgis", str(TMY_JSON)], "--kwp"),
        (["--kwp", "4", "--lat", "48", "--lon", "7", "--tilt", "120"], "tilt"),
        (["--pvgis", "missing.csv"], "does not exist"),
        (["--kwp", "4", "--lat", "48", "--lon", "7", "--tz", "Mars/Base"], "time zone"),
    ],
)
def test_pv_mistakes_are_one_sentence_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write_constant_load(tmp_path, "house", "2020-06-01", 1, 600.0)
    code, out, err = run(
        capsys, "pv", "--start", "2020-06-01", "--end", "2020-06-02", "--data-dir", str(tmp_path),
        *args,
    )  # fmt: skip
    assert code == 2
    assert message in err and "Traceback" not in err and out == ""


def test_pv_needs_a_device_when_the_lake_has_several(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_constant_load(tmp_path, "house", "2020-06-01", 1, 600.0)
    write_constant_load(tmp_path, "garage", "2020-06-01", 1, 100.0)
    args = ["pv", "--pvgis", str(SERIES_CSV), "--start", "2020-06-01", "--end", "2020-06-02",
            "--tz", "UTC", "--format", "json", "--data-dir", str(tmp_path)]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert code == 2 and "name one device or a site" in err
    code, out, err = run(capsys, *args, "--device", "garage")
    assert code == 0, err
    assert json_rows(out)[-1]["load_wh"] == pytest.approx(2400, abs=0.1)

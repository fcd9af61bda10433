"""PV: balance arithmetic by hand, PVGIS files in both formats, the offline model's physics."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wattlake.energy import pv
from wattlake.errors import BadInputError, UsageError

DATA = Path(__file__).parent / "data"
SERIES_CSV = DATA / "pvgis_seriescalc_48.000_7.850_2020.csv"
SERIES_JSON = DATA / "pvgis_seriescalc_48.000_7.850_2020.json"
TMY_CSV = DATA / "pvgis_tmy_48.000_7.850.csv"
TMY_JSON = DATA / "pvgis_tmy_48.000_7.850.json"


# -- balance --------------------------------------------------------------------------------------


def test_hour_with_surplus_exports_the_rest() -> None:
    # PV 500 Wh, load 300 Wh: 300 used on site, 200 exported, nothing imported.
    assert pv.self_consumed_energy_wh([500.0], [300.0]).tolist() == [300.0]
    assert pv.export_energy_wh([500.0], [300.0]).tolist() == [200.0]
    assert pv.import_energy_wh([500.0], [300.0]).tolist() == [0.0]


def test_hour_with_deficit_imports_the_rest() -> None:
    # PV 100 Wh, load 400 Wh: 100 used on site, 300 imported.
    assert pv.self_consumed_energy_wh(100.0, 400.0) == 100.0
    assert pv.export_energy_wh(100.0, 400.0) == 0.0
    assert pv.import_energy_wh(100.0, 400.0) == 300.0


def test_balance_totals_and_ratios_by_hand() -> None:
    pv_wh = np.array([0.0, 500.0, 100.0, 800.0])
    load_wh = np.array([200.0, 300.0, 400.0, 100.0])
    # used: 0 + 300 + 100 + 100 = 500; export 0 + 200 + 0 + 700 = 900; import 200 + 0 + 300 + 0
    b = pv.pv_balance(pv_wh, load_wh)
    assert (b.pv_energy_wh, b.load_energy_wh) == (1400.0, 1000.0)
    assert (b.self_consumed_wh, b.export_wh, b.import_wh) == (500.0, 900.0, 500.0)
    assert b.self_consumption_ratio == pytest.approx(500 / 1400)
    assert b.self_sufficiency_ratio == pytest.approx(0.5)
    assert (b.hours, b.missing_hours) == (4, 0)


def test_energy_is_conserved_hour_by_hour() -> None:
    rng = np.random.default_rng(1)
    pv_wh, load_wh = rng.uniform(0, 3000, 500), rng.uniform(0, 3000, 500)
    used = pv.self_consumed_energy_wh(pv_wh, load_wh)
    np.testing.assert_allclose(used + pv.export_energy_wh(pv_wh, load_wh), pv_wh)
    np.testing.assert_allclose(used + pv.import_energy_wh(pv_wh, load_wh), load_wh)


def test_missing_hours_propagate_and_are_left_out_of_totals() -> None:
    pv_wh = np.array([500.0, np.nan, 200.0])
    load_wh = np.array([300.0, 100.0, np.nan])
    assert np.isnan(pv.self_consumed_energy_wh(pv_wh, load_wh)[1:]).all()
    b = pv.pv_balance(pv_wh, load_wh)
    assert (b.hours, b.missing_hours, b.self_consumed_wh, b.export_wh) == (3, 2, 300.0, 200.0)


def test_ratios_are_nan_without_pv_or_load() -> None:
    b = pv.pv_balance([0.0, 0.0], [0.0, 0.0])
    assert math.isnan(b.self_consumption_ratio) and math.isnan(b.self_sufficiency_ratio)


@pytest.mark.parametrize(("pv_wh", "load_wh"), [([1.0, 2.0], [1.0]), ([-1.0], [1.0])])
def test_bad_arrays_are_rejected(pv_wh: list[float], load_wh: list[float]) -> None:
    with pytest.raises(ValueError):
        pv.pv_balance(pv_wh, load_wh)


def test_daily_balance_groups_by_local_day() -> None:
    # 22:00 and 23:00 UTC on 1 June are already 2 June in Berlin (UTC+2).
    hours = pd.date_range("2024-06-01 20:00", periods=4, freq="h", tz="UTC")
    days = pv.daily_pv_balance(
        hours, [10.0, 10.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0], "Europe/Berlin"
    )
    assert [d for d, _ in days] == [date(2024, 6, 1), date(2024, 6, 2)]
    assert [b.export_wh for _, b in days] == [10.0, 0.0]
    assert [b.import_wh for _, b in days] == [0.0, 20.0]


# -- PVGIS files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SERIES_CSV, SERIES_JSON])
def test_seriescalc_reads_location_system_and_hourly_power(path: Path) -> None:
    data = pv.read_pvgis(path)
    assert data.kind == "seriescalc"
    assert (data.latitude_deg, data.longitude_deg, data.elevation_m) == (48.0, 7.85, 278.0)
    assert (data.peak_power_kw, data.system_loss_pct) == (4.0, 14.0)
    assert len(data.data) == 72
    # "20200601:0010" is the hour starting at 00:00 UTC.
    assert data.data.index[0] == pd.Timestamp("2020-06-01 00:00", tz="UTC")
    assert data.data.loc[pd.Timestamp("2020-06-01 11:00", tz="UTC"), "power_w"] == 3023.44
    assert data.data["temp_air"].iloc[0] == 8.34


def test_seriescalc_csv_and_json_hold_the_same_data() -> None:
    pd.testing.assert_frame_equal(pv.read_pvgis(SERIES_CSV).data, pv.read_pvgis(SERIES_JSON).data)


@pytest.mark.parametrize("path", [TMY_CSV, TMY_JSON])
def test_tmy_reads_weather_columns(path: Path) -> None:
    data = pv.read_pvgis(path)
    assert data.kind == "tmy"
    assert (data.latitude_deg, data.longitude_deg) == (48.0, 7.85)
    assert {"ghi", "dni", "dhi", "temp_air", "wind_speed"} <= set(data.data.columns)
    noon = data.data.loc[pd.Timestamp("2009-01-01 11:00", tz="UTC")]
    assert (noon["ghi"], noon["dni"], noon["dhi"], noon["temp_air"]) == (262.71, 617.04, 61.07, 3.0)


def test_tmy_csv_keeps_the_months_table() -> None:
    months = pv.read_pvgis(TMY_CSV).metadata["months_selected"]
    assert months[0] == {"month": 1, "year": 2009} and len(months) == 12


def test_seriescalc_energy_is_power_times_one_hour() -> None:
    data = pv.read_pvgis(SERIES_CSV)
    hours = pd.date_range("2020-06-01 10:00", periods=3, freq="h", tz="UTC")
    np.testing.assert_array_equal(pv.pvgis_pv_energy_wh(data, hours), [2967.38, 3023.44, 2900.39])


def test_seriescalc_outside_its_years_uses_the_same_hour_of_year() -> None:
    data = pv.read_pvgis(SERIES_CSV)
    hours = pd.date_range("2027-06-01 10:00", periods=2, freq="h", tz="UTC")
    np.testing.assert_array_equal(pv.pvgis_pv_energy_wh(data, hours), [2967.38, 3023.44])
    december = pd.date_range("2027-12-01", periods=2, freq="h", tz="UTC")
    assert np.isnan(pv.pvgis_pv_energy_wh(data, december)).all()


def test_tmy_has_no_pv_output() -> None:
    with pytest.raises(BadInputError, match="--kwp"):
        pv.pvgis_pv_energy_wh(pv.read_pvgis(TMY_CSV), pd.DatetimeIndex([], tz="UTC"))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("x.txt", "whatever"),
        ("x.csv", "just,a,csv\n1,2,3\n"),
        (
            "x.json",
            '{"outputs": {"daily": []}, "inputs": {"location": {"latitude": 1, "longitude": 2}}}',
        ),
        ("x.json", "{not json"),
        ("x.csv", "Latitude (decimal degrees): 1\nmonth,year\ntime(UTC),T2m\n2020,1,2\n"),
    ],
)
def test_files_that_are_not_pvgis_are_bad_input(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(BadInputError):
        pv.read_pvgis(path)


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="Cannot read"):
        pv.read_pvgis(tmp_path / "absent.csv")


# -- offline model --------------------------------------------------------------------------------

SITE = {"latitude_deg": 48.0, "longitude_deg": 7.85}
JUNE = pd.date_range("2024-06-21", periods=24, freq="h", tz="UTC")


def test_clearsky_model_is_zero_at_night_and_plausible_at_noon() -> None:
    system = pv.PVSystem(**SITE, peak_power_kw=4.0, tilt_deg=35.0)
    energy_wh = pv.model_pv_energy_wh(system, pv.clearsky_weather(48.0, 7.85, JUNE))
    assert energy_wh[:3].tolist() == [0.0, 0.0, 0.0] and energy_wh[21:].tolist() == [0.0] * 3
    # Clear June noon in Freiburg: between 60 % and 95 % of nameplate after 14 % losses.
    assert 0.6 * 4000 < energy_wh[11] < 0.95 * 4000
    # A clear June day gives 5-7.5 kWh per kWp.
    assert 5.0 < energy_wh.sum() / 4000 < 7.5


def test_model_scales_with_peak_power_and_losses() -> None:
    weather = pv.clearsky_weather(48.0, 7.85, JUNE)
    base = pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=2.0), weather)
    double = pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=4.0), weather)
    lossless = pv.model_pv_energy_wh(
        pv.PVSystem(**SITE, peak_power_kw=2.0, system_loss_pct=0), weather
    )
    np.testing.assert_allclose(double, 2 * base)
    np.testing.assert_allclose(base, lossless * 0.86)


def test_south_facing_beats_north_facing_in_the_northern_hemisphere() -> None:
    weather = pv.clearsky_weather(48.0, 7.85, JUNE)
    south = pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=1, azimuth_deg=180), weather)
    north = pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=1, azimuth_deg=0), weather)
    east = pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=1, azimuth_deg=90), weather)
    assert south.sum() > east.sum() > north.sum()
    assert east[:12].sum() > east[12:].sum()  # east-facing peaks in the morning


def test_model_from_tmy_weather_follows_the_cloudy_day() -> None:
    tmy = pv.read_pvgis(TMY_CSV)
    hours = pd.date_range("2026-01-01", periods=72, freq="h", tz="UTC")
    weather = pv.pvgis_weather(tmy, hours)
    assert not weather.isna().any().any()
    daily_wh = (
        pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=4.0), weather).reshape(3, 24).sum(1)
    )
    # The sample's 2 January is overcast (35 % of clear sky), 1 January nearly clear.
    assert daily_wh[1] < 0.4 * daily_wh[0]
    assert 0 < daily_wh[0] < 4.0 * 4000  # January: well under 4 kWh per kWp


def test_missing_weather_gives_nan_energy() -> None:
    weather = pv.clearsky_weather(48.0, 7.85, JUNE)
    weather.iloc[12, weather.columns.get_loc("ghi")] = np.nan
    energy_wh = pv.model_pv_energy_wh(pv.PVSystem(**SITE, peak_power_kw=1), weather)
    assert np.isnan(energy_wh[12]) and not np.isnan(energy_wh[11])


@pytest.mark.parametrize(
    "bad",
    [{"peak_power_kw": 0}, {"tilt_deg": 95}, {"azimuth_deg": -10}, {"system_loss_pct": 100}],
)
def test_impossible_systems_are_usage_errors(bad: dict[str, float]) -> None:
    kwargs = {**SITE, "peak_power_kw": 1.0, **bad}
    with pytest.raises(UsageError):
        pv.PVSystem(**kwargs)


def test_daily_performance_ratio_of_measured_against_model() -> None:
    # Two local days in UTC, 24 hours each: day 1 measured 800 of a modelled 1000 Wh (0.8), one
    # hour unmeasured (its model hour is left out of both sums); day 2 no model at all.
    hours = pd.date_range("2026-06-01", periods=48, freq="h", tz="UTC")
    measured = np.zeros(48)
    model = np.zeros(48)
    measured[12], model[12] = 800.0, 1000.0
    measured[13], model[13] = np.nan, 500.0
    measured[36] = 50.0
    first, second = pv.daily_performance(hours, measured, model, "UTC")
    assert (first.measured_wh, first.model_wh, first.performance_ratio) == (800.0, 1000.0, 0.8)
    assert first.missing_hours == 1
    assert second.measured_wh == 50.0 and np.isnan(second.performance_ratio)

"""Forecast: MAPE by hand, the naive baseline by hand, the model against it on synthetic weeks."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from wattlake.energy import forecast as fc
from wattlake.errors import BadInputError, UsageError

TZ = "Europe/Berlin"


def weekly_series(
    days: int, *, noise: float = 0.0, start: str = "2024-03-04", seed: int = 0
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Hourly Wh with a morning and an evening peak on workdays, a flatter weekend."""
    hours = pd.date_range(start, periods=days * 24, freq="h", tz="UTC")
    local = hours.tz_convert(TZ)
    hour = np.asarray(local.hour, dtype=float)
    weekend = np.asarray(local.day_of_week) >= 5
    workday_wh = (
        300 + 500 * np.exp(-(((hour - 8) / 2.0) ** 2)) + 900 * np.exp(-(((hour - 19) / 2.5) ** 2))
    )
    weekend_wh = 0.7 * workday_wh + 200 * np.exp(-(((hour - 12) / 3.0) ** 2))
    energy_wh = np.where(weekend, weekend_wh, workday_wh)
    rng = np.random.default_rng(seed)
    return hours, energy_wh * (1 + noise * rng.standard_normal(energy_wh.size))


# -- MAPE and the baseline, by hand ---------------------------------------------------------------


def test_mape_by_hand_skips_zero_and_unknown_hours() -> None:
    actual = [100.0, 200.0, 0.0, np.nan]
    (m,) = fc.mape_pct(actual, [110.0, 150.0, 5.0, 1.0])
    # (10/100 + 50/200) / 2 = 17.5 %
    assert m.mape_pct == pytest.approx(17.5)
    assert (m.hours, m.zero_hours_skipped) == (2, 1)


def test_mape_compares_every_prediction_over_the_same_hours() -> None:
    model, baseline = fc.mape_pct([100.0, 200.0], [110.0, 150.0], [100.0, np.nan])
    assert model.mape_pct == pytest.approx(10.0) and baseline.mape_pct == 0.0
    assert model.hours == baseline.hours == 1


def test_mape_without_countable_hours_is_nan() -> None:
    (m,) = fc.mape_pct([0.0, 0.0], [1.0, 2.0])
    assert math.isnan(m.mape_pct) and m.zero_hours_skipped == 2


def test_naive_baseline_is_the_same_hour_a_week_earlier() -> None:
    hours = pd.date_range("2024-01-01", periods=170, freq="h", tz="UTC")
    series = pd.Series(np.arange(170.0), index=hours)
    naive = fc.naive_last_week_wh(series)
    assert np.isnan(naive[:168]).all() and naive[168:].tolist() == [0.0, 1.0]


def test_backtest_baseline_mape_by_hand() -> None:
    # Two weeks at 100 Wh/h, then a week at 125 Wh/h with one hour at zero. The baseline
    # predicts 100 for the last week: |125 - 100| / 125 = 20 % in every counted hour.
    hours = pd.date_range("2024-01-01", periods=21 * 24, freq="h", tz="UTC")
    energy_wh = np.where(np.arange(hours.size) < 14 * 24, 100.0, 125.0)
    energy_wh[-30] = 0.0
    result = fc.backtest(hours, energy_wh, days=7, tz="UTC")
    assert result.days == tuple(date(2024, 1, d) for d in range(15, 22))
    assert result.baseline.mape_pct == pytest.approx(20.0)
    assert (result.baseline.hours, result.baseline.zero_hours_skipped) == (167, 1)
    assert result.model.hours == 167


# -- the model ------------------------------------------------------------------------------------


def test_model_matches_the_baseline_on_a_clean_weekly_pattern() -> None:
    hours, energy_wh = weekly_series(42)
    result = fc.backtest(hours, energy_wh, days=7, tz=TZ)
    assert result.baseline.mape_pct == 0.0
    assert result.model.mape_pct < 0.5


def test_model_beats_the_baseline_on_a_noisy_weekly_pattern() -> None:
    hours, energy_wh = weekly_series(56, noise=0.10)
    result = fc.backtest(hours, energy_wh, days=7, tz=TZ)
    assert result.model.hours == result.baseline.hours == 168
    assert result.model.mape_pct < 0.9 * result.baseline.mape_pct


def test_backtest_trains_only_on_the_past() -> None:
    # A level shift on the last day cannot be known in advance: the model must miss it.
    hours, energy_wh = weekly_series(42)
    energy_wh[-24:] *= 3
    result = fc.backtest(hours, energy_wh, days=1, tz=TZ)
    assert result.model.mape_pct > 50


def test_forecast_is_the_next_local_day_and_deterministic() -> None:
    hours, energy_wh = weekly_series(35, noise=0.05)
    first = fc.forecast_next_day(hours, energy_wh, tz=TZ)
    second = fc.forecast_next_day(hours, energy_wh, tz=TZ)
    last_local_day = hours[-1].tz_convert(TZ).date()
    assert first.day == date.fromordinal(last_local_day.toordinal() + 1)
    assert len(first.hour_start) == 24
    assert first.hour_start[0].tz_convert(TZ).hour == 0
    np.testing.assert_array_equal(first.predicted_wh, second.predicted_wh)
    # The next day's evening peak is predicted above its night.
    assert first.predicted_wh[19] > 2 * first.predicted_wh[3]


def test_forecast_after_a_partial_day_fills_the_rest_of_today_first() -> None:
    hours, energy_wh = weekly_series(35, noise=0.05)
    forecast = fc.forecast_next_day(hours[:-10], energy_wh[:-10], tz=TZ)
    assert forecast.day == hours[-1].tz_convert(TZ).date()  # the day after the partial one
    assert len(forecast.predicted_wh) == 24 and np.isfinite(forecast.predicted_wh).all()
    assert (forecast.predicted_wh > 0).all()


def test_forecast_of_the_spring_forward_day_has_23_hours() -> None:
    # Berlin moves its clocks forward on 31 March 2024.
    hours, energy_wh = weekly_series(26, start="2024-03-04")
    local_end = hours.tz_convert(TZ) < pd.Timestamp("2024-03-31", tz=TZ)
    forecast = fc.forecast_next_day(hours[local_end], energy_wh[local_end], tz=TZ)
    assert forecast.day == date(2024, 3, 31) and len(forecast.predicted_wh) == 23


def test_public_holidays_are_learned_by_country() -> None:
    # Workdays high, weekends and German public holidays low. Training holds Good Friday,
    # Easter Monday and 1 May; the forecast day is Ascension Day, Thursday 9 May 2024.
    hours = pd.date_range("2024-02-25 23:00", "2024-05-08 21:00", freq="h", tz="UTC")
    local = hours.tz_convert(TZ)
    off = {date(2024, 3, 29), date(2024, 4, 1), date(2024, 5, 1)}
    low = (np.asarray(local.day_of_week) >= 5) | np.array([d in off for d in local.date])
    energy_wh = np.where(low, 300.0, 1000.0)
    with_holidays = fc.forecast_next_day(hours, energy_wh, tz=TZ, country="DE")
    without = fc.forecast_next_day(hours, energy_wh, tz=TZ)
    assert with_holidays.day == date(2024, 5, 9)
    assert with_holidays.predicted_wh.mean() < 450
    assert without.predicted_wh.mean() > 850


def test_temperature_is_used_when_given() -> None:
    # Heating: each day's consumption follows that day's temperature, unknown from the lags.
    hours = pd.date_range("2024-01-01", periods=43 * 24, freq="h", tz="UTC")
    daily_c = np.random.default_rng(3).uniform(-5, 15, 43)
    temperature = pd.Series(np.repeat(daily_c, 24), index=hours)
    energy_wh = 2000 - 100 * temperature.to_numpy()
    with_temp = fc.backtest(hours, energy_wh, days=7, tz="UTC", temperature_c=temperature)
    without = fc.backtest(hours, energy_wh, days=7, tz="UTC")
    assert with_temp.model.mape_pct < 0.5 * without.model.mape_pct


# -- errors ---------------------------------------------------------------------------------------


def test_too_little_history_is_bad_input() -> None:
    hours, energy_wh = weekly_series(10)
    with pytest.raises(BadInputError, match="at least 14 days"):
        fc.forecast_next_day(hours, energy_wh, tz=TZ)
    with pytest.raises(BadInputError, match="at least 14 days"):
        fc.backtest(hours, energy_wh, days=3, tz=TZ)


def test_no_data_is_bad_input() -> None:
    with pytest.raises(BadInputError):
        fc.forecast_next_day(pd.DatetimeIndex([], tz="UTC"), [], tz=TZ)


@pytest.mark.parametrize(
    "kwargs", [{"tz": "Mars/Olympus"}, {"tz": TZ, "country": "XX"}, {"tz": TZ, "days": 0}]
)
def test_bad_parameters_are_usage_errors(kwargs: dict[str, object]) -> None:
    hours, energy_wh = weekly_series(21)
    with pytest.raises(UsageError):
        fc.backtest(hours, energy_wh, **{"days": 1, **kwargs})  # type: ignore[arg-type]


def test_grid_marks_missing_hours_and_rejects_repeats() -> None:
    hours = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 03:00"], tz="UTC")
    grid = fc.hourly_grid(hours, [1.0, 2.0])
    assert len(grid) == 4 and grid.isna().sum() == 2
    with pytest.raises(ValueError):
        fc.hourly_grid(hours[[0, 0]], [1.0, 2.0])
    with pytest.raises(ValueError):
        fc.hourly_grid(pd.DatetimeIndex(["2024-01-01 00:30"], tz="UTC"), [1.0])

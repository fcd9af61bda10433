"""Next-day hourly consumption forecast, and a rolling-origin backtest against a naive baseline.

The model is scikit-learn's ``HistGradientBoostingRegressor`` over a handful of features per
hour: local hour and weekday (categorical), a public-holiday flag (``holidays`` package, by
country), the consumption of the same hour 24 h and 168 h earlier, and the air temperature when
one is given. Gradient boosting learns the interaction of hour and weekday (a Sunday morning is
not a Monday morning) from a few weeks of data, takes missing lags natively, and is
deterministic here (fixed ``random_state``, no early stopping).

The baseline is the consumption of the same hour one week (168 h) earlier.

Conventions: a series is hourly energy [Wh] labelled by the UTC start of its hour; lags are
exact hour offsets (across a daylight-saving change "same hour yesterday" is 24 h earlier,
which is one local hour off). Missing hours are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from wattlake.errors import BadInputError, UsageError

FloatArray = npt.NDArray[np.float64]

LAGS_H: Final[tuple[int, ...]] = (24, 168)
BASELINE_LAG_H: Final = 168
MIN_HISTORY_DAYS: Final = 14
"""Days of history before a forecast day: one week to fill the 168 h lag, one to learn from."""
RANDOM_STATE: Final = 0
FEATURE_NAMES: Final[tuple[str, ...]] = (
    "hour",
    "weekday",
    "holiday",
    "lag_24h_wh",
    "lag_168h_wh",
    "temperature_c",
)


# -- series and features --------------------------------------------------------------------------


def hourly_grid(
    hour_start: pd.DatetimeIndex | npt.ArrayLike, energy_wh: npt.ArrayLike
) -> pd.Series:
    """Place hourly values on a complete UTC hourly grid; hours without a value are NaN.

    Parameters
    ----------
    hour_start : pandas.DatetimeIndex or array_like of datetime64
        Start of each hour; naive values are taken as UTC.
    energy_wh : array_like
        Energy in each hour [Wh].

    Returns
    -------
    pandas.Series
        Energy [Wh] indexed by every hour from the first to the last, UTC.

    Raises:
        ValueError: lengths differ, a time is not on the hour, or an hour repeats.
    """
    index = pd.DatetimeIndex(hour_start)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    values = np.asarray(energy_wh, dtype=np.float64)
    if len(index) != values.size:
        raise ValueError(f"hour_start has {len(index)} entries but energy_wh {values.size}")
    if (index != index.floor("h")).any():
        raise ValueError("hour_start must be whole hours")
    if index.has_duplicates:
        raise ValueError("hour_start repeats an hour")
    series = pd.Series(values, index=index).sort_index()
    if series.empty:
        return series
    full = pd.date_range(series.index[0], series.index[-1], freq="h", tz="UTC")
    return series.reindex(full)


def holiday_dates(country: str, years: range) -> set[date]:
    """Return the public holidays of ``country`` (ISO 3166 code, e.g. ``DE``) in ``years``.

    Raises:
        UsageError: the ``holidays`` package does not know the country.
    """
    try:
        calendar = holidays.country_holidays(country.upper(), years=years)
    except NotImplementedError as exc:
        raise UsageError(
            f"No public-holiday calendar for country {country!r}; give an ISO 3166 code such "
            "as DE, FR or US, or leave the country out."
        ) from exc
    return set(calendar.keys())


def feature_matrix(
    consumption_wh: pd.Series,
    *,
    tz: str,
    country: str | None = None,
    temperature_c: pd.Series | None = None,
) -> FloatArray:
    """Return one row of features per hour of a gridded series.

    Columns are ``FEATURE_NAMES``; ``temperature_c`` only when a temperature series is given.

    Parameters
    ----------
    consumption_wh : pandas.Series
        Energy per hour [Wh] on a complete hourly UTC grid (:func:`hourly_grid`); NaN where
        unknown. Lags read earlier values of this same series.
    tz : str
        IANA time zone of the local hour, weekday and holidays.
    country : str or None
        ISO 3166 country code for public holidays; None: the holiday column is 0.
    temperature_c : pandas.Series or None
        Air temperature [°C] by UTC hour start; None or missing hours: NaN.

    Raises:
        UsageError: unknown time zone or country.
    """
    index = pd.DatetimeIndex(consumption_wh.index)
    local = index.tz_convert(_zone(tz))
    holiday = np.zeros(len(index))
    if country and len(index):
        days = holiday_dates(country, range(local[0].year, local[-1].year + 1))
        holiday = np.array([d in days for d in local.date], dtype=np.float64)
    values = consumption_wh.to_numpy(dtype=np.float64)
    lags = [_shift(values, lag) for lag in LAGS_H]
    columns = [
        np.asarray(local.hour, dtype=np.float64),
        np.asarray(local.day_of_week, dtype=np.float64),
        holiday,
        *lags,
    ]
    if temperature_c is not None:
        temp = temperature_c.copy()
        temp.index = pd.DatetimeIndex(temp.index).tz_convert("UTC")
        columns.append(temp.reindex(index).to_numpy(dtype=np.float64))
    return np.column_stack(columns)


def _shift(values: FloatArray, hours: int) -> FloatArray:
    out = np.full(values.shape, np.nan)
    if hours < values.size:
        out[hours:] = values[:-hours]
    return out


def naive_last_week_wh(consumption_wh: pd.Series) -> FloatArray:
    """Return the baseline forecast: the same hour one week (168 h) earlier [Wh].

    Parameters
    ----------
    consumption_wh : pandas.Series
        Energy per hour [Wh] on a complete hourly grid.
    """
    return _shift(consumption_wh.to_numpy(dtype=np.float64), BASELINE_LAG_H)


@dataclass(frozen=True, slots=True)
class Mape:
    """Mean absolute percentage error over the hours it could be computed on."""

    mape_pct: float
    """Mean of ``|actual - predicted| / actual`` [%]; NaN when no hour counts."""
    hours: int
    """Hours that count: actual known and non-zero, every prediction known."""
    zero_hours_skipped: int
    """Hours with zero actual consumption, left out (their percentage error is undefined)."""


def mape_pct(actual_wh: npt.ArrayLike, *predicted_wh: npt.ArrayLike) -> list[Mape]:
    """Return the MAPE of each prediction, all over the same hours.

    An hour counts when the actual is known and non-zero and *every* prediction is known, so
    the results compare like with like. Hours of zero consumption are skipped and counted.

    Parameters
    ----------
    actual_wh : array_like
        Measured energy per hour [Wh].
    *predicted_wh : array_like
        Predictions per hour [Wh], aligned with ``actual_wh``.

    Raises:
        ValueError: shapes differ.
    """
    actual = np.asarray(actual_wh, dtype=np.float64)
    preds = [np.asarray(p, dtype=np.float64) for p in predicted_wh]
    if any(p.shape != actual.shape for p in preds):
        raise ValueError("every prediction must have the shape of actual_wh")
    known = ~np.isnan(actual)
    for p in preds:
        known &= ~np.isnan(p)
    zero = known & (actual == 0)
    counted = known & ~zero
    n = int(counted.sum())
    out = []
    for p in preds:
        ape = np.abs(actual[counted] - p[counted]) / np.abs(actual[counted])
        out.append(Mape(float(ape.mean() * 100) if n else math.nan, n, int(zero.sum())))
    return out


# -- model ----------------------------------------------------------------------------------------


def make_model() -> HistGradientBoostingRegressor:
    """Return an unfitted, deterministic model suited to a few weeks of hourly data."""
    return HistGradientBoostingRegressor(
        max_iter=150,
        learning_rate=0.1,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        categorical_features=[0, 1],  # local hour, weekday
        early_stopping=False,
        random_state=RANDOM_STATE,
    )


def _fit(features: FloatArray, target_wh: FloatArray) -> HistGradientBoostingRegressor:
    rows = ~np.isnan(target_wh)
    model = make_model()
    # A few thousand rows gain nothing from threads; on a busy machine OpenMP threads that
    # spin-wait for each other make a fit ten times slower.
    with threadpool_limits(limits=1, user_api="openmp"):
        model.fit(features[rows], target_wh[rows])
    return model


def _predict(model: HistGradientBoostingRegressor, features: FloatArray) -> FloatArray:
    with threadpool_limits(limits=1, user_api="openmp"):
        predicted = model.predict(features)
    return np.clip(np.asarray(predicted, dtype=np.float64), 0.0, None)


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        raise UsageError(
            f"Unknown time zone {tz!r}; give an IANA name like Europe/Berlin."
        ) from exc


def _local_day_bounds(day: date, tz: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    zone = _zone(tz)
    start = datetime.combine(day, datetime.min.time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")


def _check_history(series: pd.Series, before: pd.Timestamp, what: str) -> None:
    known = series[series.index < before].dropna()
    span_days = (before - known.index[0]) / pd.Timedelta(days=1) if len(known) else 0.0
    if span_days < MIN_HISTORY_DAYS:
        raise BadInputError(
            f"{what} needs at least {MIN_HISTORY_DAYS} days of hourly consumption before it, "
            f"but there are {span_days:.1f}; collect more data or ask for more history."
        )


@dataclass(frozen=True, slots=True)
class DayForecast:
    """Predicted consumption of one local day, hour by hour."""

    day: date
    hour_start: pd.DatetimeIndex
    """UTC start of each hour of the local day (23, 24 or 25 hours)."""
    predicted_wh: FloatArray
    """Predicted energy per hour [Wh], >= 0."""


def forecast_next_day(
    hour_start: pd.DatetimeIndex | npt.ArrayLike,
    consumption_wh: npt.ArrayLike,
    *,
    tz: str,
    country: str | None = None,
    temperature_c: pd.Series | None = None,
) -> DayForecast:
    """Predict the hourly consumption of the local day after the last measured hour.

    The model is fitted on every measured hour. If the last measured day is incomplete, its
    remaining hours are predicted first and serve as the 24 h lags of the next day.

    Parameters
    ----------
    hour_start : pandas.DatetimeIndex or array_like of datetime64
        Start of each measured hour (naive: UTC).
    consumption_wh : array_like
        Measured energy per hour [Wh]; NaN marks a missing hour.
    tz : str
        IANA time zone of local days, hours and holidays.
    country : str or None
        ISO 3166 code for the public-holiday feature.
    temperature_c : pandas.Series or None
        Air temperature [°C] by UTC hour start, for history and, if known, the forecast day.

    Raises:
        BadInputError: less than ``MIN_HISTORY_DAYS`` of history.
        UsageError: unknown time zone or country.
    """
    series = hourly_grid(hour_start, consumption_wh).dropna()
    if series.empty:
        raise BadInputError("There is no hourly consumption to forecast from; import data first.")
    series = hourly_grid(series.index, series.to_numpy())
    last_hour = series.index[-1]
    last_day = last_hour.tz_convert(_zone(tz)).date()
    target_day = last_day + timedelta(days=1)
    start, end = _local_day_bounds(target_day, tz)
    _check_history(series, last_hour + pd.Timedelta(hours=1), "A forecast")
    grid = series.reindex(pd.date_range(series.index[0], end, freq="h", tz="UTC", inclusive="left"))
    features = feature_matrix(grid, tz=tz, country=country, temperature_c=temperature_c)
    model = _fit(features, grid.to_numpy(dtype=np.float64))
    values = grid.copy()
    # Fill day by day: every lag is >= 24 h, so one local day's features only read earlier days.
    day = last_day
    while day <= target_day:
        day_start, day_end = _local_day_bounds(day, tz)
        todo = (values.index >= day_start) & (values.index < day_end) & values.isna().to_numpy()
        if todo.any():
            rows = feature_matrix(values, tz=tz, country=country, temperature_c=temperature_c)
            values.iloc[np.flatnonzero(todo)] = _predict(model, rows[todo])
        day += timedelta(days=1)
    target = values[(values.index >= start) & (values.index < end)]
    return DayForecast(target_day, pd.DatetimeIndex(target.index), target.to_numpy(np.float64))


@dataclass(frozen=True, slots=True)
class Backtest:
    """Rolling-origin backtest: each day predicted by a model trained only on earlier hours."""

    days: tuple[date, ...]
    model: Mape
    baseline: Mape
    """The naive same-hour-last-week forecast, over the same hours as ``model``."""
    hour_start: pd.DatetimeIndex
    actual_wh: FloatArray
    model_wh: FloatArray
    baseline_wh: FloatArray


def backtest(
    hour_start: pd.DatetimeIndex | npt.ArrayLike,
    consumption_wh: npt.ArrayLike,
    *,
    days: int,
    tz: str,
    country: str | None = None,
    temperature_c: pd.Series | None = None,
) -> Backtest:
    """Backtest the model and the naive baseline over the last ``days`` complete local days.

    For each day, the model is trained on the hours before its local midnight and predicts its
    hours with measured lags (a day-ahead forecast issued at midnight). The baseline is the
    same hour 168 h earlier. Both MAPEs are over the same hours; zero-consumption hours are
    skipped and counted.

    Parameters as in :func:`forecast_next_day`; ``days`` is the number of days to test (>= 1).

    Raises:
        UsageError: ``days`` < 1, unknown time zone or country.
        BadInputError: fewer than ``days`` complete days, or less than ``MIN_HISTORY_DAYS`` of
            history before the first tested day.
    """
    if days < 1:
        raise UsageError("The backtest needs at least 1 day; give a positive number of days.")
    series = hourly_grid(hour_start, consumption_wh).dropna()
    if series.empty:
        raise BadInputError("There is no hourly consumption to backtest; import data first.")
    series = hourly_grid(series.index, series.to_numpy())
    last_hour = series.index[-1]
    last_complete = last_hour.tz_convert(_zone(tz)).date()
    if _local_day_bounds(last_complete, tz)[1] > last_hour + pd.Timedelta(hours=1):
        last_complete -= timedelta(days=1)  # the last day is still running
    tested = tuple(last_complete - timedelta(days=k) for k in range(days - 1, -1, -1))
    first_start = _local_day_bounds(tested[0], tz)[0]
    if first_start < series.index[0]:
        raise BadInputError(
            f"There are fewer than {days} complete days of consumption to backtest; "
            "ask for fewer backtest days."
        )
    _check_history(series, first_start, "The first backtest day")
    features = feature_matrix(series, tz=tz, country=country, temperature_c=temperature_c)
    target = series.to_numpy(dtype=np.float64)
    baseline = naive_last_week_wh(series)
    predicted = np.full(target.shape, np.nan)
    tested_mask = np.zeros(target.shape, dtype=bool)
    for day in tested:
        start, end = _local_day_bounds(day, tz)
        train = np.asarray(series.index < start)
        model = _fit(features[train], target[train])
        rows = np.asarray((series.index >= start) & (series.index < end))
        predicted[rows] = _predict(model, features[rows])
        tested_mask |= rows
    actual = target[tested_mask]
    model_mape, baseline_mape = mape_pct(actual, predicted[tested_mask], baseline[tested_mask])
    return Backtest(
        days=tested,
        model=model_mape,
        baseline=baseline_mape,
        hour_start=pd.DatetimeIndex(series.index[tested_mask]),
        actual_wh=actual,
        model_wh=predicted[tested_mask],
        baseline_wh=baseline[tested_mask],
    )

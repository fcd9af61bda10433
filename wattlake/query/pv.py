"""PV and forecast figures from the lake: the rows of ``wattlake pv``, ``wattlake forecast``
and the API's ``/pv`` and ``/forecast``, composed once from
:func:`wattlake.query.energy.hourly_energy`, :mod:`wattlake.energy.pv` and
:mod:`wattlake.energy.forecast`.

The steps are separate so that a caller can speak between them (the CLI names the data source
before modelling): :func:`hourly` reads consumption and solar per hour, :func:`clearsky_pv_wh`
models production, :func:`pv_rows` balances them per local day, and :func:`next_day_forecast`
learns the next day's consumption from the measured hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from wattlake.errors import UsageError

if TYPE_CHECKING:  # pandas, pvlib and scikit-learn load only when a figure is asked for
    import numpy.typing as npt
    import pandas as pd

    from wattlake.config import Settings
    from wattlake.energy.forecast import Backtest

HOUR_MS: Final = 3_600_000
PV_COLUMNS: Final = (
    "day",
    "pv_wh",
    "load_wh",
    "self_consumed_wh",
    "export_wh",
    "import_wh",
    "self_consumption_pct",
    "self_sufficiency_pct",
    "missing_hours",
)
SITE_PV_COLUMNS: Final = (
    "day",
    "solar_wh",
    "model_wh",
    "performance_ratio",
    "consumption_wh",
    "missing_hours",
)
FORECAST_COLUMNS: Final = ("hour_start", "predicted_wh")
CLEAR_SKY_MODEL: Final = "pvlib model, clear sky"


def rounded(value: float, digits: int = 1) -> float | None:
    """Return ``value`` rounded for a row (``-0.0`` as ``0.0``), or None for NaN."""
    return None if math.isnan(value) else round(value, digits) + 0.0


@dataclass(frozen=True)
class Hourly:
    """Energy per UTC hour around a time range: NaN where no reading backs an hour."""

    hours: pd.DatetimeIndex
    load_wh: npt.NDArray[np.float64]
    """Consumption [Wh]: a site's balance, or one device channel's import."""
    solar_wh: npt.NDArray[np.float64]
    """A site's measured solar production [Wh] (all NaN without a site)."""
    source: str
    """Where the figures came from (daily rollups or raw readings)."""

    @property
    def measured(self) -> bool:
        """Return whether any hour holds measured consumption."""
        return not bool(np.isnan(self.load_wh).all())


def hourly(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    *,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
) -> Hourly:
    """Return consumption and solar production per UTC hour around [start, end) [ms].

    Raises:
        UsageError: a site with a device or channel; several devices, or several channels of
            the device and no ``channel``.
        ConfigError: no such site.
        NoDataError: no readings in the range.
    """
    import pandas as pd

    from wattlake.query.energy import hourly_energy

    if site_name is not None and (device_id is not None or channel is not None):
        raise UsageError("A site takes its own channels; leave out the device and channel.")
    starts, load_wh, solar_wh, source = hourly_energy(
        settings, start_ms, end_ms, device_id=device_id, channel=channel, site_name=site_name
    )
    hours = pd.DatetimeIndex(pd.to_datetime(starts, unit="ms", utc=True))
    return Hourly(hours, load_wh, solar_wh, source)


def clearsky_pv_wh(
    hours: pd.DatetimeIndex,
    *,
    kwp: float,
    lat: float,
    lon: float,
    tilt: float = 30.0,
    azimuth: float = 180.0,
    losses: float = 14.0,
) -> npt.NDArray[np.float64]:
    """Return a system's modelled production per hour under clear sky (pvlib) [Wh].

    ``kwp`` is the peak power [kWp], ``lat``/``lon`` the position [°], ``tilt`` the module
    tilt from horizontal [°], ``azimuth`` the direction the modules face [°] and ``losses``
    the system losses [%].
    """
    from wattlake.energy import pv as pvmod

    system = pvmod.PVSystem(
        lat, lon, kwp, tilt_deg=tilt, azimuth_deg=azimuth, system_loss_pct=losses
    )
    return pvmod.model_pv_energy_wh(system, pvmod.clearsky_weather(lat, lon, hours))


def _balance_row(label: str, b: Any) -> dict[str, Any]:
    return {
        "day": label,
        "pv_wh": rounded(b.pv_energy_wh),
        "load_wh": rounded(b.load_energy_wh),
        "self_consumed_wh": rounded(b.self_consumed_wh),
        "export_wh": rounded(b.export_wh),
        "import_wh": rounded(b.import_wh),
        "self_consumption_pct": rounded(100 * b.self_consumption_ratio, 2),
        "self_sufficiency_pct": rounded(100 * b.self_sufficiency_ratio, 2),
        "missing_hours": b.missing_hours,
    }


def pv_rows(
    energy: Hourly, pv_wh: npt.NDArray[np.float64], tz: str, *, site: bool
) -> list[dict[str, Any]]:
    """Return production ``pv_wh`` [Wh per hour] against ``energy`` per local day of ``tz``.

    With ``site``, rows of :data:`SITE_PV_COLUMNS`: the measured solar against the model
    (performance ratio) and the consumption. Without, rows of :data:`PV_COLUMNS`: the balance
    of production and consumption (self-consumption, export, import) per day and a total.
    """
    from wattlake.energy import pv as pvmod

    hours, load_wh = energy.hours, energy.load_wh
    if site:
        days = pvmod.daily_performance(hours, energy.solar_wh, pv_wh, tz)
        loads = dict(pvmod.daily_pv_balance(hours, pv_wh, np.nan_to_num(load_wh), tz))
        return [
            {
                "day": d.day.isoformat(),
                "solar_wh": rounded(d.measured_wh),
                "model_wh": rounded(d.model_wh),
                "performance_ratio": rounded(d.performance_ratio, 4),
                "consumption_wh": rounded(loads[d.day].load_energy_wh),
                "missing_hours": d.missing_hours,
            }
            for d in days
        ]
    rows = [
        _balance_row(day.isoformat(), balance)
        for day, balance in pvmod.daily_pv_balance(hours, pv_wh, load_wh, tz)
    ]
    rows.append(_balance_row("total", pvmod.pv_balance(pv_wh, load_wh)))
    return rows


def forecast_range_ms(until_ms: int | None, days_history: int, tz: str) -> tuple[int, int]:
    """Return [start, end) [ms] of ``days_history`` local days of history before ``until_ms``
    (default: the start of the current hour)."""
    from wattlake.energy.buckets import local_midnight_ms, zone

    zi = zone(tz)
    if until_ms is None:
        end_ms = int(datetime.now(UTC).timestamp() * 1000) // HOUR_MS * HOUR_MS
    else:
        end_ms = until_ms
    end_day = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zi).date()
    start_ms = local_midnight_ms(end_day.fromordinal(end_day.toordinal() - days_history), zi)
    return start_ms, end_ms


def check_backtest_history(days_history: int, backtest_days: int) -> None:
    """Check that the history holds the backtest days and the model's minimum history.

    Raises:
        UsageError: too little history for the backtest.
    """
    from wattlake.energy.forecast import MIN_HISTORY_DAYS

    if backtest_days and days_history < backtest_days + MIN_HISTORY_DAYS:
        raise UsageError(
            f"The history must hold at least the backtest days + {MIN_HISTORY_DAYS}; "
            "ask for more history or fewer backtest days."
        )


@dataclass(frozen=True)
class NextDay:
    """A forecast of the next local day's consumption, with its backtest."""

    day: date
    rows: list[dict[str, Any]]
    """Rows of :data:`FORECAST_COLUMNS`: local hour start, predicted consumption [Wh]."""
    backtest: Backtest | None


def next_day_forecast(
    energy: Hourly, tz: str, country: str | None, backtest_days: int
) -> NextDay | None:
    """Return the next local day's consumption per hour learnt from ``energy``, and the
    backtest of its last ``backtest_days`` days (none for 0); None when no hour is measured.

    Hours after the last measured one are left out: they are not consumption of zero, only
    not measured yet. ``country`` (ISO 3166) gives the public holidays.
    """
    from wattlake.energy import forecast as fc
    from wattlake.energy.buckets import zone

    measured = np.flatnonzero(~np.isnan(energy.load_wh))
    if measured.size == 0:
        return None
    hours, load_wh = energy.hours[: measured[-1] + 1], energy.load_wh[: measured[-1] + 1]
    result = fc.forecast_next_day(hours, load_wh, tz=tz, country=country)
    zi = zone(tz)
    rows = [
        {"hour_start": t.tz_convert(zi).isoformat(), "predicted_wh": rounded(float(v))}
        for t, v in zip(result.hour_start, result.predicted_wh, strict=True)
    ]
    bt = None
    if backtest_days:
        bt = fc.backtest(hours, load_wh, days=backtest_days, tz=tz, country=country)
    return NextDay(result.day, rows, bt)

"""PV and forecast figures for the API, composed from the same library calls as ``wattlake pv``
and ``wattlake forecast`` (:func:`wattlake.query.rollups.hourly_energy`,
:mod:`wattlake.energy.pv`, :mod:`wattlake.energy.forecast`).

The API models PV production offline with pvlib under clear sky (a system's kWp, position,
tilt, azimuth and losses); a PVGIS file is a file on the CLI's machine and is not taken here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

from wattlake.config import Settings
from wattlake.errors import NoDataError, UsageError
from wattlake.web.figures import Rows

HOUR_MS: Final = 3_600_000
PV_COLUMNS: Final = [
    "day",
    "pv_wh",
    "load_wh",
    "self_consumed_wh",
    "export_wh",
    "import_wh",
    "self_consumption_pct",
    "self_sufficiency_pct",
    "missing_hours",
]
SITE_PV_COLUMNS: Final = [
    "day",
    "solar_wh",
    "model_wh",
    "performance_ratio",
    "consumption_wh",
    "missing_hours",
]
FORECAST_COLUMNS: Final = ["hour_start", "predicted_wh"]


def _r(value: float, digits: int = 1) -> float | None:
    return None if math.isnan(value) else round(value, digits) + 0.0


def _hourly(
    settings: Settings,
    start_ms: int,
    end_ms: int,
    device_id: str | None,
    channel: int | None,
    site_name: str | None,
) -> tuple[Any, Any, Any, str]:
    import pandas as pd

    from wattlake.query.rollups import hourly_energy

    if site_name is not None and (device_id is not None or channel is not None):
        raise UsageError("A site takes its own channels; leave out the device and channel.")
    starts, load_wh, solar_wh, source = hourly_energy(
        settings, start_ms, end_ms, device_id=device_id, channel=channel, site_name=site_name
    )
    hours = pd.DatetimeIndex(pd.to_datetime(starts, unit="ms", utc=True))
    return hours, load_wh, solar_wh, source


def _balance_row(label: str, b: Any) -> dict[str, Any]:
    return {
        "day": label,
        "pv_wh": _r(b.pv_energy_wh),
        "load_wh": _r(b.load_energy_wh),
        "self_consumed_wh": _r(b.self_consumed_wh),
        "export_wh": _r(b.export_wh),
        "import_wh": _r(b.import_wh),
        "self_consumption_pct": _r(100 * b.self_consumption_ratio, 2),
        "self_sufficiency_pct": _r(100 * b.self_sufficiency_ratio, 2),
        "missing_hours": b.missing_hours,
    }


def pv(
    settings: Settings,
    *,
    start_ms: int,
    end_ms: int,
    kwp: float,
    lat: float,
    lon: float,
    tilt: float = 30.0,
    azimuth: float = 180.0,
    losses: float = 14.0,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
) -> Rows:
    """Return what ``wattlake pv --kwp --lat --lon`` prints: modelled clear-sky production
    against one device channel's consumption per local day (and a total), or with a site its
    measured solar against the model (performance ratio) and its consumption.

    Raises:
        UsageError: a site with a device, several channels and no channel, bad system values.
        NoDataError: no readings in the range.
    """
    from wattlake.energy import pv as pvmod

    zone_name = settings["energy.tz"]
    columns = SITE_PV_COLUMNS if site_name else PV_COLUMNS
    try:
        hours, load_wh, solar_wh, source = _hourly(
            settings, start_ms, end_ms, device_id, channel, site_name
        )
    except NoDataError:
        return Rows(list(columns), [], {"source": None})
    if np.isnan(load_wh).all():
        return Rows(list(columns), [], {"source": source})
    system = pvmod.PVSystem(
        lat, lon, kwp, tilt_deg=tilt, azimuth_deg=azimuth, system_loss_pct=losses
    )
    pv_wh = pvmod.model_pv_energy_wh(system, pvmod.clearsky_weather(lat, lon, hours))
    meta = {"source": source, "model": "pvlib model, clear sky", "time_zone": zone_name}
    if site_name is not None:
        days = pvmod.daily_performance(hours, solar_wh, pv_wh, zone_name)
        loads = dict(pvmod.daily_pv_balance(hours, pv_wh, np.nan_to_num(load_wh), zone_name))
        rows = [
            {
                "day": d.day.isoformat(),
                "solar_wh": _r(d.measured_wh),
                "model_wh": _r(d.model_wh),
                "performance_ratio": _r(d.performance_ratio, 4),
                "consumption_wh": _r(loads[d.day].load_energy_wh),
                "missing_hours": d.missing_hours,
            }
            for d in days
        ]
        return Rows(list(columns), rows, meta)
    rows = [
        _balance_row(day.isoformat(), balance)
        for day, balance in pvmod.daily_pv_balance(hours, pv_wh, load_wh, zone_name)
    ]
    rows.append(_balance_row("total", pvmod.pv_balance(pv_wh, load_wh)))
    return Rows(list(columns), rows, meta)


def forecast(
    settings: Settings,
    *,
    device_id: str | None = None,
    channel: int | None = None,
    site_name: str | None = None,
    days_history: int = 56,
    backtest_days: int = 7,
    until_ms: int | None = None,
) -> Rows:
    """Return what ``wattlake forecast`` prints: the next local day's consumption per hour,
    learnt from ``days_history`` days before ``until_ms`` (default: the current hour), with
    the backtest's MAPE of the model and of the same-hour-last-week baseline in the meta.

    Raises:
        UsageError: too little history for the backtest, a site with a device, several
            channels and no channel.
    """
    from wattlake.energy import forecast as fc
    from wattlake.energy.buckets import local_midnight_ms, zone

    country = settings["energy.country"] or None
    zone_name = settings["energy.tz"]
    zi = zone(zone_name)
    end_ms = until_ms if until_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    if until_ms is None:
        end_ms = end_ms // HOUR_MS * HOUR_MS
    end_day = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zi).date()
    start_ms = local_midnight_ms(end_day.fromordinal(end_day.toordinal() - days_history), zi)
    if backtest_days and days_history < backtest_days + fc.MIN_HISTORY_DAYS:
        raise UsageError(
            f"The history must hold at least the backtest days + {fc.MIN_HISTORY_DAYS}; "
            "ask for more history or fewer backtest days."
        )
    try:
        hours, load_wh, _, source = _hourly(
            settings, start_ms, end_ms, device_id, channel, site_name
        )
    except NoDataError:
        return Rows(list(FORECAST_COLUMNS), [], {"source": None})
    measured = np.flatnonzero(~np.isnan(load_wh))
    if measured.size == 0:
        return Rows(list(FORECAST_COLUMNS), [], {"source": source})
    hours, load_wh = hours[: measured[-1] + 1], load_wh[: measured[-1] + 1]
    result = fc.forecast_next_day(hours, load_wh, tz=zone_name, country=country)
    rows = [
        {"hour_start": t.tz_convert(zi).isoformat(), "predicted_wh": _r(float(v))}
        for t, v in zip(result.hour_start, result.predicted_wh, strict=True)
    ]
    meta: dict[str, Any] = {"source": source, "day": result.day.isoformat()}
    if backtest_days:
        bt = fc.backtest(hours, load_wh, days=backtest_days, tz=zone_name, country=country)
        meta["backtest"] = {
            "first_day": str(bt.days[0]),
            "last_day": str(bt.days[-1]),
            "model_mape_pct": _r(bt.model.mape_pct, 2),
            "baseline_mape_pct": _r(bt.baseline.mape_pct, 2),
            "hours": bt.model.hours,
            "zero_hours_skipped": bt.model.zero_hours_skipped,
        }
    return Rows(list(FORECAST_COLUMNS), rows, meta)

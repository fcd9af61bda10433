"""PV and forecast figures for the API, from the same library calls as ``wattlake pv`` and
``wattlake forecast`` (:mod:`wattlake.query.pv`).

The API models PV production offline with pvlib under clear sky (a system's kWp, position,
tilt, azimuth and losses); a PVGIS file is a file on the CLI's machine and is not taken here.
"""

from __future__ import annotations

from typing import Any

from wattlake.config import Settings
from wattlake.errors import NoDataError
from wattlake.query import pv as pvq
from wattlake.web.figures import Rows


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
    """
    zone_name = settings["energy.tz"]
    columns = list(pvq.SITE_PV_COLUMNS if site_name else pvq.PV_COLUMNS)
    try:
        energy = pvq.hourly(
            settings, start_ms, end_ms, device_id=device_id, channel=channel, site_name=site_name
        )
    except NoDataError:
        return Rows(columns, [], {"source": None})
    if not energy.measured:
        return Rows(columns, [], {"source": energy.source})
    pv_wh = pvq.clearsky_pv_wh(
        energy.hours, kwp=kwp, lat=lat, lon=lon, tilt=tilt, azimuth=azimuth, losses=losses
    )
    meta = {"source": energy.source, "model": pvq.CLEAR_SKY_MODEL, "time_zone": zone_name}
    return Rows(columns, pvq.pv_rows(energy, pv_wh, zone_name, site=site_name is not None), meta)


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
    country = settings["energy.country"] or None
    zone_name = settings["energy.tz"]
    start_ms, end_ms = pvq.forecast_range_ms(until_ms, days_history, zone_name)
    pvq.check_backtest_history(days_history, backtest_days)
    columns = list(pvq.FORECAST_COLUMNS)
    try:
        energy = pvq.hourly(
            settings, start_ms, end_ms, device_id=device_id, channel=channel, site_name=site_name
        )
    except NoDataError:
        return Rows(columns, [], {"source": None})
    result = pvq.next_day_forecast(energy, zone_name, country, backtest_days)
    if result is None:
        return Rows(columns, [], {"source": energy.source})
    meta: dict[str, Any] = {"source": energy.source, "day": result.day.isoformat()}
    if (bt := result.backtest) is not None:
        meta["backtest"] = {
            "first_day": str(bt.days[0]),
            "last_day": str(bt.days[-1]),
            "model_mape_pct": pvq.rounded(bt.model.mape_pct, 2),
            "baseline_mape_pct": pvq.rounded(bt.baseline.mape_pct, 2),
            "hours": bt.model.hours,
            "zero_hours_skipped": bt.model.zero_hours_skipped,
        }
    return Rows(columns, result.rows, meta)

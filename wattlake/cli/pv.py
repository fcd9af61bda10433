"""Commands of PV and forecasting: ``wattlake pv`` and ``wattlake forecast``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    existing_lake,
    load_settings,
    say,
)
from wattlake.errors import BadInputError, NoDataError, UsageError

if TYPE_CHECKING:  # numpy and pandas load only when a command runs (quick start-up)
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from wattlake.config import Settings
    from wattlake.query.pv import Hourly

TzOption = Annotated[
    str | None, typer.Option("--tz", help="IANA time zone of local days [setting energy.tz].")
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="Device id (needed when the lake has several).")
]
ChannelOption = Annotated[
    int | None,
    typer.Option(
        "--channel",
        help="The device's channel (needed when it has several: channels are never summed).",
        min=0,
    ),
]
SiteOption = Annotated[
    str | None,
    typer.Option("--site", help="A site of wattlake.toml: its solar channels and consumption."),
]


def register(app: typer.Typer) -> None:
    """Add the PV and forecast commands to ``app``."""
    app.command("pv")(pv)
    app.command("forecast")(forecast)


def _hourly(
    settings: Settings,
    device: str | None,
    start_ms: int,
    end_ms: int,
    site: str | None,
    channel: int | None,
) -> Hourly:
    from wattlake.cli.energy import say_source
    from wattlake.query.pv import hourly

    energy = hourly(settings, start_ms, end_ms, device_id=device, channel=channel, site_name=site)
    say_source(energy.source)
    return energy


def _range_ms(start: str, end: str, tz: str) -> tuple[int, int]:
    from wattlake.energy.buckets import parse_time_ms, zone

    zi = zone(tz)
    start_ms, end_ms = parse_time_ms(start, zi), parse_time_ms(end, zi)
    if end_ms <= start_ms:
        raise UsageError("--end must be after --start; give a later --end.")
    return start_ms, end_ms


def _site_or_channel(site: str | None, device: str | None, channel: int | None) -> None:
    if site is not None and (device is not None or channel is not None):
        raise UsageError("--site takes the site's channels; leave out --device and --channel.")


# -- wattlake pv ------------------------------------------------------------------------------


def pv(
    start: Annotated[str, typer.Option(help="First day or instant (inclusive).")],
    end: Annotated[str, typer.Option(help="Last day or instant (exclusive).")],
    pvgis: Annotated[
        Path | None, typer.Option(help="PVGIS seriescalc (with PV output) or TMY file, CSV/JSON.")
    ] = None,
    kwp: Annotated[float | None, typer.Option(help="Peak power of the system [kWp].")] = None,
    lat: Annotated[float | None, typer.Option(help="Latitude [°], north positive.")] = None,
    lon: Annotated[float | None, typer.Option(help="Longitude [°], east positive.")] = None,
    tilt: Annotated[float, typer.Option(help="Module tilt from horizontal [°].")] = 30.0,
    azimuth: Annotated[
        float, typer.Option(help="Direction the modules face [°]: 90 east, 180 south, 270 west.")
    ] = 180.0,
    losses: Annotated[float, typer.Option(help="System losses [%], as in PVGIS.")] = 14.0,
    device: DeviceOption = None,
    channel: ChannelOption = None,
    site: SiteOption = None,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """PV production against measured consumption per day: self-consumption, export, import.

    With --site, the site's measured solar production per day against the model: the
    performance ratio (measured / model), and the site's consumption. Without a site the
    consumption is one device channel's import (--device, and --channel when it has several).

    Production comes from a PVGIS seriescalc file (its P column), or from the offline pvlib
    model of a system (--kwp, and --lat/--lon unless the PVGIS TMY file gives them) under
    clear sky or under the weather of a PVGIS TMY file.
    """
    settings = load_settings(data_dir, config, **{"energy.tz": tz})
    existing_lake(settings)
    _site_or_channel(site, device, channel)
    zone_name = settings["energy.tz"]
    start_ms, end_ms = _range_ms(start, end, zone_name)
    if pvgis is None and (kwp is None or lat is None or lon is None):
        raise UsageError(
            "Give --pvgis FILE, or --kwp, --lat and --lon to model the system under clear sky."
        )
    if pvgis is not None and not pvgis.is_file():
        raise UsageError(f"The PVGIS file {pvgis} does not exist.")
    import numpy as np

    from wattlake.query import pv as pvq

    columns = list(pvq.SITE_PV_COLUMNS if site else pvq.PV_COLUMNS)
    try:
        energy = _hourly(settings, device, start_ms, end_ms, site, channel)
    except NoDataError:
        _no_data(settings, fmt, columns, device, start_ms, end_ms)
        return
    if not energy.measured:  # readings near the range, none in it
        _no_data(settings, fmt, columns, device, start_ms, end_ms)
        return
    pv_wh, source = _production(energy.hours, pvgis, kwp, lat, lon, tilt, azimuth, losses)
    if np.isnan(pv_wh).all():
        raise BadInputError(
            f"The PVGIS file {pvgis} covers none of these hours; use a file that spans the "
            "same months."
        )
    rows = pvq.pv_rows(energy, pv_wh, zone_name, site=site is not None)
    if site is not None:
        emit_rows(
            rows,
            fmt,
            columns=columns,
            title=f"Site {site}: measured solar against {source}, {zone_name}",
        )
        return
    emit_rows(rows, fmt, title=f"PV ({source}) against measured consumption, {zone_name}")


def _no_data(
    settings: Settings,
    fmt: OutputFormat,
    columns: list[str],
    device: str | None,
    start_ms: int,
    end_ms: int,
) -> None:
    """Print an empty result and say which devices and time range the lake does hold."""
    from wattlake.query.inventory import no_data_message

    emit_rows([], fmt, columns=columns)
    say(no_data_message(settings, device_id=device, start_ms=start_ms, end_ms=end_ms))


def _production(
    hours: pd.DatetimeIndex,
    pvgis: Path | None,
    kwp: float | None,
    lat: float | None,
    lon: float | None,
    tilt: float,
    azimuth: float,
    losses: float,
) -> tuple[npt.NDArray[np.float64], str]:
    from wattlake.energy import pv as pvmod
    from wattlake.query.pv import CLEAR_SKY_MODEL, clearsky_pv_wh

    if pvgis is not None:
        data = pvmod.read_pvgis(pvgis)
        if data.kind == "seriescalc":
            energy_wh = pvmod.pvgis_pv_energy_wh(data, hours)
            if kwp is not None:
                if not data.peak_power_kw:
                    raise UsageError(
                        "The PVGIS file does not state its peak power, so --kwp cannot rescale "
                        "it; leave --kwp out."
                    )
                energy_wh = energy_wh * (kwp / data.peak_power_kw)
            return energy_wh, f"PVGIS seriescalc {pvgis.name}"
        if kwp is None:
            raise UsageError("A PVGIS TMY file is weather only; give --kwp to model the system.")
        system = pvmod.PVSystem(
            lat if lat is not None else data.latitude_deg,
            lon if lon is not None else data.longitude_deg,
            kwp,
            tilt_deg=tilt,
            azimuth_deg=azimuth,
            system_loss_pct=losses,
            altitude_m=data.elevation_m,
        )
        weather = pvmod.pvgis_weather(data, hours)
        return pvmod.model_pv_energy_wh(system, weather), f"pvlib model, TMY {pvgis.name}"
    if kwp is None or lat is None or lon is None:
        raise UsageError(
            "Give --pvgis FILE, or --kwp, --lat and --lon to model the system under clear sky."
        )
    pv_wh = clearsky_pv_wh(
        hours, kwp=kwp, lat=lat, lon=lon, tilt=tilt, azimuth=azimuth, losses=losses
    )
    return pv_wh, CLEAR_SKY_MODEL


# -- wattlake forecast ------------------------------------------------------------------------


def forecast(
    device: DeviceOption = None,
    channel: ChannelOption = None,
    site: SiteOption = None,
    days_history: Annotated[
        int, typer.Option("--days-history", help="Days of history to learn from.", min=15)
    ] = 56,
    backtest_days: Annotated[
        int, typer.Option("--backtest-days", help="Last days to backtest (0: none).", min=0)
    ] = 7,
    country: Annotated[
        str | None,
        typer.Option(help="ISO 3166 country of public holidays, e.g. DE [setting energy.country]."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Use history before this day or instant (default: the current hour)."),
    ] = None,
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Predict the next day's hourly consumption; backtest model and naive baseline (MAPE).

    Consumption is a site's (--site) or one device channel's import (--device, and --channel
    when it has several). Prints one row per hour of the next local day (hour_start,
    predicted_wh). The backtest
    summary goes to stderr: MAPE of the model and of the same-hour-last-week baseline over the
    same hours, hours of zero consumption skipped.
    """
    from wattlake.energy.buckets import parse_time_ms, zone
    from wattlake.energy.forecast import MIN_HISTORY_DAYS
    from wattlake.query import pv as pvq

    settings = load_settings(data_dir, config, **{"energy.tz": tz, "energy.country": country})
    existing_lake(settings)
    _site_or_channel(site, device, channel)
    country = settings["energy.country"] or None
    zone_name = settings["energy.tz"]
    until_ms = None if until is None else parse_time_ms(until, zone(zone_name))
    start_ms, end_ms = pvq.forecast_range_ms(until_ms, days_history, zone_name)
    if backtest_days and days_history < backtest_days + MIN_HISTORY_DAYS:
        raise UsageError(
            f"--days-history must be at least --backtest-days + {MIN_HISTORY_DAYS}; "
            "ask for more history or fewer backtest days."
        )
    columns = list(pvq.FORECAST_COLUMNS)
    try:
        energy = _hourly(settings, device, start_ms, end_ms, site, channel)
    except NoDataError:
        _no_data(settings, fmt, columns, device, start_ms, end_ms)
        return
    result = pvq.next_day_forecast(energy, zone_name, country, backtest_days)
    if result is None:
        _no_data(settings, fmt, columns, device, start_ms, end_ms)
        return
    emit_rows(result.rows, fmt, title=f"Forecast for {result.day.isoformat()} ({zone_name})")
    if (bt := result.backtest) is not None:
        say(
            f"backtest {bt.days[0]}..{bt.days[-1]}: model MAPE {_fmt_pct(bt.model.mape_pct)}, "
            f"baseline (same hour last week) MAPE {_fmt_pct(bt.baseline.mape_pct)} over "
            f"{bt.model.hours} hours ({bt.model.zero_hours_skipped} zero-consumption hours "
            "skipped)"
        )


def _fmt_pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} %"

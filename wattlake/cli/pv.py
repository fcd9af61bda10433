"""Commands of PV and forecasting: ``wattlake pv`` and ``wattlake forecast``."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    load_settings,
    say,
)
from wattlake.errors import BadInputError, NoDataError, UsageError

if TYPE_CHECKING:  # numpy and pandas load only when a command runs (quick start-up)
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from wattlake.config import Settings

_MS_PER_HOUR = 3_600_000

TzOption = Annotated[
    str | None, typer.Option("--tz", help="IANA time zone of local days [setting energy.tz].")
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="Device id (needed when the lake has several).")
]


def register(app: typer.Typer) -> None:
    """Add the PV and forecast commands to ``app``."""
    app.command("pv")(pv)
    app.command("forecast")(forecast)


# -- hourly consumption from the lake ---------------------------------------------------------


def hourly_consumption(
    settings: Settings, device: str | None, start_ms: int, end_ms: int
) -> tuple[pd.DatetimeIndex, npt.NDArray[np.float64]]:
    """Return the device's imported energy per UTC hour in [start, end) [Wh].

    Hours are whole UTC hours (edges floored/ceiled to the hour); channels are summed; an hour
    with no coverage at all is NaN.

    Raises:
        UsageError: several devices and no ``device``.
        NoDataError: no readings in the range.
    """
    import numpy as np
    import pandas as pd

    from wattlake.query.energy import series_energy, split_series
    from wattlake.query.engine import load_readings

    first_ms = start_ms // _MS_PER_HOUR * _MS_PER_HOUR
    last_ms = -(-end_ms // _MS_PER_HOUR) * _MS_PER_HOUR
    edges_ms = np.arange(first_ms, last_ms + 1, _MS_PER_HOUR, dtype=np.int64)
    hours = pd.DatetimeIndex(pd.to_datetime(edges_ms[:-1], unit="ms", utc=True))
    table = load_readings(settings, device_id=device, start_ms=first_ms, end_ms=last_ms)
    series = split_series(table)
    devices = sorted({s.device_id for s in series})
    if not devices:
        which = f"device {device}" if device else "any device"
        raise NoDataError(f"The lake has no readings of {which} in this range.")
    if len(devices) > 1:
        raise UsageError(
            f"The lake has {len(devices)} devices ({', '.join(devices[:5])}); "
            "pick one with --device."
        )
    import_wh = np.zeros(len(hours))
    covered_s = np.zeros(len(hours))
    for s in series:
        result = series_energy(
            s,
            edges_ms,
            max_gap_s=settings["energy.max_gap_s"],
            max_power_w=settings["energy.max_power_w"],
        )
        import_wh += result.import_wh
        covered_s += result.covered_s
    return hours, np.where(covered_s > 0, import_wh, np.nan)


def _range_ms(start: str, end: str, tz: str) -> tuple[int, int]:
    from wattlake.energy.buckets import parse_time_ms, zone

    zi = zone(tz)
    start_ms, end_ms = parse_time_ms(start, zi), parse_time_ms(end, zi)
    if end_ms <= start_ms:
        raise UsageError("--end must be after --start; give a later --end.")
    return start_ms, end_ms


def _r(value: float, digits: int = 1) -> float | None:
    return None if math.isnan(value) else round(value, digits) + 0.0


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
    tz: TzOption = None,
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """PV production against measured consumption per day: self-consumption, export, import.

    Production comes from a PVGIS seriescalc file (its P column), or from the offline pvlib
    model of a system (--kwp, and --lat/--lon unless the PVGIS TMY file gives them) under
    clear sky or under the weather of a PVGIS TMY file.
    """
    from wattlake.energy import pv as pvmod

    settings = load_settings(data_dir, config, **{"energy.tz": tz})
    zone_name = settings["energy.tz"]
    start_ms, end_ms = _range_ms(start, end, zone_name)
    import numpy as np

    try:
        hours, load_wh = hourly_consumption(settings, device, start_ms, end_ms)
    except NoDataError:
        _no_data(settings, fmt, PV_COLUMNS, device, start_ms, end_ms)
        return
    pv_wh, source = _production(pvmod, hours, pvgis, kwp, lat, lon, tilt, azimuth, losses)
    if np.isnan(pv_wh).all():
        raise BadInputError(
            f"The PVGIS file {pvgis} covers none of these hours; use a file that spans the "
            "same months."
        )
    rows: list[dict[str, Any]] = []
    for day, balance in pvmod.daily_pv_balance(hours, pv_wh, load_wh, zone_name):
        rows.append(_balance_row(day.isoformat(), balance))
    rows.append(_balance_row("total", pvmod.pv_balance(pv_wh, load_wh)))
    emit_rows(rows, fmt, title=f"PV ({source}) against measured consumption, {zone_name}")


PV_COLUMNS = [
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
FORECAST_COLUMNS = ["hour_start", "predicted_wh"]


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
    pvmod: Any,
    hours: pd.DatetimeIndex,
    pvgis: Path | None,
    kwp: float | None,
    lat: float | None,
    lon: float | None,
    tilt: float,
    azimuth: float,
    losses: float,
) -> tuple[npt.NDArray[np.float64], str]:
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
    system = pvmod.PVSystem(
        lat, lon, kwp, tilt_deg=tilt, azimuth_deg=azimuth, system_loss_pct=losses
    )
    weather = pvmod.clearsky_weather(lat, lon, hours)
    return pvmod.model_pv_energy_wh(system, weather), "pvlib model, clear sky"


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


# -- wattlake forecast ------------------------------------------------------------------------


def forecast(
    device: DeviceOption = None,
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

    Prints one row per hour of the next local day (hour_start, predicted_wh). The backtest
    summary goes to stderr: MAPE of the model and of the same-hour-last-week baseline over the
    same hours, hours of zero consumption skipped.
    """
    from wattlake.energy import forecast as fc
    from wattlake.energy.buckets import local_midnight_ms, parse_time_ms, zone

    settings = load_settings(data_dir, config, **{"energy.tz": tz, "energy.country": country})
    country = settings["energy.country"] or None
    zone_name = settings["energy.tz"]
    zi = zone(zone_name)
    if until is None:
        end_ms = int(datetime.now(UTC).timestamp() * 1000) // _MS_PER_HOUR * _MS_PER_HOUR
    else:
        end_ms = parse_time_ms(until, zi)
    end_day = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zi).date()
    start_ms = local_midnight_ms(end_day.fromordinal(end_day.toordinal() - days_history), zi)
    if backtest_days and days_history < backtest_days + fc.MIN_HISTORY_DAYS:
        raise UsageError(
            f"--days-history must be at least --backtest-days + {fc.MIN_HISTORY_DAYS}; "
            "ask for more history or fewer backtest days."
        )
    import numpy as np

    try:
        hours, load_wh = hourly_consumption(settings, device, start_ms, end_ms)
    except NoDataError:
        _no_data(settings, fmt, FORECAST_COLUMNS, device, start_ms, end_ms)
        return
    # Hours after the last measurement are not consumption of zero, just not measured yet.
    measured = np.flatnonzero(~np.isnan(load_wh))
    if measured.size == 0:
        emit_rows([], fmt, columns=FORECAST_COLUMNS)
        say(
            "No hour in this range has measured consumption; check --device and --until, or "
            "raise energy.max_gap_s if the meter reports less often than every "
            f"{settings['energy.max_gap_s']:g} s."
        )
        return
    hours, load_wh = hours[: measured[-1] + 1], load_wh[: measured[-1] + 1]
    result = fc.forecast_next_day(hours, load_wh, tz=zone_name, country=country)
    rows = [
        {"hour_start": t.tz_convert(zi).isoformat(), "predicted_wh": _r(float(v))}
        for t, v in zip(result.hour_start, result.predicted_wh, strict=True)
    ]
    emit_rows(rows, fmt, title=f"Forecast for {result.day.isoformat()} ({zone_name})")
    if backtest_days:
        bt = fc.backtest(hours, load_wh, days=backtest_days, tz=zone_name, country=country)
        say(
            f"backtest {bt.days[0]}..{bt.days[-1]}: model MAPE {_fmt_pct(bt.model.mape_pct)}, "
            f"baseline (same hour last week) MAPE {_fmt_pct(bt.baseline.mape_pct)} over "
            f"{bt.model.hours} hours ({bt.model.zero_hours_skipped} zero-consumption hours "
            "skipped)"
        )


def _fmt_pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f} %"

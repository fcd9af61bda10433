"""Photovoltaic production: PVGIS files, an offline pvlib model, and the balance with the load.

Three layers, pvlib-style:

1. Pure functions over hourly energy arrays [Wh] (``self_consumed_energy_wh``,
   ``export_energy_wh``, ``import_energy_wh``, ``pv_balance``, ``daily_pv_balance``).
2. PVGIS file import (``read_pvgis``) for ``seriescalc`` (hourly radiation with PV output) and
   ``tmy`` (typical meteorological year) downloads, CSV or JSON.
3. An offline model of a fixed-tilt system (``PVSystem``, ``model_pv_energy_wh``) driven by
   clear-sky irradiance (``clearsky_weather``) or by a PVGIS TMY (``pvgis_weather``). Nothing
   here touches the network.

Conventions: hourly values are labelled by the start of their hour in UTC (``hour_start``); an
hourly mean power [W] held for one hour is an energy [Wh] of the same number. Azimuth follows
pvlib: degrees east of north, 180 = south (PVGIS's own "aspect" is this minus 180).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pvlib

from wattlake.errors import BadInputError, UsageError

FloatArray = npt.NDArray[np.float64]

HOUR: Final = pd.Timedelta(hours=1)
HALF_HOUR: Final = pd.Timedelta(minutes=30)

# PVGIS column names -> pvlib's canonical variable names (as pvlib.iotools maps them), plus
# the PV output ``P`` [W] of seriescalc with PV calculation.
PVGIS_VARIABLE_MAP: Final[Mapping[str, str]] = {
    **pvlib.iotools.pvgis.VARIABLE_MAP,
    "P": "power_w",
}

PVGISKind = Literal["seriescalc", "tmy"]


# -- 1. balance of PV production and load, hour by hour ------------------------------------------


def _pair(pv_energy_wh: npt.ArrayLike, load_energy_wh: npt.ArrayLike) -> tuple[FloatArray, ...]:
    pv = np.asarray(pv_energy_wh, dtype=np.float64)
    load = np.asarray(load_energy_wh, dtype=np.float64)
    if pv.shape != load.shape:
        raise ValueError(f"pv_energy_wh has shape {pv.shape} but load_energy_wh {load.shape}")
    if np.any(pv < 0) or np.any(load < 0):
        raise ValueError("pv_energy_wh and load_energy_wh must be >= 0 (NaN marks a missing hour)")
    return pv, load


def self_consumed_energy_wh(
    pv_energy_wh: npt.ArrayLike, load_energy_wh: npt.ArrayLike
) -> FloatArray:
    """Return the PV energy used on site in each hour.

    Within one hour the load draws from PV first: ``min(pv, load)``. Netting per hour counts a
    cloud passing at 10:20 and a kettle at 10:40 as matched, so the result is an upper bound of
    the instantaneous self-consumption.

    Parameters
    ----------
    pv_energy_wh : array_like
        PV production per hour [Wh], >= 0; NaN marks a missing hour.
    load_energy_wh : array_like
        Consumption on site per hour [Wh], >= 0; NaN marks a missing hour.

    Returns
    -------
    numpy.ndarray
        Self-consumed energy per hour [Wh]; NaN where either input is NaN.

    Raises:
        ValueError: shapes differ or a value is negative.
    """
    pv, load = _pair(pv_energy_wh, load_energy_wh)
    return np.minimum(pv, load)


def export_energy_wh(pv_energy_wh: npt.ArrayLike, load_energy_wh: npt.ArrayLike) -> FloatArray:
    """Return the PV energy not used on site (fed to the grid) in each hour [Wh].

    ``max(pv - load, 0)``; NaN where either input is NaN. Parameters as in
    :func:`self_consumed_energy_wh`.

    Raises:
        ValueError: shapes differ or a value is negative.
    """
    pv, load = _pair(pv_energy_wh, load_energy_wh)
    return pv - np.minimum(pv, load)


def import_energy_wh(pv_energy_wh: npt.ArrayLike, load_energy_wh: npt.ArrayLike) -> FloatArray:
    """Return the consumption not covered by PV (drawn from the grid) in each hour [Wh].

    ``max(load - pv, 0)``; NaN where either input is NaN. Parameters as in
    :func:`self_consumed_energy_wh`.

    Raises:
        ValueError: shapes differ or a value is negative.
    """
    pv, load = _pair(pv_energy_wh, load_energy_wh)
    return load - np.minimum(pv, load)


@dataclass(frozen=True, slots=True)
class PVBalance:
    """Totals of PV production against the load over a set of hours.

    Hours where either series is missing (NaN) count in ``missing_hours`` and nowhere else.
    Ratios are NaN when their denominator is zero (no PV, or no load).
    """

    hours: int
    missing_hours: int
    pv_energy_wh: float
    load_energy_wh: float
    self_consumed_wh: float
    export_wh: float
    import_wh: float
    self_consumption_ratio: float
    """Share of PV production used on site [0..1]."""
    self_sufficiency_ratio: float
    """Share of consumption covered by PV [0..1]."""


def pv_balance(pv_energy_wh: npt.ArrayLike, load_energy_wh: npt.ArrayLike) -> PVBalance:
    """Sum production, load, self-consumption, export and import over the given hours.

    Parameters
    ----------
    pv_energy_wh : array_like
        PV production per hour [Wh].
    load_energy_wh : array_like
        Consumption on site per hour [Wh].

    Returns
    -------
    PVBalance
        Totals [Wh] over the hours where both are known, and the two ratios [0..1].

    Raises:
        ValueError: shapes differ or a value is negative.
    """
    pv, load = _pair(pv_energy_wh, load_energy_wh)
    known = ~(np.isnan(pv) | np.isnan(load))
    pv_k, load_k = pv[known], load[known]
    used = np.minimum(pv_k, load_k)
    pv_sum, load_sum, used_sum = float(pv_k.sum()), float(load_k.sum()), float(used.sum())
    return PVBalance(
        hours=int(pv.size),
        missing_hours=int(pv.size - known.sum()),
        pv_energy_wh=pv_sum,
        load_energy_wh=load_sum,
        self_consumed_wh=used_sum,
        export_wh=pv_sum - used_sum,
        import_wh=load_sum - used_sum,
        self_consumption_ratio=used_sum / pv_sum if pv_sum > 0 else math.nan,
        self_sufficiency_ratio=used_sum / load_sum if load_sum > 0 else math.nan,
    )


def daily_pv_balance(
    hour_start: pd.DatetimeIndex,
    pv_energy_wh: npt.ArrayLike,
    load_energy_wh: npt.ArrayLike,
    tz: str,
) -> list[tuple[date, PVBalance]]:
    """Return one :class:`PVBalance` per local day, in date order.

    Parameters
    ----------
    hour_start : pandas.DatetimeIndex
        Start of each hour, tz-aware.
    pv_energy_wh, load_energy_wh : array_like
        PV production and consumption per hour [Wh], aligned with ``hour_start``.
    tz : str
        IANA time zone whose calendar days group the hours.

    Raises:
        ValueError: lengths differ or a value is negative.
    """
    pv, load = _pair(pv_energy_wh, load_energy_wh)
    if len(hour_start) != pv.size:
        raise ValueError(f"hour_start has {len(hour_start)} hours but the arrays {pv.size}")
    local_days = np.asarray(hour_start.tz_convert(tz).date)
    out = []
    for day in sorted(set(local_days)):
        mask = local_days == day
        out.append((day, pv_balance(pv[mask], load[mask])))
    return out


@dataclass(frozen=True)
class PerformanceDay:
    """Measured solar production of one local day against the model [Wh].

    ``performance_ratio`` is measured / model over the hours where both exist (NaN when the
    model gives nothing); ``missing_hours`` counts hours without a measurement.
    """

    day: date
    measured_wh: float
    model_wh: float
    performance_ratio: float
    missing_hours: int


def daily_performance(
    hour_start: pd.DatetimeIndex,
    measured_wh: npt.ArrayLike,
    model_wh: npt.ArrayLike,
    tz: str,
) -> list[PerformanceDay]:
    """Return measured against modelled PV production per local day, with the ratio.

    Parameters
    ----------
    hour_start : pandas.DatetimeIndex
        Start of each hour, tz-aware.
    measured_wh, model_wh : array_like
        Measured and modelled production per hour [Wh]; NaN where unknown.
    tz : str
        IANA time zone whose calendar days group the hours.

    Raises:
        ValueError: lengths differ.
    """
    measured = np.asarray(measured_wh, dtype=np.float64)
    model = np.asarray(model_wh, dtype=np.float64)
    if not len(hour_start) == measured.size == model.size:
        raise ValueError("hour_start, measured_wh and model_wh must have the same length")
    local_days = np.asarray(hour_start.tz_convert(tz).date)
    out = []
    for day in sorted(set(local_days)):
        mask = local_days == day
        both = mask & np.isfinite(measured) & np.isfinite(model)
        got, expected = float(measured[both].sum()), float(model[both].sum())
        ratio = got / expected if expected > 0 else math.nan
        missing = int((mask & ~np.isfinite(measured)).sum())
        out.append(PerformanceDay(day, got, expected, ratio, missing))
    return out


# -- 2. PVGIS files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PVGISData:
    """The content of one PVGIS ``seriescalc`` or ``tmy`` download.

    ``data`` is indexed by ``hour_start`` (UTC) with pvlib variable names: ``power_w`` (the
    PV output ``P`` [W], seriescalc with PV calculation only), ``poa_global`` [W/m2],
    ``ghi``/``dni``/``dhi`` [W/m2] (tmy), ``temp_air`` [°C], ``wind_speed`` [m/s] …
    """

    kind: PVGISKind
    data: pd.DataFrame
    latitude_deg: float
    longitude_deg: float
    elevation_m: float | None = None
    peak_power_kw: float | None = None
    system_loss_pct: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def read_pvgis(path: str | Path) -> PVGISData:
    """Read a PVGIS ``seriescalc`` or ``tmy`` file, CSV or JSON, as downloaded.

    The kind is recognised from the content: a ``time(UTC)`` column or a ``month,year`` table
    means TMY; a ``time`` column means seriescalc. PVGIS stamps hourly means with the minute at
    which the sun position was taken (``20200101:0010``); the index is floored to the hour.

    Seriescalc files and TMY JSON are parsed by ``pvlib.iotools``; TMY CSV is parsed here because
    pvlib's reader insists on exactly 8760 rows.

    Raises:
        BadInputError: the file is missing, unreadable or not in a PVGIS layout.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise BadInputError(
            f"{path} is neither .csv nor .json; download PVGIS output as CSV or JSON."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"Cannot read PVGIS file {path}: {exc}.") from exc
    reader = _read_pvgis_json if suffix == ".json" else _read_pvgis_csv
    try:
        return reader(path, text)
    except BadInputError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, StopIteration) as exc:
        raise BadInputError(
            f"{path} is not a PVGIS seriescalc or tmy file ({type(exc).__name__}: {exc}); "
            "download it again from PVGIS as CSV or JSON."
        ) from exc


def _finish(kind: PVGISKind, path: Path, data: pd.DataFrame, **kw: Any) -> PVGISData:
    data = data.rename(columns=dict(PVGIS_VARIABLE_MAP))
    index = pd.DatetimeIndex(data.index).tz_convert("UTC").floor("h")
    if index.has_duplicates:
        raise BadInputError(
            f"{path} has two rows in the same hour; it is not an hourly PVGIS file."
        )
    data = data.set_axis(index.rename("hour_start")).astype(np.float64).sort_index()
    if data.empty:
        raise BadInputError(f"{path} has no data rows.")
    return PVGISData(kind=kind, data=data, **kw)


def _read_pvgis_json(path: Path, text: str) -> PVGISData:
    doc = json.loads(text)
    outputs = doc["outputs"]
    location = doc["inputs"]["location"]
    loc = {
        "latitude_deg": float(location["latitude"]),
        "longitude_deg": float(location["longitude"]),
        "elevation_m": _float_or_none(location.get("elevation")),
    }
    if "tmy_hourly" in outputs:
        data, meta = pvlib.iotools.read_pvgis_tmy(path, pvgis_format="json", map_variables=False)
        return _finish("tmy", path, data, metadata=meta, **loc)
    if "hourly" in outputs:
        data, meta = pvlib.iotools.read_pvgis_hourly(path, pvgis_format="json", map_variables=False)
        module = doc["inputs"].get("pv_module", {})
        return _finish(
            "seriescalc",
            path,
            data,
            peak_power_kw=_float_or_none(module.get("peak_power")),
            system_loss_pct=_float_or_none(module.get("system_loss")),
            metadata=meta,
            **loc,
        )
    raise BadInputError(f"{path} has neither hourly nor tmy_hourly outputs; is it a PVGIS file?")


def _read_pvgis_csv(path: Path, text: str) -> PVGISData:
    lines = text.splitlines()
    starts = [line.strip() for line in lines]
    if any(s.startswith("time(UTC),") or s == "month,year" for s in starts):
        return _read_tmy_csv(path, lines)
    if not any(s.startswith("time,") for s in starts):
        raise BadInputError(f"{path} has no 'time,' header row; is it a PVGIS CSV file?")
    data, meta = pvlib.iotools.read_pvgis_hourly(path, pvgis_format="csv", map_variables=False)
    inputs = meta["inputs"]
    peak = next((v for k, v in inputs.items() if str(k).startswith("Nominal power")), None)
    loss = next((v for k, v in inputs.items() if str(k).startswith("System losses")), None)
    return _finish(
        "seriescalc",
        path,
        data,
        latitude_deg=float(inputs["latitude"]),
        longitude_deg=float(inputs["longitude"]),
        elevation_m=_float_or_none(inputs.get("elevation")),
        peak_power_kw=_float_or_none(peak),
        system_loss_pct=_float_or_none(loss),
        metadata=meta,
    )


def _read_tmy_csv(path: Path, lines: list[str]) -> PVGISData:
    """Parse a PVGIS TMY CSV: ``key: value`` lines, a month/year table, data, a footer."""
    inputs: dict[str, str] = {}
    months_selected: list[dict[str, int]] = []
    i = 0
    while i < len(lines) and not lines[i].strip().startswith("time(UTC),"):
        line = lines[i].strip()
        if ":" in line:
            key, _, value = line.partition(":")
            inputs[key.strip()] = value.strip()
        elif line and line[0].isdigit() and line.count(",") == 1:
            month, year = line.split(",")
            months_selected.append({"month": int(month), "year": int(year)})
        i += 1
    if i == len(lines):
        raise BadInputError(f"{path} has no 'time(UTC),' header row; is it a PVGIS TMY file?")
    names = [n.strip() for n in lines[i].split(",")]
    rows = []
    for line in lines[i + 1 :]:
        if not line.strip():
            break
        fields = line.strip().split(",")
        if len(fields) != len(names):
            raise BadInputError(
                f"{path} has a data row with {len(fields)} fields under {len(names)} columns."
            )
        rows.append(fields)
    frame = pd.DataFrame(rows, columns=names)
    index = pd.to_datetime(frame.pop("time(UTC)"), format="%Y%m%d:%H%M", utc=True)
    frame.index = pd.DatetimeIndex(index)
    descriptions = {}
    for line in lines[i + 1 + len(rows) :]:
        if ":" in line:
            key, _, value = line.partition(":")
            descriptions[key.strip()] = value.strip()
    lat = next(v for k, v in inputs.items() if k.startswith("Latitude"))
    lon = next(v for k, v in inputs.items() if k.startswith("Longitude"))
    elev = next((v for k, v in inputs.items() if k.startswith("Elevation")), None)
    meta = {"inputs": inputs, "months_selected": months_selected, "descriptions": descriptions}
    return _finish(
        "tmy",
        path,
        frame.astype(np.float64),
        latitude_deg=float(lat),
        longitude_deg=float(lon),
        elevation_m=_float_or_none(elev),
        metadata=meta,
    )


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(str(value).split()[0])
    except ValueError:
        return None


def _hour_of_year_lookup(data: pd.DataFrame, hour_start: pd.DatetimeIndex) -> pd.DataFrame:
    """Return ``data``'s rows for ``hour_start``: exact hours where present, else the mean of
    the same UTC (month, day, hour) over the file's years (29 February falls back to the 28th).
    Hours with no match at all are NaN."""
    hours = pd.DatetimeIndex(hour_start).tz_convert("UTC")
    exact = data.reindex(hours)
    typical = data.groupby(_hoy_key(data.index)).mean()
    fallback = typical.reindex(_hoy_key(hours))
    leap = (hours.month == 2) & (hours.day == 29)
    if leap.any():
        alt = _hoy_key(hours[leap] - pd.Timedelta(days=1))
        fallback.iloc[np.flatnonzero(leap)] = typical.reindex(alt).to_numpy()
    fallback.index = hours
    return exact.fillna(fallback)


def _hoy_key(index: pd.DatetimeIndex) -> pd.Index:
    return pd.Index(index.month * 10000 + index.day * 100 + index.hour)


def pvgis_pv_energy_wh(pvgis: PVGISData, hour_start: pd.DatetimeIndex) -> FloatArray:
    """Return the PV production per hour from a PVGIS seriescalc file [Wh].

    Hours the file covers take its value ``P`` [W] × 1 h. Other hours (PVGIS data stop years
    before today) take the mean of the same UTC month, day and hour over the file's years;
    hours with no such match are NaN.

    Parameters
    ----------
    pvgis : PVGISData
        A seriescalc file read with PV calculation (column ``P``).
    hour_start : pandas.DatetimeIndex
        Start of each wanted hour, tz-aware.

    Raises:
        BadInputError: the file is a TMY or has no PV output column ``P``.
    """
    if pvgis.kind != "seriescalc" or "power_w" not in pvgis.data:
        raise BadInputError(
            "This PVGIS file has no PV output P; download seriescalc with 'PV power' selected, "
            "or give --kwp to model the system from a TMY file."
        )
    values = _hour_of_year_lookup(pvgis.data[["power_w"]], hour_start)["power_w"]
    return values.to_numpy(dtype=np.float64) * 1.0  # mean power [W] over 1 h -> [Wh]


def pvgis_weather(pvgis: PVGISData, hour_start: pd.DatetimeIndex) -> pd.DataFrame:
    """Return weather for ``hour_start`` from a PVGIS TMY, for :func:`model_pv_energy_wh`.

    A TMY stitches months from different years, so hours map onto it by UTC month, day and hour
    (the TMY's year is ignored; 29 February uses the 28th).

    Returns
    -------
    pandas.DataFrame
        ``ghi``, ``dni``, ``dhi`` [W/m2], ``temp_air`` [°C], ``wind_speed`` [m/s], indexed by
        ``hour_start``; NaN for hours the file does not cover.

    Raises:
        BadInputError: the file has no ``G(h)``, ``Gb(n)`` and ``Gd(h)`` columns.
    """
    needed = ["ghi", "dni", "dhi"]
    if any(name not in pvgis.data for name in needed):
        raise BadInputError(
            "This PVGIS file has no G(h), Gb(n), Gd(h) columns; use a PVGIS TMY file as weather."
        )
    columns = [c for c in ["ghi", "dni", "dhi", "temp_air", "wind_speed"] if c in pvgis.data]
    return _hour_of_year_lookup(pvgis.data[columns], hour_start)


# -- 3. offline model of a fixed-tilt system ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PVSystem:
    """A fixed-tilt PV system at a site.

    Attributes
    ----------
    latitude_deg, longitude_deg : float
        Site [°], north and east positive.
    peak_power_kw : float
        Nameplate DC power at STC [kWp].
    tilt_deg : float
        Module tilt from horizontal [°], 0..90.
    azimuth_deg : float
        Direction the modules face [°] east of north: 90 east, 180 south, 270 west.
    system_loss_pct : float
        All losses after the DC temperature model: wiring, soiling, inverter … [%], as in PVGIS.
    altitude_m : float or None
        Site altitude [m]; None takes pvlib's lookup.
    """

    latitude_deg: float
    longitude_deg: float
    peak_power_kw: float
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    system_loss_pct: float = 14.0
    altitude_m: float | None = None

    def __post_init__(self) -> None:
        checks = [
            (-90 <= self.latitude_deg <= 90, "latitude must be between -90 and 90 degrees"),
            (-180 <= self.longitude_deg <= 180, "longitude must be between -180 and 180 degrees"),
            (self.peak_power_kw > 0, "peak power must be a positive number of kWp"),
            (0 <= self.tilt_deg <= 90, "tilt must be between 0 and 90 degrees"),
            (0 <= self.azimuth_deg <= 360, "azimuth must be between 0 and 360 degrees (180=south)"),
            (0 <= self.system_loss_pct < 100, "system losses must be between 0 and 100 percent"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"The PV system's {message}; fix the value and try again.")


def clearsky_weather(
    latitude_deg: float,
    longitude_deg: float,
    hour_start: pd.DatetimeIndex,
    *,
    altitude_m: float | None = None,
    temp_air_c: float = 20.0,
    wind_speed_m_s: float = 1.0,
) -> pd.DataFrame:
    """Return clear-sky weather for each hour: an upper bound of what the sun can give.

    Irradiance is pvlib's Ineichen clear-sky model (Linke turbidity from pvlib's bundled
    climatology) at the middle of each hour, as an estimate of the hourly mean.

    Returns
    -------
    pandas.DataFrame
        ``ghi``, ``dni``, ``dhi`` [W/m2], ``temp_air`` [°C], ``wind_speed`` [m/s], indexed by
        ``hour_start``.
    """
    hours = pd.DatetimeIndex(hour_start)
    location = pvlib.location.Location(latitude_deg, longitude_deg, altitude=altitude_m)
    sky = location.get_clearsky(hours + HALF_HOUR, model="ineichen")
    sky.index = hours
    sky["temp_air"] = temp_air_c
    sky["wind_speed"] = wind_speed_m_s
    return sky


def model_pv_energy_wh(system: PVSystem, weather: pd.DataFrame) -> FloatArray:
    """Return the AC energy a fixed-tilt system produces in each hour [Wh].

    The chain: sun position at mid-hour; Hay-Davies transposition to the plane of array; the
    physical incidence angle modifier on the beam; the Faiman cell temperature; PVWatts DC with
    −0.4 %/°C; then ``system_loss_pct`` off the DC (PVGIS counts inverter losses there too).

    Parameters
    ----------
    system : PVSystem
        The system.
    weather : pandas.DataFrame
        Indexed by ``hour_start`` (tz-aware): ``ghi``, ``dni``, ``dhi`` [W/m2] as hourly means;
        optional ``temp_air`` [°C] (default 20) and ``wind_speed`` [m/s] (default 1).

    Returns
    -------
    numpy.ndarray
        Energy per hour [Wh], >= 0; NaN where the weather is NaN.
    """
    hours = pd.DatetimeIndex(weather.index)
    mid = hours + HALF_HOUR
    sun = pvlib.solarposition.get_solarposition(
        mid, system.latitude_deg, system.longitude_deg, altitude=system.altitude_m
    )
    ghi = weather["ghi"].to_numpy(dtype=np.float64)
    dni = weather["dni"].to_numpy(dtype=np.float64)
    dhi = weather["dhi"].to_numpy(dtype=np.float64)
    zenith = sun["apparent_zenith"].to_numpy()
    azimuth = sun["azimuth"].to_numpy()
    poa = pvlib.irradiance.get_total_irradiance(
        system.tilt_deg,
        system.azimuth_deg,
        zenith,
        azimuth,
        dni,
        ghi,
        dhi,
        dni_extra=pvlib.irradiance.get_extra_radiation(mid).to_numpy(),
        model="haydavies",
    )
    aoi = pvlib.irradiance.aoi(system.tilt_deg, system.azimuth_deg, zenith, azimuth)
    iam = np.nan_to_num(pvlib.iam.physical(aoi), nan=0.0)
    poa_direct = np.nan_to_num(np.asarray(poa["poa_direct"], dtype=np.float64), nan=0.0)
    poa_diffuse = np.nan_to_num(np.asarray(poa["poa_diffuse"], dtype=np.float64), nan=0.0)
    effective_w_m2 = np.clip(poa_direct * iam + poa_diffuse, 0.0, None)
    poa_global = np.clip(poa_direct + poa_diffuse, 0.0, None)
    temp_air = _column(weather, "temp_air", 20.0)
    wind = _column(weather, "wind_speed", 1.0)
    temp_cell = pvlib.temperature.faiman(poa_global, temp_air, wind)
    dc_w = pvlib.pvsystem.pvwatts_dc(
        effective_w_m2, temp_cell, pdc0=system.peak_power_kw * 1000.0, gamma_pdc=-0.004
    )
    ac_w = np.clip(np.asarray(dc_w, dtype=np.float64), 0.0, None) * (
        1.0 - system.system_loss_pct / 100.0
    )
    missing = np.isnan(ghi) | np.isnan(dni) | np.isnan(dhi)
    return np.where(missing, np.nan, ac_w)  # mean power [W] over 1 h -> [Wh]


def _column(frame: pd.DataFrame, name: str, default: float) -> FloatArray:
    if name not in frame:
        return np.full(len(frame), default)
    return np.nan_to_num(frame[name].to_numpy(dtype=np.float64), nan=default)

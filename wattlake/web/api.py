"""The JSON API (OpenAPI at ``/api/openapi.json``): every table also as CSV or Parquet.

Every figure comes from :mod:`wattlake.web.figures`, which calls the same library functions as
the CLI. ``format=csv`` or ``format=parquet`` returns exactly the rows of the JSON answer.
Each route needs the ``read`` scope (SQL too: it is read-only), running a job ``admin``; the
dependencies :data:`~wattlake.web.appstate.Reader` and ``Admin`` check it before the route runs.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse

from wattlake.config import Settings
from wattlake.energy.buckets import parse_time_ms
from wattlake.httpserver import BadRequest
from wattlake.web import figures, pvfigures
from wattlake.web.appstate import Admin, Reader, WebState
from wattlake.web.figures import Rows
from wattlake.web.sql import run_sql

FORMATS = ("json", "csv", "parquet")

Start = Annotated[str, Query(description="Start, inclusive: a date (local midnight) or ISO time.")]
End = Annotated[str, Query(description="End, exclusive: a date (local midnight) or ISO time.")]
Device = Annotated[str | None, Query(description="One device (default: every device).")]
Channel = Annotated[int | None, Query(ge=0, description="One channel of the device.")]
Site = Annotated[str | None, Query(description="A site of the site model.")]
Tz = Annotated[str | None, Query(description="IANA time zone (default: energy.tz).")]
Format = Annotated[str, Query(description="json, csv or parquet.")]
Every = Annotated[str, Query(description="15min, hour, day or month.")]

router = APIRouter(prefix="/api")


def render(rows: Rows, fmt: str, name: str) -> Response:
    """Return ``rows`` as JSON (``{"columns", "rows", ...meta}``), CSV or Parquet.

    Raises:
        BadRequest: the format is unknown.
    """
    if fmt == "json":
        return JSONResponse({"columns": rows.columns, "rows": rows.rows, **rows.meta})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=rows.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows.rows)
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(rows.to_arrow(), sink)
        return Response(
            sink.getvalue(),
            media_type="application/vnd.apache.parquet",
            headers={"Content-Disposition": f'attachment; filename="{name}.parquet"'},
        )
    raise BadRequest(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")


def _range(s: WebState, start: str, end: str, tz: str | None) -> tuple[ZoneInfo, int, int]:
    """Return the time zone and the window [ms] a request asks for.

    Raises:
        BadRequest: the end is not after the start.
    """
    zone = figures.tz_of(s.settings, tz)
    start_ms, end_ms = parse_time_ms(start, zone), parse_time_ms(end, zone)
    if end_ms <= start_ms:
        raise BadRequest(f"The end ({end}) must be after the start ({start}).")
    return zone, start_ms, end_ms


def _with_tz(settings: Settings, tz: str | None) -> Settings:
    """Return ``settings`` with ``energy.tz`` set to ``tz`` when one is asked for."""
    if not tz:
        return settings
    figures.tz_of(settings, tz)  # an unknown zone is refused here
    origins = {**settings.origins, "energy.tz": "request"}
    return Settings({**settings, "energy.tz": tz}, origins, settings.tables)


@router.get("/devices", summary="Devices with last reading and freshness")
def devices_(s: Reader, tz: Tz = None, format: Format = "json") -> Response:
    rows = s.figure(
        "devices", lambda: figures.devices(s.view, s.settings, tz=figures.tz_of(s.settings, tz))
    )
    return render(rows, format, "devices")


@router.get("/sites", summary="Sites of the site model")
def sites(s: Reader, format: Format = "json") -> Response:
    return render(figures.sites(s.settings), format, "sites")


@router.get("/sites/{site}/energy", summary="A site's balance: grid, solar, battery, circuits")
def site_energy(
    s: Reader,
    site: str,
    start: Start,
    end: End,
    every: Every = "day",
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    rows = s.figure(
        "site_energy",
        lambda: figures.site_energy(
            s.settings, site_name=site, start=start, end=end, every=every, tz_name=tz
        ),
        key=(site, start, end, every, tz),
    )
    return render(rows, format, f"site-{site}")


@router.get("/overview", summary="Power now, today's energy, month cost and alerts")
def overview(s: Reader, tz: Tz = None) -> Response:
    zone = figures.tz_of(s.settings, tz)

    def body() -> dict[str, object]:
        return {
            **figures.overview(s.view, s.settings, tz=zone),
            "alerts": s.alerts(),
            "live": s.live.snapshot(),
        }

    return JSONResponse(s.figure("overview", body))


@router.get("/readings", summary="Power in a window, downsampled to min/mean/max per bucket")
def readings(
    s: Reader,
    start: Start,
    end: End,
    device: Device = None,
    points: Annotated[int, Query(ge=10, le=5000, description="Buckets (pixels).")] = 800,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    zone, start_ms, end_ms = _range(s, start, end, tz)
    rows = s.figure(
        "readings",
        lambda: figures.power_history(
            s.view, start_ms=start_ms, end_ms=end_ms, points=points, tz=zone, device_id=device
        ),
        key=(start_ms, end_ms, points, str(zone), device),
        # A window ending about now (the overview's last hour, the History page's day) is
        # asked next with a new end: not worth computing again per state.
        again=end_ms < figures.now_ms() - figures.RECENT_END_MS,
    )
    return render(rows, format, "power")


@router.get("/energy", summary="Energy per device and local bucket [Wh]")
def energy(
    s: Reader,
    start: Start,
    end: End,
    every: Every = "day",
    device: Device = None,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    zone, start_ms, end_ms = _range(s, start, end, tz)
    rows = s.figure(
        "energy",
        lambda: figures.energy(
            s.settings, start_ms=start_ms, end_ms=end_ms, every=every, tz=zone, device_id=device
        ),
        key=(start_ms, end_ms, every, str(zone), device),
    )
    return render(rows, format, "energy")


@router.get("/cost", summary="Energy and cost per tariff zone, with coverage")
def cost(
    s: Reader,
    start: Start,
    end: End,
    tariff: Annotated[
        str | None, Query(description="Tariff (default: the site's, else cost.tariff).")
    ] = None,
    device: Device = None,
    channel: Channel = None,
    site: Site = None,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    rows = s.figure(
        "cost",
        lambda: figures.cost(
            s.settings,
            start=start,
            end=end,
            tz_name=tz,
            tariff_name=tariff,
            device_id=device,
            channel=channel,
            site_name=site,
        ),
        key=(start, end, tz, tariff, device, channel, site),
    )
    return render(rows, format, "cost")


@router.get("/tariffs/compare", summary="The same consumption under every built-in tariff")
def compare(
    s: Reader,
    start: Start,
    end: End,
    device: Device = None,
    channel: Channel = None,
    site: Site = None,
    shift_share: Annotated[float, Query(ge=0, le=1)] = 0.2,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    _, start_ms, end_ms = _range(s, start, end, tz)
    rows = s.figure(
        "tariffs",
        lambda: figures.tariff_comparison(
            s.settings,
            start_ms=start_ms,
            end_ms=end_ms,
            device_id=device,
            channel=channel,
            site_name=site,
            shift_share=shift_share,
        ),
        key=(start_ms, end_ms, device, channel, site, shift_share),
    )
    return render(rows, format, "tariffs")


@router.get("/pv", summary="PV production (pvlib, clear sky) against consumption per day")
def pv(
    s: Reader,
    start: Start,
    end: End,
    kwp: Annotated[float, Query(gt=0, description="Peak power of the system [kWp].")],
    lat: Annotated[float, Query(ge=-90, le=90, description="Latitude [°], north +.")],
    lon: Annotated[float, Query(ge=-180, le=180, description="Longitude [°], east +.")],
    tilt: Annotated[float, Query(ge=0, le=90, description="Module tilt [°].")] = 30.0,
    azimuth: Annotated[
        float, Query(ge=0, le=360, description="Facing [°]: 90 east, 180 south.")
    ] = 180.0,
    losses: Annotated[float, Query(ge=0, lt=100, description="System losses [%].")] = 14.0,
    device: Device = None,
    channel: Channel = None,
    site: Site = None,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    _, start_ms, end_ms = _range(s, start, end, tz)
    rows = s.figure(
        "pv",
        lambda: pvfigures.pv(
            _with_tz(s.settings, tz),
            start_ms=start_ms,
            end_ms=end_ms,
            kwp=kwp,
            lat=lat,
            lon=lon,
            tilt=tilt,
            azimuth=azimuth,
            losses=losses,
            device_id=device,
            channel=channel,
            site_name=site,
        ),
    )
    return render(rows, format, "pv")


@router.get("/forecast", summary="The next local day's consumption per hour, with a backtest")
def forecast(
    s: Reader,
    device: Device = None,
    channel: Channel = None,
    site: Site = None,
    days_history: Annotated[int, Query(ge=15, le=3660)] = 56,
    backtest_days: Annotated[int, Query(ge=0, le=365)] = 7,
    until: Annotated[
        str | None, Query(description="Learn from history before this day or time.")
    ] = None,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    settings = _with_tz(s.settings, tz)
    until_ms = None if until is None else parse_time_ms(until, figures.tz_of(settings))
    rows = s.figure(
        "forecast",
        lambda: pvfigures.forecast(
            settings,
            device_id=device,
            channel=channel,
            site_name=site,
            days_history=days_history,
            backtest_days=backtest_days,
            until_ms=until_ms,
        ),
    )
    return render(rows, format, "forecast")


@router.get("/patterns/{kind}", summary="Hour-by-weekday heatmap or seasonal daily profile [W]")
def patterns(
    s: Reader,
    kind: str,
    start: Start,
    end: End,
    device: Device = None,
    channel: Channel = None,
    tz: Tz = None,
    format: Format = "json",
) -> Response:
    if kind not in ("heatmap", "profile"):
        raise BadRequest(f"Unknown pattern {kind!r}; use heatmap or profile.")
    zone, start_ms, end_ms = _range(s, start, end, tz)
    heat, profile = s.figure(
        "patterns",
        lambda: figures.patterns(
            s.view, start_ms=start_ms, end_ms=end_ms, tz=zone, device_id=device, channel=channel
        ),
        key=(start_ms, end_ms, str(zone), device, channel),
    )
    return render(heat if kind == "heatmap" else profile, format, kind)


@router.get("/quality", summary="Coverage, gaps, counter resets and outliers per device")
def quality(s: Reader, start: Start, end: End, tz: Tz = None, format: Format = "json") -> Response:
    zone, start_ms, end_ms = _range(s, start, end, tz)
    rows = s.figure(
        "quality",
        lambda: figures.quality(s.view, s.settings, start_ms=start_ms, end_ms=end_ms, tz=zone),
    )
    return render(rows, format, "quality")


@router.get("/dead-letters", summary="Dead letters by reason, or the latest with payloads")
def dead_letters(
    s: Reader,
    latest: Annotated[int, Query(ge=0, le=1000, description="0: counts by reason.")] = 0,
    format: Format = "json",
) -> Response:
    by_reason, newest = figures.dead_letters(s.view, limit=max(latest, 1))
    return render(newest if latest else by_reason, format, "dead-letters")


@router.get("/alerts", summary="Alerts firing now")
def alerts_(s: Reader) -> Response:
    return JSONResponse({"rows": s.alerts()})


@router.post("/sql", summary="Read-only SQL over the lake's tables")
def sql(
    s: Reader,
    query: Annotated[str, Body(embed=True, description="One SELECT statement.")],
    format: Format = "json",
) -> Response:
    result = s.figure(
        "sql",
        lambda: run_sql(
            s.view.lake,
            query,
            time_limit_ms=int(s.settings["web.sql_time_limit_ms"]),
            max_rows=int(s.settings["web.sql_max_rows"]),
        ),
    )
    rows = Rows(
        result.columns,
        [dict(zip(result.columns, r, strict=True)) for r in result.rows],
        {"truncated": result.truncated},
    )
    return render(rows, format, "query")


@router.get("/jobs", summary="The jobs that can run over the lake")
def jobs(_: Reader, format: Format = "json") -> Response:
    from wattlake.jobs import JOBS

    return render(Rows(["job"], [{"job": name} for name in JOBS]), format, "jobs")


@router.post("/jobs/{name}/run", summary="Run a job now (admin scope)")
def run_job(s: Admin, name: str, format: Format = "json") -> Response:
    from wattlake.jobs import run_job as run

    rows = s.figure("jobs", lambda: run(name, s.settings))
    columns = list(rows[0]) if rows else []
    return render(Rows(columns, rows), format, f"job-{name}")


@router.get("/live", summary="Server-sent events of live power per device channel")
def live(s: Reader) -> Response:
    return StreamingResponse(
        s.live.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

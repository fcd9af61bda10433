"""Server-rendered pages: Overview, Energy, History, Patterns, Devices and data quality.

Each page is rendered with its tables filled in; its charts are drawn by ``static/app.js``
with uPlot from the same API answers that its CSV and Parquet downloads return.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from wattlake.web import figures
from wattlake.web.appstate import Reader, WebState

TEMPLATES: Final = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
PAGES: Final = (
    ("/", "overview", "Overview"),
    ("/energy", "energy", "Energy"),
    ("/history", "history", "History"),
    ("/patterns", "patterns", "Patterns"),
    ("/devices", "devices", "Devices"),
)


def render_page(
    request: Request, template: str, context: dict[str, Any], *, status: int = 200
) -> Response:
    """Return ``template`` rendered with the navigation and the site's time zone."""
    settings = WebState.of(request.app).settings
    html = TEMPLATES.get_template(template).render(
        pages=PAGES,
        path=request.url.path,
        time_zone=str(figures.tz_of(settings)),
        **context,
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
            "style-src 'self' 'unsafe-inline'",
            "Cache-Control": "no-store",
        },
    )


# Each page needs the ``read`` scope (the dependency ``Reader``).
router = APIRouter(include_in_schema=False)


@router.get("/")
def overview(request: Request, s: Reader) -> Response:
    tz = figures.tz_of(s.settings)
    body = figures.overview(s.view, s.settings, tz=tz)
    return render_page(
        request, "overview.html", {"o": body, "alerts": s.alerts(), "page": "overview"}
    )


@router.get("/energy")
def energy(request: Request, s: Reader) -> Response:
    sites = [r["site"] for r in figures.sites(s.settings).rows]
    return render_page(request, "energy.html", {"page": "energy", "sites": sites})


@router.get("/history")
def history(request: Request, s: Reader) -> Response:
    tz = figures.tz_of(s.settings)
    devices = sorted({r["device_id"] for r in figures.devices(s.view, s.settings, tz=tz).rows})
    return render_page(request, "history.html", {"page": "history", "devices": devices})


@router.get("/patterns")
def patterns(request: Request, s: Reader) -> Response:
    tz = figures.tz_of(s.settings)
    devices = sorted({r["device_id"] for r in figures.devices(s.view, s.settings, tz=tz).rows})
    return render_page(request, "patterns.html", {"page": "patterns", "devices": devices})


@router.get("/devices")
def devices(request: Request, s: Reader) -> Response:
    tz = figures.tz_of(s.settings)
    now = figures.now_ms()
    start = figures.local_midnight_before(now, tz) - 6 * figures.DAY_MS
    quality = figures.quality(s.view, s.settings, start_ms=start, end_ms=now, tz=tz)
    by_reason, latest = figures.dead_letters(s.view, limit=10)
    return render_page(
        request,
        "devices.html",
        {
            "page": "devices",
            "devices": figures.devices(s.view, s.settings, tz=tz),
            "quality": quality,
            "by_reason": by_reason,
            "latest": latest,
            "start": figures.format_local(start, tz),
            "end": figures.format_local(now, tz),
        },
    )

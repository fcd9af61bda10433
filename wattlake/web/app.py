"""The web application: pages, API, login, health and metrics; and a server to run it.

Open without a token: ``/healthz``, ``/readyz``, ``/static/…`` and ``/login``. Everything else
needs the ``read`` scope (a bearer token or the session cookie), see :mod:`wattlake.web.auth`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, cast
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from uvicorn.protocols.http.h11_impl import H11Protocol

from wattlake.config import Settings
from wattlake.errors import ConfigError, WattlakeError
from wattlake.gateway.tokens import TokenStore
from wattlake.httpserver import ServerThread
from wattlake.web import errors
from wattlake.web.api import router as api_router
from wattlake.web.appstate import Reader, WebState
from wattlake.web.auth import SESSION_COOKIE, Auth
from wattlake.web.figures import DAY_MS, LakeView, now_ms, overview, tz_of
from wattlake.web.live import LivePower
from wattlake.web.metrics import WebMetrics
from wattlake.web.pages import router as pages_router

log = logging.getLogger(__name__)
access_log = logging.getLogger("wattlake.web.access")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
START_MAX_S: Final = 15.0


def create_app(settings: Settings, *, broker_url: str | None = None, tls: bool = False) -> FastAPI:
    """Return the ASGI app over the lake the settings name (live values from ``broker_url``)."""
    app = FastAPI(
        title="wattlake",
        summary="Energy monitoring: devices, power, energy, cost, data quality and SQL.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    errors.install(app)
    view = LakeView(settings)
    auth = Auth.beside_tokens(
        TokenStore.from_settings(settings),
        session_max_age_s=float(settings["web.session_max_age_s"]),
        login_code_ttl_s=float(settings["web.login_code_ttl_s"]),
    )
    state = WebState(
        settings=settings,
        view=view,
        auth=auth,
        metrics=WebMetrics(settings, view),
        live=LivePower.from_settings(settings, broker_url),
        tls=tls,
    )
    app.state = state
    # The overview's figures (today so far, the month's cost, alerts) depend on the time now:
    # computed for each new table state before requests see it.
    view.warmers.append(lambda: overview(view, settings, tz=tz_of(settings)))
    view.warmers.append(state.alerts)
    # The views of the last day (the History page's first chart, the overview's last hour).
    view.warmers.append(lambda: view.fetch_in(now_ms() - DAY_MS, now_ms(), "SELECT 1"))

    @app.middleware("http")
    async def log_request(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The path only: a query string may hold a one-time login code.
        access_log.info(
            "%s %s %s %.1f ms",
            request.method,
            request.url.path,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> Response:
        checks = readiness(app)
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics(s: Reader) -> Response:
        return Response(s.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/login", include_in_schema=False)
    def login(request: Request, code: str = "") -> Response:
        if code:
            session = auth.exchange_code(code)
            if session is None:
                return _login_page(request, "That login code is used up or has expired.", 401)
            return _signed_in(request, session)
        return _login_page(request, "", 200)

    @app.post("/login", include_in_schema=False)
    async def login_with_token(request: Request) -> Response:
        form = parse_qs((await request.body())[:8192].decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        session = auth.exchange_token(token.strip())
        if session is None:
            return _login_page(request, "That token is not valid for reading.", 401)
        return _signed_in(request, session)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            auth.end_session(cookie)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api_router)
    app.include_router(pages_router)
    return app


def _signed_in(request: Request, session_id: str) -> Response:
    state = WebState.of(request.app)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(state.auth.session_max_age_s),
        httponly=True,
        samesite="strict",
        secure=state.tls,
        path="/",
    )
    return response


def _login_page(request: Request, problem: str, status: int) -> Response:
    from wattlake.web.pages import render_page

    return render_page(request, "login.html", {"problem": problem}, status=status)


def readiness(app: FastAPI) -> dict[str, bool]:
    """Return each readiness check: broker connected (when live values are on), WAL folder
    writable (when it exists), lake reachable."""
    checks: dict[str, bool] = {}
    state = WebState.of(app)
    if state.live.broker_url:
        checks["broker_connected"] = state.live.connected
    try:
        state.view.lake.list_files("", ".json")
        checks["lake_reachable"] = True
    except Exception:  # any failure means not ready
        checks["lake_reachable"] = False
    wal = state.metrics.ingest_file()
    if wal is not None and wal.parent.is_dir():
        checks["wal_writable"] = os.access(wal.parent, os.W_OK)
    return checks


class _Http(H11Protocol):
    """uvicorn's h11 protocol with TCP_NODELAY on each connection: without it a response's
    second write (the body after the headers) waits for the client's delayed ACK, and every
    request after the first on a kept-alive connection took 40 ms more (even /healthz)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(cast(asyncio.Transport, transport))


class WebServer:
    """The web app under uvicorn in a background thread: ``start()``, ``url``, ``stop()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        tls_cert_file: str = "",
        tls_key_file: str = "",
    ) -> None:
        if bool(tls_key_file) != bool(tls_cert_file):
            raise ConfigError("Serving HTTPS needs both a certificate and its private key.")
        self.settings = settings
        self.host = host or settings["web.host"]
        self.port = int(settings["web.port"] if port is None else port)
        self.tls = bool(tls_cert_file)
        self.app = create_app(settings, broker_url=broker_url, tls=self.tls)
        self.state = WebState.of(self.app)
        self._server = ServerThread(
            self.app,
            what="web server",
            thread_name="web",
            graceful_stop_s=2,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            http=_Http,
        )
        # Set when the overview's figures were computed after start (see _warm_up).
        self.warmed = threading.Event()

    @property
    def url(self) -> str:
        """Return the base URL (the real port once started)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def login_url(self) -> str:
        """Return a URL that signs a browser in once, within ``web.login_code_ttl_s``."""
        return f"{self.url}/login?code={self.state.auth.login_code('admin')}"

    def start(self) -> None:
        """Listen and serve from a thread; start the live feed.

        Raises:
            ConfigError: the address cannot be listened on or the TLS files cannot be used.
            WattlakeError: the server did not start.
        """
        self._server.load()
        try:
            listener = socket.create_server((self.host, self.port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on {self.host}:{self.port}: {exc}; choose another port."
            ) from exc
        self.port = int(listener.getsockname()[1])
        self.state.live.start()
        try:
            self._server.start(listener, url=self.url, start_max_s=START_MAX_S)
        except WattlakeError:
            self.state.live.stop()
            raise
        # The overview's figures for the lake as it is now, before the first browser asks.
        threading.Thread(target=self._warm_up, name="web-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            for warmer in self.state.view.warmers:
                try:
                    warmer()
                except Exception as exc:  # a request computes it again and reports what failed
                    log.debug("warming up the overview failed: %s", exc)
        finally:
            self.warmed.set()

    def stop(self) -> None:
        """Stop serving and disconnect the live feed."""
        self.state.live.stop()
        self._server.stop()

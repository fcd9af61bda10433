"""One place turns every error into an HTTP response with one JSON shape.

The shape is ``{"error": "<one sentence>", "status": <HTTP status>}``, rendered by
:func:`wattlake.httpserver.error_response` like the gateway's HTTP publish; the refusals
(:class:`wattlake.httpserver.HttpError` and its subclasses) are that module's too. A page
request (a browser asking for HTML) that is not signed in is sent to the login page instead.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattlake.errors import (
    BadInputError,
    BrokerError,
    StorageError,
    UsageError,
    WattlakeError,
)
from wattlake.httpserver import HttpError, Unauthorized, error_response, refusal

log = logging.getLogger(__name__)


def status_of(exc: BaseException) -> int:
    """Return the HTTP status of an error: the request's fault 4xx, the system's 5xx."""
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, UsageError | BadInputError):
        return 400
    if isinstance(exc, StorageError | BrokerError):
        return 503
    return 500


def _wants_page(request: Request) -> bool:
    path = request.url.path
    accept = request.headers.get("accept", "")
    return (
        request.method == "GET"
        and not path.startswith(("/api/", "/metrics"))
        and "text/html" in accept
    )


def install(app: FastAPI) -> None:
    """Register the one handler of every error on ``app``."""

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, Unauthorized) and _wants_page(request):
            return RedirectResponse("/login", status_code=303)
        if isinstance(exc, WattlakeError):
            status = status_of(exc)
            if status >= 500:
                log.warning("%s %s failed: %s", request.method, request.url.path, exc)
            if isinstance(exc, HttpError):
                return refusal(exc)
            return error_response(status, str(exc))
        if isinstance(exc, RequestValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                for e in exc.errors()
            )
            return error_response(422, f"The request's parameters are invalid: {problems}.")
        if isinstance(exc, StarletteHTTPException):
            headers = dict(exc.headers) if exc.headers else None
            return error_response(exc.status_code, f"{exc.detail}.", headers)
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "An internal error occurred; the server log has the details.")

    app.add_exception_handler(WattlakeError, handle)
    app.add_exception_handler(RequestValidationError, handle)
    app.add_exception_handler(StarletteHTTPException, handle)
    app.add_exception_handler(Exception, handle)

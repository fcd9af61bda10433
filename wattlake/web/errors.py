"""One place turns every error into an HTTP response with one JSON shape.

The shape is ``{"error": "<one sentence>", "status": <HTTP status>}`` (the HTTP publish
endpoint of the gateway uses the same). A page request (a browser asking for HTML) that is not
signed in is sent to the login page instead.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattlake.errors import (
    BadInputError,
    BrokerError,
    StorageError,
    UsageError,
    WattlakeError,
)

log = logging.getLogger(__name__)


class ApiError(WattlakeError):
    """A refused request; ``status`` is its HTTP status code."""

    status: ClassVar[int] = 400
    headers: ClassVar[dict[str, str]] = {}


class BadRequest(ApiError):
    """The request's parameters cannot be used."""

    status = 400


class NotAuthenticated(ApiError):
    """No valid token or session came with the request."""

    status = 401
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer realm="wattlake"'}


class Forbidden(ApiError):
    """The token is valid but lacks the scope the request needs."""

    status = 403


class NotFound(ApiError):
    """The thing asked for does not exist."""

    status = 404


class QueryTimeout(ApiError):
    """A query ran longer than its time limit."""

    status = 408


def status_of(exc: BaseException) -> int:
    """Return the HTTP status of an error: the request's fault 4xx, the system's 5xx."""
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, UsageError | BadInputError):
        return 400
    if isinstance(exc, StorageError | BrokerError):
        return 503
    return 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """Return the one JSON shape of every error."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


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
        if isinstance(exc, NotAuthenticated) and _wants_page(request):
            return RedirectResponse("/login", status_code=303)
        if isinstance(exc, WattlakeError):
            status = status_of(exc)
            headers = dict(exc.headers) if isinstance(exc, ApiError) else None
            if status >= 500:
                log.warning("%s %s failed: %s", request.method, request.url.path, exc)
            return error_response(status, str(exc), headers)
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

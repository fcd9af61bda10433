"""What every HTTP server of wattlake shares: its refusals and how it runs.

Two servers use it: the gateway's HTTP publish (:mod:`wattlake.gateway.http`) and the web app
(:mod:`wattlake.web.app`). A refusal is an :class:`HttpError` subclass that carries its status
(and headers); :func:`error_response` renders every error into the one JSON shape
``{"error": "<one sentence>", "status": <HTTP status>}``. :class:`ServerThread` serves an ASGI
app under uvicorn from a daemon thread on a socket its owner has bound.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import uvicorn
from fastapi.responses import JSONResponse

from wattlake.errors import ConfigError, WattlakeError

log = logging.getLogger(__name__)

# What a 503 tells the client to wait before sending again [s].
RETRY_AFTER_S: Final = 5
# The longest a stop waits for the server's thread to end [s].
STOP_JOIN_MAX_S: Final = 10.0


class HttpError(WattlakeError):
    """A refused request; ``status`` is its HTTP status code, ``headers`` go with the answer."""

    status: ClassVar[int] = 500
    headers: ClassVar[Mapping[str, str]] = {}


class BadRequest(HttpError):
    """The request's parameters, topic or body cannot be used; sending it again cannot help."""

    status = 400


class Unauthorized(HttpError):
    """No valid credential (token, session or device password) came with the request."""

    status = 401
    headers: ClassVar[Mapping[str, str]] = {"WWW-Authenticate": 'Bearer realm="wattlake"'}


class Forbidden(HttpError):
    """The credential is valid but lacks the scope the request needs, or a device publishes on
    a topic that is not its own."""

    status = 403


class NotFound(HttpError):
    """The thing asked for does not exist."""

    status = 404


class QueryTimeout(HttpError):
    """A query ran longer than its time limit."""

    status = 408


class PayloadTooLarge(HttpError):
    """The body is larger than the server takes."""

    status = 413


class Unavailable(HttpError):
    """The server cannot do it now (e.g. a message is not durable); send the request again."""

    status = 503
    retryable = True
    headers: ClassVar[Mapping[str, str]] = {"Retry-After": str(RETRY_AFTER_S)}


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """Return the one JSON shape of every error: ``{"error": message, "status": status}``."""
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def refusal(exc: HttpError) -> JSONResponse:
    """Return the answer to a refused request: its status, sentence and headers."""
    return error_response(exc.status, str(exc), dict(exc.headers) or None)


class ServerThread:
    """An ASGI app under uvicorn in a daemon thread: :meth:`load`, :meth:`start`, :meth:`stop`.

    ``what`` names the server in messages (``"web server"``); ``options`` are further
    ``uvicorn.Config`` arguments (``http``, ``proxy_headers``, ``log_level``).
    """

    def __init__(
        self,
        app: Any,
        *,
        what: str,
        thread_name: str,
        graceful_stop_s: int,
        tls_cert_file: str = "",
        tls_key_file: str = "",
        **options: Any,
    ) -> None:
        self.what = what
        self.thread_name = thread_name
        self.config = uvicorn.Config(
            app,
            lifespan="off",
            loop="asyncio",
            ws="none",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=graceful_stop_s,
            ssl_certfile=tls_cert_file or None,
            ssl_keyfile=tls_key_file or None,
            **options,
        )
        self.server = uvicorn.Server(self.config)
        # The server's event loop while it runs (to hand it work from other threads).
        self.loop: asyncio.AbstractEventLoop | None = None
        self.failure: BaseException | None = None
        self._thread: threading.Thread | None = None

    def load(self, *, files: str = "TLS certificate or key", advice: str = "") -> None:
        """Read the TLS certificate and key (if any); the error names them ``files`` and ends
        with ``advice``.

        Raises:
            ConfigError: they cannot be read or do not fit together.
        """
        try:
            self.config.load()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"Cannot use the {files}: {exc}{advice}.") from exc

    @property
    def running(self) -> bool:
        """Return True from :meth:`start` until :meth:`stop`."""
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """Return True while the server's thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, listener: socket.socket, *, url: str, start_max_s: float) -> None:
        """Serve on ``listener`` (bound and listening; closed when serving ends) from a thread
        and return once the server takes requests.

        Raises:
            WattlakeError: the server did not start within ``start_max_s`` [s]; it is stopped.
        """
        self._thread = threading.Thread(
            target=self._serve, args=(listener,), name=self.thread_name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + start_max_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                why = repr(self.failure) if self.failure else f"not within {start_max_s:g} s"
                raise WattlakeError(f"The {self.what} on {url} did not start: {why}.")
            time.sleep(0.01)

    def _serve(self, listener: socket.socket) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[listener])

        try:
            asyncio.run(serve())
        except BaseException as exc:  # uvicorn exits with SystemExit on a startup failure
            self.failure = exc
            log.error("the %s stopped: %r", self.what, exc)
        finally:
            listener.close()

    def stop(self) -> None:
        """Ask the server to finish its requests and wait for its thread to end."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(STOP_JOIN_MAX_S)
            self._thread = None

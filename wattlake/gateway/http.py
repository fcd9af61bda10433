"""Receive device messages over HTTP, like AWS IoT Core's HTTPS publish.

``POST /topics/<topic>`` with the raw payload as its body is the same message as an MQTT publish
of that payload on that topic, so every device format works over HTTP too. A FastAPI app under
uvicorn runs in a thread of the ingest process; each request becomes an :class:`HttpDelivery`
on the worker's intake (the queue the MQTT source fills) and its handler waits until the worker
has the message in the write-ahead log. Only then does the client get ``200``: a ``200`` is
durable, anything else is not and the client sends the message again.

Callers authenticate with ``Authorization: Bearer <token>``: an API token with the ``ingest``
(or ``admin``) scope from ``wattlake token create --scope ingest``, or the deprecated shared
secret ``ingest.http_token``, still accepted. Such a token is trusted like the ingest itself: it
may publish on any device's topic.

A device may also publish with its own credential, ``Authorization: Basic`` with its device id
and the password of its registry entry (``wattlake device add ID --auth password``; the argon2
hash the embedded broker checks). Then the request is the device's publish: the broker's topic
rules apply (:func:`wattlake.gateway.auth.publish_refusal`, ``403`` for a topic that is not the
device's), and, as for every message, a payload that names another device is refused later as a
dead letter ``identity-mismatch`` (:mod:`wattlake.devices.identity`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.errors import ConfigError, UsageError, WattlakeError
from wattlake.gateway.ca import security_dir
from wattlake.gateway.mqtt import Delivery, Intake
from wattlake.gateway.registry import Client, Registry, argon2_verify
from wattlake.gateway.tokens import TokenStore
from wattlake.httpserver import (
    BadRequest,
    Forbidden,
    HttpError,
    PayloadTooLarge,
    ServerThread,
    Unauthorized,
    Unavailable,
    error_response,
    refusal,
)

log = logging.getLogger(__name__)

# The longest a request waits for the worker to make its message durable [s]; then it is 503.
DURABLE_WAIT_MAX_S: Final = 30.0
# How often a waiting request looks whether the worker still takes messages [s].
WAIT_SLICE_S: Final = 0.5
# Requests that may wait for durability at once; more are answered 503 (a memory bound).
WAITING_MAX: Final = 1000
# How long the server may take to start, and to answer its last requests at a stop [s].
START_MAX_S: Final = 10.0
STOP_MAX_S: Final = 5
# MQTT's limit on a topic name (and the WAL's) [bytes].
TOPIC_MAX_BYTES: Final = 65_535


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the HTTP listener binds."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse ``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free port).

        Raises:
            UsageError: the text is not of that form.
        """
        host, colon, port = text.strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not colon or not host or not port.isdigit() or int(port) > 65_535:
            raise UsageError(
                f"--http-listen (ingest.http_listen) {text!r} is not of the form HOST:PORT, "
                "e.g. 127.0.0.1:8081."
            )
        return cls(host, int(port))

    @property
    def is_loopback(self) -> bool:
        """Return True when only this machine can reach the address."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class HttpDelivery(Delivery):
    """A message published over HTTP; ``answer`` wakes its request handler (True: durable).

    It never came over MQTT (``connection`` 0), so the MQTT source never acknowledges it.
    """

    answer: asyncio.Future[bool]


def check_topic(topic: str) -> None:
    """Refuse topics a device could not publish to.

    Raises:
        BadRequest: the topic is empty, a filter (``+``, ``#``), system (``$``) or too long.
    """
    if not topic:
        raise BadRequest("The topic is empty; POST to /topics/<topic>.")
    if "+" in topic or "#" in topic or "\0" in topic:
        raise BadRequest(f"Topic {topic!r} must not contain '+', '#' or NUL: publish to one topic.")
    if topic.startswith("$"):
        raise BadRequest(f"Topic {topic!r} must not start with '$' (reserved by MQTT).")
    if len(topic.encode()) > TOPIC_MAX_BYTES:
        raise BadRequest(f"The topic is longer than {TOPIC_MAX_BYTES} bytes.")


def _ingest_tokens_exist(tokens: TokenStore | None) -> bool:
    return tokens is not None and any(
        r.allows("ingest") and not r.expired() for r in tokens.records()
    )


class DeviceLogins:
    """Check a device's id and password against the registry's argon2 hashes.

    A pair verified once is remembered as a keyed digest (of the hash and the password), so a
    device that publishes often pays argon2 (~0.1-0.2 s, deliberately slow) once; checks run
    one at a time in a worker thread, so wrong passwords cannot take more than one core.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        self._one_at_a_time = asyncio.Semaphore(1)

    async def client(self, device_id: str, password: str) -> Client | None:
        """Return the active password device ``device_id`` if ``password`` is its, else None."""
        client = self.registry.get(device_id)
        if client is None or client.role != "device" or not client.active or not client.argon2:
            return None
        digest = hmac.digest(
            self._key, client.argon2.encode() + b"\0" + password.encode(), hashlib.sha256
        )
        known = self._verified.get(device_id)
        if known is not None and hmac.compare_digest(known, digest):
            return client
        async with self._one_at_a_time:
            if not await asyncio.to_thread(argon2_verify, password, client.argon2):
                return None
        if len(self._verified) > 100_000:
            self._verified.clear()
        self._verified[device_id] = digest
        return client


def _basic(credentials: str) -> tuple[str, str] | None:
    """Return the (user, password) of HTTP Basic ``credentials``, None if malformed."""
    try:
        text = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = text.partition(":")
    return (user, password) if colon and user else None


def _settle(answers: list[asyncio.Future[bool]], durable: bool) -> None:
    for answer in answers:
        if not answer.done():  # a request that timed out has given up on it
            answer.set_result(durable)


class HttpSource:
    """Serve ``POST /topics/{topic}`` and ``GET /health`` from a thread; put each published
    message on ``intake`` and answer it when the worker calls :meth:`ack` or :meth:`refuse`.

    ``taking`` says whether the worker takes messages now: while it says no, requests are
    answered 503 at once instead of waiting. The worker's calls cost nothing per message while
    no HTTP request waits, so MQTT batches pay nothing for HTTP being on.
    """

    def __init__(
        self,
        address: ListenAddress,
        *,
        token: str,
        intake: Intake,
        tokens: TokenStore | None = None,
        taking: Callable[[], bool],
        max_payload_bytes: int,
        tls_cert_file: str = "",
        tls_key_file: str = "",
        devices: Registry | None = None,
    ) -> None:
        if not token.strip() and not _ingest_tokens_exist(tokens):
            raise UsageError(
                "HTTP ingestion needs a token: create one with `wattlake token create --scope "
                "ingest` (or set WATTLAKE_INGEST__HTTP_TOKEN, deprecated)."
            )
        if tls_key_file and not tls_cert_file:
            raise UsageError("--http-tls-key needs --http-tls-cert (ingest.http_tls_cert_file).")
        self.address = address
        self.intake = intake
        self.taking = taking
        self.max_payload_bytes = max_payload_bytes
        self.tls = bool(tls_cert_file)
        self.port = address.port
        self._token = token.strip().encode()
        self._tokens = tokens
        self._registry = devices
        self._devices: DeviceLogins | None = None  # made in the server's event loop
        self._server = ServerThread(
            self.app(),
            what="HTTP listener",
            thread_name="http-ingest",
            graceful_stop_s=STOP_MAX_S,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            http="h11",
            log_level="warning",
            proxy_headers=False,
        )
        # Answers of requests waiting for durability; touched only in the server's thread.
        self._waiting: set[asyncio.Future[bool]] = set()
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: Settings, *, intake: Intake, taking: Callable[[], bool]
    ) -> HttpSource:
        """Return the source the ``ingest.http_*`` settings describe.

        Raises:
            UsageError: the address is malformed or the token is not set.
        """
        return cls(
            ListenAddress.parse(settings["ingest.http_listen"]),
            token=settings["ingest.http_token"],
            tokens=TokenStore.from_settings(settings),
            intake=intake,
            taking=taking,
            max_payload_bytes=settings["ingest.max_payload_bytes"],
            tls_cert_file=settings["ingest.http_tls_cert_file"],
            tls_key_file=settings["ingest.http_tls_key_file"],
            devices=Registry(security_dir(settings["security.dir"])),
        )

    @property
    def url(self) -> str:
        """Return the base URL clients publish to (the real port once started)."""
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def app(self) -> FastAPI:
        """Return the ASGI app: publish, health, and one JSON shape for every error."""
        app = FastAPI(
            title="wattlake HTTP publish", docs_url=None, redoc_url=None, openapi_url=None
        )

        async def refused(_request: Request, exc: Exception) -> JSONResponse:
            if isinstance(exc, HttpError):
                return refusal(exc)
            assert isinstance(exc, StarletteHTTPException)  # unknown path, wrong method
            message = f"{exc.detail}: publish with POST /topics/<topic>."
            return error_response(exc.status_code, message, exc.headers)

        app.add_exception_handler(HttpError, refused)
        app.add_exception_handler(StarletteHTTPException, refused)
        app.add_api_route("/topics/{topic:path}", self.publish, methods=["POST"])
        app.add_api_route("/health", self.health, methods=["GET"])
        return app

    async def health(self) -> JSONResponse:
        """Answer 200 while the worker takes messages, else 503 (no authentication)."""
        taking = not self._closed and self.taking()
        return JSONResponse(
            {"taking": taking},
            status_code=200 if taking else 503,
            headers={} if taking else Unavailable.headers,
        )

    async def publish(self, topic: str, request: Request) -> JSONResponse:
        """Put the body on the intake as a message on ``topic``; answer once it is durable.

        Raises:
            HttpError: the request is refused; its status says why.
        """
        device = await self._authorize(request.headers.get("authorization", ""))
        check_topic(topic)
        if request.query_params.get("qos", "1") not in ("0", "1"):
            raise BadRequest("qos must be 0 or 1; both are answered once the message is durable.")
        if self._closed:
            raise Unavailable("The ingest is stopping; send the message again later.")
        if not self.taking():
            raise Unavailable(
                "The ingest takes no messages now (its write-ahead log is full or failing); "
                "send the message again later."
            )
        if len(self._waiting) >= WAITING_MAX:
            raise Unavailable(f"{WAITING_MAX} requests already wait; send the message again later.")
        payload = await self._read_payload(request)
        if device is not None:
            self._check_device_topic(device, topic, payload)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.add(answer)  # before the worker can see it: ack() looks here first
        try:
            received_at_ms = time.time_ns() // 1_000_000
            self.intake.put(
                HttpDelivery(RawMessage(topic, payload, received_at_ms), 0, 1, 0, answer)
            )
            durable = await self._wait(answer)
        finally:
            self._waiting.discard(answer)
        if not durable:
            raise Unavailable(
                "The message could not be written to the write-ahead log; send it again later."
            )
        return JSONResponse({"accepted": 1})

    async def _wait(self, answer: asyncio.Future[bool]) -> bool:
        """Return the worker's answer; give up when it stops taking messages (e.g. its WAL
        reached its limit after the message was queued) or after ``DURABLE_WAIT_MAX_S``.

        A message given up on may still be written later: sent again, it counts once in
        ``readings`` all the same.
        """
        deadline = time.monotonic() + DURABLE_WAIT_MAX_S
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(answer), WAIT_SLICE_S)
            except TimeoutError as exc:
                if not self.taking():
                    raise Unavailable(
                        "The ingest stopped taking messages before this one was durable; "
                        "send it again later."
                    ) from exc
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"The message was not durable within {DURABLE_WAIT_MAX_S:g} s; "
                        "send it again later."
                    ) from exc

    async def _authorize(self, header: str) -> Client | None:
        """Return the device a request publishes as, None for an ingest token (trusted).

        Raises:
            HttpError: the credential is missing, wrong, or lacks the ``ingest`` scope.
        """
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            return await self._device(credentials)
        text = credentials.strip() if scheme.lower() == "bearer" else ""
        if text and self._tokens is not None:
            record = self._tokens.verify(text)
            if record is not None:
                if record.allows("ingest"):
                    return None
                raise Forbidden(
                    f"This token has the {record.scope} scope; publishing needs an ingest token."
                )
        # The deprecated shared secret (ingest.http_token), compared in constant time so that
        # response times say nothing about how much of a guess was right.
        given = text.encode("latin-1", "replace")
        if not self._token or not hmac.compare_digest(given, self._token):
            raise Unauthorized(
                "A valid token with the ingest scope is required (Authorization: Bearer <token>)."
            )
        return None

    async def _device(self, credentials: str) -> Client:
        """Return the device whose id and password ``credentials`` (HTTP Basic) carry.

        Raises:
            Unauthorized: they are malformed or not a registered device's.
        """
        pair = _basic(credentials)
        if pair is not None and self._registry is not None:
            if self._devices is None:
                self._devices = DeviceLogins(self._registry)
            client = await self._devices.client(*pair)
            if client is not None:
                return client
        raise Unauthorized(
            "The device id and password are not a registered device's (Authorization: Basic "
            "<device id:password>, from `wattlake device add ID --auth password`)."
        )

    @staticmethod
    def _check_device_topic(device: Client, topic: str, payload: bytes) -> None:
        """Refuse a device's publish the broker would refuse (another device's topic).

        Raises:
            Forbidden: the topic is not the device's.
        """
        from wattlake.gateway.auth import publish_refusal  # amqtt, only for device publishes

        reason = publish_refusal(device, topic, payload)
        if reason is not None:
            raise Forbidden(
                f"Device {device.client_id} may not publish on {topic[:200]!r} ({reason}): a "
                "device publishes only below its own id, as over MQTT."
            )

    async def _read_payload(self, request: Request) -> bytes:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"The payload of {declared} bytes is larger than {self.max_payload_bytes} "
                "(ingest.max_payload_bytes)."
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_payload_bytes:
                raise PayloadTooLarge(
                    f"The payload is larger than {self.max_payload_bytes} bytes "
                    "(ingest.max_payload_bytes)."
                )
            chunks.append(chunk)
        if not size:
            raise BadRequest("The body is empty; send the payload as the request body.")
        return b"".join(chunks)

    # -- the worker's side ----------------------------------------------------------------------

    def ack(self, deliveries: list[Delivery]) -> None:
        """Answer the HTTP deliveries among ``deliveries`` 200: they are durable now."""
        if self._waiting:
            self._answer(deliveries, durable=True)

    def refuse(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Answer the HTTP deliveries among ``deliveries`` 503 (not durable; the clients send
        them again) and return the others."""
        if not self._waiting:
            return deliveries
        self._answer(deliveries, durable=False)
        return [d for d in deliveries if not isinstance(d, HttpDelivery)]

    def _answer(self, deliveries: list[Delivery], *, durable: bool) -> None:
        answers = [d.answer for d in deliveries if isinstance(d, HttpDelivery)]
        loop = self._server.loop
        if answers and loop is not None:
            # One wake-up of the server's thread per batch; a stopped server (RuntimeError)
            # has answered its requests 503 already.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, answers, durable)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the address and serve from a background thread.

        Raises:
            ConfigError: the address cannot be listened on or the TLS files cannot be used.
        """
        self._server.load(
            files="HTTP TLS certificate or key", advice="; check --http-tls-cert and --http-tls-key"
        )
        listener = self._listen()
        self.port = int(listener.getsockname()[1])
        try:
            self._server.start(listener, url=self.url, start_max_s=START_MAX_S)
        except WattlakeError:
            self._closed = True
            raise
        if not self.address.is_loopback and not self.tls:
            log.warning(
                "HTTP publishing on %s without TLS: tokens and payloads cross the network in "
                "clear text; give --http-tls-cert and --http-tls-key",
                self.url,
            )

    def _listen(self) -> socket.socket:
        where = f"{self.address.host}:{self.address.port}"
        try:
            family, kind, proto, _, sockaddr = socket.getaddrinfo(
                self.address.host, self.address.port, type=socket.SOCK_STREAM
            )[0]
            listener = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ConfigError(f"Cannot listen for HTTP on {where}: {exc}.") from exc
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(sockaddr)
            listener.listen(self._server.config.backlog)
        except OSError as exc:
            listener.close()
            raise ConfigError(
                f"Cannot listen for HTTP on {where}: {exc}; choose another --http-listen."
            ) from exc
        return listener

    def describe(self) -> str:
        """Return where this source listens for HTTP publishes."""
        return f"HTTP publishes on {self.url}"

    def close(self) -> None:
        """Answer new requests 503; those already on the intake still get their answer."""
        self._closed = True

    def stop(self) -> None:
        """Answer 503 to every request still waiting (the worker takes no more), finish the
        answers in flight and stop the server."""
        self._closed = True
        if not self._server.running:
            return
        loop = self._server.loop
        if loop is not None and self._server.alive:
            # After any answers the worker has sent: the loop runs its callbacks in order.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._refuse_waiting)
        self._server.stop()

    def _refuse_waiting(self) -> None:
        _settle(list(self._waiting), False)

"""The embedded MQTT broker (amqtt), run in a background thread so any client can reach it."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, ClassVar

from wattlake.errors import BrokerError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on ``host:port``."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (port 0 picks a free one), in its own thread.

    amqtt speaks MQTT 3.1.1 only: clients connect with that, and shared subscriptions are not
    available.
    """

    _running: ClassVar[set[str]] = set()

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Return the broker's ``mqtt://host:port`` URL."""
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it listens.

        Raises:
            BrokerError: the broker did not start (port in use, bad address).
        """
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise BrokerError(f"The embedded broker did not start within {timeout_s:.0f} s.")
        if self._error is not None:
            raise BrokerError(
                f"The embedded broker could not listen on {self.host}:{self.port}: {self._error}; "
                "choose another port with --broker-port."
            ) from self._error
        log.info("embedded MQTT broker listening on %s", self.url)
        EmbeddedBroker._running.add(self.url)
        return self

    @classmethod
    def serves(cls, url: str) -> bool:
        """Return True when ``url`` is an embedded broker running in this process."""
        return url in cls._running

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start_broker())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._started.set()
            loop.close()
            return
        self._started.set()
        loop.run_forever()
        loop.run_until_complete(self._broker.shutdown())
        loop.close()

    async def _start_broker(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {
                "default": {
                    "type": "tcp",
                    "bind": f"{self.host}:{self.port}",
                    "max_connections": -1,
                }
            },
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = Broker(config)
        await self._broker.start()

    def stop(self) -> None:
        """Stop the broker and wait for its thread."""
        EmbeddedBroker._running.discard(self.url)
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The embedded MQTT broker (amqtt), run in a background thread so any client can reach it.

Nothing a publisher was told is accepted can be lost, even to a kill -9 of the whole process:

- A QoS 1 publish is acknowledged (PUBACK) only once every subscriber that took a QoS 1 or 2
  copy of it, or keeps a session it was queued for, has acknowledged its copy (amqtt alone
  acknowledges as soon as it has queued the message, in memory). The ingest acknowledges only
  after its write-ahead log sync, one sync for every message that arrived meanwhile, so a
  publisher hears PUBACK when the message is on disk. A publish no subscriber takes (a refused
  topic, nobody subscribed) is acknowledged at once, as MQTT has it.
- With ``durable_subscriber`` (the ingest's client id, in ``up`` and ``demo``) the broker
  refuses every other client (CONNACK "server unavailable"; MQTT clients try again) until the
  ingest has subscribed: a publish cannot arrive while nobody would take it. Later, while the
  ingest is away, amqtt queues its copies in the ingest's persistent session (in memory), and
  the publishes are not acknowledged until the ingest is back and has taken them (its session
  is kept even without security, where amqtt counts every client as anonymous and keeps no
  session for it).
- amqtt gives up on a QoS 1 message it sent when the receiver has not acknowledged it within
  5 s, and forgets it. The ingest acknowledges only once a message is in its write-ahead log,
  which can take longer than that while its WAL is at its limit; so the broker here waits for
  the acknowledgement for as long as the receiver stays connected.
- :meth:`EmbeddedBroker.pending_for` says how many messages the broker still holds for a
  client: a draining ingest takes messages until that is zero.

Every change to amqtt's internals is in :mod:`wattlake.gateway.amqtt_compat`, written for
amqtt 0.12 (checked when it is imported).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from amqtt.broker import Broker

from wattlake.errors import BrokerError
from wattlake.gateway import amqtt_compat

# Re-exported: tests and benchmarks take the port probes from here.
from wattlake.gateway.ports import free_port as free_port
from wattlake.gateway.ports import port_is_free as port_is_free

if TYPE_CHECKING:
    from wattlake.gateway.auth import BrokerSecurity, WattlakeAuthPlugin

log = logging.getLogger(__name__)


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (port 0 picks a free one), in its own thread.

    amqtt speaks MQTT 3.1.1 only: clients connect with that, and shared subscriptions are not
    available. With ``security`` (see :mod:`wattlake.gateway.auth`) every client must prove
    who it is and may use only its own topics, and a TLS listener runs beside the plain one;
    without it (tests, the demo until it registers its clients) anyone may connect.
    ``durable_subscriber`` is the client id of the ingest: until it has subscribed, every
    other client is refused with CONNACK "server unavailable" (and tries again), so that
    nothing is published before there is anyone to take it.
    """

    _running: ClassVar[set[str]] = set()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        security: BrokerSecurity | None = None,
        durable_subscriber: str = "",
    ) -> None:
        self.host = host
        self.durable_subscriber = durable_subscriber
        self.port = port or free_port(host)
        self.security = security
        self.tls_port = (security.tls_port or free_port(security.tls_host)) if security else 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Return the broker's ``mqtt://host:port`` URL."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        """Return the TLS listener's ``mqtts://host:port`` URL ("" without security)."""
        return f"mqtts://{self.security.tls_host}:{self.tls_port}" if self.security else ""

    @property
    def auth_plugin(self) -> WattlakeAuthPlugin | None:
        """Return the plugin that authenticates clients (its ``figures`` feed ``/metrics``)."""
        if self._broker is None or self.security is None:
            return None
        return self._broker.plugins_manager.get_plugin("WattlakeAuthPlugin")  # type: ignore[no-any-return]

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it listens.

        Raises:
            BrokerError: the broker did not start (port in use, bad address).
        """
        amqtt_compat.patch()
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

    def metrics_text(self) -> str:
        """Return the broker's security counters in Prometheus' text format ("" without)."""
        from wattlake.gateway.auth import metrics_text

        plugin = self.auth_plugin
        return metrics_text(plugin.figures) if plugin is not None else ""

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
        if self.security is not None:
            from wattlake.gateway.auth import listener_config

            config = listener_config(self.security, f"{self.host}:{self.port}", self.tls_port)
        broker = Broker(config)
        amqtt_compat.install(broker, self.durable_subscriber)
        self._broker = broker
        await broker.start()

    def pending_for(self, client_id: str, timeout_s: float = 5.0) -> int | None:
        """Return how many messages the broker still holds that ``client_id`` may have to take:
        received from publishers but not yet passed on, queued for the client, or sent and not
        yet acknowledged by it. None when the broker does not run or does not answer.

        The count is an upper bound (messages for other subscribers may be in it); zero means
        every message the broker accepted so far has been acknowledged by ``client_id``.
        """
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or loop.is_closed() or not loop.is_running():
            return None
        future = asyncio.run_coroutine_threadsafe(amqtt_compat.pending_for(broker, client_id), loop)
        try:
            return future.result(timeout_s)
        except Exception:  # the broker is stopping or stuck: nothing can be said
            future.cancel()
            return None

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

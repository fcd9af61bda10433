"""The embedded MQTT broker (amqtt), run in a background thread so any client can reach it.

Two things make it safe to stop a stack without losing a message:

- amqtt gives up on a QoS 1 message it sent when the receiver has not acknowledged it within
  5 s, and forgets it. The ingest acknowledges only once a message is in its write-ahead log,
  which can take longer than that while its WAL is at its limit; so the broker here waits for
  the acknowledgement for as long as the receiver stays connected.
- :meth:`EmbeddedBroker.pending_for` says how many messages the broker still holds for a
  client: a draining ingest takes messages until that is zero.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from wattlake.errors import BrokerError

if TYPE_CHECKING:
    from wattlake.gateway.auth import BrokerSecurity, WattlakeAuthPlugin

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Return True when nothing listens on ``host:port``.

    The probe binds with ``SO_REUSEADDR``, as the servers themselves do: connections of a
    recent run that linger in TIME-WAIT do not make the port taken (a listener still does).
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class EmbeddedBroker:
    """An amqtt broker on ``host:port`` (port 0 picks a free one), in its own thread.

    amqtt speaks MQTT 3.1.1 only: clients connect with that, and shared subscriptions are not
    available. With ``security`` (see :mod:`wattlake.gateway.auth`) every client must prove
    who it is and may use only its own topics, and a TLS listener runs beside the plain one;
    without it (tests, the demo until it registers its clients) anyone may connect.
    """

    _running: ClassVar[set[str]] = set()

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, security: BrokerSecurity | None = None
    ) -> None:
        self.host = host
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
        if self.security is not None:
            from wattlake.gateway.auth import listener_config

            config = listener_config(self.security, f"{self.host}:{self.port}", self.tls_port)
        _wait_for_acknowledgements()
        _deliver_before_disconnect()
        self._broker = Broker(config)
        self._broker._subscriptions = Subscriptions(self._broker._subscriptions)
        await self._broker.start()

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
        future = asyncio.run_coroutine_threadsafe(_pending_for(broker, client_id), loop)
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


class Subscriptions(dict[str, Any]):
    """amqtt's subscriptions by topic filter, iterated over a copy of the filters.

    amqtt walks its subscriptions across awaits (each broadcast checks the receiver's topic
    rules, a reconnecting session gets the retained messages) while a client that disconnects
    has its filters deleted: the walk then failed with "dictionary changed size during
    iteration", printed as a task exception at a demo's stop, and the message being broadcast
    reached none of the subscribers after that point.
    """

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(super().keys())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        return list(super().items())


async def _pending_for(broker: Any, client_id: str) -> int:
    """Count what ``broker`` (an amqtt Broker, on its own loop) still holds for ``client_id``."""
    count = broker._broadcast_queue.qsize()
    count += sum(1 for task in broker._tasks_queue if not task.done())
    for session, _handler in list(broker._sessions.values()):
        # Messages a publisher was told were accepted, not yet passed to the subscribers.
        count += session.delivered_message_queue.qsize()
        if session.client_id == client_id:
            count += session.retained_messages.qsize()
    return int(count)


def _wait_for_acknowledgements() -> None:
    """Make amqtt wait for the PUBACK of a QoS 1 message it sent for as long as the receiver
    stays connected, instead of forgetting the message after 5 s (once per process).

    The ingest acknowledges a message only once it is in its write-ahead log, which takes
    longer than 5 s while the WAL is at its limit; a broker that has forgotten the message
    then no longer counts it in :meth:`EmbeddedBroker.pending_for`, and cannot send it again
    to an ingest that reconnects. When the receiver disconnects amqtt cancels the wait, as
    before.
    """
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
    from amqtt.session import OutgoingApplicationMessage

    if getattr(BrokerProtocolHandler, "_wattlake_waits", False):
        return
    original = BrokerProtocolHandler.mqtt_publish

    async def mqtt_publish(
        self: Any,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> Any:
        session = self.session
        if qos != 1 or ack_timeout or session is None:
            return await original(self, topic, data, qos, retain, ack_timeout)
        packet_id = session.next_packet_id
        message = OutgoingApplicationMessage(packet_id, topic, qos, data, retain)
        session.inflight_out[packet_id] = message
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter  # before sending: the PUBACK may be quick
        try:
            message.publish_packet = message.build_publish_packet()
            await self._send_packet(message.publish_packet)
            message.puback_packet = await waiter
        finally:
            self._puback_waiters.pop(packet_id, None)
            session.inflight_out.pop(packet_id, None)
        return message

    BrokerProtocolHandler.mqtt_publish = mqtt_publish  # type: ignore[method-assign]
    BrokerProtocolHandler._wattlake_waits = True  # type: ignore[attr-defined]


def _deliver_before_disconnect() -> None:
    """Make amqtt pass on every message a client published before it disconnected (once per
    process).

    amqtt acknowledges a QoS 1 publish as soon as it is queued in the publisher's session, and
    its client loop stops at the DISCONNECT: whatever was still queued was acknowledged to the
    publisher and then never broadcast. A publisher that waits for its acknowledgements and
    then disconnects (the demo's simulator at a stop) lost the tail of a burst, the more the
    slower each message is checked (the secured broker's topic rules).
    """
    from amqtt.broker import Broker

    if getattr(Broker, "_wattlake_delivers", False):
        return
    original = Broker._handle_disconnect

    async def handle_disconnect(
        self: Any, session: Any, handler: Any, disconnect_waiter: asyncio.Future[Any]
    ) -> None:
        queued = session.delivered_message_queue
        while not queued.empty():
            message: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            message.set_result(queued.get_nowait())
            await self._handle_message_delivery(session, handler, message)
        await original(self, session, handler, disconnect_waiter)

    Broker._handle_disconnect = handle_disconnect  # type: ignore[method-assign]
    Broker._wattlake_delivers = True  # type: ignore[attr-defined]

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

Every change to amqtt's internals is in :func:`patch_amqtt` and the functions after it, written
for amqtt 0.12 (checked when the broker starts).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

from wattlake.errors import BrokerError

if TYPE_CHECKING:
    from wattlake.gateway.auth import BrokerSecurity, WattlakeAuthPlugin

log = logging.getLogger(__name__)

# The amqtt releases the patches below were written for (and checked against).
AMQTT_VERSION_PREFIX: Final = "0.12."


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
            BrokerError: the broker did not start (port in use, bad address), or the installed
                amqtt is not the release this broker was written for.
        """
        patch_amqtt()
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
        broker = Broker(config)
        broker._subscriptions = Subscriptions(broker._subscriptions)
        broker._broadcast_queue = BroadcastQueue()
        broker._wattlake_waits_for = broker._wattlake_durable = self.durable_subscriber
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


# -- amqtt 0.12 patches: all in one place, applied once per process -------------------------


def patch_amqtt() -> None:
    """Change amqtt's internals as the functions below describe (once per process).

    Raises:
        BrokerError: the installed amqtt is not the release the patches were written for.
    """
    import amqtt
    from amqtt.broker import Broker

    if getattr(Broker, "_wattlake_patched", False):
        return
    if not amqtt.__version__.startswith(AMQTT_VERSION_PREFIX):
        raise BrokerError(
            f"The embedded broker needs amqtt {AMQTT_VERSION_PREFIX}x, but amqtt "
            f"{amqtt.__version__} is installed; install wattlake's pinned dependencies again "
            "(pip install 'amqtt>=0.12,<0.13')."
        )
    _wait_for_acknowledgements()
    _deliver_before_disconnect()
    _acknowledge_when_delivered()
    _refuse_until_subscribed()
    Broker._wattlake_patched = True  # type: ignore[attr-defined]


def _wait_for_acknowledgements() -> None:
    """Make amqtt wait for the PUBACK of a QoS 1 message it sent for as long as the receiver
    stays connected, instead of forgetting the message after 5 s.

    The ingest acknowledges a message only once it is in its write-ahead log, which takes
    longer than 5 s while the WAL is at its limit; a broker that has forgotten the message
    then no longer counts it in :meth:`EmbeddedBroker.pending_for`, and cannot send it again
    to an ingest that reconnects. When the receiver disconnects amqtt cancels the wait, as
    before (:func:`_acknowledge_when_delivered` then keeps the message for a persistent
    session).
    """
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
    from amqtt.session import OutgoingApplicationMessage

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


def _deliver_before_disconnect() -> None:
    """Make amqtt pass on every message a client published before it disconnected.

    amqtt's client loop stops at the DISCONNECT: whatever was still queued in the publisher's
    session was never broadcast (and, before :func:`_acknowledge_when_delivered`, had already
    been acknowledged). A publisher that waits for its acknowledgements and then disconnects
    (the demo's simulator at a stop) lost the tail of a burst, the more the slower each
    message is checked (the secured broker's topic rules).
    """
    from amqtt.broker import Broker

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


class Receipt:
    """A QoS 1 publish not yet acknowledged to its publisher, and the copies of it that
    subscribers still have to acknowledge.

    The broker counts a copy when it sends one at QoS 1 or 2 (:meth:`hold`) or queues one for
    a persistent session that is away, and uncounts it when the subscriber acknowledges it or
    the copy is handed on (:meth:`release`). Once the broadcast has counted every subscriber
    (:meth:`seal`) and no copy is left, the publisher gets its PUBACK. A copy counted after
    that (a retained message sent to a new subscriber) changes nothing.
    """

    __slots__ = ("broadcast", "copies", "done", "handler", "packet_id", "sealed")

    def __init__(self, handler: Any, packet_id: int) -> None:
        self.handler = handler
        self.packet_id = packet_id
        self.copies = 0
        self.broadcast = False
        self.sealed = False
        self.done = False

    def hold(self) -> None:
        """Count one more copy that must be acknowledged first."""
        if not self.done:
            self.copies += 1

    def release(self) -> None:
        """Uncount a copy (acknowledged, handed on, or dropped for a subscriber without a
        session)."""
        if not self.done:
            self.copies -= 1
            self._settle()

    def seal(self) -> None:
        """Say that every subscriber has been counted."""
        self.sealed = True
        self._settle()

    def _settle(self) -> None:
        if self.sealed and self.copies <= 0 and not self.done:
            self.done = True
            _acknowledge(self.handler, self.packet_id)


class TrackedPayload(bytes):
    """A QoS 1 publish's payload with its :class:`Receipt`: amqtt passes the payload object
    through its queues, retained messages and copies unchanged, so the receipt travels with
    every copy of the message without more changes to amqtt."""

    receipt: Receipt


def _receipt_of(data: object) -> Receipt | None:
    return data.receipt if isinstance(data, TrackedPayload) else None


@dataclass
class _Acks:
    """PUBACKs owed to one publisher, sent together on the next turn of the event loop."""

    packet_ids: list[int] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _acknowledge(handler: Any, packet_id: int) -> None:
    """Send the PUBACK for ``packet_id`` to the publisher behind ``handler`` (soon, batched)."""
    acks: _Acks | None = getattr(handler, "_wattlake_acks", None)
    if acks is None:
        acks = handler._wattlake_acks = _Acks()
    acks.packet_ids.append(packet_id)
    if len(acks.packet_ids) == 1:
        asyncio.get_running_loop().call_soon(_send_acks, handler, acks)


def _send_acks(handler: Any, acks: _Acks) -> None:
    packet_ids, acks.packet_ids = acks.packet_ids, []
    task = asyncio.ensure_future(_send_pubacks(handler, packet_ids))
    acks.tasks.add(task)
    task.add_done_callback(acks.tasks.discard)


async def _send_pubacks(handler: Any, packet_ids: list[int]) -> None:
    from amqtt.mqtt.puback import PubackPacket

    try:
        for packet_id in packet_ids:
            await handler._send_packet(PubackPacket.build(packet_id))
    except Exception as exc:  # the publisher is gone: it sends the message again on reconnect
        log.debug("could not acknowledge %d message(s): %s", len(packet_ids), exc)


class BroadcastQueue(asyncio.Queue[dict[str, Any]]):
    """amqtt's queue of messages to broadcast, remembering the one being broadcast (amqtt
    broadcasts one at a time) and marking a tracked message as broadcast when it is queued."""

    current: dict[str, Any] | None = None

    async def put(self, item: dict[str, Any]) -> None:
        receipt = _receipt_of(item.get("data"))
        if receipt is not None:
            receipt.broadcast = True
        await super().put(item)

    async def get(self) -> dict[str, Any]:
        item = await super().get()
        self.current = item
        return item


def _acknowledge_when_delivered() -> None:
    """Make amqtt acknowledge a QoS 1 publish only once the subscribers have their copies.

    amqtt sends the PUBACK as soon as it has queued the message in memory: a kill -9 then lost
    what it had acknowledged but not yet passed on (2-4 messages at 150 messages/s). Here the
    message gets a :class:`Receipt` instead, which sends the PUBACK once every copy the broker
    made at QoS 1 or 2 has been acknowledged by its subscriber; a copy kept for a persistent
    session that is away (or that went away before acknowledging) counts until that session
    has taken it. A publish that reaches no subscriber (a refused topic, nobody subscribed, or
    only subscribers at QoS 0 or without a session) is acknowledged at once, as in MQTT.
    """
    from amqtt.broker import Broker, RetainedApplicationMessage
    from amqtt.mqtt.constants import QOS_1
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
    from amqtt.mqtt.protocol.handler import INCOMING

    qos1_flow = BrokerProtocolHandler._handle_qos1_message_flow

    async def handle_qos1_message_flow(self: Any, app_message: Any) -> None:
        if (
            app_message.direction != INCOMING
            or app_message.qos != QOS_1
            or app_message.packet_id is None
            or app_message.puback_packet is not None
            or self.session is None
        ):
            await qos1_flow(self, app_message)
            return
        payload = TrackedPayload(app_message.data or b"")
        payload.receipt = Receipt(self, app_message.packet_id)
        app_message.data = payload
        await self.session.delivered_message_queue.put(app_message)  # no PUBACK yet

    send = BrokerProtocolHandler.mqtt_publish

    def mqtt_publish(
        self: Any,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> Coroutine[Any, Any, Any]:
        # Not a coroutine function: the copy is counted as the broadcast creates it, before
        # the broadcast is sealed, not when the sending task first runs.
        sending = send(self, topic, data, qos, retain, ack_timeout)
        receipt = _receipt_of(data)
        if receipt is None or not qos:
            return sending
        receipt.hold()
        return _owed(self.session, receipt, sending, topic, data, qos)

    async def _owed(
        session: Any,
        receipt: Receipt,
        sending: Coroutine[Any, Any, Any],
        topic: str,
        data: bytes | bytearray,
        qos: int,
    ) -> Any:
        try:
            return await sending
        except BaseException:
            if session is not None and session.clean_session is False and not session.is_anonymous:
                # The subscriber went away before acknowledging: keep the copy for its return.
                receipt.hold()
                session.retained_messages.put_nowait(
                    RetainedApplicationMessage(None, topic, data, qos)
                )
            raise
        finally:
            receipt.release()

    retain_for_session = Broker._retain_broadcast_message

    async def retain_broadcast_message(
        self: Any, broadcast: dict[str, Any], qos: int, target_session: Any
    ) -> None:
        receipt = _receipt_of(broadcast.get("data"))
        if receipt is not None:
            receipt.hold()  # until the session is back and has taken it
        await retain_for_session(self, broadcast, qos, target_session)

    publish_session_retained = Broker._publish_session_retained_messages

    async def publish_session_retained_messages(self: Any, session: Any) -> None:
        # amqtt takes every queued message at once (no await in between) and sends each as a
        # copy of its own, counted by mqtt_publish; the count for the queued one ends after.
        queued = list(session.retained_messages._queue) if self._get_handler(session) else []
        try:
            await publish_session_retained(self, session)
        finally:
            for message in queued:
                receipt = _receipt_of(message.data)
                if receipt is not None:
                    receipt.release()

    deliver = Broker._handle_message_delivery

    async def handle_message_delivery(
        self: Any, session: Any, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        receipt = _receipt_of(getattr(wait_deliver.result(), "data", None))
        went_on = await deliver(self, session, handler, wait_deliver)
        if receipt is not None and not receipt.broadcast:
            receipt.seal()  # refused (topic rules): nothing to wait for
        return bool(went_on)

    run_broadcast = Broker._run_broadcast

    async def run_one_broadcast(self: Any, running_tasks: Any) -> None:
        await run_broadcast(self, running_tasks)
        queue = self._broadcast_queue
        if isinstance(queue, BroadcastQueue) and queue.current is not None:
            receipt = _receipt_of(queue.current.get("data"))
            queue.current = None
            if receipt is not None:
                receipt.seal()  # every subscriber counted; if the walk failed, never sealed

    BrokerProtocolHandler._handle_qos1_message_flow = handle_qos1_message_flow  # type: ignore[method-assign]
    BrokerProtocolHandler.mqtt_publish = mqtt_publish  # type: ignore[method-assign,assignment]
    Broker._retain_broadcast_message = retain_broadcast_message  # type: ignore[method-assign]
    Broker._publish_session_retained_messages = publish_session_retained_messages  # type: ignore[method-assign]
    Broker._handle_message_delivery = handle_message_delivery  # type: ignore[method-assign]
    Broker._run_broadcast = run_one_broadcast  # type: ignore[method-assign]


def _refuse_until_subscribed() -> None:
    """Make a broker whose ``_wattlake_waits_for`` names a client (the ingest) refuse every
    other client, with CONNACK "server unavailable", until that client has subscribed at QoS 1;
    and keep that client's session (``_wattlake_durable``) even when it is anonymous.

    Before the ingest has subscribed, a publish would reach no subscriber and be acknowledged
    and dropped (as MQTT has it); refused, a device tries again a moment later and publishes
    once the ingest takes its copies.
    """
    from amqtt.broker import Broker
    from amqtt.mqtt.connack import SERVER_UNAVAILABLE, ConnackPacket
    from amqtt.mqtt.constants import QOS_1, QOS_2
    from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler

    authenticate = Broker._authenticate

    async def authenticate_once_subscribed(self: Any, session: Any, listener: Any) -> bool:
        waits_for = getattr(self, "_wattlake_waits_for", "")
        if waits_for and session.client_id != waits_for:
            session._wattlake_unavailable = True
            return False
        authenticated = bool(await authenticate(self, session, listener))
        if authenticated and session.client_id == getattr(self, "_wattlake_durable", ""):
            # amqtt keeps no session for an anonymous client (every client of a broker without
            # security): the ingest's must be kept, with what is queued for it while it is away.
            session.is_anonymous = False
        return authenticated

    subscribe = Broker.add_subscription

    async def add_subscription(self: Any, subscription: tuple[str, int], session: Any) -> int:
        granted = int(await subscribe(self, subscription, session))
        waits_for = getattr(self, "_wattlake_waits_for", "")
        if waits_for and session.client_id == waits_for and granted in (QOS_1, QOS_2):
            self._wattlake_waits_for = ""  # the ingest takes QoS 1 copies: let publishers in
            log.info("%s has subscribed; the broker takes other clients now", waits_for)
        return granted

    connack = BrokerProtocolHandler.mqtt_connack_authorize

    async def mqtt_connack_authorize(self: Any, authorize: bool) -> None:
        if authorize or not getattr(self.session, "_wattlake_unavailable", False):
            await connack(self, authorize)
            return
        await self._send_packet(ConnackPacket.build(self.session.parent, SERVER_UNAVAILABLE))

    Broker._authenticate = authenticate_once_subscribed  # type: ignore[method-assign]
    Broker.add_subscription = add_subscription  # type: ignore[method-assign]
    BrokerProtocolHandler.mqtt_connack_authorize = mqtt_connack_authorize  # type: ignore[method-assign]

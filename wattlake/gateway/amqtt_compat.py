"""Every change wattlake makes to amqtt's internals, written for amqtt 0.12 (checked at import).

The embedded broker (:mod:`wattlake.gateway.broker`) calls :func:`patch` before it starts and
:func:`install` on each amqtt ``Broker`` it makes; :func:`pending_for` reads amqtt's private
queues. Why each patch exists, and the amqtt bugs behind them written up for upstream, is in
docs/compat.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from amqtt.broker import Broker, RetainedApplicationMessage
from amqtt.mqtt.connack import SERVER_UNAVAILABLE, ConnackPacket
from amqtt.mqtt.constants import QOS_1, QOS_2
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.protocol.handler import INCOMING
from amqtt.mqtt.puback import PubackPacket
from amqtt.session import OutgoingApplicationMessage

from wattlake.compat import require_series

log = logging.getLogger(__name__)

# The amqtt releases the patches below were written for (and checked against).
AMQTT_SERIES: Final = "0.12."


def check_version() -> str:
    """Return the installed amqtt version.

    Raises:
        LibraryVersionError: it is not :data:`AMQTT_SERIES`.
    """
    return require_series("amqtt", AMQTT_SERIES, __name__)


check_version()


def install(broker: Broker, durable_subscriber: str) -> None:
    """Give ``broker`` (not yet started) the queues the patches need, and make it wait for
    ``durable_subscriber`` ("" for none) before it takes other clients."""
    broker._subscriptions = Subscriptions(broker._subscriptions)  # type: ignore[assignment]
    broker._broadcast_queue = BroadcastQueue()
    broker._wattlake_waits_for = broker._wattlake_durable = durable_subscriber  # type: ignore[attr-defined]


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


async def pending_for(broker: Any, client_id: str) -> int:
    """Count what ``broker`` (an amqtt Broker, on its own loop) still holds for ``client_id``."""
    count = broker._broadcast_queue.qsize()
    count += sum(1 for task in broker._tasks_queue if not task.done())
    for session, _handler in list(broker._sessions.values()):
        # Messages a publisher was told were accepted, not yet passed to the subscribers.
        count += session.delivered_message_queue.qsize()
        if session.client_id == client_id:
            count += session.retained_messages.qsize()
    return int(count)


def patch() -> None:
    """Change amqtt's internals as the functions below describe (once per process)."""
    if getattr(Broker, "_wattlake_patched", False):
        return
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

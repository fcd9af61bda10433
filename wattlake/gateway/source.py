"""What the ingest worker consumes: sources behind one small protocol.

A :class:`Source` brings messages in from one kind of edge (the MQTT broker, HTTP publishes,
the gap refill's RPC calls to meters, history files) and puts each one on an intake
(:data:`wattlake.gateway.mqtt.Intake`) shared by every source, as a
:class:`~wattlake.gateway.mqtt.Delivery`. The worker takes
batches from that intake, makes them durable (the write-ahead log), then tells every source
:meth:`~Source.ack` (the source acknowledges its own deliveries among the batch: a PUBACK, an
HTTP 200) or, when the batch could not be made durable, :meth:`~Source.refuse` (the source tells
its publishers to send again, or returns its deliveries for the worker to hold and retry).

The lifecycle is the same for every source: :meth:`~Source.start` (ready once it returns, or
raises), :meth:`~Source.close` at a stop (take nothing new; what is on the intake still gets its
answer), :meth:`~Source.stop` (let go of the edge: what was not acknowledged stays with the
sender). :meth:`~Source.describe` says what it is, for logs and the console.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from wattlake.gateway.mqtt import Delivery


@runtime_checkable
class Source(Protocol):
    """One edge the ingest worker takes messages from (see the module docstring)."""

    def start(self) -> object:
        """Begin taking messages; return when ready (what it returns is not used).

        Raises:
            wattlake.errors.WattlakeError: the source cannot start (e.g. its broker or port).
        """

    def close(self) -> None:
        """Take nothing new (a stop begins); deliveries already on the intake are answered."""

    def stop(self) -> None:
        """Let go of the edge; whatever was not acknowledged stays with its sender."""

    def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge this source's deliveries among ``deliveries``: they are durable."""

    def refuse(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Answer this source's deliveries among ``deliveries`` as not durable; return those
        the worker must hold and retry itself (the rest of the batch included)."""

    def describe(self) -> str:
        """Return what this source is, in a few words (no secret)."""

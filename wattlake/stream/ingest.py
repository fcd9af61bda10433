"""An ingest worker: MQTT messages in, readings delivered to the lake."""

from __future__ import annotations

import logging
import threading
import time

from wattlake.config import Settings
from wattlake.devices.router import DecoderRouter
from wattlake.gateway.mqtt import BrokerAddress, MqttSource
from wattlake.lake.storage import Lake
from wattlake.stream.delivery import DeliveryStream, FlushLimits

log = logging.getLogger(__name__)

# How long the broker may stay silent before a draining worker decides it has everything [s].
DRAIN_QUIET_S = 0.5


def stream_from_settings(settings: Settings, lake: Lake) -> DeliveryStream:
    """Return a delivery stream configured by ``settings``."""
    limits = FlushLimits(
        flush_interval_s=settings["stream.flush_interval_s"],
        buffer_max_bytes=settings["stream.buffer_max_bytes"],
        buffer_max_rows=settings["stream.buffer_max_rows"],
    )
    return DeliveryStream(
        lake,
        name=settings["stream.name"],
        router=DecoderRouter(max_payload_bytes=settings["ingest.max_payload_bytes"]),
        limits=limits,
        compression=settings["stream.compression"],
    )


class IngestWorker:
    """Subscribe to a broker and deliver what arrives until told to stop."""

    def __init__(
        self,
        settings: Settings,
        broker_url: str,
        *,
        client_id: str | None = None,
        lake: Lake | None = None,
    ) -> None:
        self.lake = lake or Lake.from_settings(settings)
        self.stream = stream_from_settings(settings, self.lake)
        topics = [t.strip() for t in settings["ingest.topics"].split(",") if t.strip()]
        self.source = MqttSource(
            BrokerAddress.parse(broker_url),
            topics=topics,
            qos=settings["ingest.qos"],
            client_id=client_id,
        )
        self.ready = threading.Event()

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set, then drain what the broker still sends and flush.

        Raises:
            wattlake.errors.BrokerError: the broker cannot be reached.
        """
        self.source.start()
        self.ready.set()
        try:
            while not stop.is_set():
                self._step()
            quiet_since = time.monotonic()
            while time.monotonic() - quiet_since < DRAIN_QUIET_S:
                if self._step():
                    quiet_since = time.monotonic()
        finally:
            self.source.stop()
            self.stream.flush()

    def _step(self) -> bool:
        batch = self.source.take(timeout_s=0.1)
        if batch:
            self.stream.accept(d.message for d in batch)
        if self.stream.flush_due():
            self.stream.flush()
        return bool(batch)

"""Simulated meters that publish real device payloads to a real MQTT broker."""

from __future__ import annotations

import json
import math
import random
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from wattlake.gateway.mqtt import BrokerAddress, new_client


@dataclass(slots=True)
class SimulatedProEM:
    """A Shelly Pro EM (Gen2, two channels) with a household load on channel 0.

    Its import counter is the integral of its power, so power and counters agree.
    """

    device_id: str
    rng: random.Random
    energy_wh: list[float] = field(default_factory=lambda: [0.0, 0.0])
    last_ts_s: float | None = None

    def power_w(self, ts_s: float, channel: int) -> float:
        """Return the load at ``ts_s`` [W]: base load plus a daily swing plus noise."""
        hour = (ts_s / 3600.0) % 24
        daily = 400.0 * max(0.0, math.sin((hour - 6.0) / 24.0 * 2 * math.pi))
        base = 150.0 if channel == 0 else 60.0
        return round(base + daily + self.rng.uniform(0.0, 50.0), 1)

    def notify_status(self, ts_s: float) -> bytes:
        """Return one ``NotifyStatus`` with power and counters of both channels at ``ts_s``."""
        powers = [self.power_w(ts_s, ch) for ch in (0, 1)]
        if self.last_ts_s is not None:
            dt_h = (ts_s - self.last_ts_s) / 3600.0
            for ch in (0, 1):
                self.energy_wh[ch] += powers[ch] * dt_h
        self.last_ts_s = ts_s
        params: dict[str, object] = {"ts": round(ts_s, 2)}
        for ch in (0, 1):
            params[f"em1:{ch}"] = {"id": ch, "act_power": powers[ch], "voltage": 230.0}
            params[f"em1data:{ch}"] = {
                "id": ch,
                "total_act_energy": round(self.energy_wh[ch], 2),
                "total_act_ret_energy": 0.0,
            }
        doc = {
            "src": self.device_id,
            "dst": f"{self.device_id}/events",
            "method": "NotifyStatus",
            "params": params,
        }
        return json.dumps(doc).encode()


class Simulator:
    """Publish from ``devices`` simulated meters every ``interval_s`` seconds until stopped."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        devices: int,
        interval_s: float = 1.0,
        seed: int = 0,
        qos: int = 1,
        count: int | None = None,
    ) -> None:
        rng = random.Random(seed)
        self.devices = [
            SimulatedProEM(f"shellyproem50-sim{index:04d}", random.Random(rng.random()))
            for index in range(devices)
        ]
        self.broker = broker
        self.interval_s = interval_s
        self.qos = qos
        self.count = count
        self.published = 0
        self._stop = threading.Event()
        self._client = new_client(f"wattlake-sim-{seed}-{rng.randrange(1 << 30)}", clean_start=True)
        self._client.max_inflight_messages_set(1000)

    def run(self) -> int:
        """Publish until stopped or ``count`` messages per device; return messages published."""
        self._client.connect(self.broker.host, self.broker.port)
        self._client.loop_start()
        infos: list[mqtt.MQTTMessageInfo] = []
        rounds = 0
        try:
            while not self._stop.is_set() and (self.count is None or rounds < self.count):
                now_s = time.time()
                for device in self.devices:
                    topic = f"{device.device_id}/events/rpc"
                    infos.append(self._client.publish(topic, device.notify_status(now_s), self.qos))
                    self.published += 1
                rounds += 1
                infos = [i for i in infos if not i.is_published()]
                self._stop.wait(self.interval_s)
            for info in infos:
                info.wait_for_publish(timeout=10)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
        return self.published

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current round."""
        self._stop.set()

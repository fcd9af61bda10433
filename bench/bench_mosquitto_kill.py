"""What Mosquitto itself loses on a kill -9: messages it acknowledged to a device, not yet taken.

Mosquitto acknowledges a QoS 1 publish when it has the message in memory; with ``persistence
true`` it writes its in-memory state to disk every ``autosave_interval`` seconds (default 1800)
and at a clean stop. So a kill -9 loses what it had acknowledged to devices but not yet passed to
a subscriber that acknowledged it, unless an autosave caught it. Two cases, each at 200
messages/s from one device for 4 s, then ``kill -9`` of Mosquitto, a restart from its
persistence file, and the "ingest" (a persistent-session subscriber that acknowledges every
5 ms, as the real one does after its WAL sync) reconnects and takes what was restored:

- ``live``: the ingest is connected throughout;
- ``away``: the ingest has disconnected (its session kept) before the device publishes, as
  while `wattlake ingest` restarts: Mosquitto queues for it in memory.

    PYTHONPATH=. .venv/bin/python bench/bench_mosquitto_kill.py [--runs 3]
        [--autosave 1800,1]

Prints one JSON line per run: acknowledged to the device, taken by the ingest, lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wattlake.gateway.broker import free_port  # noqa: E402

RATE_PER_S = 200.0
PUBLISH_S = 4.0


def start_mosquitto(folder: Path, port: int, autosave_s: int) -> subprocess.Popen[bytes]:
    """Start Mosquitto on ``port`` with persistence in ``folder``; wait until it listens."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {folder}/\nautosave_interval {autosave_s}\n"
        "max_queued_messages 100000\n" + ("user root\n" if os.geteuid() == 0 else "")
        # As root Mosquitto would switch to user "mosquitto", who cannot write the folder.
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Ingest:
    """A persistent-session subscriber that acknowledges what it received every 5 ms."""

    def __init__(self, port: int) -> None:
        self.taken: set[int] = set()
        self._pending: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="ingest",
            protocol=mqtt.MQTTv311,
            clean_session=False,
        )
        self.client.manual_ack_set(True)
        self.client.reconnect_delay_set(1, 1)
        subscribed = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe("meters/#", 1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("the ingest could not subscribe")
        self._acker = threading.Thread(target=self._ack_loop, daemon=True)
        self._acker.start()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._pending.append((msg.mid, int(msg.payload)))

    def _ack_loop(self) -> None:
        while not self._stop.wait(0.005):
            with self._lock:
                batch, self._pending = self._pending, []
            for mid, number in batch:
                self.taken.add(number)  # "in the WAL" before the acknowledgement
                self.client.ack(mid, 1)

    def leave(self) -> None:
        """Disconnect (the session stays with the broker)."""
        self._stop.set()
        self._acker.join()
        self.client.disconnect()
        self.client.loop_stop()


def run_once(mode: str, autosave_s: int) -> dict[str, object]:
    """One kill -9 of Mosquitto under a steady QoS 1 load; return the counts."""
    with tempfile.TemporaryDirectory(prefix="bench-mosquitto-kill-") as tmp:
        folder, port = Path(tmp), free_port()
        broker = start_mosquitto(folder, port, autosave_s)
        ingest = Ingest(port)
        taken_before: set[int] = set()
        if mode == "away":
            ingest.leave()
        device = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="meter", protocol=mqtt.MQTTv311
        )
        device.max_inflight_messages_set(100)
        device.connect("127.0.0.1", port)
        device.loop_start()
        sent: list[tuple[int, mqtt.MQTTMessageInfo]] = []
        started = time.monotonic()
        n = 0
        while time.monotonic() < started + PUBLISH_S:
            sent.append((n, device.publish("meters/a", str(n).encode(), qos=1)))
            n += 1
            delay = started + n / RATE_PER_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        os.kill(broker.pid, signal.SIGKILL)
        broker.wait()
        device.loop_stop()
        acked = {i for i, info in sent if info.rc == 0 and info.is_published()}
        if mode == "live":
            ingest.leave()  # its loop reconnects to nothing; start afresh below
        taken_before = set(ingest.taken)
        broker = start_mosquitto(folder, port, autosave_s)
        try:
            again = Ingest(port)
            time.sleep(2.0)  # what the restarted broker restored arrives at once
            again.leave()
        finally:
            broker.terminate()
            broker.wait()
        taken = taken_before | again.taken
        return {
            "mode": mode,
            "autosave_interval_s": autosave_s,
            "acknowledged": len(acked),
            "taken_by_ingest": len(taken & acked),
            "lost": len(acked - taken),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--autosave", default="1800,1", help="autosave_interval values [s]")
    args = parser.parse_args()
    for autosave_s in (int(v) for v in args.autosave.split(",")):
        for mode in ("live", "away"):
            for _ in range(args.runs):
                print(json.dumps(run_once(mode, autosave_s)), flush=True)


if __name__ == "__main__":
    main()

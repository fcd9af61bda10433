"""What acknowledging after the WAL sync costs a device: `wattlake up`, old revision beside new.

The embedded broker used to acknowledge a QoS 1 publish when it had queued it (in memory); now
it acknowledges once the ingest has the message in its write-ahead log (one fsync for every
message that arrived meanwhile). This runs `wattlake up --no-web` from a git revision (its
``wattlake`` package, extracted with ``git archive``) and from this checkout, alternately in the
same run, each time in a fresh data folder, and has one password device publish QoS 1 messages
(the simulator's Gen2 notifications) on the plain listener:

- with ``--window`` messages unacknowledged at most (a device that pipelines): messages/s
  acknowledged to the device, from the first publish to the last acknowledgement, and
  messages/s made durable (the ingest's ``acknowledged`` counter in its metrics file, rewritten
  every 5 s: the slope between the first and the last value taken while the load lasts). The old
  broker acknowledges faster than the ingest makes messages durable and holds the difference in
  memory; the new one acknowledges at the durable rate;
- one at a time (a device that waits for each acknowledgement): the median round trip [ms].

    PYTHONPATH=. .venv/bin/python bench/bench_up_ack.py --baseline REV [--messages 20000]
        [--window 100] [--rounds 3]

Prints each measurement and the medians, with the ratio new/old (the machine is shared:
compare ratios from the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wattlake.devices.sim.simulator import Fleet, FleetConfig  # noqa: E402
from wattlake.gateway.broker import free_port  # noqa: E402
from wattlake.gateway.registry import Registry  # noqa: E402

WATTLAKE = str(Path(sys.executable).with_name("wattlake"))
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass
class Result:
    label: str
    rate_per_s: float  # pipelined, messages acknowledged to the device per second
    durable_per_s: float  # pipelined, messages into the ingest's WAL per second
    round_trip_ms: float  # one at a time, median


class DurableCounter:
    """Sample the ingest's ``acknowledged`` counter each time its metrics file is rewritten."""

    def __init__(self, lake: Path) -> None:
        self.lake = lake
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = None
        while not self._stop.wait(0.02):
            for path in self.lake.glob("**/metrics.prom"):
                for line in path.read_text().splitlines():
                    if line.startswith("wattlake_ingest_acknowledged_total"):
                        value = int(float(line.rsplit(" ", 1)[1]))
                        if value != last:
                            self.samples.append((time.perf_counter(), value))
                            last = value

    def rate_per_s(self, below: int) -> float:
        """Return the slope between the first and last samples in (0, ``below``) [1/s]."""
        self._stop.set()
        self._thread.join()
        during = [(t, v) for t, v in self.samples if 0 < v < below]
        if len(during) < 2:
            return float("nan")
        (t1, v1), (t2, v2) = during[0], during[-1]
        return (v2 - v1) / (t2 - t1)


def extract(rev: str, target: Path) -> Path:
    """Extract revision ``rev``'s ``wattlake`` package into ``target``; return ``target``."""
    archive = subprocess.run(
        ["git", "archive", rev, "wattlake"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    target.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def messages(device_id: str, count: int) -> list[tuple[str, bytes]]:
    """Return ``count`` Gen2 notifications of one simulated meter."""
    fleet = Fleet(FleetConfig(devices=1, seed=6))
    assert fleet.devices[0].device_id == device_id
    out: list[tuple[str, bytes]] = []
    i = 0
    while len(out) < count:
        out += [(m.topic, m.payload) for m in fleet.round(T0 + i, 1.0) if m.payload[:1] == b"{"]
        i += 1
    return out[:count]


class Device:
    """A paho client for the password device; counts acknowledgements."""

    def __init__(self, port: int, device_id: str, password: str, window: int) -> None:
        self.acked = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv311
        )
        self.client.username_pw_set(device_id, password)
        self.client.max_inflight_messages_set(window)
        self.client.on_publish = self._on_publish
        answer: list[str] = []
        answered = threading.Event()

        def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
            answer.append(str(rc))
            answered.set()

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not answered.wait(20) or answer[-1] != "Success":
            self.client.loop_stop()
            raise ConnectionRefusedError(answer[-1] if answer else "no answer")

    def _on_publish(self, *_a: object) -> None:
        with self.lock:
            self.acked += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect_when_taken(port: int, device_id: str, password: str, window: int) -> Device:
    """Connect once the broker takes devices (the new one refuses them until the ingest has
    subscribed; the old one accepts at once and drops what nobody takes yet)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return Device(port, device_id, password, window)
        except (ConnectionRefusedError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def measure(label: str, python_path: str, n: int, window: int, workdir: Path) -> Result:
    """Start `up` from ``python_path`` in a fresh folder; time one device against it."""
    registry = Registry(workdir / "security")
    registry.ca.init(hosts=[], ips=["127.0.0.1"])
    device_id = Fleet(FleetConfig(devices=1, seed=6)).devices[0].device_id
    password = registry.add(device_id, auth="password").password
    port, tls_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")},
        "PYTHONPATH": python_path,
        "WATTLAKE_SECURITY__DIR": str(workdir / "security"),
        "WATTLAKE_BROKER__PORT": str(port),
        "WATTLAKE_BROKER__TLS_PORT": str(tls_port),
        "WATTLAKE_BROKER__TLS_HOST": "127.0.0.1",
    }
    log = open(workdir / "up.log", "w")  # noqa: SIM115 - closed below
    up = subprocess.Popen(
        [WATTLAKE, "up", "--no-web", "--data-dir", str(workdir / "lake")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Both revisions: wait until the ingest takes messages, then measure.
        deadline = time.monotonic() + 90
        while "taking messages from MQTT" not in (workdir / "up.log").read_text():
            if up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`up` did not start: {(workdir / 'up.log').read_text()}")
            time.sleep(0.1)
        batch = messages(device_id, n + 200)
        device = connect_when_taken(port, device_id, password, window)
        counter = DurableCounter(workdir / "lake")
        try:
            started = time.perf_counter()
            for topic, payload in batch[:n]:
                device.client.publish(topic, payload, qos=1)
            while device.acked < n:
                time.sleep(0.001)
            rate = n / (time.perf_counter() - started)
            while not any(v >= n for _t, v in counter.samples) and up.poll() is None:
                time.sleep(0.05)  # the old broker still holds what it acknowledged
            durable = counter.rate_per_s(n)
            trips = []
            for topic, payload in batch[n:]:
                sent = time.perf_counter()
                device.client.publish(topic, payload, qos=1).wait_for_publish(10)
                trips.append((time.perf_counter() - sent) * 1000)
        finally:
            device.close()
    finally:
        up.terminate()
        up.wait(120)
        log.close()
    return Result(label, rate, durable, statistics.median(trips))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-up-ack-") as tmp:
        old = str(extract(args.baseline, Path(tmp) / "old"))
        revisions = {f"old ({args.baseline})": old, "new (this checkout)": str(ROOT)}
        results: dict[str, list[Result]] = {label: [] for label in revisions}
        for i in range(args.rounds):
            for label, path in revisions.items():
                workdir = Path(tmp) / f"run-{i}-{len(results[label])}-{label.split()[0]}"
                workdir.mkdir()
                result = measure(label, path, args.messages, args.window, workdir)
                results[label].append(result)
                print(
                    json.dumps(
                        {
                            "round": i + 1,
                            "revision": label,
                            "acked_per_s": round(result.rate_per_s, 1),
                            "durable_per_s": round(result.durable_per_s, 1),
                            "round_trip_ms": round(result.round_trip_ms, 2),
                        }
                    ),
                    flush=True,
                )
    (old_label, old_runs), (new_label, new_runs) = results.items()
    old_rate = statistics.median(r.rate_per_s for r in old_runs)
    new_rate = statistics.median(r.rate_per_s for r in new_runs)
    old_durable = statistics.median(r.durable_per_s for r in old_runs)
    new_durable = statistics.median(r.durable_per_s for r in new_runs)
    old_trip = statistics.median(r.round_trip_ms for r in old_runs)
    new_trip = statistics.median(r.round_trip_ms for r in new_runs)
    print(f"\nmedians of {args.rounds} rounds, {args.messages} messages, window {args.window}:")
    print("| revision | acknowledged msg/s | durable msg/s | round trip, one at a time [ms] |")
    print("|---|---|---|---|")
    print(f"| {old_label} | {old_rate:.0f} | {old_durable:.0f} | {old_trip:.2f} |")
    print(f"| {new_label} | {new_rate:.0f} | {new_durable:.0f} | {new_trip:.2f} |")
    print(
        f"| ratio new/old | {new_rate / old_rate:.2f} | {new_durable / old_durable:.2f} "
        f"| {new_trip / old_trip:.2f} |"
    )


if __name__ == "__main__":
    main()

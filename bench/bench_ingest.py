"""Ingest throughput, latency and memory against a real Mosquitto, beside a bare subscriber.

Run: ``.venv/bin/python bench/bench_ingest.py [--messages N] [--batched-messages B]``.

Throughput is measured by draining a broker queue: the messages are published first into the
persistent session of a subscriber that is away, then the subscriber starts and the clock runs
until the last reading is in a committed Parquet file (for the bare subscriber: until the last
message arrived; it does nothing with them). So the publisher's own speed is not measured.

1. bare paho subscriber (``loop_start`` + an ``on_message`` that counts), QoS 0 and 1: the ceiling;
2. ``IngestWorker`` (WAL + fsync before PUBACK; its lake writer process decodes into an Arrow
   buffer and writes Parquet zstd): one reading per message (Shelly Gen2 ``NotifyStatus``),
   QoS 0 and QoS 1;
3. the same with batched messages (generic format, 100 readings per message: a JSON array,
   or newline-delimited JSON), QoS 1;
4. publish-to-WAL latency at a steady 10,000 readings/s from a publisher in another process;
5. resident memory with 1,000,000 readings in the stream's buffer.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from timing import as_cli_process

from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.gateway.broker import free_port
from wattlake.lake.storage import Lake
from wattlake.stream.delivery import stream_from_settings
from wattlake.stream.ingest import IngestWorker

BASE_TS_S = 1_767_225_600
TOPIC_FILTER = "#"


def single(i: int, ts_s: float | None = None) -> tuple[str, bytes]:
    device = f"shellyproem50-b{i % 50:03d}"
    params = {"ts": ts_s if ts_s is not None else BASE_TS_S + i // 50, "em1:0": {"act_power": i}}
    doc = {"src": device, "method": "NotifyStatus", "params": params}
    return f"{device}/events/rpc", json.dumps(doc).encode()


def batched(i: int, per_message: int = 100, *, lines: bool = False) -> tuple[str, bytes]:
    """Return generic message ``i``: a JSON array, or with ``lines`` newline-delimited JSON."""
    device = f"bench-{i % 50:03d}"
    first = (i // 50) * per_message
    rows = [
        {"ts": BASE_TS_S + first + k, "power_w": float(k), "energy_wh": float(first + k)}
        for k in range(per_message)
    ]
    if lines:
        return f"wattlake/{device}/readings", b"\n".join(json.dumps(r).encode() for r in rows)
    return f"wattlake/{device}/readings", json.dumps(rows).encode()


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 1000\n"
            "queue_qos0_messages true\n" + ("user root\n" if os.geteuid() == 0 else "")
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.url = f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


def client(client_id: str, port: int, *, clean: bool) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0 if clean else 3600
    props.ReceiveMaximum = 1000
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port, clean_start=clean, properties=props)
    return c


def make_session(port: int, client_id: str, qos: int) -> None:
    """Create a persistent session subscribed to everything, then leave it."""
    c = client(client_id, port, clean=False)
    done = threading.Event()
    c.on_subscribe = lambda *_: done.set()
    c.loop_start()
    c.subscribe(TOPIC_FILTER, qos)
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]], qos: int) -> None:
    c = client(f"bench-pub-{time.monotonic_ns()}", port, clean=True)
    c.loop_start()
    chunk = 20_000  # packet ids wrap at 65,535: never have more outstanding
    for start in range(0, len(messages), chunk):
        infos = [c.publish(t, p, qos) for t, p in messages[start : start + chunk]]
        for info in infos:
            info.wait_for_publish(60)
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def bare_drain(port: int, client_id: str, expected: int) -> float:
    """Start a do-nothing subscriber on a loaded session; return seconds to receive all."""
    got = 0
    done = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal got
        got += 1
        if got >= expected:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 1000
    start = time.perf_counter()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    done.wait(600)
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return elapsed


def ingest_settings(data_dir: Path, qos: int, **more: object) -> Settings:
    values = {"data_dir": str(data_dir), "ingest.qos": qos, "ingest.topics": TOPIC_FILTER}
    return Settings.load(overrides={**values, **more}, environ={})


def process_cpu_s(pid: int) -> float:
    """Return the CPU time a process has used so far [s] (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# CPU seconds of the last ingest drain: (ingest process, lake writer, broker).
LAST_CPU: list[float] = [0.0, 0.0, 0.0]


def ingest_drain(
    port: int, data_dir: Path, client_id: str, qos: int, readings: int, broker_pid: int = 0
) -> float:
    """Start an ingest worker on a loaded session; return seconds until all readings committed.

    The worker's lake writer process is started (and has done its imports) before the clock
    runs, as in a service that is up when messages come. The CPU time each process used during
    the drain is left in ``LAST_CPU``.
    """
    worker = IngestWorker(
        ingest_settings(data_dir, qos), f"mqtt://127.0.0.1:{port}", client_id=client_id
    )
    worker.start_writer()
    assert worker.writer.wait_ready() and worker.writer.pid is not None
    writer_pid = worker.writer.pid
    before = (process_cpu_s(os.getpid()), process_cpu_s(writer_pid))
    broker_before = process_cpu_s(broker_pid) if broker_pid else 0.0
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    start = time.perf_counter()
    thread.start()
    while worker.figures().readings < readings:
        time.sleep(0.005)
    writer_cpu = process_cpu_s(writer_pid)
    stop.set()  # the final flush commits the rest
    thread.join()
    elapsed = time.perf_counter() - start
    LAST_CPU[:] = [
        process_cpu_s(os.getpid()) - before[0],
        writer_cpu - before[1],
        (process_cpu_s(broker_pid) - broker_before) if broker_pid else 0.0,
    ]
    figures = worker.figures()
    assert figures.rows_written >= readings, figures
    return elapsed


def drain_rate(
    broker: Broker,
    tag: str,
    messages: list[tuple[str, bytes]],
    qos: int,
    run: Callable[[str], float],
) -> float:
    client_id = f"bench-{tag}-{qos}"
    make_session(broker.port, client_id, qos)
    publish(broker.port, messages, qos)
    return run(client_id)


def latency_publisher(port: int, rate: int, seconds: float, per_message: int) -> None:
    """Publish ``rate`` readings per second (``per_message`` in each message, generic format
    when more than one), each message stamped with its send time."""
    c = client(f"bench-lat-{os.getpid()}", port, clean=True)
    c.loop_start()
    start = time.time()
    sent = 0
    messages_per_s = rate // per_message
    while sent < messages_per_s * seconds:
        due = int((time.time() - start) * messages_per_s) + 1
        while sent < min(due, messages_per_s * seconds):
            now = time.time()
            if per_message == 1:
                topic, payload = single(sent, ts_s=now)
            else:
                rows = [{"ts": now, "power_w": float(k), "channel": k} for k in range(per_message)]
                topic, payload = f"wattlake/lat-{sent % 50}/readings", json.dumps(rows).encode()
            c.publish(topic, payload, 1)
            sent += 1
        time.sleep(0.001)
    time.sleep(1)
    c.disconnect()
    c.loop_stop()


def publish_to_wal_latency(
    broker: Broker, data_dir: Path, rate: int, seconds: float, per_message: int
) -> tuple[list[float], list[float]]:
    """Return publish-to-WAL-sync latencies [ms] of a steady ``rate`` readings/s: those of the
    first second (warm-up: imports, first Arrow and Parquet calls) and those after it."""
    worker = IngestWorker(ingest_settings(data_dir, 1), broker.url, client_id="bench-latency")
    samples: list[tuple[float, float]] = []
    log_to_wal = worker._log_to_wal

    def timed(batch: list) -> None:  # type: ignore[type-arg]
        log_to_wal(batch)
        now = time.time()
        for delivery in batch:
            doc = json.loads(delivery.message.payload)
            sent = doc[0]["ts"] if isinstance(doc, list) else doc["params"]["ts"]
            samples.append((sent, (now - sent) * 1000))

    worker._log_to_wal = timed  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    worker.ready.wait(30)
    publisher = multiprocessing.Process(
        target=latency_publisher, args=(broker.port, rate, seconds + 1, per_message)
    )
    publisher.start()
    publisher.join()
    stop.set()
    thread.join()
    first = min(sent for sent, _ in samples)
    warm_up = [ms for sent, ms in samples if sent < first + 1]
    steady = [ms for sent, ms in samples if sent >= first + 1]
    return warm_up, steady


def rss_mb(pid: int | str = "self") -> float:
    """Return a process's resident memory [MB]."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    """Return the ids of the processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def worker_memory(broker: Broker, workdir: Path, readings: int) -> tuple[float, float, int]:
    """Run ``wattlake ingest`` as a user does, with flushing held off, until ``readings``
    readings (100 per message) sit in its writer's buffer; return the resident memory of the
    ingest process and of its lake writer [MB], and the buffered readings."""
    messages = [batched(i, lines=True) for i in range(readings // 100)]
    make_session(broker.port, "bench-memory", 1)
    publish(broker.port, messages, 1)
    data_dir = workdir / "lake-worker-mem"
    env = {
        **os.environ,
        "WATTLAKE_INGEST__TOPICS": TOPIC_FILTER,
        "WATTLAKE_STREAM__BUFFER_MAX_ROWS": str(10**9),
        "WATTLAKE_STREAM__BUFFER_MAX_BYTES": str(10**12),
        "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "3600",
    }
    command = ["-m", "wattlake", "ingest", "--broker", broker.url, "--client-id", "bench-memory"]
    process = subprocess.Popen(
        [sys.executable, *command, "--data-dir", str(data_dir)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    metrics = data_dir / "wal" / "ingest" / "metrics.prom"
    buffered, deadline = 0, time.monotonic() + 120
    try:
        while buffered < readings and time.monotonic() < deadline:
            time.sleep(0.5)
            if metrics.exists():
                for line in metrics.read_text().splitlines():
                    if line.startswith("wattlake_ingest_buffered_readings{"):
                        buffered = int(float(line.split()[-1]))
        [writer] = children(process.pid)
        return rss_mb(process.pid), rss_mb(writer), buffered
    finally:
        process.terminate()
        process.wait(60)


def buffered_memory(data_dir: Path, readings: int) -> tuple[float, float, int]:
    """Return (RSS before, RSS after) [MB] and buffered rows for ``readings`` readings."""
    settings = ingest_settings(
        data_dir, 1, **{"stream.buffer_max_rows": 10**9, "stream.buffer_max_bytes": 10**12}
    )
    stream = stream_from_settings(settings, Lake.open(str(data_dir)))
    before = rss_mb()
    batch: list[RawMessage] = []
    for i in range(readings):
        topic, payload = single(i)
        batch.append(RawMessage(topic, payload, 1_767_225_600_000))
        if len(batch) == 10_000:
            stream.accept(batch)
            batch = []
    stream.accept(batch)
    return before, rss_mb(), stream.buffered_rows


def run_single(broker: Broker, workdir: Path, n: int) -> None:
    singles = [single(i) for i in range(n)]
    print(f"single-reading messages, {n:,} per run (drain of a queued session):")
    for qos in (0, 1):
        bare_s = drain_rate(broker, "bare", singles, qos, lambda c: bare_drain(broker.port, c, n))
        ingest_s = drain_rate(
            broker,
            "ingest",
            singles,
            qos,
            lambda c, q=qos: ingest_drain(broker.port, workdir / f"lake-{q}", c, q, n),  # type: ignore[misc]
        )
        print(
            f"  QoS {qos}: bare subscriber {n / bare_s:10,.0f} msg/s   ingest to Parquet "
            f"{n / ingest_s:10,.0f} readings/s   ratio {bare_s / ingest_s:.2f}"
        )


def run_batched(broker: Broker, workdir: Path, b: int) -> None:
    print(f"batched messages (100 readings each, generic format), {b:,} messages, QoS 1:")
    for lines in (False, True):
        shape = "newline-delimited" if lines else "JSON array"
        batches = [batched(i, lines=lines) for i in range(b)]
        bare_s = drain_rate(
            broker, f"bare-b{lines}", batches, 1, lambda c: bare_drain(broker.port, c, b)
        )
        ingest_s = drain_rate(
            broker,
            f"ingest-b{lines}",
            batches,
            1,
            lambda c, s=shape: ingest_drain(  # type: ignore[misc]
                broker.port, workdir / f"lake-{s}", c, 1, b * 100, broker.process.pid
            ),
        )
        ingest_cpu, writer_cpu, broker_cpu = (cpu * 1e6 / (b * 100) for cpu in LAST_CPU)
        print(
            f"  {shape:17}: bare subscriber {b / bare_s:8,.0f} msg/s = "
            f"{b * 100 / bare_s:10,.0f} readings/s   ingest to Parquet "
            f"{b * 100 / ingest_s:10,.0f} readings/s   ratio {bare_s / ingest_s:.2f}\n"
            f"{'':21}CPU s per million readings: ingest process {ingest_cpu:.2f}, "
            f"lake writer {writer_cpu:.2f}, Mosquitto {broker_cpu:.2f}"
        )


def run_latency(broker: Broker, workdir: Path, rate: int, seconds: float) -> None:
    for per_message in (1, 10):
        warm_up, latencies = publish_to_wal_latency(
            broker, workdir / f"lake-lat-{per_message}", rate, seconds, per_message
        )
        q = statistics.quantiles(latencies, n=100)
        print(
            f"publish-to-WAL latency at {rate:,} readings/s, {per_message} per message, "
            f"{seconds:g} s after 1 s of warm-up ({len(latencies):,} messages): "
            f"p50 {q[49]:.1f} ms  p99 {q[98]:.1f} ms  max {max(latencies):.1f} ms "
            f"(warm-up max {max(warm_up):.0f} ms)"
        )


def run_memory(broker: Broker, workdir: Path, readings: int) -> None:
    before, after, rows = buffered_memory(workdir / "lake-mem", readings)
    print(
        f"memory: {rows:,} readings in a delivery stream's buffer: process RSS {after:.0f} MB "
        f"(was {before:.0f} MB before the buffer)"
    )
    ingest, writer, rows = worker_memory(broker, workdir, readings)
    print(
        f"memory: `wattlake ingest` with {rows:,} readings buffered: ingest process RSS "
        f"{ingest:.0f} MB + lake writer {writer:.0f} MB = {ingest + writer:.0f} MB"
    )


def main() -> None:
    as_cli_process()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batched-messages", type=int, default=20_000)
    parser.add_argument("--latency-rate", type=int, default=10_000)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--memory-readings", type=int, default=1_000_000)
    parser.add_argument(
        "--only",
        choices=["single", "batched", "latency", "memory"],
        action="append",
        help="Run only these parts (repeatable); default all.",
    )
    args = parser.parse_args()
    parts = set(args.only or ["single", "batched", "latency", "memory"])
    workdir = Path(tempfile.mkdtemp(prefix="wattlake-bench-"))
    broker = Broker(workdir)
    try:
        if "single" in parts:
            run_single(broker, workdir, args.messages)
        if "batched" in parts:
            run_batched(broker, workdir, args.batched_messages)
        if "latency" in parts:
            run_latency(broker, workdir, args.latency_rate, args.latency_seconds)
        if "memory" in parts:
            run_memory(broker, workdir, args.memory_readings)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Decode rate per device format, beside the bare ``json.loads`` rate of the same payloads.

Run: ``.venv/bin/python bench/bench_decode.py [--readings N] [--repeat R]``. For each format it
builds realistic payloads carrying about N readings, decodes them through the router, and prints
the best of R runs in readings per second next to ``json.loads`` over the same payloads in the
same run (the ceiling of any decoder written in Python that parses JSON), and the ratio. The
"+ Arrow" column adds what the stream does next with reading dicts (one Arrow table per 10,000
messages); the batched generic format already returns Arrow tables.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

import pyarrow as pa
from timing import best_of

from wattlake.devices.base import RawMessage
from wattlake.devices.router import DecoderRouter
from wattlake.schema import readings_to_table

NOW_MS = 1_767_225_600_000
STREAM_BATCH = 10_000  # messages per Arrow conversion, as the stream's accept() batches


@dataclass(frozen=True)
class Workload:
    """Messages of one format and how many readings they carry."""

    name: str
    messages: list[RawMessage]
    readings: int


def gen1(n: int, rng: random.Random) -> Workload:
    """Shelly EM: 8 quantities per channel per cycle, one message each."""
    quantities = ("power", "reactive_power", "voltage", "pf", "energy", "returned_energy")
    messages = []
    for cycle in range(n):
        device, channel = f"shellyem-{cycle % 50:06X}", cycle % 2
        for q in (*quantities, "total", "total_returned"):
            payload = f"{rng.uniform(-500, 3000):.2f}".encode()
            topic = f"shellies/{device}/emeter/{channel}/{q}"
            messages.append(RawMessage(topic, payload, NOW_MS + cycle * 10))
    return Workload("shelly-gen1 (1 value/msg)", messages, n)


def gen2_em1(n: int, rng: random.Random) -> Workload:
    """Pro EM NotifyStatus with both channels' power data: 2 readings per message."""
    messages = []
    for i in range(n // 2):
        device = f"shellyproem50-{i % 50:012x}"
        params: dict[str, object] = {"ts": NOW_MS / 1000 - 60 + i * 0.001}
        for ch in (0, 1):
            params[f"em1:{ch}"] = {
                "id": ch,
                "current": round(rng.uniform(0, 20), 3),
                "voltage": round(rng.uniform(225, 235), 1),
                "act_power": round(rng.uniform(-3000, 3000), 1),
                "aprt_power": round(rng.uniform(0, 3000), 1),
                "pf": round(rng.uniform(-1, 1), 2),
                "freq": 50.0,
                "calibration": "factory",
            }
        doc = {"src": device, "dst": f"{device}/events", "method": "NotifyStatus", "params": params}
        messages.append(RawMessage(f"{device}/events/rpc", json.dumps(doc).encode(), NOW_MS))
    return Workload("shelly-gen2 em1 (2/msg)", messages, 2 * len(messages))


def gen2_triphase(n: int, rng: random.Random) -> Workload:
    """Pro 3EM NotifyStatus with em:0: 3 readings (phases) per message."""
    messages = []
    for i in range(n // 3):
        device = f"shellypro3em-{i % 50:012x}"
        em: dict[str, object] = {"id": 0}
        for p in "abc":
            em |= {
                f"{p}_current": round(rng.uniform(0, 20), 3),
                f"{p}_voltage": round(rng.uniform(225, 235), 1),
                f"{p}_act_power": round(rng.uniform(-3000, 3000), 1),
                f"{p}_aprt_power": round(rng.uniform(0, 3000), 1),
                f"{p}_pf": round(rng.uniform(-1, 1), 2),
                f"{p}_freq": 50.0,
            }
        em |= {"n_current": None, "total_current": 12.3, "total_act_power": 1000.0}
        params = {"ts": NOW_MS / 1000 - 60 + i * 0.001, "em:0": em}
        doc = {"src": device, "dst": f"{device}/events", "method": "NotifyStatus", "params": params}
        messages.append(RawMessage(f"{device}/events/rpc", json.dumps(doc).encode(), NOW_MS))
    return Workload("shelly-gen2 3-phase (3/msg)", messages, 3 * len(messages))


def generic_rows(count: int, start_s: float, rng: random.Random) -> list[dict[str, object]]:
    return [
        {
            "ts": round(start_s + i, 3),
            "channel": 0,
            "power_w": round(rng.uniform(-3000, 3000), 1),
            "voltage_v": round(rng.uniform(225, 235), 1),
            "energy_wh": round(1e5 + i * 0.5, 2),
        }
        for i in range(count)
    ]


def generic_single(n: int, rng: random.Random) -> Workload:
    messages = [
        RawMessage(
            f"wattlake/meter-{i % 50}/readings",
            json.dumps(generic_rows(1, NOW_MS / 1000 - 3600 + i * 0.01, rng)[0]).encode(),
            NOW_MS,
        )
        for i in range(n)
    ]
    return Workload("generic single (1/msg)", messages, n)


def generic_batched(n: int, rng: random.Random, size: int = 100) -> Workload:
    messages = [
        RawMessage(
            f"wattlake/meter-{i % 50}/readings",
            json.dumps(generic_rows(size, NOW_MS / 1000 - 3600 + i, rng)).encode(),
            NOW_MS,
        )
        for i in range(n // size)
    ]
    return Workload(f"generic batched ({size}/msg)", messages, size * len(messages))


def decode_all(messages: list[RawMessage], *, to_arrow: bool) -> int:
    """Decode like the stream: one fresh router, dicts turned into Arrow per batch."""
    router = DecoderRouter()
    rows = 0
    pending: list[dict[str, object]] = []
    for start in range(0, len(messages), STREAM_BATCH):
        for message in messages[start : start + STREAM_BATCH]:
            decoded = router.decode(message)
            if isinstance(decoded, pa.Table):
                rows += decoded.num_rows
            else:
                pending += decoded
        pending += router.drain(None) if start + STREAM_BATCH >= len(messages) else []
        if to_arrow and pending:
            rows += readings_to_table(pending).num_rows
        else:
            rows += len(pending)
        pending = []
    return rows


def json_loads_all(messages: list[RawMessage]) -> None:
    loads = json.loads
    for message in messages:
        loads(message.payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(7)
    n = args.readings
    workloads = [
        gen1(n, rng),
        gen2_em1(n, rng),
        gen2_triphase(n, rng),
        generic_single(n, rng),
        generic_batched(n, rng),
    ]
    print(f"{'format':30} {'msgs':>8} {'decode':>12} {'+ Arrow':>12} {'json.loads':>12} ratio")
    for w in workloads:
        assert decode_all(w.messages, to_arrow=False) == w.readings
        decode_s = best_of(args.repeat, lambda w=w: decode_all(w.messages, to_arrow=False))
        arrow_s = best_of(args.repeat, lambda w=w: decode_all(w.messages, to_arrow=True))
        json_s = best_of(args.repeat, lambda w=w: json_loads_all(w.messages))
        rate, arrow_rate, ceiling = (w.readings / s for s in (decode_s, arrow_s, json_s))
        print(
            f"{w.name:30} {len(w.messages):8,} {rate / 1e3:9,.0f} k/s {arrow_rate / 1e3:9,.0f} k/s"
            f" {ceiling / 1e3:9,.0f} k/s {rate / ceiling:5.2f}"
        )
    print("readings per second, best of", args.repeat, "runs; ratio = decode / json.loads")


if __name__ == "__main__":
    main()

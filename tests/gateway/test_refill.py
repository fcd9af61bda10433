"""Gaps refilled from the meter's per-minute records: exact energy, nothing interpolated."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import paho.mqtt.client as mqtt
import pyarrow.compute as pc
import pytest

from tests.gateway.security_helpers import wait_until
from wattlake.config import Settings
from wattlake.devices.base import RawMessage
from wattlake.devices.shelly_gen2 import REFILL_SOURCE, RefillCall, ShellyGen2Decoder
from wattlake.devices.sim.rpc import FleetRpc, MqttResponder
from wattlake.devices.sim.simulator import Fleet, FleetConfig
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.mqtt import BrokerAddress
from wattlake.gateway.refill import Refiller
from wattlake.query.readings import load_readings
from wattlake.query.reports import energy_rows
from wattlake.stream.ingest import IngestWorker

SUNNY = int(dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC).timestamp())  # PV exports
EVENING = int(dt.datetime(2026, 6, 1, 19, 0, tzinfo=dt.UTC).timestamp())  # PV fades out
STEP_S = 10


def test_refill_answer_decodes_into_counters_that_continue_the_anchor() -> None:
    call = RefillCall("em1data:1", 1_767_225_600, 1_767_225_780, ((100.0, 5.0),))
    doc = {
        "id": call.call_id(),
        "result": {
            "keys": ["total_act_energy", "total_act_ret_energy", "avg_voltage", "avg_current"],
            "data": [{"ts": 1_767_225_600, "period": 60, "values": [[2.5, 0.5, 230.0, 1.0]] * 3}],
        },
    }
    message = RawMessage("shellyproem50-x/wattlake/rpc", str(doc).replace("'", '"').encode(), 0)
    readings = ShellyGen2Decoder().decode(
        RawMessage(message.topic, message.payload, 1_767_230_000_000)
    )
    assert [(r["ts"], r["energy_wh"], r["returned_energy_wh"]) for r in readings] == [
        (1_767_225_660_000, 102.5, 5.5),
        (1_767_225_720_000, 105.0, 6.0),
    ]  # the third minute ends at the call's end: live data has it
    assert all(r["channel"] == 1 and r["source"] == REFILL_SOURCE for r in readings)
    assert readings[0]["power_w"] == 120.0  # (2.5 - 0.5) Wh in 60 s


def start_worker(
    url: str, data_dir: Path
) -> tuple[IngestWorker, threading.Event, threading.Thread]:
    """Run an ingest worker on the embedded broker (MQTT 3.1.1) in a thread."""
    values = {"data_dir": str(data_dir), "stream.flush_interval_s": 0.2}
    worker = IngestWorker(
        Settings.load(overrides=values, environ={}), url, client_id="ingest", mqtt5=False
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    assert worker.ready.wait(30)
    return worker, stop, thread


def _publisher(url: str) -> mqtt.Client:
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="meters")
    client.connect(host, int(port))
    client.loop_start()
    return client


def _rounds(
    fleet: Fleet, rpc: FleetRpc, t0: int, first: int, count: int
) -> list[tuple[str, bytes]]:
    out = []
    for i in range(first, first + count):
        with rpc.lock:
            out += [(m.topic, m.payload) for m in fleet.round(t0 + i * STEP_S, STEP_S)]
    return out


@pytest.mark.parametrize("t0", [EVENING, SUNNY], ids=["evening", "sunny"])
def test_an_hour_down_is_refilled_exactly_from_the_meter(tmp_path: Path, t0: int) -> None:
    data_dir = tmp_path / "lake"
    broker = EmbeddedBroker().start()
    address = BrokerAddress.parse(broker.url)
    fleet = Fleet(FleetConfig(devices=1, seed=3, pv_kwp=4.0))
    device = fleet.devices[0]
    rpc = FleetRpc(fleet)
    responder = MqttResponder(rpc, address.host, address.port).start()
    publisher = _publisher(broker.url)
    state = tmp_path / "refill.json"
    try:
        _worker, stop, thread = start_worker(broker.url, data_dir)
        refiller = Refiller(address, state_file=state).start()
        for topic, payload in _rounds(fleet, rpc, t0, 0, 90):  # 10:00-10:15 live
            publisher.publish(topic, payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: (device.device_id, "em1data:0") in refiller.anchors)
        refiller.stop()
        stop.set()
        thread.join(60)
        # The stack is down for an hour; the meter goes on measuring (and recording).
        _rounds(fleet, rpc, t0, 90, 360)
        _worker, stop, thread = start_worker(broker.url, data_dir)
        refiller = Refiller(address, state_file=state).start()
        # The meter reconnects: "online", then a full status (as a real Shelly does).
        with rpc.lock:
            back = device.status_messages(True, t0 + 450 * STEP_S)
        for topic, payload in [*back, *_rounds(fleet, rpc, t0, 450, 90)]:  # 11:15-11:30 live again
            publisher.publish(topic, payload, qos=1).wait_for_publish(5)
        assert wait_until(lambda: refiller.answers >= 2 and refiller.idle(), 30)
        assert responder.answered >= 2  # one call per channel
        threading.Event().wait(1.0)  # the answers reach the WAL
        refiller.stop()
        stop.set()
        thread.join(60)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        responder.stop()
        broker.stop()

    settings = Settings.load(overrides={"data_dir": str(data_dir)}, environ={})
    gap_start = t0 + 15 * 60
    edges_ms = np.array([(gap_start + k * 900) * 1000 for k in range(5)], dtype=np.int64)
    table = load_readings(
        settings, int(edges_ms[0]), int(edges_ms[-1]), device_ids=[device.device_id]
    )
    assert REFILL_SOURCE in set(table.column("source").to_pylist())
    rows, _ = energy_rows(table, edges_ms, ZoneInfo("UTC"))
    assert len(rows) == 2 * 4  # two channels, four quarter-hours of the hour down
    # Every refilled minute carries exactly the energy the meter recorded for it.
    refill = table.filter(pc.equal(table["source"], REFILL_SOURCE))
    for channel in (0, 1):
        mine = refill.filter(pc.equal(refill["channel"], channel)).sort_by("ts")
        ts = [int(t.timestamp()) for t in mine.column("ts").to_pylist()]
        assert ts == list(range(ts[0], ts[0] + 60 * len(ts), 60)) and len(ts) >= 59
        for column, which in (("energy_wh", 0), ("returned_energy_wh", 1)):
            counters = mine.column(column).to_pylist()
            steps = zip(ts, ts[1:], counters, counters[1:], strict=False)
            for t1, t2, c1, c2 in steps:
                recorded = device.memory.energy_wh(t1, t2, channel)[which]
                assert abs((c2 - c1) - recorded) <= 0.002, (channel, column, t1)
    imported = exported = 0.0
    for row in rows:
        start_s = int(dt.datetime.fromisoformat(row["start"]).timestamp())
        channel = row["channel"]
        recorded_import, recorded_export = device.memory.energy_wh(start_s, start_s + 900, channel)
        assert abs(row["import_wh"] - recorded_import) <= 0.01, row
        assert row["interpolated_wh"] == 0.0 and row["coverage"] == 1.0, row
        assert abs(row["export_wh"] - recorded_export) <= 0.01, row
        imported += recorded_import
        exported += recorded_export
    assert imported > 0 if t0 == EVENING else exported > 0  # both ways were refilled

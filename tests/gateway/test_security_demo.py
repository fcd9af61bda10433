"""The demo on a secured broker: its own registry, the simulator's fleet credential, refill."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.gateway.security_helpers import connect, wait_until
from wattlake.devices.shelly_gen2 import RefillCall
from wattlake.devices.sim.simulator import Simulator
from wattlake.gateway.auth import BrokerSecurity
from wattlake.gateway.broker import EmbeddedBroker
from wattlake.gateway.mqtt import BrokerAddress
from wattlake.gateway.refill import Refiller
from wattlake.gateway.registry import ensure_demo_credentials


def test_the_simulator_publishes_and_answers_refill_calls_with_demo_credentials(
    tmp_path: Path,
) -> None:
    root = tmp_path / "demo-security"
    creds = ensure_demo_credentials(root)
    assert ensure_demo_credentials(root) == creds  # the same credentials on every start
    from wattlake.gateway.ca import CertificateAuthority

    CertificateAuthority(root).init(hosts=[], ips=[])  # the TLS listener needs a certificate
    broker = EmbeddedBroker(security=BrokerSecurity(root, tls_host="127.0.0.1", tls_port=0))
    broker.start()
    try:
        reader = connect(
            broker.port,
            client_id="reader",
            username=creds.ingest_username,
            password=creds.ingest_password,
        )
        assert reader.connected and reader.subscribe("#") == 1
        refiller = Refiller(
            BrokerAddress.parse(broker.url),
            state_file=tmp_path / "refill.json",
            min_gap_s=1.0,
            username=creds.ingest_username,
            password=creds.ingest_password,
        ).start()
        simulator = Simulator(
            BrokerAddress.parse(broker.url),
            devices=1,
            interval_s=0.05,
            speed=60.0,  # three simulated seconds a round: counters every 20 rounds
            username=creds.simulator_username,
            password=creds.simulator_password,
        )
        thread = threading.Thread(target=simulator.run)
        thread.start()
        device_id = simulator.fleet.devices[0].device_id
        assert wait_until(lambda: (device_id, "em1data:0") in refiller.anchors, 30)
        anchor = refiller.anchors[(device_id, "em1data:0")]
        # A gap's call (asked by hand: the stream never paused) is answered by the meter.
        start = int(anchor.ts_s) - 120
        refiller.ask(device_id, RefillCall("em1data:0", start, int(anchor.ts_s), anchor.counters))
        assert wait_until(lambda: refiller.answers >= 1 and refiller.idle(), 30)
        assert wait_until(lambda: any(t == f"{device_id}/wattlake/rpc" for t, _ in reader.received))
        simulator.stop()
        thread.join(60)
        assert simulator.published > 0
        anonymous = connect(broker.port, client_id="nobody")
        assert not anonymous.connected
        refiller.stop()
    finally:
        broker.stop()

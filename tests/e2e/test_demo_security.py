"""The demo runs a secured broker: no anonymous client, no forged device, no password shown."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.gateway.security_helpers import connect, wait_until
from wattlake.gateway.registry import ensure_demo_credentials
from wattlake.stack import DEMO_SECURITY_DIR

FORGED = {
    "shellyproem50-a1b2c3": (
        "shellyproem50-a1b2c3/events/rpc",
        {
            "src": "shellyproem50-a1b2c3",
            "method": "NotifyStatus",
            "params": {"ts": time.time(), "em1:0": {"id": 0, "act_power": 100_000.0}},
        },
    ),
    "meter-real": ("wattlake/meter-real/readings", {"ts": time.time(), "power_w": 100_000.0}),
}


def test_the_demo_refuses_anonymous_clients_and_forged_devices(tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    command = [sys.executable, "-m", "wattlake", "demo", "--no-web", "--broker-port", "0"]
    command += ["--devices", "1", "--interval", "0.2", "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            stderr.append(line)
            if "Stop with Ctrl-C" in line:
                break
        announced = re.search(r"broker mqtt://127\.0\.0\.1:(\d+)", "".join(stderr))
        assert announced, "".join(stderr)
        port = int(announced.group(1))
        rest = threading.Thread(target=lambda: stderr.extend(process.stderr or []))
        rest.start()

        anonymous = connect(port, client_id="e2e-anonymous")
        assert not anonymous.connected

        creds = ensure_demo_credentials(data_dir / "wal" / DEMO_SECURITY_DIR)  # as the demo's
        reader = connect(
            port,
            client_id="e2e-reader",
            username=creds.ingest_username,
            password=creds.ingest_password,
        )
        assert reader.connected and reader.subscribe("#") == 1
        assert wait_until(lambda: any("-sim0000" in t for t, _ in reader.received), 30)

        forger = connect(
            port,
            client_id="e2e-forger",
            username=creds.simulator_username,
            password=creds.simulator_password,
        )
        assert forger.connected  # the simulator's own credential ...
        for topic, document in FORGED.values():  # ... in a real device's name
            forger.publish(topic, json.dumps(document))
        time.sleep(1.0)
        assert not [t for t, _ in reader.received if t in {t for t, _ in FORGED.values()}]
        for conn in (reader, forger):
            conn.close()

        process.send_signal(signal.SIGINT)
        stdout, _ = process.communicate(timeout=180)
        rest.join(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = stdout + "".join(stderr)
    assert process.returncode == 0, output
    assert creds.ingest_password not in output
    assert creds.simulator_password not in output
    done = subprocess.run(
        [sys.executable, "-m", "wattlake", "query", "--format", "json", "--data-dir", str(data_dir),
         "SELECT DISTINCT device_id FROM readings"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    devices = {json.loads(line)["device_id"] for line in done.stdout.splitlines()}
    assert devices and all("-sim" in d for d in devices)
    assert not devices & set(FORGED)

"""The embedded broker's counters are on the web's /metrics, read with a `read` token."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from tests.gateway.security_helpers import connect
from wattlake.config import Settings
from wattlake.gateway.tokens import TokenStore
from wattlake.stack import Stack


def metrics(url: str, token: str) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.read().decode())


def test_refused_logins_reach_the_web_metrics(tmp_path: Path) -> None:
    settings = Settings.load(
        overrides={
            "data_dir": str(tmp_path / "lake"),
            "demo.devices": 1,
            "demo.interval_s": 0.5,
            "web.port": 0,
        },
        environ={},
    )
    stack = Stack(settings, simulate=True, web=True, broker_port=0, job_periods_s={})
    stack.start()
    try:
        assert stack.web is not None and stack.broker is not None
        token, _ = TokenStore.from_settings(stack.settings).create("read")
        for attempt in range(2):
            assert not connect(stack.broker.port, client_id=f"anonymous-{attempt}").connected
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = metrics(f"{stack.web.url}/metrics", token)
            if 'wattlake_broker_failed_logins_total{reason="anonymous"} 2.0' in text:
                break
            time.sleep(0.5)
        assert 'wattlake_broker_failed_logins_total{reason="anonymous"} 2.0' in text, text
        assert "wattlake_broker_logins_total" in text  # the ingest's, the simulator's
        assert "wattlake_lake_files" in text  # beside the web's own figures
    finally:
        stack.stop()
    assert stack.broker_metrics_file is not None and stack.broker_metrics_file.is_file()

"""Dashboard and API latency on a lake with a fleet's history (bench/fleet.py, imported).

Figures (p50 and p95 of repeated runs), each beside the baseline of ``/healthz`` (no lake work)
measured in the same run:

* API: the overview, a month of daily energy, a year of power history downsampled to 1,000
  points (target < 200 ms each);
* the browser (Debian's chromium): navigation to the History page until its first chart is drawn
  (target < 1 s);
* live view: publish to a real Mosquitto until the overview in the browser shows the value,
  while the other meters publish every second as in ``demo`` (p95 target < 1 s).

Run ``.venv/bin/python bench/bench_web.py --devices 10 --days 365 --step-s 10`` for the issue's
fleet (the import alone takes long on two cores); ``--lake DIR`` reuses a lake imported before.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fleet import FleetSpec, write_files
from tests.conftest import start_mosquitto
from wattlake.config import Settings
from wattlake.gateway.tokens import TokenStore
from wattlake.web.app import WebServer

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def percentiles(samples_s: list[float]) -> str:
    """Return ``p50 … ms, p95 … ms`` of ``samples_s``."""
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"


def make_lake(devices: int, days: int, step_s: int, root: Path) -> Path:
    """Generate the fleet ending at today's UTC midnight and import it."""
    today = datetime.now(UTC).date()
    spec = FleetSpec(devices=devices, days=days, start=today - timedelta(days=days), step_s=step_s)
    lake = root / "lake"
    lake.mkdir(parents=True)
    if step_s * 1.05 > 300:  # samples further apart than energy.max_gap_s would all be gaps
        (lake / "wattlake.toml").write_text(f"[energy]\nmax_gap_s = {step_s * 3:.1f}\n")
    started = time.perf_counter()
    files = write_files(spec, root / "files", days_per_file=30)
    subprocess.run(
        [sys.executable, "-m", "wattlake", "import", *map(str, files), "--data-dir", str(lake)],
        check=True,
    )
    print(
        f"imported ~{spec.readings:,} readings ({devices} devices, {days} days at {step_s} s) "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return lake


def roll_up(lake: Path) -> None:
    """Bring the rollup tables up to date, as the jobs of ``demo``/``up`` do."""
    from wattlake.jobs.rollup import run_rollup
    from wattlake.lake.storage import Lake

    started = time.perf_counter()
    run_rollup(Lake.open(str(lake)))
    print(f"rollups in {time.perf_counter() - started:.0f} s")


def api_figures(base: str, token: str, repeat: int) -> None:
    today = datetime.now(UTC).date()
    month = (today - timedelta(days=30)).isoformat()
    year = (today - timedelta(days=365)).isoformat()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        device = client.get("/api/devices").json()["rows"][0]["device_id"]
        cases = {
            "healthz (baseline)": "/healthz",
            "overview": "/api/overview",
            "month of daily energy": f"/api/energy?start={month}&end={today}&every=day",
            # As the History page asks: one device (its channels), 1,000 pixels.
            "year of history, 1000 points": (
                f"/api/readings?start={year}&end={today}&points=1000&device={device}"
            ),
            "year of history, all devices": f"/api/readings?start={year}&end={today}&points=1000",
        }
        for name, path in cases.items():
            warm = client.get(path, timeout=120)  # warm: views, caches
            warm.raise_for_status()
            source = warm.json().get("source", "") if path.startswith("/api/readings") else ""
            samples = []
            for _ in range(repeat):
                started = time.perf_counter()
                client.get(path, timeout=120).raise_for_status()
                samples.append(time.perf_counter() - started)
            print(f"API {name:32s} {percentiles(samples)} {source}")
        # First asks: each a range not asked before (no figure cached for it yet).
        cold = []
        for i in range(repeat):
            first = today - timedelta(days=60 + 30 * i)
            path = f"/api/energy?start={first}&end={first + timedelta(days=30)}&every=day"
            started = time.perf_counter()
            client.get(path, timeout=120).raise_for_status()
            cold.append(time.perf_counter() - started)
        print(f"API {'month of daily energy, first ask':32s} {percentiles(cold)}")


def browser_figures(server: WebServer, broker_port: int, devices: int, repeat: int) -> None:
    from playwright.sync_api import expect, sync_playwright

    stop = threading.Event()

    def demo_load() -> None:  # the other meters publish every second, as in demo
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", broker_port)
        client.loop_start()
        while not stop.wait(1.0):
            for d in range(devices):
                body = {"ts": time.time(), "channel": 0, "power_w": 100 + d}
                client.publish(f"wattlake/load-{d}/readings", json.dumps(body), qos=1)
        client.loop_stop()
        client.disconnect()

    loader = threading.Thread(target=demo_load, daemon=True)
    loader.start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(server.login_url())
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            page.goto(server.url + "/history")
            page.wait_for_selector("#chart-history[data-drawn] canvas", timeout=60_000)
            samples.append(time.perf_counter() - started)
        print(f"browser: navigation to first chart drawn {percentiles(samples)}")

        # The page's Content-Security-Policy forbids 'unsafe-eval', so no wait_for_function:
        # Playwright's expect() polls the DOM through its own injected script, which the policy
        # allows, and the latency comes from the page's own script (data-updated, set when the
        # value changes), so the polling interval does not enter the figure.
        page.goto(server.url + "/")
        expect(page.locator("#live-state")).to_have_text(re.compile("^live"), timeout=30_000)
        card = page.locator('[data-key="bench-live/0"]')
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        publisher.connect("127.0.0.1", broker_port)
        publisher.loop_start()
        latencies = []
        for i in range(repeat * 3):
            value = 5000 + i
            sent = time.time()
            body = {"ts": sent, "channel": 0, "power_w": value}
            publisher.publish("wattlake/bench-live/readings", json.dumps(body), qos=1)
            expect(card.locator(".w")).to_have_text(str(value), timeout=10_000)
            shown_ms = float(card.get_attribute("data-updated") or "0")
            latencies.append(max(0.0, shown_ms / 1000 - sent))
            time.sleep(0.2)
        publisher.loop_stop()
        publisher.disconnect()
        print(f"live: publish to browser ({devices} meters at 1 Hz) {percentiles(latencies)}")
        browser.close()
    stop.set()
    loader.join(5)


def load_average() -> str:
    """Return the machine's 1-minute load average and core count (the figures depend on it)."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--step-s", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--lake", type=Path, help="a lake imported before (skips the import)")
    parser.add_argument(
        "--no-rollups", action="store_true", help="measure history from raw readings only"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wattlake-bench-web-") as tmp:
        root = Path(tmp)
        lake = args.lake or make_lake(args.devices, args.days, args.step_s, root)
        if not args.no_rollups:
            roll_up(lake)
        token, _ = TokenStore(root / "tokens.json").create("read")
        settings = Settings.load(
            overrides={
                "data_dir": str(lake),
                "cost.tariff": "pl-g11",
                "web.tokens_file": str(root / "tokens.json"),
            },
            environ={k: v for k, v in os.environ.items() if not k.startswith("WATTLAKE_")},
        )
        broker = start_mosquitto(root / "mosquitto")
        server = WebServer(settings, broker_url=broker.url, port=0)
        server.start()
        try:
            print(load_average())
            api_figures(server.url, token, args.repeat)
            print(load_average())
            browser_figures(server, broker.port, args.devices, max(5, args.repeat // 2))
        finally:
            server.stop()
            broker.stop()


if __name__ == "__main__":
    main()

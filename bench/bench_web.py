"""Dashboard and API latency on a lake with a fleet's history (bench/fleet.py, imported).

Figures (p50 and p95 of repeated runs, wall time, and the process's CPU time per request), each
beside the baseline of ``/healthz`` (no lake work) measured in the same run, with the load
average printed before each part:

* API, cold and warm: the overview, a month of daily energy, a year of power history
  downsampled to 1,000 points (target < 200 ms p95 each). The lake first gets today's fleet
  readings up to now (after the rollup job ran, so the rollups are stale for today, as while
  the ingest runs). *Cold* is the first ask after a new snapshot: each round appends the
  readings since the last round (one commit, as a flush of the ingest does), has the server's
  views renewed (as its 30 s timer would), forgets the month's cost (computed at most once a
  minute: the worst case), then asks each request once. *Warm* asks again while nothing
  changed (the figures cached for the snapshot).
* the browser (Debian's chromium): navigation to the History page until its first chart is drawn
  (target < 1 s);
* live view: publish to a real Mosquitto until the overview in the browser shows the value,
  while the other meters publish every second as in ``demo`` (p95 target < 1 s).

Run ``.venv/bin/python bench/bench_web.py --devices 10 --days 365 --step-s 10`` for the issue's
fleet (the import takes about two minutes, the rollups about two more); ``--lake DIR`` reuses a
lake imported before (today's readings are appended to it, once). ``--code DIR`` measures the
wattlake of another checkout (e.g. ``git worktree add /tmp/base 10ac992``) on the same lake, so
two runs back to back compare a baseline with the current code.
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
from typing import Any

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if "--code" in sys.argv:  # measure another checkout's wattlake (imported before anything else)
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--code") + 1]).resolve()))
    for name in [m for m in sys.modules if m == "wattlake" or m.startswith("wattlake.")]:
        del sys.modules[name]

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


def percentiles(samples_s: list[float], cpu_s: list[float] | None = None) -> str:
    """Return ``p50 … ms, p95 … ms`` of ``samples_s`` (and the median CPU time, if given)."""
    ordered = sorted(samples_s)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    text = f"p50 {statistics.median(ordered) * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms"
    if cpu_s:
        text += f"  cpu p50 {statistics.median(cpu_s) * 1000:7.1f} ms"
    return text


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


class Today:
    """The fleet's readings of today (UTC), appended to the lake up to the time asked, as an
    ingest would (counters of a freshly drawn fleet: a counter step at midnight)."""

    def __init__(self, lake: Path, devices: int, days: int, step_s: int) -> None:
        from bench.fleet import day_table, make_meters
        from wattlake.lake.storage import Lake

        today = datetime.now(UTC).date()
        spec = FleetSpec(
            devices=devices, days=days + 1, start=today - timedelta(days=days), step_s=step_s
        )
        self.table = day_table(spec, make_meters(spec), days)
        ms = self.table["ts"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        self.ts_ms = np.asarray(ms.to_numpy(), dtype=np.int64)
        self.lake = Lake.open(str(lake))
        self.done_ms = self._newest_ms()

    def _newest_ms(self) -> int:
        from wattlake.query.engine import connect

        con = connect(self.lake)
        found = con.execute(
            "SELECT epoch_ms(max(ts)) FROM readings WHERE ts >= make_timestamptz(?::BIGINT * 1000)",
            [int(self.ts_ms.min())],
        ).fetchone()
        con.close()
        return int(found[0]) if found and found[0] is not None else int(self.ts_ms.min()) - 1

    def append_until(self, until_ms: int) -> int:
        """Append the readings after the last appended one, up to ``until_ms``; return how many."""
        from wattlake.lake import tables
        from wattlake.schema import READINGS_TABLE

        keep = (self.ts_ms > self.done_ms) & (self.ts_ms < until_ms)
        if not keep.any():
            return 0
        tables.append(self.lake, READINGS_TABLE, self.table.filter(pa.array(keep)))
        self.done_ms = int(self.ts_ms[keep].max())
        return int(keep.sum())


def api_figures(base: str, token: str, repeat: int, view: Any, today_rows: Today) -> None:
    today = datetime.now(UTC).date()
    month = (today - timedelta(days=30)).isoformat()
    year = (today - timedelta(days=365)).isoformat()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        device = client.get("/api/devices", timeout=120).json()["rows"][0]["device_id"]
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

        def ask(path: str) -> tuple[float, float, str]:
            started, cpu = time.perf_counter(), time.process_time()
            answer = client.get(path, timeout=120)
            wall, used = time.perf_counter() - started, time.process_time() - cpu
            answer.raise_for_status()
            body = answer.json()
            return wall, used, body.get("source", "") if isinstance(body, dict) else ""

        cold: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in cases}
        sources: dict[str, str] = {}
        appended = 0
        renew_s: list[float] = []
        for path in cases.values():  # asked once before: an open dashboard's figures
            ask(path)
        for _ in range(repeat):
            # A commit of new readings before each round (the fleet reports every step_s).
            while not (added := today_rows.append_until(time.time_ns() // 1_000_000)):
                time.sleep(1.0)
            appended += added
            view.month_cost = {}  # the month's cost is due (at most once a minute): worst case
            started = time.perf_counter()
            renew = getattr(view, "renew", None) or view._renew
            renew()  # the new snapshot's views (and warmed figures), as the server's timer does
            renew_s.append(time.perf_counter() - started)
            for name, path in cases.items():
                wall, used, source = ask(path)
                cold[name][0].append(wall)
                cold[name][1].append(used)
                sources[name] = source
        print(
            f"cold: {repeat} rounds, each after a commit of new readings ({appended:,} in all; "
            "every figure asked once before, as by an open dashboard); "
            f"renewing the views (in the server's background thread) {percentiles(renew_s)}"
        )
        for name, (walls, cpus) in cold.items():
            print(f"API cold {name:30s} {percentiles(walls, cpus)} {sources[name]}")
        for name, path in cases.items():
            walls, cpus = [], []
            for _ in range(repeat):
                wall, used, source = ask(path)
                walls.append(wall)
                cpus.append(used)
            print(f"API warm {name:30s} {percentiles(walls, cpus)} {source}")
        # First asks: each a range nobody asked before (no figure cached or warmed for it).
        walls, cpus = [], []
        for i in range(repeat):
            first = today - timedelta(days=60 + 30 * i)
            path = f"/api/energy?start={first}&end={first + timedelta(days=30)}&every=day"
            wall, used, source = ask(path)
            walls.append(wall)
            cpus.append(used)
        print(f"API first ask of a month of daily energy  {percentiles(walls, cpus)} {source}")
        walls, cpus = [], []
        for i in range(repeat):
            last = today - timedelta(days=1 + i)
            path = (
                f"/api/readings?start={last - timedelta(days=365)}&end={last}&points=1000"
                f"&device={device}"
            )
            wall, used, source = ask(path)
            walls.append(wall)
            cpus.append(used)
        print(f"API first ask of a year of history        {percentiles(walls, cpus)} {source}")


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
        samples, seen = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            page.goto(server.url + "/history")
            chart = page.wait_for_selector("#chart-history[data-drawn-at] canvas", timeout=60_000)
            seen.append(time.perf_counter() - started)
            # The page's own clock: when uPlot's draw hook first ran, in ms since the
            # navigation started (Playwright polls the DOM at growing intervals, up to 500 ms
            # apart, so its own view of the moment is late by up to that much).
            drawn_at = page.locator("#chart-history").get_attribute("data-drawn-at")
            assert chart is not None and drawn_at is not None
            samples.append(float(drawn_at) / 1000)
        print(f"browser: navigation to first chart drawn {percentiles(samples)}")
        print(f"browser: the same as Playwright notices it {percentiles(seen)}")

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
    parser.add_argument("--code", type=Path, help="a wattlake checkout to measure (default: this)")
    parser.add_argument("--no-browser", action="store_true", help="the API figures only")
    args = parser.parse_args()
    import wattlake

    print(f"code: {Path(wattlake.__file__).parent}")
    with tempfile.TemporaryDirectory(prefix="wattlake-bench-web-") as tmp:
        root = Path(tmp)
        lake = args.lake or make_lake(args.devices, args.days, args.step_s, root)
        if not args.no_rollups:
            roll_up(lake)
        started = time.perf_counter()
        today_rows = Today(lake, args.devices, args.days, args.step_s)
        added = today_rows.append_until(time.time_ns() // 1_000_000)
        took = time.perf_counter() - started
        print(f"today's readings until now: {added:,} appended in {took:.0f} s")
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
        started = time.perf_counter()
        server.warmed.wait(300)
        print(f"server warm-up (the overview's figures) {time.perf_counter() - started:.1f} s")
        try:
            print(load_average())
            api_figures(server.url, token, args.repeat, server.app.state.view, today_rows)
            print(load_average())
            if not args.no_browser:
                browser_figures(server, broker.port, args.devices, max(5, args.repeat // 2))
                print(load_average())
        finally:
            server.stop()
            broker.stop()


if __name__ == "__main__":
    main()

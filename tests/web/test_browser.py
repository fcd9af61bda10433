"""The dashboard in a real browser (Debian's chromium through Playwright) against a running
server on a lake holding a year of imported history, with live values from a real Mosquitto.

Screenshots of every page at desktop and phone width go to tests/web/artifacts/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import paho.mqtt.client as mqtt
import pytest

from bench.fleet import FleetSpec, write_files
from tests.conftest import IN_CI, start_mosquitto
from tests.web.conftest import HistoryLake, cli
from wattlake.config import Settings
from wattlake.web.app import WebServer

# One pytest-xdist worker runs this module: its module-scoped fixtures (the year lake, its
# server and the browser) are built once, not on every worker (./run test uses --dist loadgroup).
pytestmark = pytest.mark.xdist_group("test_browser")

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PAGES = ("/", "/energy", "/history", "/patterns", "/devices")
SIZES = {"desktop": (1280, 900), "phone": (390, 844)}
YEAR_DAYS = 365
STEP_S = 300  # a year at 5 min keeps the import short; energy.max_gap_s is raised to match


@pytest.fixture(scope="module")
def year_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A year of two meters ending at today's UTC midnight, imported as a user would."""
    root = tmp_path_factory.mktemp("year")
    today = datetime.now(UTC).date()
    spec = FleetSpec(
        devices=2, days=YEAR_DAYS, start=today - timedelta(days=YEAR_DAYS), step_s=STEP_S
    )
    lake = root / "lake"
    lake.mkdir()
    # The lake's own settings, read by the server and the CLI alike: 5-minute samples are
    # not gaps.
    (lake / "wattlake.toml").write_text(f"[energy]\nmax_gap_s = {3 * STEP_S}.0\n")
    files = write_files(spec, root / "files", days_per_file=92)
    cli(lake, "import", *map(str, files))
    return lake


@pytest.fixture(scope="module")
def server(year_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    settings = Settings.load(
        overrides={"data_dir": str(year_lake), "cost.tariff": "pl-g11"}, environ={}
    )
    assert settings["energy.max_gap_s"] == 3 * STEP_S
    web = WebServer(settings, broker_url=broker.url, port=0)
    web.start()
    web.broker = broker  # type: ignore[attr-defined]
    try:
        yield web
    finally:
        web.stop()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail("chromium is not installed (./run test installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: WebServer) -> Iterator[Any]:
    """A signed-in page (the one-time login link, as demo prints it)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(server.login_url())
    assert pg.url.rstrip("/") == server.url
    yield pg
    context.close()
    assert not errors, errors


def publish(port: int, device: str, power_w: float) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = json.dumps({"ts": time.time(), "channel": 0, "power_w": power_w})
    client.publish(f"wattlake/{device}/readings", payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def wait_drawn(page: Any, selector: str) -> int:
    """Wait until the chart at ``selector`` has drawn a non-blank canvas; return its points."""
    page.wait_for_selector(f"{selector}[data-drawn] canvas", timeout=30_000)
    painted = page.evaluate(
        """(sel) => {
            const c = document.querySelector(sel + ' canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) n++;
            return n;
        }""",
        selector,
    )
    assert painted > 500, f"{selector} canvas is blank"
    # When it was drawn, in the page's own clock (what bench/bench_web.py reports).
    assert float(page.get_attribute(selector, "data-drawn-at")) > 0
    return int(page.get_attribute(selector, "data-drawn"))


def test_a_request_without_a_token_is_refused(browser: Any, server: WebServer) -> None:
    context = browser.new_context()
    pg = context.new_page()
    response = pg.goto(server.url + "/api/devices")
    assert response.status == 401
    assert json.loads(pg.inner_text("body"))["status"] == 401
    pg.goto(server.url + "/")
    assert pg.url.endswith("/login")
    context.close()


def test_live_power_changes_within_two_seconds(page: Any, server: WebServer) -> None:
    port = server.broker.port  # type: ignore[attr-defined]
    expect = playwright_sync.expect
    page.goto(server.url + "/")
    # The pages' Content-Security-Policy forbids 'unsafe-eval', which wait_for_function needs
    # (it failed now and then with an EvalError): expect() polls through Playwright's own script.
    expect(page.locator("#live-state")).to_have_text(re.compile("^live"), timeout=30_000)
    for value in (1234.0, 777.0, -321.0):
        publish(port, "live-meter", value)
        card = page.locator('[data-key="live-meter/0"] .w')
        expect(card).to_have_text(str(round(value)), timeout=2_000)


def test_every_chart_draws_with_data(page: Any, server: WebServer) -> None:
    for path, selectors in {
        "/": ["#chart-recent"],
        "/energy": ["#chart-energy"],
        "/history": ["#chart-history"],
        "/patterns": ["#chart-profile"],
    }.items():
        page.goto(server.url + path)
        for selector in selectors:
            if path == "/":
                # The last hour of a lake whose history ends at midnight may be empty; the
                # chart must still draw its axes.
                page.wait_for_selector(f"{selector}[data-drawn] canvas", timeout=30_000)
                continue
            assert wait_drawn(page, selector) > 0, (path, selector)
    page.goto(server.url + "/patterns")
    page.wait_for_selector("#heatmap svg rect")
    filled = page.eval_on_selector_all(
        "#heatmap rect", "rs => rs.filter(r => r.getAttribute('fill') !== '#eee').length"
    )
    assert filled == 7 * 24


def test_a_year_range_loads_and_downloads_hold_the_rows_shown(page: Any, server: WebServer) -> None:
    page.goto(server.url + "/history")
    wait_drawn(page, "#chart-history")
    page.select_option("select[name=span]", "8760")
    with page.expect_response(lambda r: "/api/readings" in r.url) as answer:
        page.click("#range button")
    body = answer.value.json()
    more_than_100 = re.compile(r"^(10[1-9]|1[1-9]\d|[2-9]\d\d|\d{4,})$")  # (no eval: see above)
    playwright_sync.expect(page.locator("#chart-history")).to_have_attribute(
        "data-drawn", more_than_100, timeout=30_000
    )
    times = [r["ts_ms"] for r in body["rows"]]
    assert (max(times) - min(times)) / 86_400_000 > YEAR_DAYS - 5
    with page.expect_download() as download:
        page.click("#dl-history a:text('CSV')")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert len(rows) == len(body["rows"])
    assert [float(r["max_w"]) for r in rows] == [r["max_w"] for r in body["rows"]]
    with page.expect_download() as download:
        page.click("#dl-history a:text('Parquet')")
    import pyarrow.parquet as pq

    assert pq.read_table(download.value.path()).num_rows == len(body["rows"])


def test_pages_show_the_cli_figures(page: Any, server: WebServer, year_lake: Path) -> None:
    page.goto(server.url + "/energy")
    wait_drawn(page, "#chart-energy")
    page.wait_for_selector("#totals td")
    start = page.input_value("input[name=start]")
    end = page.input_value("input[name=end]")
    out = cli(
        year_lake, "energy", "--start", start, "--end", end, "--every", "day", "--format", "json"
    )
    rows = [json.loads(x) for x in out.splitlines() if x.strip()]
    # One total per device channel (no site: channels are never summed).
    shown = {
        tr.query_selector("td:nth-child(1)").inner_text(): float(
            tr.query_selector("td:nth-child(2)").inner_text()
        )
        for tr in page.query_selector_all("#totals tbody tr")
    }
    expected: dict[str, float] = {}
    for r in rows:
        key = f"{r['device_id']} ch{r['channel']}"
        expected[key] = expected.get(key, 0.0) + r["import_wh"] / 1000
    assert shown.keys() == expected.keys()
    for key, value in expected.items():
        assert shown[key] == pytest.approx(value, abs=0.006)
    out = cli(
        year_lake,
        "cost",
        "--tariff",
        "pl-g11",
        "--start",
        start,
        "--end",
        end,
        "--tz",
        "UTC",
        "--format",
        "json",
    )
    totals = [r for r in map(json.loads, out.splitlines()) if r["zone"] == "total"]
    assert len(totals) == 4  # each device channel billed on its own
    page.wait_for_selector("#cost td")
    lines = page.inner_text("#cost tbody").splitlines()
    for t in totals:
        cells = f"{t['device_id']}\t{t['channel']}\ttotal\t"
        line = next(x for x in lines if x.startswith(cells))
        assert line.split("\t")[5] == f"{t['cost']:.2f}", (line, t)
    # The overview's month cost so far, per channel: `wattlake cost` from the month's start
    # until the time the page names.
    page.goto(server.url + "/")
    now = page.get_attribute("#month-as-of", "data-as-of") or ""
    out = cli(
        year_lake,
        "cost",
        "--tariff",
        "pl-g11",
        "--start",
        now[:8] + "01",
        "--end",
        now,
        "--tz",
        "UTC",
        "--format",
        "json",
    )
    totals = [r for r in map(json.loads, out.splitlines()) if r["zone"] == "total"]
    shown = {
        (cells[0], int(cells[1])): float(cells[2])
        for cells in (x.split("\t") for x in page.inner_text("#month-channels tbody").splitlines())
    }
    assert shown == {(t["device_id"], t["channel"]): round(t["cost"], 2) for t in totals}
    # Patterns: the tariff comparison equals `wattlake cost --compare` for the same range.
    page.goto(server.url + "/patterns")
    page.wait_for_selector("#tariffs td")
    href = page.get_attribute("#dl-tariffs a", "href") or ""
    params = dict(parse_qsl(urlsplit(href).query))
    rows = [x.split("\t") for x in page.inner_text("#tariffs tbody").splitlines() if x]
    head = page.inner_text("#tariffs thead").split("\t")
    # Ranked within each currency: with several, the table leads with the currency (grouped).
    col = {name.strip(): i for i, name in enumerate(head)}
    assert head[0].strip() == "currency" and head[1].strip() == "rank"
    ranks: dict[str, list[int]] = {}
    for cells in rows:
        ranks.setdefault(cells[col["currency"]], []).append(int(cells[col["rank"]]))
    assert all(r == list(range(1, len(r) + 1)) for r in ranks.values()), ranks
    names = [cells[col["tariff"]] for cells in rows]
    out = cli(
        year_lake,
        "cost",
        "--tariff",
        names[0],
        "--compare",
        ",".join(names[1:]),
        "--start",
        params["start"],
        "--end",
        params["end"],
        "--device",
        params["device"],
        "--channel",
        params["channel"],
        "--format",
        "json",
    )
    expected = {r["tariff"]: r["total"] for r in map(json.loads, out.splitlines())}
    shown = {cells[col["tariff"]]: float(cells[col["total"]]) for cells in rows}
    assert shown == pytest.approx(expected, abs=0.006)


def test_screenshots_of_every_page(browser: Any, server: WebServer) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    for name, (width, height) in SIZES.items():
        context = browser.new_context(viewport={"width": width, "height": height})
        pg = context.new_page()
        pg.goto(server.login_url())
        for path in PAGES:
            pg.goto(server.url + path)
            pg.wait_for_load_state("networkidle") if path != "/" else pg.wait_for_timeout(1500)
            if path in ("/energy", "/history", "/patterns"):
                pg.wait_for_selector(".chart[data-drawn] canvas", timeout=30_000)
            pg.wait_for_timeout(300)
            label = path.strip("/") or "overview"
            pg.screenshot(path=str(ARTIFACTS / f"{label}-{name}.png"), full_page=True)
        overflow = pg.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
        context.close()


def test_screenshots_of_a_solar_site(browser: Any, history_lake: HistoryLake) -> None:
    """The Energy page of a site with a PV inverter (the history lake's solar home): the
    roles' colours (import, export, solar, battery) side by side, at both widths."""
    solar_site = next(name for name, kind in history_lake.sites.items() if kind == "pv")
    web = WebServer(history_lake.settings(), port=0)
    web.start()
    try:
        for name, (width, height) in SIZES.items():
            context = browser.new_context(viewport={"width": width, "height": height})
            pg = context.new_page()
            pg.goto(web.login_url())
            pg.goto(web.url + "/energy")
            pg.wait_for_selector("#chart-energy[data-drawn] canvas", timeout=30_000)
            pg.select_option("select[name=site]", solar_site)
            pg.select_option("select[name=period]", "week")
            with pg.expect_response(lambda r: "/api/cost" in r.url and "site=" in r.url):
                pg.click("#period button[type=submit]")  # not the header's log-out button
            pg.wait_for_selector("#chart-energy[data-drawn] canvas", timeout=30_000)
            pg.wait_for_load_state("networkidle")  # the first load's answers too
            pg.wait_for_timeout(300)
            # The site's grid is billed (not every device channel of the lake), whichever
            # answer came last.
            cost_header = pg.locator("#cost tr").first.inner_text()
            assert "zone" in cost_header and "device" not in cost_header, cost_header
            legend = pg.locator("#chart-energy .u-legend").inner_text()
            for role in ("grid import", "solar", "battery discharge", "grid export"):
                assert role in legend, legend
            pg.screenshot(path=str(ARTIFACTS / f"energy-site-{name}.png"), full_page=True)
            context.close()
    finally:
        web.stop()

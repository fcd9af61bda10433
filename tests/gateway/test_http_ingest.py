"""HTTP publishing into the delivery stream: a 200 means the message is in the WAL.

Every test runs a real Mosquitto, a real ingest worker with its uvicorn server, and sends real
HTTP requests (``http.client``); the durability test kills a real ``wattlake ingest`` process.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import FIXTURES, Mosquitto, free_port, tiny_disk_command
from tests.stream.support import (
    IngestProcess,
    Publisher,
    lake_keys,
    no_ingest_left_running,  # noqa: F401 - an autouse fixture
    reading_message,
    start_worker,
    wait_until,
)
from tests.stream.test_connections import make_certificates
from wattlake.errors import UsageError
from wattlake.gateway.http import ListenAddress
from wattlake.lake.storage import Lake
from wattlake.query.engine import connect
from wattlake.stream.ingest import IngestWorker

TOKEN = "tok-7f3a9c1e5b2d4680-never-logged"
BASE_TS_S = 1_767_225_600  # 2026-01-01T00:00:00Z


@dataclass
class Answer:
    """One HTTP response: status, headers (lower-case names) and the JSON body."""

    status: int
    headers: dict[str, str]
    body: Any


def post(
    base_url: str,
    topic: str,
    body: bytes | Iterable[bytes],
    *,
    token: str | None = TOKEN,
    authorization: str | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    """POST ``body`` to ``/topics/<topic>[?query]`` (chunked when ``body`` is a list of parts)."""
    headers = {"Authorization": authorization or f"Bearer {token}"} if token is not None else {}
    topic, mark, query = topic.partition("?")
    path = f"/topics/{quote(topic, safe='/')}{mark}{query}"
    return request(base_url, "POST", path, body, headers, context)


def request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> Answer:
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port
    connection = (
        http.client.HTTPSConnection(parts.hostname, parts.port, timeout=60, context=context)
        if parts.scheme == "https"
        else http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    )
    try:
        chunked = body is not None and not isinstance(body, bytes)
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        data = response.read()
        return Answer(
            response.status,
            {k.lower(): v for k, v in response.getheaders()},
            json.loads(data) if data else None,
        )
    finally:
        connection.close()


@contextmanager
def http_worker(url: str, data_dir: Path, **settings: object) -> Iterator[IngestWorker]:
    """Run an in-process ingest worker with HTTP on a free port; stop it at the end."""
    http = {"ingest.http_listen": "127.0.0.1:0", "ingest.http_token": TOKEN}
    worker, stop, thread = start_worker(url, data_dir, **{**http, **settings})
    try:
        yield worker
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive()


def generic(device: str, index: int, power_w: float, channel: int = 0) -> dict[str, Any]:
    """Return one generic reading of ``device`` at BASE_TS_S + ``index`` seconds."""
    ts = BASE_TS_S + index
    return {"device_id": device, "ts": ts, "channel": channel, "power_w": power_w}


def readings(data_dir: Path) -> dict[tuple[str, int, int], tuple[float, str]]:
    """Return the ``readings`` view as {(device_id, channel, ts ms): (power_w, source)}."""
    con = connect(Lake.open(str(data_dir)))
    rows = con.sql(
        "SELECT device_id, channel, epoch_ms(ts), power_w, source FROM readings"
    ).fetchall()
    con.close()
    keyed = {(d, int(c), int(t)): (float(p), s) for d, c, t, p, s in rows}
    assert len(keyed) == len(rows)
    return keyed


def test_http_and_mqtt_readings_land_in_the_lake_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    data_dir = tmp_path / "lake"
    one = generic("http-one", 0, 812.5)
    array = [generic("http-array", i, 100.0 + i, channel=i % 2) for i in range(3)]
    ndjson = b"\n".join(json.dumps(generic("http-nd", i, -50.0 - i)).encode() for i in range(3))
    shelly = (FIXTURES / "shelly" / "gen2-proem-notifystatus.json").read_bytes()
    mqtt_messages = [reading_message(i) for i in range(200)]
    with http_worker(mosquitto.url, data_dir) as worker:
        assert worker.http is not None
        base = worker.http.url
        publisher = Publisher(mosquitto.url, mqtt_messages, name="http-mix").start()
        answers = [
            post(base, "wattlake/http-one/readings", json.dumps(one).encode()),
            post(base, "wattlake/http-array/readings?qos=1", json.dumps(array).encode()),
            post(base, "wattlake/http-nd/readings", ndjson),
            post(base, "shellyproem50-08f9e0e67204/events/rpc", shelly),
        ]
        publisher.wait()
        publisher.close()
        assert [(a.status, a.body) for a in answers] == [(200, {"accepted": 1})] * 4
        # The broker has every MQTT message; the worker takes and acknowledges them after it.
        deadline = time.monotonic() + 30
        while worker.health.acked < 4 + len(mqtt_messages) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.health.acked == 4 + len(mqtt_messages)
    # The worker has stopped: everything it acknowledged is in the lake now.
    raw_rows, view_rows, _ = lake_keys(data_dir)
    assert raw_rows == view_rows == len(mqtt_messages) + 9, "each reading once"
    rows = readings(data_dir)
    t0 = BASE_TS_S * 1000
    assert rows[("http-one", 0, t0)] == (812.5, "generic")
    assert [rows[("http-array", i % 2, t0 + i * 1000)] for i in range(3)] == [
        (100.0 + i, "generic") for i in range(3)
    ]
    assert [rows[("http-nd", 0, t0 + i * 1000)][0] for i in range(3)] == [-50.0, -51.0, -52.0]
    shelly_ts = 1_757_060_280_210
    assert rows[("shellyproem50-08f9e0e67204", 0, shelly_ts)] == (1150.3, "shelly-gen2")
    assert rows[("shellyproem50-08f9e0e67204", 1, shelly_ts)] == (-5080.3, "shelly-gen2")
    mqtt_rows = [k for k in rows if k[0].startswith("shellyproem50-dur")]
    assert len(mqtt_rows) == len(mqtt_messages)


def http_base(process: IngestProcess) -> str:
    found = re.search(r"HTTP publish on (http://127\.0\.0\.1:\d+)/topics/", process.text())
    assert found, process.text()
    return found.group(1)


def test_a_200_is_durable_even_if_the_process_is_killed_right_after_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    data_dir = tmp_path / "lake"
    env = {"WATTLAKE_INGEST__HTTP_TOKEN": TOKEN}
    args = ("--http-listen", "127.0.0.1:0")
    # No flush before the kill: what was answered 200 is only in the WAL.
    first = IngestProcess(
        mosquitto.url,
        data_dir,
        tmp_path / "ingest-1.log",
        env={**env, "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "600"},
        args=args,
    ).wait_subscribed()
    base = http_base(first)
    target = 400
    accepted: list[int] = []
    attempted: list[int] = []
    lock = threading.Lock()

    def client(first_index: int, step: int) -> None:
        for index in range(first_index, 100_000, step):
            topic, payload = reading_message(index)
            with lock:
                attempted.append(index)
            try:
                answer = post(base, topic, payload)
            except OSError:  # the process was killed under this request
                return
            if answer.status != 200:
                return
            with lock:
                accepted.append(index)

    clients = [threading.Thread(target=client, args=(k, 4)) for k in range(4)]
    for thread in clients:
        thread.start()
    wait_until(lambda: len(accepted) >= target, 60, f"{target} answers 200")
    first.kill()  # SIGKILL, with requests of the other clients in flight
    for thread in clients:
        thread.join(30)
    assert list(data_dir.glob("raw/**/*.parquet")) == [], "nothing was flushed before the kill"

    second = IngestProcess(
        mosquitto.url, data_dir, tmp_path / "ingest-2.log", env=env, args=args
    ).wait_subscribed()
    assert second.stop() == 0, second.text()  # it replays the WAL and flushes at exit

    _, view_rows, keys = lake_keys(data_dir)
    assert len(accepted) >= target
    assert {_key(i) for i in accepted} <= keys, "every reading answered 200 is in the lake"
    assert keys <= {_key(i) for i in attempted}, "nothing else is"
    assert view_rows == len(keys), "each reading once"
    text = first.text() + second.text()
    assert "Traceback" not in text
    assert TOKEN not in text


def test_a_stop_answers_every_request_and_keeps_every_200(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    data_dir = tmp_path / "lake"
    worker, stop, thread = start_worker(
        mosquitto.url,
        data_dir,
        **{"ingest.http_listen": "127.0.0.1:0", "ingest.http_token": TOKEN},
    )
    assert worker.http is not None
    base = worker.http.url
    outcomes: dict[int, int | str] = {}

    def client(first_index: int) -> None:
        for index in range(first_index, 100_000, 16):
            try:
                status = post(base, *reading_message(index)).status
            except OSError as exc:  # the listener has closed
                outcomes[index] = type(exc).__name__
                return
            outcomes[index] = status
            if status != 200:
                return

    clients = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for each in clients:
        each.start()
    wait_until(lambda: len(outcomes) >= 200, 60, "requests answered")
    stopped_at = time.monotonic()
    stop.set()
    thread.join(60)
    assert time.monotonic() - stopped_at < 15, "no request held the stop up"
    for each in clients:
        each.join(60)
        assert not each.is_alive(), "every request got an answer"
    assert set(outcomes.values()) <= {200, 503, "ConnectionRefusedError", "ConnectionResetError"}
    accepted = {_key(i) for i, status in outcomes.items() if status == 200}
    _, view_rows, keys = lake_keys(data_dir)
    assert accepted <= keys and view_rows == len(keys), "every 200 is in the lake, once"


def _key(index: int) -> tuple[str, int]:
    doc = json.loads(reading_message(index)[1])
    return doc["src"], doc["params"]["ts"] * 1000


def assert_refused(answer: Answer, status: int) -> None:
    """Every refusal has one JSON shape: the error sentence and the status."""
    assert answer.status == status, answer
    assert set(answer.body) == {"error", "status"} and answer.body["status"] == status
    assert isinstance(answer.body["error"], str) and answer.body["error"].endswith(".")


def test_bad_requests_are_refused_and_nothing_of_them_is_kept(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "lake"
    good = json.dumps(generic("http-ok", 0, 5.0)).encode()
    topic = "wattlake/http-bad/readings"
    wrong = "wrong-token-should-not-be-logged"
    with http_worker(mosquitto.url, data_dir, **{"ingest.max_payload_bytes": 1000}) as worker:
        assert worker.http is not None
        base = worker.http.url
        for answer in (
            post(base, topic, good, token=None),
            post(base, topic, good, token=wrong),
            post(base, topic, good, authorization=f"Basic {TOKEN}"),
            post(base, topic, good, authorization="Bearer"),
        ):
            assert_refused(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert_refused(post(base, topic, b"x" * 1001), 413)
        assert_refused(post(base, topic, [b"x" * 200] * 6), 413)  # chunked, no length given
        assert_refused(post(base, topic, b""), 400)
        for bad_topic in ("wattlake/+/readings", "wattlake/#", "", "$SYS/x"):
            assert_refused(post(base, bad_topic, good), 400)
        assert_refused(post(base, f"{topic}?qos=2", good), 400)
        assert_refused(request(base, "GET", f"/topics/{topic}"), 405)
        assert worker.health.acked == 0
        # A payload of exactly the limit, sent in chunks, is taken.
        exact = json.dumps(generic("http-ok", 0, 5.0)).encode().ljust(1000)
        assert post(base, "wattlake/http-ok/readings", [exact[:500], exact[500:]]).status == 200
        health = request(base, "GET", "/health")
        assert (health.status, health.body) == (200, {"taking": True})
    figures = worker.figures()
    assert figures.acknowledged == figures.messages == 1, "only the good request was kept"
    assert figures.readings == 1 and figures.dead_letters == 0
    lake = connect(Lake.open(str(data_dir)))
    assert lake.sql("SELECT count(*) FROM dead_letters").fetchall() == [(0,)]
    assert lake.sql("SELECT count(*) FROM raw_readings").fetchall() == [(1,)]
    assert TOKEN not in caplog.text and wrong not in caplog.text


def test_a_full_wal_answers_503_with_retry_after_until_the_lake_is_back(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    data_dir = tmp_path / "lake"
    data_dir.mkdir()
    blocker = data_dir / "tables"
    blocker.write_text("a file where the tables/ folder should be: every table write fails")
    settings = {"stream.wal_max_bytes": 20_000, "stream.retry_max_s": 0.5}
    accepted: list[int] = []
    with http_worker(mosquitto.url, data_dir, **settings) as worker:
        assert worker.http is not None
        base = worker.http.url
        index = 0
        while True:
            answer = post(base, *reading_message(index))
            if answer.status != 200:
                break
            accepted.append(index)
            index += 1
            assert index < 2_000, "the WAL limit was never reached"
        assert_refused(answer, 503)
        assert int(answer.headers["retry-after"]) > 0
        assert worker.wal.total_bytes >= 20_000
        wait_until(lambda: not worker.health.lake_ok, 30, "the lake reported unwritable")
        health = request(base, "GET", "/health")
        assert (health.status, health.body) == (503, {"taking": False})
        assert "retry-after" in health.headers
        assert post(base, *reading_message(index)).status == 503, "still full"

        blocker.unlink()
        wait_until(lambda: request(base, "GET", "/health").status == 200, 60, "the lake back")
        for later in range(index, index + 5):
            assert post(base, *reading_message(later)).status == 200
            accepted.append(later)
    _, view_rows, keys = lake_keys(data_dir)
    assert keys == {_key(i) for i in accepted}, "every 200 is in the lake; no 503 is"
    assert view_rows == len(accepted)


def test_a_failing_wal_answers_503_and_keeps_exactly_what_it_answered_200(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    data_dir, wal_dir = tmp_path / "lake", tmp_path / "wal"
    wal_dir.mkdir()
    env = {
        "WATTLAKE_INGEST__HTTP_TOKEN": TOKEN,
        "WATTLAKE_STREAM__WAL_DIR": str(wal_dir),
        "WATTLAKE_STREAM__FLUSH_INTERVAL_S": "600",  # the WAL keeps everything until the exit
        "WATTLAKE_STREAM__RETRY_MAX_S": "0.5",
    }
    # The WAL folder is a 64 KiB file system: appends fail once it is full.
    process = IngestProcess(
        mosquitto.url,
        data_dir,
        tmp_path / "ingest.log",
        env=env,
        args=("--http-listen", "127.0.0.1:0"),
        wrap=lambda command: tiny_disk_command(wal_dir, "64k", command),
    ).wait_subscribed()
    base = http_base(process)
    accepted: list[int] = []
    for index in range(2_000):
        answer = post(base, *reading_message(index))
        if answer.status != 200:
            break
        accepted.append(index)
    assert_refused(answer, 503)
    assert "write-ahead log" in answer.body["error"] and int(answer.headers["retry-after"]) > 0
    assert 100 < len(accepted) < 2_000
    assert process.stop() == 0, process.text()  # only HTTP messages failed: none is held
    text = " ".join(process.text().split())
    assert "cannot write the WAL" in text and "No space left on device" in text
    assert "Traceback" not in text and TOKEN not in text

    _, view_rows, keys = lake_keys(data_dir)
    assert keys == {_key(i) for i in accepted}, "every 200 is in the lake; the 503 is not"
    assert view_rows == len(accepted)


def test_https_with_a_certificate_made_by_openssl(mosquitto: Mosquitto, tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path / "certs")
    tls = {"ingest.http_tls_cert_file": str(cert), "ingest.http_tls_key_file": str(key)}
    with http_worker(mosquitto.url, tmp_path / "lake", **tls) as worker:
        assert worker.http is not None and worker.http.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(ca))
        answer = post(worker.http.url, *reading_message(0), context=trusted)
        assert (answer.status, answer.body) == (200, {"accepted": 1})
        with pytest.raises(ssl.SSLCertVerificationError):
            post(worker.http.url, *reading_message(1), context=ssl.create_default_context())
        plain = worker.http.url.replace("https://", "http://")
        with pytest.raises((http.client.HTTPException, OSError)):
            post(plain, *reading_message(2))
    assert worker.figures().acknowledged == 1


def test_ingest_http_usage_errors_exit_2_with_one_sentence(tmp_path: Path) -> None:
    broker = f"mqtt://127.0.0.1:{free_port()}"  # never reached: the options are checked first
    token = {"WATTLAKE_INGEST__HTTP_TOKEN": TOKEN}

    def wattlake(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "wattlake", *args, "--data-dir", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )

    # The processes run at once: each spends most of its time importing.
    no_token = wattlake("ingest", "--broker", broker, "--http-listen", "127.0.0.1:0")
    malformed = wattlake("ingest", "--broker", broker, "--http-listen", "127.0.0.1", env=token)
    tls_only = wattlake("ingest", "--broker", broker, "--http-tls-cert", "c.pem", env=token)
    shown = wattlake("config", "show", "--format", "json", env=token)
    for process, message in [
        (no_token, "set WATTLAKE_INGEST__HTTP_TOKEN"),
        (malformed, "is not of the form HOST:PORT"),
        (tls_only, "need --http-listen"),
    ]:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 2, (process.args, err)
        assert message in err and "Traceback" not in err, err
        assert err.count("Error:") == 1 and err.strip().endswith("."), err
        assert TOKEN not in out + err
    out, err = shown.communicate(timeout=60)
    assert shown.returncode == 0, err
    rows = {row["setting"]: row for row in map(json.loads, out.splitlines())}
    assert rows["ingest.http_token"]["value"] == "********"
    assert TOKEN not in out + err

    for listen in ("localhost:http", ":8081", "127.0.0.1:65536", "[::1]"):
        with pytest.raises(UsageError, match="is not of the form HOST:PORT"):
            ListenAddress.parse(listen)
    assert ListenAddress.parse("[::1]:8081") == ListenAddress("::1", 8081)


def test_a_taken_port_is_one_sentence(mosquitto: Mosquitto, tmp_path: Path) -> None:
    port = free_port()
    with http_worker(mosquitto.url, tmp_path / "a", **{"ingest.http_listen": f"127.0.0.1:{port}"}):
        process = IngestProcess(
            mosquitto.url,
            tmp_path / "b",
            tmp_path / "ingest.log",
            client_id="taken-port",
            env={"WATTLAKE_INGEST__HTTP_TOKEN": TOKEN},
            args=("--http-listen", f"127.0.0.1:{port}"),
        )
        assert process.process.wait(60) == 2
    text = " ".join(process.text().split())
    assert f"Cannot listen for HTTP on 127.0.0.1:{port}" in text and "Traceback" not in text
    assert TOKEN not in text

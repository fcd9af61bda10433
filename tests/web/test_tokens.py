"""Scoped API tokens: stored as hashes in a 0600 file; HTTP publishing takes ingest tokens."""

from __future__ import annotations

import http.client
import json
import stat
import threading
import time
from pathlib import Path

import pytest

from wattlake.gateway.http import HttpSource, ListenAddress
from wattlake.gateway.mqtt import Intake, take
from wattlake.gateway.tokens import TokenError, TokenStore, parse_expiry_s


def test_tokens_are_stored_only_as_hashes_in_a_private_file(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "state" / "tokens.json")
    token, record = store.create("read", name="grafana")
    text = store.path.read_text()
    assert token not in text
    assert record.sha256 in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.verify(token) == record
    assert store.verify(token + "x") is None
    assert store.verify("") is None
    assert [r.id for r in store.records()] == [record.id]


def test_scopes_expiry_and_revocation(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    admin, admin_record = store.create("admin")
    read, read_record = store.create("read", expires_at_s=time.time() + 60)
    assert admin_record.allows("read") and admin_record.allows("ingest")
    assert read_record.allows("read") and not read_record.allows("ingest")
    assert store.verify(read, now_s=time.time() + 61) is None
    store.revoke(admin_record.id)
    assert store.verify(admin) is None
    assert store.verify(read) == read_record
    with pytest.raises(TokenError):
        store.revoke(admin_record.id)
    with pytest.raises(TokenError):
        store.create("write")


def test_expiry_accepts_durations_and_times() -> None:
    assert parse_expiry_s("12h", now_s=1000.0) == 1000.0 + 12 * 3600
    assert parse_expiry_s("2030-01-01T00:00:00Z", now_s=0.0) == 1893456000.0
    for bad in ("soon", "0h", "2001-01-01"):
        with pytest.raises(TokenError):
            parse_expiry_s(bad, now_s=2e9)


def _post(url: str, token: str | None) -> int:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    conn.request("POST", "/topics/wattlake/d1/readings", body=b'{"power_w": 1}', headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    assert set(body) <= {"accepted", "error", "status"}
    conn.close()
    return response.status


def test_http_publishing_takes_ingest_tokens_and_the_deprecated_secret(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    ingest, _ = store.create("ingest")
    admin, _ = store.create("admin")
    read, _ = store.create("read")
    intake: Intake = Intake()
    source = HttpSource(
        ListenAddress("127.0.0.1", 0),
        token="old-shared-secret",
        tokens=store,
        intake=intake,
        taking=lambda: True,
        max_payload_bytes=1024,
    )
    stop = threading.Event()

    def worker() -> None:  # makes every message "durable" at once
        while not stop.is_set():
            batch = take(intake, timeout_s=0.05)
            if batch:
                source.ack(batch)

    thread = threading.Thread(target=worker, daemon=True)
    source.start()
    thread.start()
    try:
        assert _post(source.url, ingest) == 200
        assert _post(source.url, admin) == 200
        assert _post(source.url, "old-shared-secret") == 200
        assert _post(source.url, read) == 403
        assert _post(source.url, None) == 401
        assert _post(source.url, "wl_guess") == 401
    finally:
        stop.set()
        thread.join(5)
        source.stop()

"""One HTTP error module: the web API and the gateway's HTTP publish answer alike."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from wattlake.config import Settings
from wattlake.gateway.http import HttpSource, ListenAddress
from wattlake.httpserver import (
    BadRequest,
    Forbidden,
    HttpError,
    NotFound,
    PayloadTooLarge,
    QueryTimeout,
    Unauthorized,
    Unavailable,
)
from wattlake.web.app import create_app

REFUSALS: list[type[HttpError]] = [
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    QueryTimeout,
    PayloadTooLarge,
    Unavailable,
]


def web_app(tmp_path: Path) -> FastAPI:
    return create_app(Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={}))


def ingest_app() -> FastAPI:
    source = HttpSource(
        ListenAddress("127.0.0.1", 0),
        token="a-shared-secret",
        intake=queue.SimpleQueue(),
        taking=lambda: True,
        max_payload_bytes=1000,
    )
    return source.app()


def raising(app: FastAPI, refusal: type[HttpError]) -> TestClient:
    """Return a client of ``app`` with ``GET /raise`` that raises ``refusal``."""

    def refuse() -> None:
        raise refusal(f"Refused with {refusal.__name__}.")

    app.add_api_route("/raise", refuse, methods=["GET"])
    return TestClient(app)


def answer(client: TestClient, path: str, method: str = "GET") -> tuple[int, object, str, str]:
    """Return the status, JSON body, WWW-Authenticate and Retry-After of one request."""
    r = client.request(method, path)
    return (
        r.status_code,
        r.json(),
        r.headers.get("www-authenticate", ""),
        r.headers.get("retry-after", ""),
    )


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda c: c.__name__)
def test_one_refusal_is_the_same_answer_from_the_web_and_the_http_ingest(
    tmp_path: Path, refusal: type[HttpError]
) -> None:
    web = answer(raising(web_app(tmp_path), refusal), "/raise")
    ingest = answer(raising(ingest_app(), refusal), "/raise")
    assert web == ingest
    status, body, _, _ = web
    assert status == refusal.status
    assert body == {"error": f"Refused with {refusal.__name__}.", "status": refusal.status}


def test_unauthenticated_requests_are_refused_alike(tmp_path: Path) -> None:
    web = answer(TestClient(web_app(tmp_path)), "/api/devices")
    ingest = answer(TestClient(ingest_app()), "/topics/wattlake/x/readings", "POST")
    for status, body, authenticate, _ in (web, ingest):
        assert status == 401
        assert isinstance(body, dict) and set(body) == {"error", "status"}
        assert body["status"] == 401 and body["error"].endswith(".")
        assert authenticate == 'Bearer realm="wattlake"'

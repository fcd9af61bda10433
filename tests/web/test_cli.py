"""``wattlake token`` and ``wattlake serve`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.stream.test_connections import make_certificates
from tests.web.conftest import HistoryLake, cli
from wattlake.gateway.tokens import TokenStore


def test_token_create_list_revoke(tmp_path: Path) -> None:
    token = cli(tmp_path, "token", "create", "--scope", "ingest", "--expires", "2h").strip()
    assert token.startswith("wl_")
    listed = [
        json.loads(x) for x in cli(tmp_path, "token", "list", "--format", "json").split("\n") if x
    ]
    assert [(r["scope"], r["expired"]) for r in listed] == [("ingest", False)]
    assert token not in (tmp_path / "tokens.json").read_text()
    assert TokenStore(tmp_path / "tokens.json").verify(token) is not None
    cli(tmp_path, "token", "revoke", listed[0]["id"])
    assert TokenStore(tmp_path / "tokens.json").verify(token) is None
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "wattlake",
            "token",
            "create",
            "--scope",
            "write",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def _serve(history_lake: HistoryLake, *extra: str) -> tuple[subprocess.Popen[str], str, str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattlake",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(history_lake.data_dir),
            *extra,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WATTLAKE_COST__TARIFF": "pl-g11"},
    )
    assert process.stderr is not None
    lines = []
    while True:
        line = process.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
        found = re.search(r"Sign in once within \d+ s: (\S+)", line)
        if found:
            link = found.group(1)
            return process, link.split("/login")[0], link


def test_serve_json_logs_never_carry_the_login_code(history_lake: HistoryLake) -> None:
    process, base, link = _serve(history_lake, "--log-format", "json")
    try:
        code = link.split("code=")[1]
        with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
            assert json.load(r) == {"status": "alive"}
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(link, timeout=30) as r:
            assert r.status == 200 and b"Overview" in r.read()
        try:
            urllib.request.urlopen(base + "/api/devices", timeout=10)
            raise AssertionError("no token must be refused")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    log_lines = [line for line in rest.splitlines() if line.startswith("{")]
    assert log_lines, rest
    assert all(json.loads(line)["message"] for line in log_lines)
    assert code not in rest
    assert any("/login" in json.loads(line)["message"] for line in log_lines)


def test_serve_https(history_lake: HistoryLake, tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    process, base, _ = _serve(history_lake, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert base.startswith("https://")
        import ssl

        context = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(base + "/healthz", timeout=10, context=context) as r:
            assert r.status == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)

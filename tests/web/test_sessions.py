"""Sign-ins survive a restart of the server: sessions and one-time codes are kept as hashes
with their expiry in ``sessions.json`` (mode 0600) beside the token file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from fastapi.testclient import TestClient

from tests.web.conftest import HistoryLake
from wattlake.gateway.tokens import TokenStore
from wattlake.web.auth import SESSION_COOKIE, SESSIONS_FILE, Auth


def _auth(folder: Path, max_age_s: float = 3600.0) -> Auth:
    return Auth.beside_tokens(
        TokenStore(folder / "tokens.json"), session_max_age_s=max_age_s, login_code_ttl_s=300.0
    )


def test_sessions_and_codes_survive_a_restart(tmp_path: Path) -> None:
    first = _auth(tmp_path)
    session = first.exchange_code(first.login_code("read"))
    unused = first.login_code("admin")
    assert session is not None
    path = tmp_path / SESSIONS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert session not in text and unused not in text  # hashes only
    restarted = _auth(tmp_path)  # a new process reads the file
    found = restarted.session(session)
    assert found is not None and found.scope == "read"
    assert restarted.exchange_code(unused) is not None  # printed before the restart
    assert restarted.exchange_code(unused) is None  # still good only once
    restarted.end_session(session)  # logout
    assert _auth(tmp_path).session(session) is None


def test_expired_sign_ins_are_not_kept(tmp_path: Path) -> None:
    first = _auth(tmp_path, max_age_s=-1.0)  # every session is born expired
    session = first.exchange_code(first.login_code("read"))
    assert session is not None
    assert _auth(tmp_path).session(session) is None
    assert json.loads((tmp_path / SESSIONS_FILE).read_text())["sessions"] == {}


def test_a_damaged_file_signs_nobody_in(tmp_path: Path) -> None:
    (tmp_path / SESSIONS_FILE).write_text("{not json")
    auth = _auth(tmp_path)
    assert auth.session("anything") is None
    assert auth.exchange_code(auth.login_code()) is not None  # and it is written anew


def test_the_app_keeps_the_cookie_across_a_restart(history_lake: HistoryLake) -> None:
    from wattlake.web.app import create_app

    settings = history_lake.settings()
    app = create_app(settings)
    signed_in = TestClient(app).get(
        f"/login?code={app.state.auth.login_code('read')}", follow_redirects=False
    )
    cookie = signed_in.cookies[SESSION_COOKIE]
    again = TestClient(create_app(settings), cookies={SESSION_COOKIE: cookie})
    assert again.get("/api/devices").status_code == 200

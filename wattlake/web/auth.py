"""Who may do what: scoped API tokens, one-time login codes and session cookies.

Every request except ``/healthz``, ``/readyz``, ``/static/…`` and the login page needs either a
bearer token (``Authorization: Bearer wl_…``) or the session cookie. No valid credential: 401;
a valid one without the scope asked: 403. A session remembers which token (or login code) made
it and the token's scope; revoking that token ends its sessions too.

Sessions and login codes are kept as SHA-256 hashes with their expiry in ``sessions.json``
(mode 0600) beside the token file, so a restart of ``serve`` signs nobody out and a code
printed before it still works once; expired entries are dropped whenever the file is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from fastapi import Request

from wattlake.gateway.ca import write_private
from wattlake.gateway.tokens import TokenStore
from wattlake.httpserver import Forbidden, Unauthorized

SESSION_COOKIE: Final = "wattlake_session"
SESSIONS_FILE: Final = "sessions.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the scope it holds, the token behind it (if any), its expiry."""

    scope: str
    token_id: str | None
    expires_at_s: float

    def allows(self, scope: str) -> bool:
        """Return True when this session's scope grants ``scope``."""
        return self.scope == scope or self.scope == "admin"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


class Auth:
    """Tokens (from the token file), one-time login codes and sessions of one server."""

    def __init__(
        self,
        tokens: TokenStore,
        *,
        session_max_age_s: float,
        login_code_ttl_s: float,
        state_file: Path | None = None,
    ) -> None:
        self.tokens = tokens
        self.session_max_age_s = session_max_age_s
        self.login_code_ttl_s = login_code_ttl_s
        self._lock = threading.Lock()
        # Only hashes of session ids and codes are kept, like tokens.
        self._sessions: dict[str, Session] = {}
        self._codes: dict[str, tuple[str, float]] = {}
        # Where they are kept across restarts (None: in memory only).
        self.state_file = state_file
        self._load()

    @classmethod
    def beside_tokens(
        cls, tokens: TokenStore, *, session_max_age_s: float, login_code_ttl_s: float
    ) -> Auth:
        """Return the sign-ins of ``tokens``' server, kept in ``sessions.json`` beside its
        token file."""
        return cls(
            tokens,
            session_max_age_s=session_max_age_s,
            login_code_ttl_s=login_code_ttl_s,
            state_file=tokens.path.with_name(SESSIONS_FILE),
        )

    def _load(self) -> None:
        """Read the sessions and codes kept by an earlier run (unreadable: start without)."""
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            now = time.time()
            sessions = {
                k: Session(str(v["scope"]), v.get("token_id"), float(v["expires_at_s"]))
                for k, v in data.get("sessions", {}).items()
            }
            codes = {k: (str(v[0]), float(v[1])) for k, v in data.get("codes", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning(
                "cannot read the sign-ins in %s (%s); starting without", self.state_file, exc
            )
            return
        self._sessions = {k: v for k, v in sessions.items() if v.expires_at_s > now}
        self._codes = {k: v for k, v in codes.items() if v[1] > now}

    def _save(self) -> None:
        """Write the live sessions and codes (hashes and expiry only), mode 0600, atomically;
        call with the lock held. A failure is logged: sign-ins then last until a restart."""
        if self.state_file is None:
            return
        now = time.time()
        data: dict[str, Any] = {
            "sessions": {k: asdict(v) for k, v in self._sessions.items() if v.expires_at_s > now},
            "codes": {k: list(v) for k, v in self._codes.items() if v[1] > now},
        }
        try:
            write_private(self.state_file, json.dumps(data).encode())
        except OSError as exc:
            log.warning("cannot keep the sign-ins in %s: %s", self.state_file, exc)

    def login_code(self, scope: str = "admin") -> str:
        """Return a new one-time code that signs a browser in with ``scope`` once, within
        ``login_code_ttl_s``."""
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._codes[_digest(code)] = (scope, time.time() + self.login_code_ttl_s)
            self._save()
        return code

    def exchange_code(self, code: str) -> str | None:
        """Return a new session id for a valid unused ``code`` (used up now), else None."""
        with self._lock:
            entry = self._codes.pop(_digest(code), None)
            if entry is not None:
                self._save()
        if entry is None or time.time() >= entry[1]:
            return None
        return self._new_session(entry[0], None)

    def exchange_token(self, token: str) -> str | None:
        """Return a new session id for a valid ``read`` or ``admin`` token, else None."""
        record = self.tokens.verify(token)
        if record is None or not record.allows("read"):
            return None
        return self._new_session(record.scope, record.id)

    def _new_session(self, scope: str, token_id: str | None) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires_at_s > now}
            self._sessions[_digest(session_id)] = Session(
                scope, token_id, now + self.session_max_age_s
            )
            self._save()
        return session_id

    def end_session(self, session_id: str) -> None:
        """Forget a session (logout)."""
        with self._lock:
            if self._sessions.pop(_digest(session_id), None) is not None:
                self._save()

    def session(self, session_id: str) -> Session | None:
        """Return the live session with this id, else None."""
        with self._lock:
            found = self._sessions.get(_digest(session_id))
        if found is None or found.expires_at_s <= time.time():
            return None
        if found.token_id is not None and self.tokens.lookup(found.token_id) is None:
            return None  # its token was revoked or has expired
        return found

    def scope_of(self, request: Request) -> str | None:
        """Return the scope the request's credentials hold, or None without valid ones."""
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            record = self.tokens.verify(credentials.strip())
            return record.scope if record is not None else None
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            found = self.session(cookie)
            return found.scope if found is not None else None
        return None

    def require(self, request: Request, scope: str) -> str:
        """Return the request's scope if it grants ``scope``.

        Raises:
            Unauthorized: no valid token or session.
            Forbidden: valid, but without ``scope``.
        """
        held = self.scope_of(request)
        if held is None:
            raise Unauthorized(
                "Sign in or send a valid token (Authorization: Bearer <token>); create one with "
                "`wattlake token create --scope read`."
            )
        if held != scope and held != "admin":
            raise Forbidden(f"This token has the {held} scope; this needs the {scope} scope.")
        return held

"""Scoped API tokens (``read``, ``ingest``, ``admin``), stored only as hashes.

A token is ``wl_`` followed by 32 random bytes in URL-safe base64 (256 bits). The store keeps
the SHA-256 of each token, never the token itself, in a JSON file (mode 0600) in the local state
folder: ``tokens.json`` beside a local lake, ``tokens/<lake-id>/tokens.json`` in the local state
folder (:mod:`wattlake.state`) for a lake in object storage (like its WAL and catalog, they
belong to that one lake), or ``web.tokens_file``.

Why SHA-256 and not argon2: argon2 (slow, salted) protects *low-entropy* secrets such as
passwords from guessing once the hashes leak. A 256-bit random token cannot be guessed, so a
fast hash loses nothing, and it lets every HTTP request find its token by hash in O(1) instead of
paying ~50 ms of argon2 per request (or per candidate token).

Scopes: ``read`` (pages, API, ``/metrics``), ``ingest`` (HTTP publish) and ``admin`` (everything,
including the other two).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from wattlake.config import Settings
from wattlake.errors import StorageError, UsageError
from wattlake.gateway.ca import write_private
from wattlake.state import lake_state_dir, legacy_state_dir

SCOPES: Final = ("read", "ingest", "admin")
TOKEN_PREFIX: Final = "wl_"
TOKENS_FILE_NAME: Final = "tokens.json"


class TokenError(UsageError):
    """A token cannot be created, found or revoked as asked."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store keeps of one token: its hash and metadata, never the token."""

    id: str
    scope: str
    sha256: str
    created_at_s: float
    expires_at_s: float | None = None
    name: str = ""

    def expired(self, now_s: float | None = None) -> bool:
        """Return True once the token's expiry has passed."""
        now = time.time() if now_s is None else now_s
        return self.expires_at_s is not None and now >= self.expires_at_s

    def allows(self, scope: str) -> bool:
        """Return True when this token's scope grants ``scope`` (admin grants every scope)."""
        return self.scope == scope or self.scope == "admin"


def token_hash(token: str) -> str:
    """Return the hex SHA-256 of ``token`` as stored."""
    return hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).hexdigest()


def new_token() -> str:
    """Return a fresh token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def parse_expiry_s(text: str, now_s: float | None = None) -> float:
    """Return the expiry time [s since epoch] of ``text``: a duration (``30m``, ``12h``,
    ``90d``) from now, or an ISO 8601 time.

    Raises:
        TokenError: the text is neither.
    """
    from datetime import UTC, datetime

    now = time.time() if now_s is None else now_s
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        seconds = float(text[:-1]) * units[text[-1]]
        if seconds <= 0:
            raise TokenError(f"Expiry {text!r} must be in the future.")
        return now + seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise TokenError(
            f"Expiry {text!r} is neither a duration (30m, 12h, 90d) nor an ISO 8601 time."
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    expires = when.timestamp()
    if expires <= now:
        raise TokenError(f"Expiry {text!r} is in the past.")
    return expires


def tokens_path(settings: Settings) -> Path:
    """Return the token file: ``web.tokens_file``, else beside a local lake, else
    ``tokens/<lake-id>/tokens.json`` in the local state folder.

    Raises:
        wattlake.errors.StorageError: an S3 lake's identity cannot be read or written.
    """
    configured = str(settings.get("web.tokens_file", "") or "")
    if configured:
        return Path(configured)
    if "://" not in settings.data_dir:
        return Path(settings.data_dir) / TOKENS_FILE_NAME
    # Imported here: only a lake in object storage needs its identity (read over the network).
    from wattlake.lake.identity import ensure_identity
    from wattlake.lake.storage import Lake

    lake_id = ensure_identity(Lake.from_settings(settings)).lake_id
    path = lake_state_dir("tokens", lake_id) / TOKENS_FILE_NAME
    _adopt_shared_tokens(path)
    return path


def _adopt_shared_tokens(path: Path) -> None:
    """Copy the token file that every S3 lake shared before tokens belonged to one lake
    (``~/.local/state/wattlake/tokens.json``) to ``path`` when that has none yet, so that
    tokens made then keep working (the shared file stays for the other lakes)."""
    shared = legacy_state_dir() / TOKENS_FILE_NAME
    if path.exists() or not shared.is_file():
        return
    try:
        write_private(path, shared.read_bytes())
    except OSError as exc:
        raise StorageError(f"Cannot copy the token file {shared} to {path}: {exc}.") from exc


class TokenStore:
    """The token file: create, list, revoke and verify tokens.

    Verification re-reads the file when it changed (by modification time and size), so a token
    revoked by the CLI stops working in a running server within one request.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._by_hash: dict[str, TokenRecord] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenStore:
        """Return the store the settings name."""
        return cls(tokens_path(settings))

    def records(self) -> list[TokenRecord]:
        """Return every stored token, oldest first.

        Raises:
            StorageError: the file exists but cannot be read.
        """
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(f"Cannot read the token file {self.path}: {exc}.") from exc
        try:
            document = json.loads(text)
            return [TokenRecord(**item) for item in document.get("tokens", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            raise StorageError(
                f"The token file {self.path} is damaged ({exc}); restore it or delete it and "
                "create tokens again."
            ) from exc

    def _write(self, records: list[TokenRecord]) -> None:
        data = json.dumps({"tokens": [asdict(r) for r in records]}, indent=1).encode()
        try:
            write_private(self.path, data)
        except OSError as exc:
            raise StorageError(f"Cannot write the token file {self.path}: {exc}.") from exc

    def create(
        self, scope: str, *, expires_at_s: float | None = None, name: str = ""
    ) -> tuple[str, TokenRecord]:
        """Create a token; return it (shown once, never stored) and its record.

        Raises:
            TokenError: the scope is unknown.
            StorageError: the file cannot be written.
        """
        if scope not in SCOPES:
            raise TokenError(f"Unknown scope {scope!r}; use one of {', '.join(SCOPES)}.")
        token = new_token()
        with self._lock:
            records = self.records()
            taken = {r.id for r in records}
            token_id = secrets.token_hex(4)
            while token_id in taken:
                token_id = secrets.token_hex(4)
            record = TokenRecord(
                token_id, scope, token_hash(token), time.time(), expires_at_s, name
            )
            self._write([*records, record])
        return token, record

    def revoke(self, token_id: str) -> TokenRecord:
        """Delete the token with id ``token_id`` and return its record.

        Raises:
            TokenError: no token has that id.
        """
        with self._lock:
            records = self.records()
            kept = [r for r in records if r.id != token_id]
            if len(kept) == len(records):
                raise TokenError(f"No token has id {token_id!r}; list them with `token list`.")
            self._write(kept)
        return next(r for r in records if r.id == token_id)

    def verify(self, token: str, now_s: float | None = None) -> TokenRecord | None:
        """Return the record of a valid (known, unexpired) ``token``, else None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = token_hash(token)
        record = self._current().get(digest)
        if record is None or record.expired(now_s):
            return None
        # The dict lookup found it by hash; compare again in constant time all the same.
        return record if hmac.compare_digest(record.sha256, digest) else None

    def lookup(self, token_id: str) -> TokenRecord | None:
        """Return the valid record with id ``token_id`` (a session's token), else None."""
        for record in self._current().values():
            if record.id == token_id and not record.expired():
                return record
        return None

    def _current(self) -> dict[str, TokenRecord]:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                records = self.records() if stamp is not None else []
                self._by_hash = {r.sha256: r for r in records}
                self._stamp = stamp
            return self._by_hash

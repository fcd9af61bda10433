"""The device registry: who may connect to the broker, how, and what they may publish.

One JSON file, ``devices.json``, in the security folder beside the CA (mode 0600). An entry
per client: its format (which topics it owns), its kind of authentication (``cert`` or
``password``), its role (``device``, or ``service`` for the ingest), when it was added, when its
certificate expires, whether and when it was revoked, and, for password clients, only the hashes
of the password: argon2id for the embedded broker and PBKDF2-SHA512 in the format
``mosquitto_passwd`` writes (``$7$iterations$salt$hash``) for Mosquitto 2. The password itself
is shown once, by :meth:`Registry.add`, and never stored (the ingest's own password, which the
ingest must present, is the one exception: it sits in ``ingest.secret``, mode 0600).

The broker records when each client was last seen in ``seen.json`` beside it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wattlake.devices.formats import DEFAULT_FORMAT
from wattlake.devices.formats import FORMATS as DEVICE_FORMATS
from wattlake.errors import ConfigError, UsageError
from wattlake.gateway.ca import (
    CertificateAuthority,
    Issued,
    KeyType,
    check_device_id,
    write_private,
)

AuthKind = Literal["cert", "password"]
Role = Literal["device", "service", "fleet"]
FORMATS: Final = tuple(DEVICE_FORMATS)
# The format of wattlake's own clients (ingest, simulator): they own no device topics.
SERVICE_FORMAT: Final = "generic"
INGEST_ID: Final = "wattlake-ingest"
SIMULATOR_ID: Final = "wattlake-simulator"
# mosquitto_passwd (2.0) writes PBKDF2-SHA512 with 101 iterations, a 12-byte salt and a
# 64-byte hash, both base64 with padding: "$7$101$<salt>$<hash>".
MOSQUITTO_ITERATIONS: Final = 101
MOSQUITTO_SALT_BYTES: Final = 12
# How long before a certificate's expiry `device list` warns [days].
EXPIRY_WARNING_DAYS: Final = 30
_ARGON2 = PasswordHasher()


def mosquitto_hash(password: str, *, salt: bytes | None = None, iterations: int = 0) -> str:
    """Return ``password`` hashed as ``mosquitto_passwd`` does (PBKDF2-SHA512, ``$7$``)."""
    salt = salt if salt is not None else secrets.token_bytes(MOSQUITTO_SALT_BYTES)
    iterations = iterations or MOSQUITTO_ITERATIONS
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def mosquitto_verify(password: str, stored: str) -> bool:
    """Return True when ``password`` matches a ``$7$`` hash."""
    try:
        _, seven, iterations, salt, digest = stored.split("$")
        if seven != "7":
            return False
        expected = base64.b64decode(digest)
        salt_bytes = base64.b64decode(salt)
        got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt_bytes, int(iterations), 64)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def argon2_verify(password: str, stored: str) -> bool:
    """Return True when ``password`` matches an argon2 hash (slow on purpose: ~0.1-0.2 s)."""
    try:
        return _ARGON2.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    """Return a new random password (24 URL-safe characters, ~144 bits)."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class Client:
    """One registered broker client."""

    client_id: str
    format: str
    auth: AuthKind
    role: Role = "device"
    added: str = ""
    not_after: str = ""
    revoked: str = ""
    argon2: str = ""
    pbkdf2: str = ""
    plain: bool = False
    serial: str = ""

    @property
    def active(self) -> bool:
        """Return True unless the client was revoked."""
        return not self.revoked

    def to_json(self) -> dict[str, Any]:
        """Return the registry entry."""
        return {k: getattr(self, k) for k in self.__slots__ if k != "client_id"}  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Provisioned:
    """What :meth:`Registry.add` created: show it once, it is not kept in plain text."""

    client: Client
    password: str = ""
    issued: Issued | None = None
    ca_pem: bytes = b""


@dataclass(frozen=True, slots=True)
class Listed:
    """One row of :meth:`Registry.listing`."""

    client: Client
    last_seen_ms: int | None
    warning: str = ""


@dataclass(slots=True)
class _Loaded:
    mtime_ns: int = -1
    clients: dict[str, Client] = field(default_factory=dict)


class Registry:
    """The registered clients in folder ``root`` (the CA's folder)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ca = CertificateAuthority(self.root)
        self._cache = _Loaded()

    @property
    def path(self) -> Path:
        """Return the registry file's path."""
        return self.root / "devices.json"

    @property
    def seen_path(self) -> Path:
        """Return the path of the last-seen times the broker writes."""
        return self.root / "seen.json"

    def clients(self) -> dict[str, Client]:
        """Return every registered client by id (read again only when the file changed).

        Raises:
            ConfigError: the registry file cannot be read.
        """
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if mtime == self._cache.mtime_ns:
            return self._cache.clients
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            clients = {cid: Client(client_id=cid, **entry) for cid, entry in doc["clients"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"The device registry {self.path} cannot be read: {exc}.") from exc
        self._cache = _Loaded(mtime, clients)
        return clients

    def get(self, client_id: str) -> Client | None:
        """Return the client ``client_id``, None if it is not registered."""
        return self.clients().get(client_id)

    def _save(self, clients: dict[str, Client]) -> None:
        doc = {"clients": {cid: c.to_json() for cid, c in sorted(clients.items())}}
        write_private(self.path, json.dumps(doc, indent=1).encode())

    def add(
        self,
        client_id: str,
        *,
        fmt: str = DEFAULT_FORMAT,
        auth: AuthKind = "cert",
        key_type: KeyType = "p256",
        plain: bool = False,
        role: Role = "device",
        password: str = "",
        replace: bool = False,
        now: dt.datetime | None = None,
    ) -> Provisioned:
        """Register a client and create its credential (a certificate, or a password).

        ``plain`` lets a device of a format that cannot do TLS (Gen1) use the opt-in plain
        listener.

        Raises:
            UsageError: the id or format is invalid, the id is taken (``replace`` re-issues),
                certificates are asked for without a CA or for a format that cannot use them,
                or ``plain`` for a format that can do TLS.
        """
        check_device_id(client_id)
        device_format = DEVICE_FORMATS.get(fmt)
        if device_format is None:
            raise UsageError(f"Format {fmt!r} is not one of {', '.join(FORMATS)}.")
        if plain and (not device_format.plain_listener or auth != "password"):
            plain_ones = [f.title for f in DEVICE_FORMATS.values() if f.plain_listener]
            raise UsageError(
                f"Only {' and '.join(plain_ones)} devices (which cannot do TLS) may use the "
                "plain listener, with a password."
            )
        if auth not in device_format.auth:
            other = "certificates; use a password" if auth == "cert" else "passwords"
            raise UsageError(f"{device_format.title} devices cannot use {other}.")
        clients = dict(self.clients())
        old = clients.get(client_id)
        if old is not None and old.active and not replace:
            raise UsageError(
                f"Device {client_id} is registered already; revoke it first or re-issue "
                "its credential."
            )
        now = now or dt.datetime.now(dt.UTC)
        issued = None
        ca_pem = b""
        secret = ""
        hashes: dict[str, str] = {}
        if auth == "cert":
            issued = self.ca.issue_device(client_id, key_type=key_type, now=now)
            ca_pem = self.ca.ca_file.read_bytes()
        else:
            secret = password or new_password()
            hashes = {"argon2": _ARGON2.hash(secret), "pbkdf2": mosquitto_hash(secret)}
            if self.ca.exists():
                ca_pem = self.ca.ca_file.read_bytes()
        client = Client(
            client_id=client_id,
            format=fmt,
            auth=auth,
            role=role,
            added=now.isoformat(timespec="seconds"),
            not_after=issued.not_after.isoformat(timespec="seconds") if issued else "",
            serial=issued.serial if issued else "",
            plain=plain,
            **hashes,
        )
        clients[client_id] = client
        self._save(clients)
        return Provisioned(client, secret, issued, ca_pem)

    def revoke(self, client_id: str, *, now: dt.datetime | None = None) -> Client:
        """Revoke a client: the broker disconnects it and refuses it from now on.

        Its certificate and key are deleted from the folder; the entry stays (revoked), so a
        certificate still on the device is refused even though the CA signed it.

        Raises:
            UsageError: the client is not registered.
        """
        clients = dict(self.clients())
        old = clients.get(client_id)
        if old is None:
            raise UsageError(f"Device {client_id} is not registered; see the device list.")
        now = now or dt.datetime.now(dt.UTC)
        revoked = Client(
            **{**old.to_json(), "client_id": client_id, "argon2": "", "pbkdf2": ""}
            | {"revoked": now.isoformat(timespec="seconds")}
        )
        clients[client_id] = revoked
        self._save(clients)
        self.ca.forget_device(client_id)
        return revoked

    def last_seen(self) -> dict[str, int]:
        """Return when each client last connected [ms since the epoch], as the broker wrote."""
        try:
            doc = json.loads(self.seen_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in doc.items()} if isinstance(doc, dict) else {}

    def record_seen(self, seen: dict[str, int]) -> None:
        """Merge last-seen times [ms] into ``seen.json``."""
        merged = {**self.last_seen(), **seen}
        write_private(self.seen_path, json.dumps(merged).encode())

    def listing(self, *, now: dt.datetime | None = None) -> list[Listed]:
        """Return every client with its last-seen time and a warning when it needs action."""
        now = now or dt.datetime.now(dt.UTC)
        seen = self.last_seen()
        rows = []
        for client in self.clients().values():
            warning = ""
            if client.revoked:
                warning = "revoked"
            elif client.not_after:
                left = dt.datetime.fromisoformat(client.not_after) - now
                if left <= dt.timedelta(0):
                    warning = "certificate expired: re-issue it"
                elif left <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
                    warning = f"certificate expires in {left.days} days: re-issue it"
            rows.append(Listed(client, seen.get(client.client_id), warning))
        return rows

    def service_password(self, client_id: str = INGEST_ID, *, role: Role = "service") -> str:
        """Return the password of one of wattlake's own clients, registering it on first use.

        ``service`` is the ingest (reads every device topic, asks devices for records);
        ``fleet`` is the simulator, which publishes for every simulated device. Their
        passwords are kept in ``<id>.secret`` (mode 0600), since they must present them.
        """
        secret_file = self.root / f"{client_id}.secret"
        client = self.get(client_id)
        if client is not None and client.active and client.role == role and secret_file.is_file():
            return secret_file.read_text(encoding="utf-8").strip()
        provisioned = self.add(
            client_id, fmt=SERVICE_FORMAT, auth="password", role=role, replace=True
        )
        write_private(secret_file, provisioned.password.encode())
        return provisioned.password


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    """The user names and passwords of a demo's ingest and simulator."""

    ingest_username: str
    ingest_password: str
    simulator_username: str
    simulator_password: str


def ensure_demo_credentials(root: Path) -> DemoCredentials:
    """Register a demo's ingest and simulator in the registry in ``root`` and return them.

    A demo keeps its registry in a folder of its own (e.g. inside its data folder), so it never
    touches the real one; the simulator is one ``fleet`` client that may publish for any
    device (it simulates all of them over one connection).
    """
    registry = Registry(root)
    return DemoCredentials(
        INGEST_ID,
        registry.service_password(INGEST_ID, role="service"),
        SIMULATOR_ID,
        registry.service_password(SIMULATOR_ID, role="fleet"),
    )

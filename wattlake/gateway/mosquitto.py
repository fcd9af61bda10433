"""A Mosquitto 2 configuration that enforces the embedded broker's rules (``broker-config``).

Listeners:

- ``tls_port`` (8883): TLS, ``require_certificate true`` and ``use_identity_as_username true``:
  devices with a project certificate; the certificate's CN (the device id) is the user name;
  ``crlfile`` refuses revoked certificates.
- ``password_port`` (8884): TLS with user name and password (the ``$7$`` PBKDF2-SHA512 hashes
  of the registry), for devices without certificates.
- ``plain_port`` (1883) on ``plain_host`` (loopback): user name and password, for the ingest
  and local tools.
- ``gen1_port`` on ``gen1_host`` (off unless given): plain, for Gen1 devices, which cannot do TLS.

On every device listener ``use_username_as_clientid`` makes the identity the client id too, so
no client can take over another's session. The ACL ties topics to the authenticated identity
with ``pattern`` lines, one per prefix a format gives its devices (from the format table,
:mod:`wattlake.devices.formats`: ``%u/#`` Gen2, ``shellies/%u/#`` Gen1, ``wattlake/%u/#``
generic and CSV): a device may publish under its own id only, whatever its format.
Differences from the embedded broker: Mosquitto cannot look into payloads, so
``shellies/announce`` is not granted (Gen1 devices also publish ``shellies/<id>/announce``,
which carries the same document), and refusals are not counted per device (Mosquitto drops them
silently; its log says so at debug level).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from wattlake.devices.formats import FORMATS
from wattlake.gateway.ca import write_private
from wattlake.gateway.registry import Registry


@dataclass(frozen=True, slots=True)
class MosquittoPorts:
    """Where the Mosquitto listeners bind."""

    tls_port: int = 8883
    password_port: int = 8884
    plain_port: int = 1883
    plain_host: str = "127.0.0.1"
    tls_host: str = ""
    gen1_port: int = 0
    gen1_host: str = ""


def acl_text(registry: Registry) -> str:
    """Return the ACL file: wattlake's own clients by name, devices by pattern."""
    lines = [
        "# Written by `wattlake broker-config mosquitto` from the device registry.",
        "# Every device may publish and read only below its own identity (%u).",
        "",
    ]
    for client in registry.clients().values():
        if not client.active:
            continue
        if client.role == "service":
            lines += [f"user {client.client_id}", "topic read #", "topic write +/rpc", ""]
        elif client.role == "fleet":
            lines += [f"user {client.client_id}", "topic write #", "topic read +/rpc", ""]
    patterns = dict.fromkeys(fmt.acl_pattern() for fmt in FORMATS.values())
    reads = dict.fromkeys(topic for fmt in FORMATS.values() for topic in fmt.read_topics)
    lines.append(f"# {', '.join(fmt.title for fmt in FORMATS.values())}")
    for pattern in patterns:
        lines += [f"pattern write {pattern}", f"pattern read {pattern}"]
    lines += [*(f"pattern read {topic}" for topic in reads), ""]
    return "\n".join(lines)


def password_text(registry: Registry) -> str:
    """Return the password file: one ``user:$7$…`` line per active password client."""
    return "".join(
        f"{c.client_id}:{c.pbkdf2}\n"
        for c in registry.clients().values()
        if c.active and c.auth == "password" and c.pbkdf2
    )


def write_config(registry: Registry, out_dir: Path, ports: MosquittoPorts) -> Path:
    """Write ``mosquitto.conf``, ``passwd``, ``acl`` and ``crl.pem`` into ``out_dir``.

    Returns the path of ``mosquitto.conf``.

    Raises:
        wattlake.errors.UsageError: there is no project CA.
    """
    out_dir = Path(out_dir)
    ca = registry.ca
    revoked = [
        c.serial
        for c in registry.clients().values()
        if not c.active and c.auth == "cert" and c.serial
    ]
    write_private(out_dir / "crl.pem", ca.revocation_list(revoked))
    write_private(out_dir / "passwd", password_text(registry).encode())
    write_private(out_dir / "acl", acl_text(registry).encode())
    tls_files = [
        f"cafile {ca.ca_file}",
        f"certfile {ca.broker_cert_file}",
        f"keyfile {ca.broker_key_file}",
    ]

    def listener(port: int, host: str) -> str:
        return f"listener {port} {host}".rstrip()

    lines = [
        "# Written by `wattlake broker-config mosquitto`; write it again after `device add`",
        "# or `device revoke`, then reload Mosquitto (SIGHUP re-reads passwords and ACL).",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {out_dir / 'passwd'}",
        f"acl_file {out_dir / 'acl'}",
        "persistence false",
        "max_queued_messages 100000",
        "",
        "# Devices with a project certificate: the certificate's CN is the identity.",
        listener(ports.tls_port, ports.tls_host),
        *tls_files,
        f"crlfile {out_dir / 'crl.pem'}",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "",
        "# Devices with a password, over TLS.",
        listener(ports.password_port, ports.tls_host),
        *tls_files,
        "require_certificate false",
        "use_username_as_clientid true",
        "",
        "# The ingest and local tools, on this machine only.",
        listener(ports.plain_port, ports.plain_host),
        "",
    ]
    if ports.gen1_port and ports.gen1_host:
        lines += [
            "# Gen1 devices (no TLS): passwords and readings cross the network unencrypted.",
            listener(ports.gen1_port, ports.gen1_host),
            "use_username_as_clientid true",
            "",
        ]
    conf = out_dir / "mosquitto.conf"
    write_private(conf, "\n".join(lines).encode())
    return conf

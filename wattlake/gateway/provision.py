"""What to do on a device to connect it: exact Shelly RPC calls (Gen2+) or settings (Gen1).

Written from Shelly's API documentation (Gen2+: ``Shelly.PutUserCA``, ``Shelly.PutTLSClientCert``,
``Shelly.PutTLSClientKey`` take ``{"data": <PEM text or null>, "append": <bool>}``, PEM text sent
in chunks; ``MQTT.SetConfig`` takes ``{"config": {...}}`` with ``server`` ``host:port``,
``client_id``, ``user``, ``pass``, ``ssl_ca`` (``"user_ca.pem"``: verify with the uploaded CA),
``use_client_cert``, ``topic_prefix``, ``rpc_ntf``, ``status_ntf``; then ``Shelly.Reboot``.
Gen1: the ``/settings`` endpoint with ``mqtt_*`` parameters, the same values as the web page's
"Advanced - Developer Settings"). The simulator (:mod:`wattlake.devices.sim_rpc`) answers these
calls and a test runs the printed commands against it.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from wattlake.errors import UsageError
from wattlake.gateway.registry import Provisioned

# Shelly devices take PEM uploads in pieces; this many characters per call.
PEM_CHUNK_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class RpcCall:
    """One JSON-RPC call to a device's ``/rpc`` HTTP endpoint."""

    method: str
    params: dict[str, Any]

    def body(self, call_id: int) -> str:
        """Return the request body."""
        doc = {"id": call_id, "method": self.method, "params": self.params}
        return json.dumps(doc, separators=(",", ":"))


def pem_calls(method: str, pem: bytes) -> list[RpcCall]:
    """Return the calls that upload ``pem`` with ``method``, in chunks (first replaces)."""
    text = pem.decode()
    chunks = [text[i : i + PEM_CHUNK_CHARS] for i in range(0, len(text), PEM_CHUNK_CHARS)]
    return [
        RpcCall(method, {"data": chunk, "append": index > 0}) for index, chunk in enumerate(chunks)
    ]


def gen2_calls(provisioned: Provisioned, *, broker: str) -> list[RpcCall]:
    """Return the RPC calls that connect a Gen2+ meter to ``broker`` (``host:port``)."""
    client = provisioned.client
    calls: list[RpcCall] = []
    if provisioned.ca_pem:
        calls += pem_calls("Shelly.PutUserCA", provisioned.ca_pem)
    config: dict[str, Any] = {
        "enable": True,
        "server": broker,
        "client_id": client.client_id,
        "topic_prefix": client.client_id,
        "ssl_ca": "user_ca.pem",
        "rpc_ntf": True,
        "status_ntf": False,
    }
    if provisioned.issued is not None:
        calls += pem_calls("Shelly.PutTLSClientCert", provisioned.issued.cert_pem)
        calls += pem_calls("Shelly.PutTLSClientKey", provisioned.issued.key_pem)
        config.update(use_client_cert=True, user=None, **{"pass": None})
    else:
        config.update(
            use_client_cert=False, user=client.client_id, **{"pass": provisioned.password}
        )
    calls.append(RpcCall("MQTT.SetConfig", {"config": config}))
    calls.append(RpcCall("Shelly.Reboot", {}))
    return calls


def gen2_commands(provisioned: Provisioned, *, broker: str, device_address: str) -> list[str]:
    """Return the calls as ``curl`` commands for the device at ``device_address``."""
    url = f"http://{device_address}/rpc"
    return [
        f"curl -sS -X POST {shlex.quote(url)} -d {shlex.quote(call.body(n))}"
        for n, call in enumerate(gen2_calls(provisioned, broker=broker), start=1)
    ]


def gen1_settings(provisioned: Provisioned, *, broker: str) -> dict[str, str]:
    """Return the Gen1 MQTT settings (``/settings`` parameters)."""
    client = provisioned.client
    return {
        "mqtt_enable": "true",
        "mqtt_server": broker,
        "mqtt_id": client.client_id,
        "mqtt_user": client.client_id,
        "mqtt_pass": provisioned.password,
        "mqtt_clean_session": "false",
    }


def gen1_url(provisioned: Provisioned, *, broker: str, device_address: str) -> str:
    """Return the Gen1 settings URL that sets the MQTT connection."""
    query = urlencode(gen1_settings(provisioned, broker=broker))
    return f"http://{device_address}/settings?{query}"


def instructions(
    provisioned: Provisioned,
    *,
    broker_host: str,
    tls_port: int,
    plain_port: int,
    device_address: str,
) -> str:
    """Return, as text for a terminal, exactly what to do on the device."""
    client = provisioned.client
    lines: list[str] = []
    if client.format == "shelly-gen1":
        broker = f"{broker_host}:{plain_port}"
        url = gen1_url(provisioned, broker=broker, device_address=device_address)
        lines += [
            f"Shelly Gen1 {client.client_id}: Gen1 devices cannot use TLS. In the device's web",
            "page, Internet & Security -> Advanced - Developer Settings, enable MQTT and set:",
        ]
        lines += [f"  {k} = {v}" for k, v in gen1_settings(provisioned, broker=broker).items()]
        lines += ["or call the settings URL once:", f"  curl -sS {shlex.quote(url)}"]
        lines.append("The broker must run its plain listener for Gen1 devices (see onboarding).")
    elif client.format == "shelly-gen2":
        broker = f"{broker_host}:{tls_port}"
        lines.append(
            f"Shelly Gen2+ {client.client_id}: run these on a computer that reaches the device "
            f"at {device_address} (the device reboots at the end):"
        )
        lines += gen2_commands(provisioned, broker=broker, device_address=device_address)
    else:
        lines += [
            f"Generic client {client.client_id}: publish to wattlake/{client.client_id}/readings",
            f"  on mqtts://{broker_host}:{tls_port} with client id {client.client_id},",
        ]
        if provisioned.issued is not None:
            lines.append("  the certificate and key written to the security folder.")
        else:
            lines.append(f"  user {client.client_id} and password {provisioned.password}")
    if provisioned.password:
        lines.append("The password is shown only now; wattlake keeps only its hashes.")
    return "\n".join(lines)


def parse_channel_roles(text: str) -> dict[int, str]:
    """Parse ``0=grid,1=solar`` into channel -> role.

    Raises:
        UsageError: an entry is not ``channel=role`` or names an unknown role.
    """
    from wattlake.energy.sites import ROLES

    roles: dict[int, str] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        channel, sep, role = (part.strip() for part in entry.partition("="))
        if not sep or not channel.isdigit() or role not in ROLES:
            raise UsageError(
                f"Channel role {entry!r} is not CHANNEL=ROLE with a role among {', '.join(ROLES)}."
            )
        roles[int(channel)] = role
    return roles


def add_site_channels(config_file: Path, site: str, device_id: str, roles: dict[int, str]) -> None:
    """Append ``[[sites.<site>.channels]]`` tables for ``device_id`` to ``config_file``.

    The file is checked to still be valid TOML; if it is not, it is left as it was.

    Raises:
        UsageError: the site name cannot be a TOML bare key, or the result is not valid TOML.
    """
    if not site.replace("-", "").replace("_", "").isalnum():
        raise UsageError(f"Site name {site!r} must be letters, digits, '-' or '_'.")
    old = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    blocks = [
        f'\n[[sites.{site}.channels]]\ndevice = "{device_id}"\nchannel = {channel}\n'
        f'role = "{role}"\n'
        for channel, role in sorted(roles.items())
    ]
    new = old + ("" if old.endswith("\n") or not old else "\n") + "".join(blocks)
    try:
        tomllib.loads(new)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(
            f"Adding the channels of site {site} to {config_file} would make it invalid ({exc}); "
            "add them by hand."
        ) from exc
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(new, encoding="utf-8")

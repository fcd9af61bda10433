"""What to do on a device to connect it, as its format says (:mod:`wattlake.devices.formats`).

Each format's descriptor writes the instructions: exact Shelly RPC calls for Gen2+
(:mod:`wattlake.devices.shelly_gen2`), the ``/settings`` URL for Gen1
(:mod:`wattlake.devices.shelly_gen1`), where to publish for the generic and CSV formats. The
simulator (:mod:`wattlake.devices.sim.rpc`) answers the Shelly calls and a test runs the
printed commands against it.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from wattlake.devices.descriptor import Enrolment
from wattlake.devices.formats import FORMATS
from wattlake.errors import UsageError
from wattlake.gateway.registry import Provisioned


def enrolment(
    provisioned: Provisioned,
    *,
    broker_host: str = "",
    tls_port: int = 0,
    plain_port: int = 0,
    device_address: str = "",
) -> Enrolment:
    """Return what a format needs of ``provisioned`` to say how to connect the device."""
    issued = provisioned.issued
    return Enrolment(
        device_id=provisioned.client.client_id,
        password=provisioned.password,
        cert_pem=issued.cert_pem if issued is not None else b"",
        key_pem=issued.key_pem if issued is not None else b"",
        ca_pem=provisioned.ca_pem,
        broker_host=broker_host,
        tls_port=tls_port,
        plain_port=plain_port,
        device_address=device_address,
    )


def instructions(
    provisioned: Provisioned,
    *,
    broker_host: str,
    tls_port: int,
    plain_port: int,
    device_address: str,
) -> str:
    """Return, as text for a terminal, exactly what to do on the device.

    Raises:
        UsageError: the client's format is not one wattlake knows.
    """
    device_format = FORMATS.get(provisioned.client.format)
    if device_format is None:
        raise UsageError(
            f"Format {provisioned.client.format!r} is not one of {', '.join(FORMATS)}."
        )
    lines = device_format.instructions(
        enrolment(
            provisioned,
            broker_host=broker_host,
            tls_port=tls_port,
            plain_port=plain_port,
            device_address=device_address,
        )
    )
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

"""``wattlake ca init|renew`` and ``wattlake device add|list|revoke|renew``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    FormatOption,
    OutputFormat,
    emit_rows,
    load_settings,
    say,
)

if TYPE_CHECKING:
    from wattlake.config import Settings
    from wattlake.gateway.registry import Registry


def register(app: typer.Typer) -> None:
    """Add the ``ca`` and ``device`` groups to ``app``."""
    ca = typer.Typer(help="The project certificate authority.", no_args_is_help=True)
    ca.command("init")(ca_init)
    ca.command("renew")(ca_renew)
    app.add_typer(ca, name="ca")
    device = typer.Typer(help="Devices allowed to connect to the broker.", no_args_is_help=True)
    device.command("add")(device_add)
    device.command("list")(device_list)
    device.command("revoke")(device_revoke)
    app.add_typer(device, name="device")


def _registry(data_dir: str | None, config: Path | None) -> tuple[Settings, Registry]:
    from wattlake.gateway.ca import security_dir
    from wattlake.gateway.registry import Registry

    settings = load_settings(data_dir, config)
    return settings, Registry(security_dir(settings["security.dir"]))


def ca_init(
    host: Annotated[
        list[str] | None, typer.Option(help="Host name devices use for the broker (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option(help="Address devices use for the broker (repeatable).")
    ] = None,
    domain: Annotated[str, typer.Option(help="Trust domain of device identities.")] = (
        "wattlake.local"
    ),
    force: Annotated[
        bool, typer.Option(help="Replace an existing CA (every device must be provisioned again).")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Create the project CA and the broker's certificate for these names and addresses."""
    _, registry = _registry(data_dir, config)
    registry.ca.init(hosts=host or [], ips=ip or [], domain=domain, force=force)
    say(f"Created the project CA in {registry.root}; back this folder up (see docs/onboarding.md).")


def ca_renew(
    host: Annotated[
        list[str] | None, typer.Option(help="New host names (default: the last).")
    ] = None,
    ip: Annotated[list[str] | None, typer.Option(help="New addresses (default: the last).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Issue the broker's certificate again (e.g. after the home network's address changed)."""
    _, registry = _registry(data_dir, config)
    issued = registry.ca.renew_broker(hosts=host, ips=ip)
    say(
        f"Issued the broker certificate again, valid until {issued.not_after:%Y-%m-%d}; restart up."
    )


def device_add(
    device_id: Annotated[str, typer.Argument(help="Device id: also its MQTT client id.")],
    auth: Annotated[str, typer.Option(help="cert or password.")] = "cert",
    payload: Annotated[
        str, typer.Option("--payload", help="Device format (see docs/device-formats.md).")
    ] = "shelly-gen2",
    key_type: Annotated[str, typer.Option(help="p256 or rsa2048 (certificates).")] = "p256",
    plain: Annotated[
        bool, typer.Option(help="Gen1 only: allow the unencrypted Gen1 listener.")
    ] = False,
    address: Annotated[
        str, typer.Option(help="The device's local address, for the printed commands.")
    ] = "DEVICE_IP",
    broker_host: Annotated[
        str, typer.Option(help="Name or address devices reach the broker at.")
    ] = "",
    reissue: Annotated[
        bool, typer.Option(help="Issue a new credential for a registered device.")
    ] = False,
    site: Annotated[
        str | None, typer.Option(help="Site whose channels this meter measures.")
    ] = None,
    channel_roles: Annotated[
        str | None, typer.Option(help="With --site: CHANNEL=ROLE,... e.g. 0=grid,1=solar.")
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Register a device, create its credential and print what to do on the device."""
    from wattlake.errors import UsageError
    from wattlake.gateway.provision import add_site_channels, instructions, parse_channel_roles

    if auth not in ("cert", "password") or key_type not in ("p256", "rsa2048"):
        raise UsageError("--auth must be cert or password, --key-type p256 or rsa2048.")
    if (site is None) != (channel_roles is None):
        raise UsageError("--site and --channel-roles go together.")
    roles = parse_channel_roles(channel_roles) if channel_roles else {}
    settings, registry = _registry(data_dir, config)
    provisioned = registry.add(
        device_id,
        fmt=payload,
        auth=auth,  # type: ignore[arg-type]
        key_type=key_type,  # type: ignore[arg-type]
        plain=plain,
        replace=reissue,
    )
    if site is not None:
        config_file = config or Path(settings.data_dir) / "wattlake.toml"
        add_site_channels(Path(config_file), site, device_id, roles)
        say(f"Wrote the roles of {device_id}'s channels into site {site} of {config_file}.")
    hosts = registry.ca.broker_names() or ["BROKER_HOST"]
    typer.echo(
        instructions(
            provisioned,
            broker_host=broker_host or hosts[0],
            tls_port=settings["broker.tls_port"],
            plain_port=settings["broker.gen1_port"],
            device_address=address,
        )
    )


def device_list(
    fmt: FormatOption = OutputFormat.table,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """List registered devices: auth kind, last seen, certificate expiry and warnings."""
    _, registry = _registry(data_dir, config)
    rows = []
    for row in registry.listing():
        c = row.client
        seen = (
            dt.datetime.fromtimestamp(row.last_seen_ms / 1000, dt.UTC).isoformat(timespec="seconds")
            if row.last_seen_ms
            else ""
        )
        rows.append(
            {
                "device_id": c.client_id,
                "format": c.format,
                "auth": c.auth,
                "role": c.role,
                "last_seen": seen,
                "expires": c.not_after,
                "warning": row.warning,
            }
        )
    emit_rows(rows, fmt)


def device_revoke(
    device_id: Annotated[str, typer.Argument(help="Device to revoke.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a device: a running embedded broker disconnects it within a second."""
    _, registry = _registry(data_dir, config)
    registry.revoke(device_id)
    say(
        f"Revoked {device_id}. With Mosquitto, write its configuration again "
        "(wattlake broker-config mosquitto) and reload it."
    )

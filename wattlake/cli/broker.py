"""``wattlake broker-config mosquitto``: an external broker configured from the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattlake.cli.output import ConfigOption, DataDirOption, load_settings, say


def register(app: typer.Typer) -> None:
    """Add the ``broker-config`` group to ``app``."""
    group = typer.Typer(help="Configure an external MQTT broker.", no_args_is_help=True)
    group.command("mosquitto")(mosquitto)
    app.add_typer(group, name="broker-config")


def mosquitto(
    out: Annotated[Path, typer.Option(help="Folder for mosquitto.conf, passwd, acl, crl.pem.")],
    tls_port: Annotated[int, typer.Option(help="Listener for certificate devices.")] = 8883,
    password_port: Annotated[int, typer.Option(help="TLS listener for password devices.")] = 8884,
    plain_port: Annotated[int, typer.Option(help="Loopback listener for the ingest.")] = 1883,
    gen1_host: Annotated[str, typer.Option(help="Plain listener for Gen1 devices (off).")] = "",
    gen1_port: Annotated[int, typer.Option(help="Port of the Gen1 listener.")] = 1884,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Write a Mosquitto 2 configuration that enforces wattlake's device rules."""
    from wattlake.gateway.ca import security_dir
    from wattlake.gateway.mosquitto import MosquittoPorts, write_config
    from wattlake.gateway.registry import Registry

    settings = load_settings(data_dir, config)
    registry = Registry(security_dir(settings["security.dir"]))
    ports = MosquittoPorts(
        tls_port=tls_port,
        password_port=password_port,
        plain_port=plain_port,
        gen1_host=gen1_host,
        gen1_port=gen1_port if gen1_host else 0,
    )
    conf = write_config(registry, out, ports)
    say(
        f"Wrote {conf}; give the files to the mosquitto user (chown) and run "
        f"mosquitto -c {conf}, or send it SIGHUP after a device change."
    )

"""Commands of the delivery stream: ``wattlake ingest``."""

from __future__ import annotations

import threading
from typing import Annotated

import typer

from wattlake.cli.output import ConfigOption, DataDirOption, load_settings, say, stop_on_signals


def register(app: typer.Typer) -> None:
    """Add the stream's commands to ``app``."""
    app.command()(ingest)


def ingest(
    broker: Annotated[str, typer.Option(help="Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT.")],
    shared_group: Annotated[
        str,
        typer.Option(help="MQTT 5 shared subscription group: workers in one group split the load."),
    ] = "",
    client_id: Annotated[
        str | None,
        typer.Option(
            help="Client id of the persistent session (default: wattlake-<stream>-<host>); "
            "give each worker its own."
        ),
    ] = None,
    mqtt_version: Annotated[
        str, typer.Option(help="MQTT protocol: 5 (default) or 3.1.1 (e.g. for amqtt).")
    ] = "5",
    tls_ca: Annotated[
        str | None, typer.Option(help="CA file to verify an mqtts:// broker (ingest.tls_ca_file).")
    ] = None,
    tls_cert: Annotated[
        str | None, typer.Option(help="Client certificate for mqtts:// (ingest.tls_cert_file).")
    ] = None,
    tls_key: Annotated[
        str | None, typer.Option(help="Key of the client certificate (ingest.tls_key_file).")
    ] = None,
    username: Annotated[
        str | None,
        typer.Option(help="Broker user name; the password comes from WATTLAKE_INGEST__PASSWORD."),
    ] = None,
    http_listen: Annotated[
        str | None,
        typer.Option(
            help="Also take HTTP publishes (POST /topics/<topic>) on HOST:PORT (port 0: any "
            "free port); the bearer token comes from WATTLAKE_INGEST__HTTP_TOKEN."
        ),
    ] = None,
    http_tls_cert: Annotated[
        str | None,
        typer.Option(help="Serve HTTPS with this certificate (ingest.http_tls_cert_file)."),
    ] = None,
    http_tls_key: Annotated[
        str | None,
        typer.Option(help="Key of the HTTPS certificate (ingest.http_tls_key_file)."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Run one ingest worker on an external broker until Ctrl-C or SIGTERM.

    Every message is in the write-ahead log before the broker hears it was received; on start
    the WAL is replayed. Several workers with the same --shared-group split the messages. With
    --http-listen, devices may also publish over HTTP; a request is answered 200 only once its
    message is in the WAL.
    """
    from wattlake.errors import UsageError
    from wattlake.stream.ingest import IngestWorker

    if mqtt_version not in ("5", "3.1.1"):
        raise UsageError(f"--mqtt-version must be 5 or 3.1.1, not {mqtt_version!r}.")
    settings = load_settings(
        data_dir,
        config,
        **{
            "ingest.tls_ca_file": tls_ca,
            "ingest.tls_cert_file": tls_cert,
            "ingest.tls_key_file": tls_key,
            "ingest.username": username,
            "ingest.http_listen": http_listen,
            "ingest.http_tls_cert_file": http_tls_cert,
            "ingest.http_tls_key_file": http_tls_key,
        },
    )
    if not settings["ingest.http_listen"] and (
        settings["ingest.http_tls_cert_file"] or settings["ingest.http_tls_key_file"]
    ):
        raise UsageError("--http-tls-cert and --http-tls-key need --http-listen.")
    stop = threading.Event()
    stop_on_signals(stop)
    worker = IngestWorker(
        settings,
        broker,
        client_id=client_id,
        mqtt5=mqtt_version == "5",
        shared_group=shared_group,
    )

    def announce() -> None:
        if worker.ready.wait():
            group = f" in shared group {shared_group!r}" if shared_group else ""
            http = f"; HTTP publish on {worker.http.url}/topics/" if worker.http else ""
            say(
                f"wattlake ingest: subscribed to {broker}{group} as {worker.source.client_id}"
                f"{http}; lake {worker.lake.url}, WAL {worker.wal.directory}"
            )

    threading.Thread(target=announce, daemon=True).start()
    worker.run(stop)
    say(f"stopped: {worker.describe()}")

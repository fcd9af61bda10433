"""``wattlake serve``: the dashboard, the API and ``/metrics`` over an existing lake."""

from __future__ import annotations

import enum
import json
import logging
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from wattlake.cli.output import (
    ConfigOption,
    DataDirOption,
    configure_logging,
    existing_lake,
    load_settings,
    say,
    stop_on_signals,
)


class LogFormat(enum.StrEnum):
    """How log lines are written."""

    text = "text"
    json = "json"


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, logger, message (and the exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as one JSON line."""
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


JsonLines.converter = time.gmtime


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve)


def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address [setting web.host].")] = None,
    port: Annotated[
        int | None, typer.Option("--port", help="Port, 0 for any [setting web.port].")
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="mqtt:// or mqtts:// URL for live power (default: none)."),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Certificate (chain): serve HTTPS.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="Private key of --tls-cert.")
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Log lines as text or JSON lines.")
    ] = LogFormat.text,
    login_code: Annotated[
        bool,
        typer.Option("--login-link/--no-login-link", help="Print a one-time sign-in link."),
    ] = True,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Serve the dashboard, the API (OpenAPI at /api/docs) and /metrics until stopped."""
    from wattlake.errors import UsageError
    from wattlake.stack import choose_port
    from wattlake.web.app import WebServer

    configure_logging()
    if log_format is LogFormat.json:
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonLines())
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together: give both or neither.")
    # Through the settings, so that --host and --port get web.host's and web.port's checks.
    settings = load_settings(data_dir, config, **{"web.host": host, "web.port": port})
    existing_lake(settings)
    port_choice = choose_port(
        settings["web.host"],
        settings["web.port"],
        what="the dashboard",
        setting="web.port",
        origin=settings.origins["web.port"],
    )
    server = WebServer(
        settings,
        broker_url=broker,
        host=settings["web.host"],
        port=port_choice.port,
        tls_cert_file=str(tls_cert or ""),
        tls_key_file=str(tls_key or ""),
    )
    server.start()
    moved = port_choice.note("the dashboard", "web.port", server.port)
    if moved:
        say(moved)
    say(f"Serving {server.url} (API docs at {server.url}/api/docs); stop with Ctrl-C.")
    if login_code:
        # On the terminal only, never in a log line; good once, for web.login_code_ttl_s.
        say(f"Sign in once within {settings['web.login_code_ttl_s']} s: {server.login_url()}")
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()

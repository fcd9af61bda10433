"""One settings registry: name, default, unit, help.

Precedence, lowest first: defaults < ``wattlake.toml`` < environment ``WATTLAKE_SECTION__KEY``
< command-line flags. A setting named ``section.key`` is read from ``[section] key = …`` in the
TOML file and from ``WATTLAKE_SECTION__KEY`` in the environment; a top-level setting such as
``data_dir`` from ``data_dir = …`` and ``WATTLAKE_DATA_DIR``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattlake.errors import ConfigError

CONFIG_FILE_NAME = "wattlake.toml"
TABLES: tuple[str, ...] = ("sites",)
"""Top-level tables of wattlake.toml that are not settings; kept whole in ``Settings.tables``."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One documented setting."""

    name: str
    default: Any
    unit: str
    help: str
    kind: type

    @property
    def env_var(self) -> str:
        """Return the environment variable that sets this setting."""
        return "WATTLAKE_" + self.name.upper().replace(".", "__")

    def coerce(self, value: Any, origin: str) -> Any:
        """Convert ``value`` to this setting's type.

        Raises:
            ConfigError: the value cannot be converted; the message names ``origin``.
        """
        if value is None:
            return None
        try:
            if self.kind is bool:
                if isinstance(value, bool):
                    return value
                text = str(value).strip().lower()
                if text in {"1", "true", "yes", "on"}:
                    return True
                if text in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(text)
            if self.kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if self.kind in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            converted = self.kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{origin} sets {self.name} to {value!r}, which is not a valid "
                f"{self.kind.__name__}; fix it or unset it."
            ) from exc
        if self.unit == "port" and not 0 <= converted <= 65535:
            raise ConfigError(
                f"{origin} sets {self.name} to {value!r}, which is not a port (0 to 65535; "
                "0 picks a free one); choose another."
            )
        return converted


REGISTRY: dict[str, Setting] = {}


def register(name: str, default: Any, unit: str, help: str, kind: type | None = None) -> Setting:
    """Add a setting to the registry and return it."""
    if name in REGISTRY:
        raise ValueError(f"setting {name} is registered twice")
    setting = Setting(name, default, unit, help, kind or type(default))
    REGISTRY[name] = setting
    return setting


# -- the settings -----------------------------------------------------------------------------
register("data_dir", "./wattlake-data", "path", "Lake root: a local folder or s3://bucket/prefix.")
register("lake.s3_endpoint_url", "", "URL", "S3 endpoint for s3:// lakes (empty: AWS default).")
register("lake.s3_region", "us-east-1", "", "Region for s3:// lakes.")
register(
    "catalog.type",
    "sql",
    "",
    "Iceberg catalog of the lake's tables: sql (SQLite or PostgreSQL), rest or glue.",
)
register(
    "catalog.uri",
    "",
    "URL",
    "sql: SQLAlchemy URL (empty: SQLite beside a local lake, for S3 in catalog/<lake-id> of the "
    "state folder $XDG_STATE_HOME/wattlake, default ~/.local/state/wattlake); "
    "rest: the catalog's endpoint.",
)
register(
    "catalog.warehouse",
    "",
    "URL",
    "rest/glue: warehouse (e.g. s3://table-bucket or an S3 Tables ARN); sql: unused.",
)
register("catalog.namespace", "wattlake", "", "Namespace (database) holding the lake's tables.")
register(
    "catalog.rest_signing_name",
    "",
    "",
    "rest: sign requests with AWS SigV4 under this service name (s3tables, glue); empty: off.",
)
register(
    "lake.snapshot_history_s",
    7 * 24 * 3600.0,
    "s",
    "Snapshots younger than this are kept by `jobs run maintain` for time travel (--as-of).",
)
register("broker.host", "127.0.0.1", "", "Address the embedded broker listens on.")
register("broker.port", 1883, "port", "Port of the embedded broker (0: pick a free port).")
register(
    "broker.tls_host",
    "0.0.0.0",
    "",
    "Address the embedded broker's TLS listener binds (devices connect here).",
)
register("broker.tls_port", 8883, "port", "Port of the embedded broker's TLS listener.")
register(
    "broker.gen1_host",
    "",
    "",
    "Open a plain listener here for Gen1 devices registered for it (empty: off; unencrypted).",
)
register("broker.gen1_port", 1884, "port", "Port of the plain listener for Gen1 devices.")
register(
    "security.dir",
    "",
    "path",
    "Folder of the project CA and device registry (empty: security in the state folder).",
)
register("ingest.topics", "#", "", "Comma-separated MQTT topic filters the ingest subscribes to.")
register("ingest.qos", 1, "", "MQTT QoS of the ingest subscription (0 or 1).")
register(
    "ingest.max_payload_bytes",
    262144,
    "bytes",
    "Payloads above this go to dead letters (HTTP publishes get 413).",
)
register(
    "ingest.session_expiry_s",
    7 * 24 * 3600,
    "s",
    "How long the broker keeps an absent worker's persistent session and messages.",
)
register(
    "ingest.max_inflight",
    1000,
    "messages",
    "Unacknowledged messages the broker may send at once (MQTT 5 receive maximum).",
)
register("ingest.username", "", "", "User name the ingest presents to the broker.")
register(
    "ingest.password",
    "",
    "secret",
    "Password the ingest presents to the broker (use the environment, never logged).",
)
register(
    "ingest.tls_ca_file",
    "",
    "path",
    "CA certificate(s) to verify an mqtts:// broker (empty: the system's).",
)
register(
    "ingest.tls_cert_file",
    "",
    "path",
    "Client certificate for an mqtts:// broker that asks for one.",
)
register("ingest.tls_key_file", "", "path", "Private key of ingest.tls_cert_file.")
register(
    "ingest.tls_insecure", False, "", "Skip verifying the broker's certificate (testing only)."
)
register(
    "ingest.http_listen",
    "",
    "HOST:PORT",
    "Also take HTTP publishes (POST /topics/TOPIC) on this address (empty: off; port 0: any).",
)
register(
    "ingest.http_token",
    "",
    "secret",
    "Bearer token HTTP publishers must send (use the environment, never logged).",
)
register(
    "ingest.http_tls_cert_file",
    "",
    "path",
    "Certificate (chain) of the HTTP listener: serve HTTPS (empty: plain HTTP).",
)
register("ingest.http_tls_key_file", "", "path", "Private key of ingest.http_tls_cert_file.")
register("stream.name", "ingest", "", "Stream name written into every lake object name.")
register("stream.flush_interval_s", 60.0, "s", "Flush the buffer at least this often.")
register("stream.buffer_max_bytes", 5 * 1024 * 1024, "bytes", "Flush when the buffer is this big.")
register("stream.buffer_max_rows", 500_000, "rows", "Flush when the buffer holds this many rows.")
register(
    "stream.first_flush_s",
    0.0,
    "s",
    "First flush after a start this soon, then twice as long each time up to flush_interval_s "
    "(0: off; the demo uses 1).",
)
register("stream.compression", "zstd", "", "Parquet compression codec of lake files.")
register(
    "stream.wal_dir",
    "",
    "path",
    "WAL folder (empty: wal/<stream> in a local lake, else wal/<lake-id>/<stream> in the state "
    "folder; a WAL belongs to one lake).",
)
register(
    "stream.wal_segment_bytes",
    4 * 1024 * 1024,
    "bytes",
    "Close the WAL segment and hand it to the lake writer past this size.",
)
register(
    "stream.wal_max_bytes",
    1024 * 1024 * 1024,
    "bytes",
    "While the lake is unwritable, stop acknowledging messages once the WAL holds this much.",
)
register(
    "stream.metrics_file",
    "",
    "path",
    "Prometheus text file of ingest health (empty: metrics.prom in the WAL folder).",
)
register(
    "stream.retry_max_s",
    60.0,
    "s",
    "Longest wait between retries of a failed lake write (backoff doubles up to it).",
)
register("energy.tz", "UTC", "IANA zone", "Time zone of local days, hours and tariff zones.")
register("energy.max_gap_s", 300.0, "s", "Longer intervals between samples count as gaps.")
register("energy.max_power_w", 60000.0, "W", "Counter jumps implying more power are spikes.")
register("energy.country", "", "ISO 3166", "Country of public holidays for forecasts (e.g. PL).")
register("demo.devices", 3, "devices", "Simulated devices started by `wattlake demo`.")
register("demo.interval_s", 1.0, "s", "Seconds between a simulated device's publishes.")
register(
    "demo.history_days",
    0.0,
    "days",
    "Days of simulated history `wattlake demo` publishes (one round a minute) before going live.",
)
register("devices.formats", "", "", "Per-device format overrides: device_id=format,...")
register("web.host", "127.0.0.1", "", "Address the dashboard and API listen on.")
register("web.port", 8080, "port", "Port of the dashboard and API (0: pick a free port).")
register(
    "web.tokens_file",
    "",
    "path",
    "API token hashes (empty: tokens.json beside a local lake, else tokens/<lake-id>/tokens.json "
    "in the state folder).",
)
register("web.session_max_age_s", 12 * 3600, "s", "How long a dashboard sign-in lasts.")
register("web.login_code_ttl_s", 300, "s", "How long a one-time login code can be exchanged.")
register("web.sql_time_limit_ms", 5000, "ms", "Longest run of one query of the SQL endpoint.")
register("web.sql_max_rows", 10000, "rows", "Most rows the SQL endpoint returns for one query.")
register("web.stale_after_s", 120.0, "s", "A device silent this long is shown as stale.")
register("cost.tariff", "", "", "Tariff of devices without a site (built-in name or .toml file).")
register(
    "cost.min_coverage",
    0.95,
    "share",
    "Warn when less of a cost period than this (0-1) is backed by readings.",
)
register("alerts.silent_after_s", 900.0, "s", "Alert when a device has been silent this long.")
register("alerts.coverage_min", 0.9, "0-1", "Alert when a device's coverage today is below this.")
register(
    "alerts.dead_letters_per_hour", 60.0, "1/h", "Alert when dead letters arrive faster than this."
)
register("alerts.ingest_lag_s", 300.0, "s", "Alert when the oldest unflushed data is this old.")


class Settings(Mapping[str, Any]):
    """Resolved values of every registered setting."""

    def __init__(
        self,
        values: dict[str, Any],
        origins: dict[str, str],
        tables: dict[str, Any] | None = None,
    ) -> None:
        self.tables: dict[str, Any] = dict(tables or {})
        self._values = values
        self.origins = origins

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Any:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def data_dir(self) -> str:
        """Return the lake root as given (a path or an s3:// URL)."""
        return str(self._values["data_dir"])

    @classmethod
    def load(
        cls,
        *,
        config_file: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Resolve every setting from defaults, the TOML file, the environment and overrides.

        ``overrides`` holds command-line flags (``None`` values are ignored). The TOML file is
        ``config_file`` if given, else ``wattlake.toml`` in the data dir, if present.

        Raises:
            ConfigError: the file is unreadable or a value has the wrong type or is unknown.
        """
        env = os.environ if environ is None else environ
        flags = {k: v for k, v in (overrides or {}).items() if v is not None}
        values: dict[str, Any] = {n: s.default for n, s in REGISTRY.items()}
        origins: dict[str, str] = dict.fromkeys(REGISTRY, "default")

        def data_dir_now() -> str:
            if "data_dir" in flags:
                return str(flags["data_dir"])
            return env.get(REGISTRY["data_dir"].env_var, str(values["data_dir"]))

        tables: dict[str, Any] = {}
        path = Path(config_file) if config_file else None
        if path is None and "://" not in data_dir_now():
            candidate = Path(data_dir_now()) / CONFIG_FILE_NAME
            path = candidate if candidate.is_file() else None
        if path is not None:
            for name, value in _read_toml(path, tables).items():
                values[name] = REGISTRY[name].coerce(value, str(path))
                origins[name] = str(path)
        for name, setting in REGISTRY.items():
            if setting.env_var in env:
                values[name] = setting.coerce(env[setting.env_var], setting.env_var)
                origins[name] = setting.env_var
        for name, value in flags.items():
            if name not in REGISTRY:
                raise ConfigError(f"Unknown setting {name}.")
            values[name] = REGISTRY[name].coerce(value, "the command line")
            origins[name] = "flag"
        return cls(values, origins, tables)


def _read_toml(path: Path, tables: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"The settings file {path} does not exist.") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}.") from exc
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in TABLES:
            if tables is not None:
                tables[key] = value
            continue
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                flat[f"{key}.{sub}"] = subvalue
        else:
            flat[key] = value
    unknown = sorted(set(flat) - set(REGISTRY))
    if unknown:
        raise ConfigError(
            f"Config file {path} has unknown setting(s) {', '.join(unknown)}; "
            "see docs/configuration.md for the list."
        )
    return flat


def settings_markdown() -> str:
    """Return the configuration reference as a Markdown table."""
    lines = [
        "| setting | environment variable | default | unit | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in REGISTRY.values():
        lines.append(f"| `{s.name}` | `{s.env_var}` | `{s.default!r}` | {s.unit} | {s.help} |")
    return "\n".join(lines) + "\n"

"""``wattlake up``: the stack for real meters, always on.

:class:`Up` runs a :class:`~wattlake.stack.Stack` without a simulator and adds what real devices
need:

- the embedded broker secured by the device registry (TLS listener, per-device identities and
  topics, see :mod:`wattlake.gateway.auth`); the ingest connects with its own credential; or no
  embedded broker at all when an external one (Mosquitto, configured with ``wattlake
  broker-config mosquitto``) is given;
- the gap refill (:mod:`wattlake.gateway.refill`) beside the ingest;
- jobs on their schedule: ``rollup`` every 15 minutes, ``compact`` and ``maintain`` daily;
- the broker's security counters in ``broker.prom`` beside the WAL folder (the stack writes
  them; the web's ``/metrics`` serves them).

A stop (SIGTERM, Ctrl-C) drains the ingest and flushes the lake (see :mod:`wattlake.stack`);
:data:`STOP_MAX_S` bounds it: after that the stop is forced, and the write-ahead log keeps what
was taken for the next start.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattlake.config import Settings
from wattlake.errors import UsageError
from wattlake.stack import JobLoop, Stack, StackReport

if TYPE_CHECKING:
    from wattlake.gateway.refill import Refiller

log = logging.getLogger(__name__)

# The longest a stop may take before it is forced [s] (systemd's TimeoutStopSec is above it).
STOP_MAX_S: Final = 45.0
JOB_PERIODS_S: Final = {"rollup": 900.0, "compact": 86_400.0, "maintain": 86_400.0}


def with_values(settings: Settings, values: dict[str, Any], origin: str = "up") -> Settings:
    """Return ``settings`` with ``values`` set (marked as coming from ``origin``)."""
    merged = {name: settings[name] for name in settings} | values
    origins = {**settings.origins, **dict.fromkeys(values, origin)}
    return Settings(merged, origins, tables=settings.tables)  # the sites stay


class Up:
    """Broker (or an external one), ingest, refill, jobs and web for real devices."""

    def __init__(
        self,
        settings: Settings,
        *,
        external_broker: str = "",
        web: bool = True,
        refill: bool = True,
        jobs: bool = True,
    ) -> None:
        self.settings = settings
        self.external_broker = external_broker
        self.web = web
        self.refill_wanted = refill
        self.jobs_wanted = jobs
        self.stack: Stack | None = None
        self.refiller: Refiller | None = None
        self.jobs: JobLoop | None = None
        self.metrics_file: Path | None = None

    def start(self) -> None:
        """Start everything.

        Raises:
            UsageError: there is no project CA (the embedded broker needs its certificate).
            wattlake.errors.WattlakeError: a part did not start.
        """
        from wattlake.gateway.auth import BrokerSecurity
        from wattlake.gateway.ca import security_dir
        from wattlake.gateway.registry import INGEST_ID, Registry

        settings = self.settings
        security = None
        if not self.external_broker:
            registry = Registry(security_dir(settings["security.dir"]))
            if not registry.ca.exists():
                raise UsageError(
                    f"There is no project CA in {registry.root}; create it first with "
                    "wattlake ca init --host NAME --ip ADDRESS (the names devices use)."
                )
            settings = with_values(
                settings,
                {"ingest.username": INGEST_ID, "ingest.password": registry.service_password()},
            )
            security = BrokerSecurity(
                registry.root,
                tls_host=settings["broker.tls_host"],
                tls_port=settings["broker.tls_port"],
                gen1_plain_host=settings["broker.gen1_host"],
                gen1_plain_port=settings["broker.gen1_port"],
            )
        self.settings = settings
        self.stack = Stack(
            settings,
            simulate=False,
            web=self.web,
            security=security,
            external_broker=self.external_broker,
            job_periods_s=JOB_PERIODS_S if self.jobs_wanted else {},
            sources=[self._refill_source] if self.refill_wanted else [],
        )
        self.stack.start()
        self.jobs = self.stack.jobs
        self.metrics_file = self.stack.broker_metrics_file

    def _refill_source(self, stack: Stack) -> Refiller:
        """Return the gap refill as a source of the stack's ingest worker (its answers come
        back through the worker's MQTT subscription)."""
        from wattlake.gateway.mqtt import BrokerAddress, TlsOptions
        from wattlake.gateway.refill import Refiller

        assert stack.worker is not None
        s = self.settings
        state_file = stack.worker.wal.directory.parent / f"{s['stream.name']}-refill.json"
        self.refiller = Refiller(
            BrokerAddress.parse(stack.broker_url),
            state_file=state_file,
            username=s["ingest.username"],
            password=s["ingest.password"],
            tls=TlsOptions(
                ca_file=s["ingest.tls_ca_file"],
                cert_file=s["ingest.tls_cert_file"],
                key_file=s["ingest.tls_key_file"],
                insecure=s["ingest.tls_insecure"],
            ),
        )
        return self.refiller

    def stop(self, abort: threading.Event | None = None) -> StackReport:
        """Stop the stack (jobs, refill, drain, flush); forced after ``STOP_MAX_S``.

        Raises:
            wattlake.errors.WattlakeError: as :meth:`wattlake.stack.Stack.stop`.
        """
        abort = abort or threading.Event()
        timer = threading.Timer(STOP_MAX_S, abort.set)
        timer.daemon = True
        timer.start()
        try:
            assert self.stack is not None  # the worker stops the refill with its sources
            return self.stack.stop(abort)
        finally:
            timer.cancel()


def systemd_units(settings: Settings, *, external_broker: str = "") -> dict[str, str]:
    """Return systemd unit files for ``wattlake up`` (with or without the embedded broker)."""
    from wattlake.gateway.ca import security_dir

    program = shutil.which("wattlake") or sys.argv[0]
    data_dir = settings.data_dir
    if "://" not in data_dir:
        data_dir = str(Path(data_dir).resolve())
    command = [str(Path(program).resolve()), "up", "--data-dir", data_dir]
    if external_broker:
        command += ["--external-broker", external_broker]
    after = "network-online.target" + (" mosquitto.service" if external_broker else "")
    arrangement = "external broker" if external_broker else "embedded broker"
    unit = f"""[Unit]
Description=wattlake: energy meters into the lake ({arrangement})
Wants=network-online.target
After={after}
{"Requires=mosquitto.service" if external_broker else ""}

[Service]
Type=simple
ExecStart={shlex.join(command)}
# A stop drains the ingest and flushes the lake; it is forced after {STOP_MAX_S:.0f} s.
KillSignal=SIGTERM
TimeoutStopSec={STOP_MAX_S + 15:.0f}
Restart=on-failure
RestartSec=5
Environment=WATTLAKE_SECURITY__DIR={security_dir(settings["security.dir"]).resolve()}
# Secrets (e.g. WATTLAKE_INGEST__PASSWORD for an external broker) go in this file, mode 0600.
EnvironmentFile=-/etc/wattlake/environment
NoNewPrivileges=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
"""
    units = {"wattlake.service": unit.replace("\n\n\n", "\n\n")}
    if external_broker:
        units["mosquitto.service.d/wattlake.conf"] = (
            "# Mosquitto with the configuration written from the device registry:\n"
            "#   wattlake broker-config mosquitto --out /etc/mosquitto/wattlake\n"
            "#   chown -R mosquitto /etc/mosquitto/wattlake\n"
            "[Service]\n"
            "ExecStart=\n"
            "ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/wattlake/mosquitto.conf\n"
            "ExecReload=/bin/kill -HUP $MAINPID\n"
        )
    return units

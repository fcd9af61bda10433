"""The composition root: one place that assembles the running stack on this machine.

``wattlake demo`` and ``wattlake up`` (and later ``serve``) are thin commands over
:class:`Stack`: an embedded MQTT broker (secured: the demo gets a registry and CA of its own,
:func:`demo_security`; its counters go to ``broker.prom`` for ``/metrics``), an ingest worker
(with its lake writer process and any further sources, e.g. ``up``'s gap refill), the web
dashboard when it is available, lake jobs on a schedule (:class:`JobLoop`) and simulated meters
for the demo. The stack starts them in that order and stops them in the reverse one, so that
nothing is lost at a stop (no new job starts once a stop begins):

1. the simulator stops publishing and waits until the broker has accepted what it sent;
2. the ingest drains: it takes messages until the broker holds none for it, each one in the
   write-ahead log before the broker hears it was taken (progress in :class:`DrainState`);
3. the lake writer writes everything in the WAL to the lake, and the ingest returns;
4. the web server and the broker stop.

A second stop request during 2 or 3 ends them at once; the WAL keeps what was taken (the next
start delivers it), and :meth:`Stack.stop` says what was left where.
"""

from __future__ import annotations

import logging
import math
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from wattlake.config import Settings
from wattlake.errors import StorageError, UsageError, WattlakeError
from wattlake.gateway.mqtt import BrokerAddress
from wattlake.gateway.ports import port_is_free
from wattlake.gateway.source import Source
from wattlake.jobs import run_job
from wattlake.lake.identity import read_identity
from wattlake.lake.storage import Lake
from wattlake.stream.ingest import (
    DrainState,
    IngestWorker,
    broker_metrics_file,
    default_client_id,
    jobs_metrics_file,
    wal_dir_from_settings,
)
from wattlake.stream.metrics import write_job_metrics

# Imported where used, not here: the parts of a stack that only some stacks run, whose imports
# cost start-up time that `wattlake serve` (which takes choose_port from here) and `wattlake up`
# with an external broker and no security would pay for nothing: the embedded broker (amqtt),
# broker security (passlib, cryptography), the demo's simulator, the web server (fastapi, an
# optional extra: its absence is a sentence, not an ImportError).
if TYPE_CHECKING:
    from wattlake.devices.sim.simulator import FleetConfig, Simulator
    from wattlake.gateway.auth import BrokerSecurity
    from wattlake.gateway.broker import EmbeddedBroker

log = logging.getLogger(__name__)

# How long the ingest and the web server may take to start [s].
START_MAX_S: Final = 30.0
# How long the stack waits for the simulator's first publish before it says it runs [s].
SIMULATOR_START_MAX_S: Final = 15.0
# While the stack warms up the lake writer flushes after this long [s], then twice as long
# each time, up to ``stream.flush_interval_s``: the first readings are queryable at once and
# later files are big.
FIRST_FLUSH_S: Final = 1.0
# Jobs the demo runs on a schedule [s]: rollup every minute, so the dashboard's charts (which
# read the rollups) follow the simulated meters. ``up`` runs them at real-installation pace.
DEMO_JOB_PERIODS_S: Final = {"rollup": 60.0}
# How long a stop waits for the job that runs at that moment [s].
JOB_STOP_MAX_S: Final = 45.0
# How often the embedded broker's counters are written for the web's /metrics [s].
BROKER_METRICS_EVERY_S: Final = 5.0
# Files the demo writes beside the lake that do not make a data dir "already used".
CONFIG_FILE: Final = "wattlake.toml"


class PortTakenError(UsageError):
    """A port the user chose for a listener (by flag, environment or settings file) is taken."""


@dataclass(frozen=True, slots=True)
class PortChoice:
    """The port a listener binds: the one configured, or 0 (any free port) when the configured
    one is a default that is taken (``taken_default``)."""

    port: int
    taken_default: int | None = None

    def note(self, what: str, setting: str, bound_port: int) -> str | None:
        """Return the sentence that says where ``what`` listens instead, if it moved."""
        if self.taken_default is None:
            return None
        return (
            f"Port {self.taken_default} (the default of {setting}) is taken; {what} listens on "
            f"port {bound_port} instead."
        )


def choose_port(host: str, port: int, *, what: str, setting: str, origin: str) -> PortChoice:
    """Return the port ``what`` binds on ``host``: ``port`` when it is free (or 0), any free
    port when ``port`` is the default of ``setting`` (``origin`` ``"default"``) and taken.

    One rule for every listener: a port the user named is theirs, so a taken one is an error
    that names it; a default that is taken moves, and the caller says where.

    Raises:
        PortTakenError: ``port`` was named by the user (``origin``: a flag, an environment
            variable or a settings file) and something listens on it.
    """

    if port == 0 or port_is_free(host, port):
        return PortChoice(port)
    if origin != "default":
        raise PortTakenError(
            f"Port {port} on {host} for {what} ({setting}, set by {_origin_words(origin)}) is "
            "taken; stop what listens there or choose another port."
        )
    return PortChoice(0, port)


def _named(origin: str) -> str:
    """Return ``origin``, with a default counted as named: devices are configured with it."""
    return "its default (devices are configured with it)" if origin == "default" else origin


def _origin_words(origin: str) -> str:
    """Return where a setting's value came from, in words (``Settings.origins`` values)."""
    if origin == "flag":
        return "the command line"
    if origin.startswith("WATTLAKE_"):
        return f"the environment, {origin}"
    return origin  # a flag's name, or the settings file's path


@dataclass(frozen=True, slots=True)
class DataDirState:
    """What a data dir holds before a stack starts on it."""

    url: str
    lake_files: int
    wal_dir: Path | None
    wal_segments: int
    wal_bytes: int

    @property
    def used(self) -> bool:
        """Return True when an earlier run left data or a WAL here."""
        return self.lake_files > 0 or self.wal_segments > 0


def inspect_data_dir(settings: Settings) -> DataDirState:
    """Return what the data dir of ``settings`` holds (without creating anything).

    Raises:
        wattlake.errors.StorageError: the lake cannot be listed.
    """

    lake = Lake.from_settings(settings)
    files = [
        f
        for f in _list_all(lake)
        if not f.endswith("/" + CONFIG_FILE) and "/_wattlake/" not in f and "/wal/" not in f
    ]
    wal_dir: Path | None = None
    identity = read_identity(lake)
    if lake.is_local or settings["stream.wal_dir"] or identity is not None:
        wal_dir = wal_dir_from_settings(
            settings, lake, identity.lake_id if identity is not None else None
        )
    segments = sorted(wal_dir.glob("*.wal")) if wal_dir is not None and wal_dir.is_dir() else []
    return DataDirState(
        url=lake.url,
        lake_files=len(files),
        wal_dir=wal_dir,
        wal_segments=len(segments),
        wal_bytes=sum(p.stat().st_size for p in segments),
    )


def _list_all(lake: Any) -> list[str]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(lake.root, recursive=True, allow_not_found=True)
    try:
        infos = lake.fs.get_file_info(selector)
    except OSError as exc:
        raise StorageError(f"Cannot list the lake {lake.url}: {exc}") from exc
    return [i.path for i in infos if i.type == pafs.FileType.File]


def empty_data_dir(settings: Settings) -> int:
    """Remove everything an earlier run left in a local data dir except its ``wattlake.toml``
    (lake files, the lake's identity, its catalog and write-ahead logs); return files removed.

    Raises:
        UsageError: the lake is not a local folder (an object store is never emptied).
        wattlake.errors.StorageError: something could not be removed.
    """

    lake = Lake.from_settings(settings)
    if not lake.is_local:
        raise UsageError(
            f"Only a local data folder can be started empty; {lake.url} is left as it is."
        )
    root = Path(lake.root)
    if not root.is_dir():
        return 0
    removed = 0
    try:
        for entry in root.iterdir():
            if entry.name == CONFIG_FILE:
                continue
            if entry.is_dir() and not entry.is_symlink():
                removed += sum(1 for p in entry.rglob("*") if p.is_file())
                shutil.rmtree(entry)
            else:
                entry.unlink()
                removed += 1
    except OSError as exc:
        raise StorageError(f"Cannot empty the data folder {root}: {exc}") from exc
    return removed


def demo_fleet(settings: Settings) -> FleetConfig:
    """Return the demo's simulated meters: ``demo.devices`` homes, in turn one with a kitchen
    circuit, one with PV, one with PV and a battery."""
    from wattlake.devices.sim.simulator import DEMO_HOMES, FleetConfig

    return FleetConfig(devices=settings["demo.devices"], homes=DEMO_HOMES)


def write_demo_sites(settings: Settings) -> tuple[Path, dict[str, str]] | None:
    """Describe the demo's homes as sites (``[sites.home-<n>]``: grid, circuit or solar,
    battery) in the data dir's ``wattlake.toml``, unless it already has sites; return the file
    written and each site's kind of home (``circuit``, ``pv``, ``pv+battery``), or None.

    Raises:
        wattlake.errors.StorageError: the file cannot be written.
    """
    from wattlake.devices.sim.simulator import site_tables, sites_toml

    lake = Lake.from_settings(settings)
    if not lake.is_local or settings.tables.get("sites"):
        return None
    path = Path(lake.root) / CONFIG_FILE
    try:
        before = path.read_text() if path.exists() else ""
        if "[sites" in before:
            return None
        fleet = demo_fleet(settings)
        tables = site_tables(fleet)
        text = sites_toml(tables)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = "# The demo's simulated homes (wattlake demo wrote these sites).\n"
        path.write_text(
            before + ("\n" if before and not before.endswith("\n") else "") + header + text
        )
    except OSError as exc:
        raise StorageError(f"Cannot write the demo's sites into {path}: {exc}") from exc
    kinds = [fleet.home_of(fleet.first_device + i) for i in range(fleet.devices)]
    return path, dict(zip(tables, kinds, strict=True))


DEMO_SECURITY_DIR: Final = "demo-security"


@dataclass(frozen=True, slots=True)
class DemoSecurity:
    """The demo's secured broker: its own registry and CA, the ingest's and simulator's
    credentials (the passwords are kept here only, never logged or printed)."""

    security: BrokerSecurity
    ingest_username: str
    ingest_password: str = field(repr=False)
    simulator_username: str = ""
    simulator_password: str = field(default="", repr=False)


def demo_security(settings: Settings) -> DemoSecurity:
    """Return the demo broker's security, creating its registry and CA on the first start.

    The demo keeps them in a folder of its own beside its write-ahead log (``demo-security``
    in the lake's local state), never in the real registry of ``wattlake up``. The broker
    listens for TLS on a free loopback port besides its plain (loopback) listener; every client
    needs a credential, and the simulator may publish only in simulated devices' names.

    Raises:
        wattlake.errors.StorageError: the folder cannot be written.
        wattlake.errors.WattlakeError: the lake's identity (which names the state folder of a
            lake in object storage) cannot be read.
    """
    from wattlake.gateway.auth import BrokerSecurity
    from wattlake.gateway.ca import CertificateAuthority
    from wattlake.gateway.registry import ensure_demo_credentials

    root = wal_dir_from_settings(settings, Lake.from_settings(settings)).parent / DEMO_SECURITY_DIR
    try:
        creds = ensure_demo_credentials(root)
        ca = CertificateAuthority(root)
        if not ca.exists():
            ca.init(hosts=[], ips=[])  # the TLS listener needs the broker's certificate
    except OSError as exc:
        raise StorageError(f"Cannot keep the demo broker's credentials in {root}: {exc}") from exc
    return DemoSecurity(
        BrokerSecurity(root, tls_host="127.0.0.1", tls_port=0),
        creds.ingest_username,
        creds.ingest_password,
        creds.simulator_username,
        creds.simulator_password,
    )


def with_credentials(settings: Settings, username: str, password: str) -> Settings:
    """Return ``settings`` with the ingest's broker credential set (origin ``stack``)."""
    values = {name: settings[name] for name in settings}
    values["ingest.username"], values["ingest.password"] = username, password
    origins = {**settings.origins, "ingest.username": "stack", "ingest.password": "stack"}
    return Settings(values, origins, tables=settings.tables)


def warm_start(settings: Settings) -> Settings:
    """Return ``settings`` with the first flush early (``stream.first_flush_s``), unless set."""
    if settings.origins["stream.first_flush_s"] != "default":
        return settings
    values = {name: settings[name] for name in settings}
    values["stream.first_flush_s"] = FIRST_FLUSH_S
    origins = {**settings.origins, "stream.first_flush_s": "stack"}
    return Settings(values, origins, tables=settings.tables)


class JobLoop:
    """Run lake jobs on their schedule in a thread; a failing job is logged and tried later."""

    def __init__(
        self,
        settings: Settings,
        periods_s: dict[str, float],
        metrics_file: Path | None = None,
    ) -> None:
        """``metrics_file``, when given, gets the runs and failures per job (Prometheus text)
        at the start and after every run, for the web's ``/metrics``."""
        self.settings = settings
        self.periods_s = dict(periods_s)
        self.runs: dict[str, int] = dict.fromkeys(self.periods_s, 0)
        self.failures: dict[str, int] = dict.fromkeys(self.periods_s, 0)
        self.metrics_file = metrics_file
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)

    def start(self) -> JobLoop:
        """Start the schedule (the first runs come one period after the start)."""
        self.write_metrics()
        self._thread.start()
        return self

    def write_metrics(self) -> None:
        """Write the runs and failures per job to :attr:`metrics_file` (a failure is logged)."""
        if self.metrics_file is None:
            return

        try:
            write_job_metrics(self.metrics_file, self.runs, self.failures)
        except OSError as exc:
            log.warning("cannot write the jobs' counters to %s: %s", self.metrics_file, exc)

    def _run(self) -> None:

        due = {name: time.monotonic() + period for name, period in self.periods_s.items()}
        while not self._stop.wait(min(1.0, *self.periods_s.values())):
            for name, at in due.items():
                if time.monotonic() < at or self._stop.is_set():
                    continue
                try:
                    run_job(name, self.settings)
                    self.runs[name] += 1
                except Exception as exc:  # a job failure must not stop the stack
                    self.failures[name] += 1
                    log.warning(
                        "job %s failed (%s); it runs again in %.0f s",
                        name,
                        exc,
                        self.periods_s[name],
                    )
                    log.debug("job %s failed", name, exc_info=True)
                self.write_metrics()
                due[name] = time.monotonic() + self.periods_s[name]

    @property
    def alive(self) -> bool:
        """Return True while the schedule's thread runs."""
        return self._thread.is_alive()

    def request_stop(self) -> None:
        """Start no further job (the one that runs now finishes)."""
        self._stop.set()

    def stop(self, abort: threading.Event | None = None) -> None:
        """Stop after the job that runs now, if any (at most ``JOB_STOP_MAX_S``; not at all
        once ``abort`` is set: the thread is a daemon)."""
        self._stop.set()
        deadline = time.monotonic() + JOB_STOP_MAX_S
        while self._thread.is_alive() and time.monotonic() < deadline:
            if abort is not None and abort.is_set():
                return
            self._thread.join(0.1)


class StopRequests:
    """Turn Ctrl-C and SIGTERM into a stop request; a second one asks to quit at once.

    Signals are counted from the interpreter's wakeup fd, to which its C-level handler writes
    one byte per signal as it arrives, in whatever thread. Python runs its own handler only in
    the main thread between bytecodes: two signals that arrive while the main thread waits
    (for the GIL, say, under load) run it once, and the second Ctrl-C would be lost.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abort = threading.Event()
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1
        self._socks: tuple[socket.socket, socket.socket] | None = None
        self._reader: threading.Thread | None = None

    def install(self) -> StopRequests:
        """Handle SIGINT and SIGTERM (from the main thread) until :meth:`uninstall`."""
        receive, send = socket.socketpair()
        send.setblocking(False)
        try:
            self._previous_fd = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            receive.close()
            send.close()
            raise
        self._socks = (receive, send)
        self._reader = threading.Thread(target=self._read, name="stop-requests", daemon=True)
        self._reader.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, _counted_elsewhere)
        return self

    def uninstall(self) -> None:
        """Give the signals back to their earlier handlers."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self._socks is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        receive, send = self._socks
        send.setblocking(True)
        send.send(b"\0")  # no signal is 0: tells the reader to end
        if self._reader is not None:
            self._reader.join()
        receive.close()
        send.close()
        self._socks = self._reader = None

    def _read(self) -> None:
        assert self._socks is not None
        receive = self._socks[0]
        while True:
            for signum in receive.recv(64):
                if signum == 0:
                    return
                if signum in (signal.SIGINT, signal.SIGTERM):
                    self._handle(signum)

    def _handle(self, signum: int) -> None:
        if self.stop.is_set():
            log.info("received signal %d again: quitting at once", signum)
            self.abort.set()
        else:
            log.info("received signal %d: stopping (once more quits at once)", signum)
        self.stop.set()


def _counted_elsewhere(_signum: int, _frame: object) -> None:
    """Python's handler: the signal was already counted from the wakeup fd."""


@dataclass(slots=True)
class StackReport:
    """What a stack did, counted at its stop."""

    published: int = 0
    data_messages: int = 0
    status_messages: int = 0
    readings: int = 0
    files_written: int = 0
    dead_letters: int = 0
    replayed: int = 0
    job_runs: dict[str, int] = field(default_factory=dict)
    # What a stop left behind (a second stop request, or a lake that could not be written).
    aborted: bool = False
    left_in_broker: int = 0
    wal_dir: str = ""
    wal_messages: int = 0
    wal_readings: int = 0
    problems: list[str] = field(default_factory=list)


class Stack:
    """Broker, ingest, web dashboard (optional) and simulator (optional) on this machine."""

    def __init__(
        self,
        settings: Settings,
        *,
        simulate: bool = True,
        web: bool = False,
        broker_port: int | None = None,
        security: BrokerSecurity | None = None,
        external_broker: str = "",
        job_periods_s: dict[str, float] | None = None,
        sources: list[Callable[[Stack], Source]] | None = None,
    ) -> None:
        """Describe the stack; :meth:`start` starts it.

        ``broker_port`` None takes ``broker.port``, or a free port when that is the default
        and taken. ``security`` makes the embedded broker check every client (``up``);
        ``external_broker`` (an MQTT 5 broker's URL, e.g. Mosquitto) replaces the embedded one.
        ``job_periods_s`` runs lake jobs on a schedule (job name -> period [s]); None runs the
        demo's (:data:`DEMO_JOB_PERIODS_S`) with the simulator, none without it.
        ``sources`` make more sources for the ingest worker (e.g. the gap refill), each called
        with the stack once its broker runs; the worker starts and stops them with its own.
        """
        self.settings = settings
        self.simulate = simulate
        self.web_wanted = web
        self.broker_port = broker_port
        self.security = security
        self.external_broker = external_broker
        if job_periods_s is None:
            job_periods_s = DEMO_JOB_PERIODS_S if simulate else {}
        self.job_periods_s = dict(job_periods_s)
        self.source_factories = list(sources or [])
        self.jobs: JobLoop | None = None
        self.broker: EmbeddedBroker | None = None
        self.worker: IngestWorker | None = None
        self.simulator: Simulator | None = None
        self.demo: DemoSecurity | None = None
        self.web: Any = None
        self.notes: list[str] = []
        self._ingest: threading.Thread | None = None
        self._sim: threading.Thread | None = None
        self._ingest_stop = threading.Event()
        self.broker_metrics_file: Path | None = None
        self._metrics_stop = threading.Event()
        self._errors: list[BaseException] = []
        self._report = StackReport()

    @property
    def lake_url(self) -> str:
        """Return the URL of the lake the stack writes to."""
        assert self.worker is not None
        return self.worker.lake.url

    def start(self) -> None:
        """Start the broker, the ingest, the web server and the simulator, in that order.

        Raises:
            PortTakenError: a port the user named (or that devices use) is taken.
            wattlake.errors.BrokerError: the broker cannot listen.
            wattlake.errors.WattlakeError: the ingest or the web server did not start.
        """
        from wattlake.gateway.broker import EmbeddedBroker

        settings = warm_start(self.settings)
        broker_port, web_port = self._choose_ports(settings)
        if self.simulate and self.security is None and not self.external_broker:
            self.demo = demo_security(settings)
            self.security = self.demo.security
            settings = with_credentials(
                settings, self.demo.ingest_username, self.demo.ingest_password
            )
        self.settings = settings
        host, port = settings["broker.host"], broker_port.port
        if not self.external_broker:
            # Devices are refused until the ingest has subscribed: a publish before would reach
            # nobody (gateway/broker.py).
            self.broker = EmbeddedBroker(
                host=host,
                port=port,
                security=self.security,
                durable_subscriber=default_client_id(settings),
            ).start()
            moved = broker_port.note("the MQTT broker", "broker.port", self.broker.port)
            if moved:
                self.notes.append(moved)
        try:
            self.worker = IngestWorker(
                settings,
                self.broker_url,
                mqtt5=bool(self.external_broker),
                drain=True,
                broker_backlog=self.broker.pending_for if self.broker is not None else None,
            )
            for make_source in self.source_factories:
                self.worker.add_source(make_source(self))
            self._ingest = threading.Thread(
                target=self._collect, args=(self.worker.run, self._ingest_stop), name="ingest"
            )
            self._ingest.start()
            deadline = time.monotonic() + START_MAX_S
            # Ready means subscribed, and the lake writer warmed up (its imports done): the
            # first readings then reach the lake about a second after they arrive.
            while not (self.worker.ready.wait(0.05) and self.worker.writer.wait_ready(0.05)):
                if self._errors or time.monotonic() > deadline:
                    self._ingest_stop.set()
                    self._ingest.join()
                    raise (
                        self._errors[0]
                        if self._errors
                        else WattlakeError("The ingest worker did not start.")
                    )
            if self.broker is not None and self.security is not None:
                self._start_broker_metrics()
            if self.web_wanted:
                self._start_web(web_port)
            if self.job_periods_s:
                self.jobs = JobLoop(
                    settings,
                    self.job_periods_s,
                    metrics_file=(
                        jobs_metrics_file(self.worker.wal.directory) if self.worker else None
                    ),
                ).start()
            if self.simulate:
                self._start_simulator()
        except BaseException:
            self._stop_quietly()
            raise

    @property
    def broker_url(self) -> str:
        """Return the URL of the broker the ingest reads (embedded or external)."""
        return self.external_broker or (self.broker.url if self.broker is not None else "")

    def _start_broker_metrics(self) -> None:

        assert self.worker is not None
        self.broker_metrics_file = broker_metrics_file(self.worker.wal.directory)
        self.write_broker_metrics()

        def every_few_seconds() -> None:
            while not self._metrics_stop.wait(BROKER_METRICS_EVERY_S):
                self.write_broker_metrics()

        threading.Thread(target=every_few_seconds, name="broker-metrics", daemon=True).start()

    def write_broker_metrics(self) -> None:
        """Write the embedded broker's security counters to :attr:`broker_metrics_file`
        (Prometheus text, replaced atomically)."""
        if self.broker is None or self.broker_metrics_file is None:
            return
        path = self.broker_metrics_file
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(self.broker.metrics_text(), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            log.warning("cannot write the broker's counters to %s: %s", path, exc)

    def check_ports(self) -> None:
        """Check the ports :meth:`start` will bind, so that a command can refuse a taken one
        before it touches anything (:meth:`start` checks them again).

        Raises:
            PortTakenError: a port that was named, or that devices use, is taken.
        """
        self._choose_ports(self.settings)

    def _choose_ports(self, settings: Settings) -> tuple[PortChoice, PortChoice]:
        """Return the ports of the broker and the dashboard, checked before anything starts
        (:func:`choose_port`); the TLS and Gen1 listeners of ``up`` are named in the devices'
        configuration, so a taken one is an error whatever its origin.

        Raises:
            PortTakenError: a port that was named, or that devices use, is taken.
        """
        origins = settings.origins
        broker = PortChoice(0)
        if not self.external_broker:
            port, origin = settings["broker.port"], origins["broker.port"]
            if self.broker_port is not None:
                port, origin = self.broker_port, "--broker-port"
            host = settings["broker.host"]
            broker = choose_port(
                host, port, what="the MQTT broker", setting="broker.port", origin=origin
            )
            security = self.security
            if security is not None and security.tls_port:
                choose_port(
                    security.tls_host,
                    security.tls_port,
                    what="the broker's TLS listener",
                    setting="broker.tls_port",
                    origin=_named(origins["broker.tls_port"]),
                )
            if security is not None and security.gen1_plain_host:
                choose_port(
                    security.gen1_plain_host,
                    security.gen1_plain_port,
                    what="the broker's Gen1 listener",
                    setting="broker.gen1_port",
                    origin=_named(origins["broker.gen1_port"]),
                )
        web = PortChoice(0)
        if self.web_wanted:
            web = choose_port(
                settings["web.host"],
                settings["web.port"],
                what="the dashboard",
                setting="web.port",
                origin=origins["web.port"],
            )
        return broker, web

    def _start_web(self, choice: PortChoice) -> None:
        try:
            from wattlake.web.app import WebServer
        except ImportError as exc:
            self.notes.append(f"The dashboard is not available here ({exc}).")
            return
        settings = self.settings
        web = WebServer(settings, broker_url=self.broker_url, port=choice.port)
        try:
            web.start()
        except WattlakeError as exc:  # the data path works without it
            self.notes.append(f"The dashboard did not start: {exc}")
            return
        self.web = web
        moved = choice.note("the dashboard", "web.port", web.port)
        if moved:
            self.notes.append(moved)

    def _start_simulator(self) -> None:
        from wattlake.devices.sim.simulator import Simulator

        assert self.broker is not None
        settings = self.settings
        self.simulator = Simulator(
            BrokerAddress.parse(self.broker.url),
            interval_s=settings["demo.interval_s"],
            backfill_days=settings["demo.history_days"],
            config=demo_fleet(settings),
            username=self.demo.simulator_username if self.demo is not None else "",
            password=self.demo.simulator_password if self.demo is not None else "",
        )
        simulator = self.simulator
        # A daemon: after a request to quit at once nothing waits for its last acknowledgements.
        self._sim = threading.Thread(
            target=self._collect,
            args=(lambda _: simulator.run(), None),
            name="simulator",
            daemon=True,
        )
        self._sim.start()
        # Started means publishing: its login (argon2) and first round can take a second or two
        # on a loaded machine, and the demo's start-up message promises readings flowing.
        deadline = time.monotonic() + SIMULATOR_START_MAX_S
        while simulator.published == 0 and self._sim.is_alive() and not self._errors:
            if time.monotonic() > deadline:
                log.warning("the simulator has published nothing yet; going on")
                break
            time.sleep(0.05)

    def _collect(self, target: Callable[[Any], Any], arg: Any) -> None:
        try:
            target(arg)
        except BaseException as exc:
            self._errors.append(exc)

    @property
    def failed(self) -> bool:
        """Return True when a part of the stack stopped with an error."""
        return bool(self._errors)

    def backfill_progress(self) -> tuple[int, int] | None:
        """Return (rounds published, rounds in all) of the history backfill while it runs,
        else None."""
        sim = self.simulator
        if sim is None or not sim.backfill_days:
            return None

        from wattlake.devices.sim import loads

        total = math.floor(sim.backfill_days * loads.DAY_S / sim.backfill_interval_s)
        if sim.backfill_rounds >= total:
            return None
        return sim.backfill_rounds, total

    def wait(self, stop: threading.Event, duration_s: float | None = None) -> None:
        """Run until ``stop`` is set, ``duration_s`` [s] has passed, or a part failed."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        while not stop.is_set() and not self._errors:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            stop.wait(0.2 if left is None else min(0.2, left))

    def drain_state(self) -> DrainState | None:
        """Return how the ingest's drain goes (None before a stop)."""
        return self.worker.drain_state if self.worker is not None else None

    def stop(self, abort: threading.Event | None = None) -> StackReport:
        """Stop everything in order (see the module docstring) and return what was done.

        Setting ``abort`` (e.g. a second Ctrl-C) ends the drain and the final write at once.

        Raises:
            wattlake.errors.WattlakeError: a part of the stack failed (its own error), or
                readings could not be delivered (they stay in the WAL; the error says where).
        """
        report = self._report
        if self.jobs is not None:
            self.jobs.request_stop()  # no new job; the one that runs now ends beside the drain
        if self.simulator is not None and self._sim is not None:
            self.simulator.stop()
            while self._sim.is_alive() and not (abort is not None and abort.is_set()):
                self._sim.join(0.1)
        worker = self.worker
        if worker is not None and self._ingest is not None:
            watcher = None
            if abort is not None:
                watcher = threading.Thread(
                    target=_forward, args=(abort, worker.abort, self._ingest), daemon=True
                )
                watcher.start()
            self._ingest_stop.set()
            self._ingest.join()
        if self.jobs is not None:
            self.jobs.stop(abort)
            report.job_runs = dict(self.jobs.runs)
        if worker is not None and (worker.drain_state.aborted or worker.drain_state.gave_up):
            report.left_in_broker = worker.drain_state.left  # counted before it disconnected
        elif worker is not None and self.broker is not None:
            report.left_in_broker = self.broker.pending_for(worker.client_id) or 0
        self._stop_quietly()
        if self.simulator is not None:
            stats = self.simulator.stats
            report.published = self.simulator.published
            report.data_messages = stats.data_messages
            report.status_messages = stats.status_messages
        if worker is not None:
            figures = worker.figures()
            report.readings = figures.readings
            report.files_written = figures.files_written
            report.dead_letters = figures.dead_letters
            report.replayed = figures.replayed
            report.aborted = worker.drain_state.aborted
            report.wal_dir = str(worker.wal.directory)
            report.wal_messages, report.wal_readings = worker.undelivered()
            if worker.drain_state.gave_up:
                report.problems.append(f"the drain stopped: {worker.drain_state.gave_up}")
        errors = [e for e in self._errors if not isinstance(e, StorageError)]
        if errors:
            raise errors[0]
        if report.aborted or report.wal_messages or report.left_in_broker:
            where = (
                f"{report.wal_messages} message(s) with {report.wal_readings} reading(s) stay in "
                f"the write-ahead log at {report.wal_dir}; the next start for this lake delivers "
                "them"
            )
            # The embedded broker acknowledges a QoS 1 message only once the WAL has it: what
            # it still held, its senders were not told was taken and send again.
            lost = (
                f"{report.left_in_broker} message(s) were still in the broker, not acknowledged "
                "to their senders (devices send QoS 1 messages again when they reconnect); "
                if report.left_in_broker
                else ""
            )
            why = (
                "Stopped at once before every reading was delivered"
                if report.aborted
                else (
                    "Not every reading could be delivered"
                    + (f" ({'; '.join(report.problems)})" if report.problems else "")
                )
            )
            raise StorageError(f"{why}: {lost}{where}.")
        if self._errors:
            raise self._errors[0]
        return report

    def _stop_quietly(self) -> None:
        if self.jobs is not None:
            self.jobs.request_stop()
        if not self._metrics_stop.is_set():
            self._metrics_stop.set()
            self.write_broker_metrics()  # the last counters, before the broker goes
        if self.web is not None:
            try:
                self.web.stop()
            except Exception as exc:  # the data is safe; the dashboard only shows it
                log.warning("the web server did not stop cleanly: %s", exc)
            self.web = None
        if self.broker is not None:
            self.broker.stop()


def _forward(source: threading.Event, target: threading.Event, until: threading.Thread) -> None:
    """Set ``target`` when ``source`` is set, while ``until`` runs."""
    while until.is_alive():
        if source.wait(0.05):
            target.set()
            return

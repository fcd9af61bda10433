"""Fixtures shared by every test: a clean environment and real services started on free ports."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from wattlake.lake.storage import Lake

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Keep the user's WATTLAKE_* variables, working directory and home folder out of every test.

    A lake in S3 keeps its catalog, WAL and tokens under ``~/.local/state/wattlake``, and the
    project CA defaults to a folder there: each test gets its own home, so neither the user's
    files nor another test running at the same time (pytest-xdist) share them.
    """
    for name in list(os.environ):
        if name.startswith("WATTLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)


def need(program: str) -> str:
    """Return the path of ``program``; skip without it, but fail in CI where it must exist."""
    path = shutil.which(program) or (
        f"/usr/sbin/{program}" if os.path.exists(f"/usr/sbin/{program}") else None
    )
    if path is None:
        message = f"{program} is not installed (the README's test command installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now, outside the ephemeral range (see
    :func:`quiet_ports`)."""
    return quiet_ports(1)[0]


def ephemeral_port_range() -> tuple[int, int]:
    """Return the kernel's range of source ports for outgoing connections (inclusive)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999


def quiet_ports(count: int, *, grpc: bool = False) -> list[int]:
    """Return ``count`` distinct free ports outside the kernel's ephemeral range (and, with
    ``grpc``, whose P + 10000 is free and outside it too: SeaweedFS puts its gRPC there).

    A free port inside the ephemeral range can be handed out as the source port of any outgoing
    connection on the machine before the server binds it; SeaweedFS then exits at once
    ("bind: address already in use"). Ports below the range are never handed out that way.
    """
    low, high = ephemeral_port_range()
    offset = 10_000 if grpc else 0
    worker, workers = xdist_worker()
    candidates = [
        port
        for port in (*range(10_000, low - offset), *range(high + 1, 65_536 - offset))
        if _port_owner(port, workers) == worker
    ]
    rng = random.Random()
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < count:
        port = rng.choice(candidates)
        pair = {port, port + offset}
        if pair & taken or not all(_bindable(p) for p in pair):
            continue
        chosen.append(port)
        taken |= pair
    return chosen


def xdist_worker() -> tuple[int, int]:
    """Return this pytest-xdist worker's index and the number of workers ((0, 1) without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if not name.startswith("gw") or count < 2:
        return 0, 1
    return int(name[2:]) % count, count


def _port_owner(port: int, workers: int) -> int:
    """Return the worker whose servers may use ``port``: each worker of a parallel run draws from
    its own share of the ports, so two workers never pick the same one. P and P + 10000
    (SeaweedFS's gRPC port) always have the same owner."""
    return (port % 10_000) % workers


def free_port_with_grpc() -> int:
    """Return a free port P whose P + 10000 is free too, both outside the ephemeral range."""
    return quiet_ports(1, grpc=True)[0]


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(
    port: int, timeout_s: float = 10.0, *, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``.

    Raises:
        TimeoutError: nothing listens after ``timeout_s``.
        ProcessLookupError: ``process`` (the server expected to listen) exited meanwhile.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ProcessLookupError(f"the server exited with {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s} s")


@dataclass
class Mosquitto:
    """A real Mosquitto broker started for a test."""

    port: int
    process: subprocess.Popen[bytes]
    config_path: Path

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_mosquitto(workdir: Path, *, extra_config: str = "", port: int | None = None) -> Mosquitto:
    """Start Mosquitto on a free port with a config file in ``workdir``."""
    binary = need("mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    # A port chosen here may be taken by another program before Mosquitto binds it (it then
    # exits at once): a chosen port is tried again with another one, a given port is not.
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start_mosquitto_once(binary, workdir, extra_config, port or free_port())
        except ProcessLookupError:
            if port is not None or attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _start_mosquitto_once(binary: str, workdir: Path, extra_config: str, port: int) -> Mosquitto:
    """Start Mosquitto on ``port``; raise ProcessLookupError when it exits during start-up."""
    config = workdir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"persistence_location {workdir}/\n"
        "max_queued_messages 1000000\n"
        "max_inflight_messages 1000\n" + ("user root\n" if os.geteuid() == 0 else "") + extra_config
        # As root Mosquitto would switch to user "mosquitto", who cannot read the test's files.
    )
    log = open(workdir / "mosquitto.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process=process)
    except TimeoutError:
        process.kill()
        raise
    return Mosquitto(port, process, config)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto broker on a free port, stopped after the test."""
    broker = start_mosquitto(tmp_path / "mosquitto")
    yield broker
    broker.stop()


def tiny_disk_command(
    mount_point: Path, size: str, command: list[str], *, full: bool = False
) -> list[str]:
    """Return ``command`` run with a real ``size`` tmpfs mounted on ``mount_point``: a disk that
    fills up (already ``full`` if asked: a file of zeros takes every block). It lives in a
    private mount namespace (``unshare``), so no root is needed and nothing outside the command
    sees it; its files vanish with the command.
    """
    unshare = need("unshare")
    fill = ' && { cat /dev/zero > "$0/.filler" 2>/dev/null; true; }' if full else ""
    script = f'mount -t tmpfs -o size={size} wattlake-tiny "$0"{fill} && shift && exec "$@"'
    namespace = [unshare, "--map-root-user", "--mount"]
    return [*namespace, "sh", "-c", script, str(mount_point), "--", *command]


def run_on_tiny_disk(mount_point: Path, size: str, command: list[str]) -> str:
    """Run ``command`` with a tiny disk on ``mount_point`` and return its standard output."""
    done = subprocess.run(
        tiny_disk_command(mount_point, size, command), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """Return the device payload fixtures (a copy of shared/fixtures kept with the tests)."""
    return FIXTURES


S3_ACCESS_KEY = "wattlake-test"
S3_SECRET_KEY = "wattlake-test-secret"


@dataclass
class S3Server:
    """A real S3-compatible server (SeaweedFS) started for the test session."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    # SeaweedFS's built-in Iceberg REST catalog (compatible with Amazon S3 Tables).
    iceberg_url: str = ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:  # a throwaway server: no need to wait long for SeaweedFS's graceful stop
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_seaweedfs(workdir: Path) -> S3Server:
    """Start SeaweedFS (master, volume, filer and S3 gateway) on free ports in ``workdir``."""
    venv_weed = Path(sys.executable).parent / "weed"
    binary = str(venv_weed) if venv_weed.exists() else need("weed")
    workdir.mkdir(parents=True, exist_ok=True)
    identities = {
        "identities": [
            {
                "name": "wattlake",
                "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    (workdir / "s3.json").write_text(json.dumps(identities))
    # Another test run on the machine may take one of the chosen ports before this server binds
    # it: the server then exits at once, and it is started again on other ports.
    for attempt in range(1, START_ATTEMPTS + 1):
        server = _start_weed(binary, workdir, attempt)
        if server is not None:
            return server
    raise RuntimeError(
        f"SeaweedFS exited at start {START_ATTEMPTS} times; see {workdir}/weed-*.log"
    )


START_ATTEMPTS = 4


def _start_weed(binary: str, workdir: Path, attempt: int) -> S3Server | None:
    """Start one SeaweedFS server; return None when it exited during start-up."""
    s3_port, master, volume, filer = quiet_ports(4, grpc=True)
    used = {p + k for p in (s3_port, master, volume, filer) for k in (0, 10_000)}
    iceberg_port = next(p for p in iter(free_port, None) if p not in used)
    data_dir = workdir / f"data-{attempt}"
    data_dir.mkdir()
    log = open(workdir / f"weed-{attempt}.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            binary,
            f"-logdir={data_dir}",
            "server",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={s3_port}",
            f"-s3.config={workdir / 's3.json'}",
            # Both default to fixed ports (8181, 9101): a second server on the machine would
            # fail to start. Lance is not used; the Iceberg catalog gets a free port (0 would
            # turn it off).
            f"-s3.port.iceberg={iceberg_port}",
            "-s3.port.lance=0",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=64",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = S3Server(
        f"http://127.0.0.1:{s3_port}", process, iceberg_url=f"http://127.0.0.1:{iceberg_port}"
    )
    try:
        wait_for_port(s3_port, timeout_s=90, process=process)
        wait_for_port(iceberg_port, timeout_s=30, process=process)
        _wait_until_writable(server, timeout_s=90)
    except ProcessLookupError:
        server.stop()
        return None
    except (TimeoutError, OSError):
        server.stop()
        raise
    return server


def _wait_until_writable(server: S3Server, timeout_s: float) -> None:
    """Wait until the S3 gateway stores an object: its port opens before the filer is ready."""
    scheme, _, host = server.endpoint_url.partition("://")
    fs = pafs.S3FileSystem(
        endpoint_override=host,
        scheme=scheme,
        access_key=S3_ACCESS_KEY,
        secret_key=S3_SECRET_KEY,
        allow_bucket_creation=True,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        if server.process.poll() is not None:
            raise ProcessLookupError(f"the server exited with {server.process.returncode}")
        try:
            fs.create_dir("ready-probe")
            with fs.open_output_stream("ready-probe/probe") as out:
                out.write(b"ok")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole session; each test makes its own bucket."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point the AWS credential variables at the test server's identity."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


def make_bucket(endpoint_url: str) -> str:
    bucket = f"lake-{uuid.uuid4().hex[:10]}"
    scheme, _, host = endpoint_url.partition("://")
    fs = pafs.S3FileSystem(endpoint_override=host, scheme=scheme, allow_bucket_creation=True)
    fs.create_dir(bucket)
    return bucket


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lake]:
    """The same tests on a local folder and on a bucket of the real S3 server."""
    if request.param == "local":
        yield Lake.open(str(tmp_path / "lake"))
    else:
        server: S3Server = request.getfixturevalue("s3_env")
        bucket = make_bucket(server.endpoint_url)
        yield Lake.open(f"s3://{bucket}/prefix", s3_endpoint_url=server.endpoint_url)


@dataclass
class Postgres:
    """A private PostgreSQL cluster started for a test (Debian's server, trust auth)."""

    port: int
    data_dir: Path
    pg_ctl: str
    user: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of database ``postgres`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*_as_owner(), self.pg_ctl, "-D", str(self.data_dir), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def postgres_binaries() -> tuple[str, str] | None:
    """Return (initdb, pg_ctl) of the installed PostgreSQL server, or None."""
    for folder in [
        *(str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)),
        "/usr/local/bin",
        "/usr/bin",
    ]:
        initdb, pg_ctl = Path(folder, "initdb"), Path(folder, "pg_ctl")
        if initdb.exists() and pg_ctl.exists():
            return str(initdb), str(pg_ctl)
    return None


def _as_owner() -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as ``nobody`` then."""
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


def start_postgres() -> Postgres:
    """Start a private PostgreSQL cluster in a new temporary folder on a free port.

    Skips the test when PostgreSQL is not installed or cannot start here, and fails instead in
    CI (``CI=true``), where ``./run test`` installs it.
    """

    def unavailable(message: str) -> None:
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)

    binaries = postgres_binaries()
    if binaries is None:
        unavailable("PostgreSQL is not installed (the README's test command installs it)")
    assert binaries is not None
    initdb, pg_ctl = binaries
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="wattlake-pg-"))
    data_dir = home / "data"
    if os.geteuid() == 0:
        shutil.chown(home, "nobody")
        home.chmod(0o700)
    user = "wattlake"
    init = subprocess.run(
        [*_as_owner(), initdb, "-D", str(data_dir), "-U", user, "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        unavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
    port = free_port()
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    started = subprocess.run(
        [*_as_owner(), pg_ctl, "-D", str(data_dir), "-l", str(home / "log"), "-o", options,
         "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    server = Postgres(port, data_dir, pg_ctl, user)
    if started.returncode != 0:
        log = (home / "log").read_text() if (home / "log").exists() else started.stderr
        server.stop()
        unavailable(f"PostgreSQL did not start: {log.strip()[-300:]}")
    return server


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A private PostgreSQL server on a free port, stopped (and its files removed) after."""
    server = start_postgres()
    yield server
    server.stop()

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
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's WATTLAKE_* variables and working directory out of every test."""
    for name in list(os.environ):
        if name.startswith("WATTLAKE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


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
    """Return a TCP port that is free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_with_grpc() -> int:
    """Return a free port P whose P + 10000 is free too (SeaweedFS puts its gRPC there)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 45_000)
        if all(_bindable(p) for p in (port, port + 10_000)):
            return port


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
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
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
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
        wait_for_port(port)
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
            try:
                self.process.wait(15)
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
    s3_port, master, volume, filer = (free_port_with_grpc() for _ in range(4))
    iceberg_port = free_port()
    log = open(workdir / "weed.log", "wb")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [
            binary,
            f"-logdir={workdir}",
            "server",
            f"-dir={workdir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.port={s3_port}",
            f"-s3.config={workdir / 's3.json'}",
            # Both default to fixed ports (8181, 9101): a second server on the machine would
            # fail to start. Lance is not used; the Iceberg catalog gets a free port.
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
        wait_for_port(s3_port, timeout_s=90)
        _wait_until_writable(server, timeout_s=90)
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

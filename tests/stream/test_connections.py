"""How ingest workers reach a broker: shared subscriptions, TLS, and clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, free_port, need, start_mosquitto
from tests.stream.support import (
    Publisher,
    expected_keys,
    lake_keys,
    reading_message,
    start_worker,
    wait_until,
)
from wattlake.config import Settings
from wattlake.errors import BrokerError, UsageError
from wattlake.stream.ingest import IngestWorker


def test_workers_in_a_shared_group_split_the_messages_and_each_lands_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    count = 4_000
    data_dir = tmp_path / "lake"
    workers = [
        start_worker(
            mosquitto.url, data_dir, client_id=f"w{i}", shared_group="g", **{"stream.name": f"w{i}"}
        )
        for i in range(2)
    ]
    publisher = Publisher(mosquitto.url, [reading_message(i) for i in range(count)], name="ps")
    publisher.start().wait()
    wait_until(lambda: lake_keys(data_dir)[1] >= count, 60, "every reading")
    for _, stop, thread in workers:
        stop.set()
        thread.join(30)
    publisher.close()
    shares = [worker.figures().readings for worker, _, _ in workers]
    assert all(share > 0 for share in shares) and sum(shares) == count, shares
    raw_rows, view_rows, keys = lake_keys(data_dir)
    assert (raw_rows, view_rows, keys) == (count, count, expected_keys(count))


def test_a_shared_group_needs_mqtt_5_and_a_plain_name(mosquitto: Mosquitto, tmp_path: Path) -> None:
    settings = Settings.load(overrides={"data_dir": str(tmp_path)}, environ={})
    with pytest.raises(UsageError, match="MQTT 5"):
        IngestWorker(settings, mosquitto.url, mqtt5=False, shared_group="g")
    with pytest.raises(UsageError, match="must not contain"):
        IngestWorker(settings, mosquitto.url, shared_group="a/b")


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Return (CA certificate, server certificate, server key) for 127.0.0.1, made by openssl."""
    openssl = need("openssl")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "s.key", "s.csr", "s.pem")
    )

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    return ca, cert, key


def test_ingest_over_tls_verifies_the_broker_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path / "certs")
    tls_port = free_port()
    broker = start_mosquitto(
        tmp_path / "mosquitto",
        extra_config=f"listener {tls_port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n",
    )
    try:
        url = f"mqtts://127.0.0.1:{tls_port}"
        data_dir = tmp_path / "lake"
        _, stop, thread = start_worker(url, data_dir, **{"ingest.tls_ca_file": str(ca)})
        publisher = Publisher(broker.url, [reading_message(i) for i in range(100)], name="pt")
        publisher.start().wait()
        wait_until(lambda: lake_keys(data_dir)[1] >= 100, 30, "readings over TLS")
        stop.set()
        thread.join(30)
        publisher.close()

        # Without our CA the system's CAs do not know this broker: a clear refusal, exit 1.
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "wattlake",
                "ingest",
                "--broker",
                url,
                "--data-dir",
                str(tmp_path / "other"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert "Cannot reach the MQTT broker" in done.stderr
        assert "certificate verify failed" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        broker.stop()


def test_an_unreachable_broker_and_bad_options_get_one_sentence(tmp_path: Path) -> None:
    def ingest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wattlake", "ingest", "--data-dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    down = ingest("--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "Cannot reach the MQTT broker" in down.stderr
    for args, message in [
        (("--broker", "http://x"), "is not of the form"),
        (("--broker", "mqtt://x:1", "--mqtt-version", "4"), "--mqtt-version"),
        (("--broker", "mqtt://x:1", "--shared-group", "a/b"), "must not contain"),
    ]:
        done = ingest(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr


def test_a_broker_that_refuses_us_is_a_clear_broker_error(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path / "m", extra_config="allow_anonymous false\n")
    try:
        settings = Settings.load(overrides={"data_dir": str(tmp_path / "lake")}, environ={})
        worker = IngestWorker(settings, broker.url)
        with pytest.raises(BrokerError, match="refused us: Not authorized"):
            worker.source.start(timeout_s=10)
    finally:
        broker.stop()

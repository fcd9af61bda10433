"""The gateway reads device formats from the table: ACLs, Mosquitto patterns, registry checks
and provisioning follow each format's descriptor, the CSV format included with no gateway edit.
(The brokers enforcing them end to end: test_identity_binding.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wattlake.cli.app import app
from wattlake.devices.formats import FORMATS
from wattlake.errors import UsageError
from wattlake.gateway.auth import may_subscribe, publish_refusal
from wattlake.gateway.mosquitto import acl_text
from wattlake.gateway.provision import instructions
from wattlake.gateway.registry import Client, Registry

# format -> (a topic the device "dev-1" owns, the same shape for "dev-2")
OWN: dict[str, tuple[str, str]] = {
    "shelly-gen2": ("dev-1/events/rpc", "dev-2/events/rpc"),
    "shelly-gen1": ("shellies/dev-1/emeter/0/power", "shellies/dev-2/emeter/0/power"),
    "generic": ("wattlake/dev-1/readings", "wattlake/dev-2/readings"),
    "csv": ("wattlake/dev-1/csv", "wattlake/dev-2/csv"),
}


def test_every_format_in_the_table_is_covered_here() -> None:
    assert set(OWN) == set(FORMATS)


@pytest.mark.parametrize("fmt", sorted(OWN))
def test_a_device_publishes_and_reads_only_its_own_topics(fmt: str) -> None:
    own, foreign = OWN[fmt]
    client = Client("dev-1", fmt, FORMATS[fmt].auth[0])
    assert publish_refusal(client, own) is None
    assert publish_refusal(client, foreign) == "foreign-topic"
    assert publish_refusal(client, "dev-1") == "foreign-topic"  # no bare id, no root alone
    assert may_subscribe(client, own) and not may_subscribe(client, foreign)
    assert not may_subscribe(client, "#")


def test_a_client_of_an_unknown_format_may_do_nothing() -> None:
    client = Client("dev-1", "shelly-gen9", "cert")
    assert publish_refusal(client, "dev-1/events/rpc") == "foreign-topic"
    assert not may_subscribe(client, "dev-1/rpc")


def test_gen1_extras_come_from_its_descriptor() -> None:
    gen1 = Client("em-1", "shelly-gen1", "password")
    assert publish_refusal(gen1, "shellies/announce", b'{"id": "em-1"}') is None
    assert publish_refusal(gen1, "shellies/announce", b'{"id": "em-2"}') == "announce-mismatch"
    assert may_subscribe(gen1, "shellies/command")
    csv = Client("dev-1", "csv", "cert")
    assert publish_refusal(csv, "shellies/announce", b'{"id": "dev-1"}') == "foreign-topic"
    assert not may_subscribe(csv, "shellies/command")


def test_the_mosquitto_acl_has_every_format_pattern_once(tmp_path: Path) -> None:
    text = acl_text(Registry(tmp_path))
    patterns = [line for line in text.splitlines() if line.startswith("pattern ")]
    assert patterns == [
        "pattern write %u/#",
        "pattern read %u/#",
        "pattern write shellies/%u/#",
        "pattern read shellies/%u/#",
        "pattern write wattlake/%u/#",
        "pattern read wattlake/%u/#",
        "pattern read shellies/command",
    ]


def test_the_registry_checks_auth_kinds_from_the_descriptor(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.ca.init(hosts=[], ips=[])
    with pytest.raises(UsageError, match="Shelly Gen1 devices cannot use certificates"):
        registry.add("em-1", fmt="shelly-gen1", auth="cert")
    with pytest.raises(UsageError, match="Only Shelly Gen1 devices"):
        registry.add("logger-1", fmt="csv", auth="password", plain=True)
    with pytest.raises(UsageError, match="is not one of shelly-gen2, shelly-gen1, generic, csv"):
        registry.add("x-1", fmt="csv-lines")
    provisioned = registry.add("logger-1", fmt="csv", auth="password")
    text = instructions(
        provisioned, broker_host="hub", tls_port=8883, plain_port=1883, device_address="DEV"
    )
    assert "publish CSV" in text and "wattlake/logger-1/csv on mqtts://hub:8883" in text
    assert f"password {provisioned.password}" in text and "shown only now" in text


def test_device_add_prints_the_csv_formats_instructions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTLAKE_SECURITY__DIR", str(tmp_path / "security"))
    runner = CliRunner()
    lake = ["--data-dir", str(tmp_path / "lake")]
    assert runner.invoke(app, ["ca", "init", "--ip", "192.168.1.20", *lake]).exit_code == 0
    done = runner.invoke(app, ["device", "add", "logger-1", "--payload", "csv", *lake])
    assert done.exit_code == 0, done.output
    assert "wattlake/logger-1/csv on mqtts://192.168.1.20:8883" in done.output
    assert "certificate and key" in done.output

"""The project CA, device certificates and the device registry."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import need
from wattlake.devices.shelly_gen1 import settings_url
from wattlake.devices.shelly_gen2 import provisioning_calls
from wattlake.errors import UsageError
from wattlake.gateway.ca import CertificateAuthority, identity_of
from wattlake.gateway.provision import enrolment
from wattlake.gateway.registry import (
    Registry,
    argon2_verify,
    mosquitto_hash,
    mosquitto_verify,
)


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_ca_init_names_the_broker_by_every_host_and_address(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "sec")
    ca.init(hosts=["energy.home"], ips=["192.168.1.20", "fd00::20"], domain="home.example")
    cert = x509.load_pem_x509_certificate(ca.broker_cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "energy.home"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("192.168.1.20"),
        ipaddress.ip_address("fd00::20"),
    }
    assert all(mode == 0o600 for mode in _modes(ca.root).values())
    with pytest.raises(UsageError, match="exists already"):
        ca.init(hosts=[], ips=[])
    # The home network's address changed: the broker certificate is issued again.
    ca.renew_broker(ips=["192.168.1.77"])
    san = (
        x509.load_pem_x509_certificate(ca.broker_cert_file.read_bytes())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert ipaddress.ip_address("192.168.1.77") in san.get_values_for_type(x509.IPAddress)
    assert "energy.home" in san.get_values_for_type(x509.DNSName)


def test_device_certificate_carries_the_id_in_cn_and_san_uri(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    ca.init(hosts=[], ips=[], domain="home.example")
    issued = ca.issue_device("shellyproem50-08f9e0e67204")
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert cn == "shellyproem50-08f9e0e67204"
    assert identity_of(cert, "home.example") == "shellyproem50-08f9e0e67204"
    assert identity_of(cert, "other.example") is None
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    rsa_cert = x509.load_pem_x509_certificate(ca.issue_device("old", key_type="rsa2048").cert_pem)
    assert isinstance(rsa_cert.public_key(), rsa.RSAPublicKey)
    assert rsa_cert.public_key().key_size == 2048


def test_openssl_verifies_device_and_broker_certificates_against_the_ca(tmp_path: Path) -> None:
    openssl = need("openssl")
    ca = CertificateAuthority(tmp_path)
    ca.init(hosts=[], ips=[])
    ca.issue_device("meter-1")
    cert_file, _ = ca.device_files("meter-1")
    for leaf, purpose in ((cert_file, "sslclient"), (ca.broker_cert_file, "sslserver")):
        done = subprocess.run(
            [openssl, "verify", "-purpose", purpose, "-CAfile", str(ca.ca_file), str(leaf)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr


def test_registry_keeps_only_hashes_and_lists_expiry_warnings(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.ca.init(hosts=[], ips=[])
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    pw = registry.add("shellyem-B8B7F1", fmt="shelly-gen1", auth="password", plain=True)
    assert pw.password and pw.issued is None
    text = registry.path.read_text()
    assert pw.password not in text
    entry = json.loads(text)["clients"]["shellyem-B8B7F1"]
    assert argon2_verify(pw.password, entry["argon2"])
    assert mosquitto_verify(pw.password, entry["pbkdf2"])
    assert not mosquitto_verify("wrong", entry["pbkdf2"])
    registry.add("soon", auth="cert", now=now - dt.timedelta(days=820))
    rows = {row.client.client_id: row for row in registry.listing(now=now)}
    assert rows["soon"].warning.startswith("certificate expires in")
    assert rows["shellyem-B8B7F1"].warning == ""
    with pytest.raises(UsageError, match="registered already"):
        registry.add("soon")
    registry.revoke("soon")
    assert registry.get("soon") is not None and not registry.get("soon").active  # type: ignore[union-attr]
    assert registry.ca.device_cert("soon") is None
    assert all(mode == 0o600 for mode in _modes(tmp_path).values())
    with pytest.raises(UsageError, match="cannot use certificates"):
        registry.add("g1", fmt="shelly-gen1", auth="cert")


def test_mosquitto_hash_format() -> None:
    stored = mosquitto_hash("secret", salt=b"0123456789ab")
    assert stored.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert mosquitto_verify("secret", stored)


def test_provisioning_calls_for_gen2_and_gen1(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.ca.init(hosts=[], ips=["192.168.1.20"])
    cert = registry.add("shellypro3em-1", auth="cert")
    calls = provisioning_calls(enrolment(cert), broker="192.168.1.20:8883")
    methods = [c.method for c in calls]
    assert methods[0] == "Shelly.PutUserCA" and methods[-2:] == ["MQTT.SetConfig", "Shelly.Reboot"]
    assert "Shelly.PutTLSClientCert" in methods and "Shelly.PutTLSClientKey" in methods
    config = calls[-2].params["config"]
    assert config["ssl_ca"] == "user_ca.pem" and config["use_client_cert"] is True
    assert config["client_id"] == "shellypro3em-1" == config["topic_prefix"]
    uploaded = "".join(c.params["data"] for c in calls if c.method == "Shelly.PutUserCA")
    assert uploaded.encode() == registry.ca.ca_file.read_bytes()
    gen1 = registry.add("shellyem-1", fmt="shelly-gen1", auth="password", plain=True)
    url = settings_url(enrolment(gen1, device_address="192.168.1.31"), broker="192.168.1.20:1883")
    assert url.startswith("http://192.168.1.31/settings?mqtt_enable=true&mqtt_server=192.168.1.20")

"""The project's certificate authority: a CA, the broker's certificate and device certificates.

Everything lives in one private folder (see :func:`security_dir`), files mode 0600:

- ``ca.pem`` / ``ca.key``: the project CA (P-256, valid ``CA_DAYS``), the only trust anchor of
  the broker's TLS listener and what devices are given to verify the broker;
- ``broker.pem`` / ``broker.key``: the broker's certificate, its names (DNS and IP subject
  alternative names) cover every host name and address given to :func:`init_ca`;
- ``devices/<id>.pem`` / ``devices/<id>.key``: a device's certificate, CN = the device id and
  SAN URI ``spiffe://<domain>/device/<id>`` (what amqtt's certificate plugin and ours read); the
  id is also the MQTT client id the device must use;
- ``ca.json``: the trust domain and the names the broker certificate was issued for, so that
  :func:`renew_broker` re-issues it with the same names (or new ones when the home network's
  address changed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wattlake.errors import ConfigError, UsageError
from wattlake.state import state_dir

CA_DAYS: Final = 3650
BROKER_DAYS: Final = 825
DEVICE_DAYS: Final = 825
DEFAULT_DOMAIN: Final = "wattlake.local"
# A device id is one MQTT topic level and a file name: no '/', '+', '#', no dots first.
DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
KeyType = Literal["p256", "rsa2048"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def security_dir(configured: str = "") -> Path:
    """Return the private folder of the CA and the device registry.

    ``configured`` (the ``security.dir`` setting) wins; else ``security`` in the local state
    folder (:func:`wattlake.state.state_dir`; outside the lake, so lake copies and
    backups never carry the CA's key).
    """
    if configured:
        return Path(configured)
    return state_dir() / "security"


def check_device_id(device_id: str) -> str:
    """Return ``device_id`` if it can name a device (a topic level, a file and a CN).

    Raises:
        UsageError: it cannot.
    """
    if not DEVICE_ID.match(device_id):
        raise UsageError(
            f"Device id {device_id!r} must be 1-128 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit (it becomes an MQTT topic level)."
        )
    return device_id


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (mode 0600), atomically (a
    temporary file of this process, removed if the write fails).

    Raises:
        OSError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def new_key(key_type: KeyType = "p256") -> PrivateKey:
    """Return a new private key: ECDSA P-256, or RSA 2048 for devices that need it."""
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """Return ``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """Return ``cert`` as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def not_after(pem: bytes) -> dt.datetime:
    """Return the expiry time (UTC) of a PEM certificate."""
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc


def device_uri(domain: str, device_id: str) -> str:
    """Return the SAN URI that names ``device_id`` in trust domain ``domain``."""
    return f"spiffe://{domain}/device/{device_id}"


def identity_of(cert: x509.Certificate, domain: str) -> str | None:
    """Return the device id a certificate names in ``domain`` (its SAN URI), None if none."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    prefix = f"spiffe://{domain}/device/"
    for uri in san.value.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(prefix) and DEVICE_ID.match(uri[len(prefix) :]):
            return uri[len(prefix) :]
    return None


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate with its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def not_after(self) -> dt.datetime:
        """Return the expiry time (UTC)."""
        return not_after(self.cert_pem)

    @property
    def serial(self) -> str:
        """Return the certificate's serial number in hex (what the registry pins)."""
        return format(x509.load_pem_x509_certificate(self.cert_pem).serial_number, "x")


class CertificateAuthority:
    """The project CA in folder ``root`` (see the module docstring for its files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def ca_file(self) -> Path:
        """Return the CA certificate's path (what devices and clients verify the broker with)."""
        return self.root / "ca.pem"

    @property
    def broker_cert_file(self) -> Path:
        """Return the broker certificate's path."""
        return self.root / "broker.pem"

    @property
    def broker_key_file(self) -> Path:
        """Return the broker key's path."""
        return self.root / "broker.key"

    def device_files(self, device_id: str) -> tuple[Path, Path]:
        """Return the certificate and key paths of ``device_id``."""
        check_device_id(device_id)
        return (
            self.root / "devices" / f"{device_id}.pem",
            self.root / "devices" / f"{device_id}.key",
        )

    def exists(self) -> bool:
        """Return True when the CA has been created."""
        return self.ca_file.is_file() and (self.root / "ca.key").is_file()

    @property
    def domain(self) -> str:
        """Return the trust domain of device SAN URIs."""
        return str(self._meta().get("domain", DEFAULT_DOMAIN))

    def broker_names(self) -> list[str]:
        """Return the addresses, then host names, the broker certificate was issued for."""
        meta = self._meta()
        return [str(n) for n in [*meta.get("ips", []), *meta.get("hosts", [])]]  # type: ignore[misc]

    def _meta(self) -> dict[str, object]:
        try:
            doc = json.loads((self.root / "ca.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"The CA's metadata in {self.root} cannot be read: {exc}.") from exc
        return doc if isinstance(doc, dict) else {}

    def init(
        self,
        *,
        hosts: list[str],
        ips: list[str],
        domain: str = DEFAULT_DOMAIN,
        now: dt.datetime | None = None,
        force: bool = False,
    ) -> None:
        """Create the CA and the broker's certificate for ``hosts`` and ``ips``.

        Raises:
            UsageError: the CA exists already (``force`` replaces it, and every device must
                then be provisioned again), or an address is not an IP address.
        """
        if self.exists() and not force:
            raise UsageError(
                f"A CA exists already in {self.root}; renew the broker certificate instead, "
                "or replace the CA (every device must then be provisioned again)."
            )
        now = now or dt.datetime.now(dt.UTC)
        key = new_key("p256")
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"wattlake CA {domain}")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.root / "ca.key", key_pem(key))
        write_private(self.ca_file, cert_pem(cert))
        meta = {"domain": domain, "hosts": hosts, "ips": ips}
        write_private(self.root / "ca.json", json.dumps(meta, indent=1).encode())
        self.renew_broker(hosts=hosts, ips=ips, now=now)

    def _load(self) -> tuple[PrivateKey, x509.Certificate]:
        if not self.exists():
            raise UsageError(
                f"There is no project CA in {self.root}; create it first (wattlake ca init)."
            )
        key = serialization.load_pem_private_key((self.root / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError(f"The CA key in {self.root} is of an unsupported type.")
        return key, x509.load_pem_x509_certificate(self.ca_file.read_bytes())

    def _sign(
        self,
        *,
        subject: str,
        public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
        names: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        days: int,
        now: dt.datetime | None,
    ) -> x509.Certificate:
        ca_key, ca_cert = self._load()
        now = now or dt.datetime.now(dt.UTC)
        is_ec = isinstance(public_key, ec.EllipticCurvePublicKey)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=not is_ec,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

    def renew_broker(
        self,
        *,
        hosts: list[str] | None = None,
        ips: list[str] | None = None,
        days: int = BROKER_DAYS,
        now: dt.datetime | None = None,
    ) -> Issued:
        """Issue the broker's certificate again, for new names if given (else the last ones).

        Raises:
            UsageError: there is no CA, or an address is not an IP address.
        """
        meta = self._meta()
        hosts = list(hosts if hosts is not None else meta.get("hosts", []))  # type: ignore[call-overload]
        ips = list(ips if ips is not None else meta.get("ips", []))  # type: ignore[call-overload]
        names: list[x509.GeneralName] = [
            x509.DNSName(h) for h in dict.fromkeys(["localhost", *hosts])
        ]
        for ip in dict.fromkeys(["127.0.0.1", *ips]):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError as exc:
                raise UsageError(f"{ip!r} is not an IP address.") from exc
        key = new_key("p256")
        cert = self._sign(
            subject=hosts[0] if hosts else "localhost",
            public_key=key.public_key(),
            names=names,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            days=days,
            now=now,
        )
        issued = Issued(cert_pem(cert), key_pem(key))
        write_private(self.broker_key_file, issued.key_pem)
        write_private(self.broker_cert_file, issued.cert_pem)
        meta.update(hosts=hosts, ips=ips)
        write_private(self.root / "ca.json", json.dumps(meta, indent=1).encode())
        return issued

    def issue_device(
        self,
        device_id: str,
        *,
        key_type: KeyType = "p256",
        days: int = DEVICE_DAYS,
        now: dt.datetime | None = None,
    ) -> Issued:
        """Issue a client certificate for ``device_id`` (a new key each time) and keep both.

        Raises:
            UsageError: there is no CA, or the id cannot name a device.
        """
        check_device_id(device_id)
        key = new_key(key_type)
        cert = self._sign(
            subject=device_id,
            public_key=key.public_key(),
            names=[x509.UniformResourceIdentifier(device_uri(self.domain, device_id))],
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            days=days,
            now=now,
        )
        issued = Issued(cert_pem(cert), key_pem(key))
        cert_file, key_file = self.device_files(device_id)
        write_private(key_file, issued.key_pem)
        write_private(cert_file, issued.cert_pem)
        return issued

    def device_cert(self, device_id: str) -> Issued | None:
        """Return the certificate and key kept for ``device_id``, None if it has none."""
        cert_file, key_file = self.device_files(device_id)
        if not cert_file.is_file():
            return None
        return Issued(cert_file.read_bytes(), key_file.read_bytes())

    def key_type_of(self, device_id: str) -> KeyType:
        """Return the key type of the certificate kept for ``device_id`` (P-256 if none)."""
        issued = self.device_cert(device_id)
        if issued is None:
            return "p256"
        public = x509.load_pem_x509_certificate(issued.cert_pem).public_key()
        return "rsa2048" if isinstance(public, rsa.RSAPublicKey) else "p256"

    def forget_device(self, device_id: str) -> None:
        """Delete the certificate and key kept for ``device_id`` (after revoking it)."""
        for path in self.device_files(device_id):
            path.unlink(missing_ok=True)

    def revocation_list(self, serials: list[str], *, days: int = 30) -> bytes:
        """Return a CRL (PEM) that revokes the certificates with these hex ``serials``.

        Mosquitto reads it (``crlfile``) to refuse revoked devices whose certificates the CA
        signed; write it again after each revocation (``wattlake broker-config mosquitto``).

        Raises:
            UsageError: there is no CA.
        """
        ca_key, ca_cert = self._load()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=days))
        )
        for serial in serials:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial, 16))
                .revocation_date(now - dt.timedelta(minutes=5))
                .build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)

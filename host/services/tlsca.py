"""A local certificate authority for the broker's TLS listener (cryptography).

``medge fleet ca init`` makes the CA once: an EC P-256 key and a self-signed CA
certificate (10 years, ``BasicConstraints(ca=True, path_length=0)``, key usage
certificate/CRL signing).  From it:

* :func:`issue_server` — the broker's certificate (``medge broker --tls``): subject
  CN ``medge-broker``, SAN the DNS names and IP addresses it is reached by
  (``localhost``, ``127.0.0.1``, ``::1`` and the listen address), extended key usage
  serverAuth, 2 years.
* :func:`issue_client` — a per-account client certificate (``medge fleet add
  --cert``): CN = the account's username, clientAuth, 2 years.

Files live in one folder (default ``<db>.d/ca/``, :func:`default_dir`): ``ca.pem``,
``ca.key``, ``server.pem``/``server.key``, ``clients/<name>.pem``/``.key``.  Every key
file is written 0600 and never printed; certificates are public.

Limits: no revocation list yet (a removed account is refused by its password, which
mosquitto still checks on the TLS listener; its certificate stays valid until it
expires), no intermediate CA, no hardware key storage.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["CaError", "CertFiles", "default_dir", "init_ca", "issue_client", "issue_server"]

CA_DAYS = 3650
LEAF_DAYS = 730


class CaError(ValueError):
    """The CA cannot be used or made (missing, exists, unreadable); one line."""


@dataclass(frozen=True)
class CertFiles:
    cert_file: Path
    key_file: Path
    ca_file: Path

    def as_dict(self) -> dict[str, str]:
        return {"cert_file": str(self.cert_file), "key_file": str(self.key_file),
                "ca_file": str(self.ca_file)}


def default_dir(db: object) -> Path:
    """``<db>.d/ca`` next to a SQLite store (``var/medge.db`` -> ``var/medge.db.d/ca``);
    ``var/ca`` for a PostgreSQL URL."""
    text = str(db)
    if "://" in text and not text.startswith("sqlite:"):
        return Path("var") / "ca"
    path = Path(text[len("sqlite:///"):] if text.startswith("sqlite:///") else text)
    return path.with_name(path.name + ".d") / "ca"


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str) -> object:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "medge"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def init_ca(folder: Path, *, force: bool = False) -> CertFiles:
    """Make the CA in ``folder``; ``CaError`` if one is there (unless ``force``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_pem, ca_key = folder / "ca.pem", folder / "ca.key"
    if ca_pem.exists() and not force:
        raise CaError(f"a CA already exists in {folder} (keep it: every issued certificate "
                      "depends on it)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("medge local CA")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(ca_key, _key_pem(key), private=True)
    _write(ca_pem, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return CertFiles(ca_pem, ca_key, ca_pem)


def _load_ca(folder: Path) -> tuple[object, object]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_pem, ca_key = folder / "ca.pem", folder / "ca.key"
    if not ca_pem.exists() or not ca_key.exists():
        raise CaError(f"no CA in {folder}: run `medge fleet ca init` first")
    try:
        cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CaError(f"the CA in {folder} cannot be read: {exc}") from None
    return cert, key


def _issue(folder: Path, cn: str, out: Path, *, server: bool,
           hosts: Iterable[str] = ()) -> CertFiles:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert, ca_key = _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(cn))
               .issuer_name(ca_cert.subject)  # type: ignore[attr-defined]
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server
                    else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))  # type: ignore[attr-defined]
    if server:
        names: list[x509.GeneralName] = []
        for host in dict.fromkeys(["localhost", "127.0.0.1", "::1", *hosts]):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    cert_file, key_file = out.with_suffix(".pem"), out.with_suffix(".key")
    _write(key_file, _key_pem(key), private=True)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return CertFiles(cert_file, key_file, folder / "ca.pem")


def issue_server(folder: Path, hosts: Iterable[str] = ()) -> CertFiles:
    """The broker's certificate for ``hosts`` (plus localhost and loopback)."""
    return _issue(folder, "medge-broker", folder / "server", server=True, hosts=hosts)


def issue_client(folder: Path, username: str) -> CertFiles:
    """A client certificate with CN ``username`` in ``folder/clients/``."""
    return _issue(folder, username, folder / "clients" / username, server=False)

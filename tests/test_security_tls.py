"""The TLS listener with per-account client certificates from the local CA (issue 11
acceptance): a simulated device on its own certificate and password carries its
messages end to end (device -> mosquitto TLS -> ingest over TLS -> store); a client
without a certificate, with a certificate from another CA, or with a right certificate
but a wrong password is refused."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import pytest

from firmware.net.links.paho import PahoLink
from host.broker.launch import Broker, TlsListener, free_port, registry_accounts
from host.services import accounts, tlsca
from host.services.demo import wait_stored
from host.services.ingest import Ingest
from host.services.store import Store
from sim.fleet import Fleet, FleetParams


def test_ca_files_and_certificates(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = tlsca.init_ca(tmp_path / "ca")
    with pytest.raises(tlsca.CaError, match="already exists"):
        tlsca.init_ca(tmp_path / "ca")
    client = tlsca.issue_client(tmp_path / "ca", "bed-1")
    server = tlsca.issue_server(tmp_path / "ca", ["broker.ward"])
    assert oct(ca.key_file.stat().st_mode & 0o777) == "0o600"
    assert oct(client.key_file.stat().st_mode & 0o777) == "0o600"
    cert = x509.load_pem_x509_certificate(client.cert_file.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bed-1"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    sans = x509.load_pem_x509_certificate(server.cert_file.read_bytes()).extensions \
        .get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.ward" in sans.get_values_for_type(x509.DNSName)
    # The chain verifies with the standard library's TLS stack.
    ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    assert ctx.cert_store_stats()["x509_ca"] == 1
    with pytest.raises(tlsca.CaError, match="no CA"):
        tlsca.issue_client(tmp_path / "elsewhere", "bed-2")


def _connect_packet(user: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT with user name and password (clean session, keepalive 10)."""
    def field(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    body = (field("MQTT") + bytes([4, 0xC2]) + (10).to_bytes(2, "big") + field(user)
            + field(user) + field(password))
    return bytes([0x10, len(body)]) + body


def tls_connack(host: str, port: int, tls: dict, user: str, password: str) -> str:
    """What a client gets on the TLS ``port``: the CONNACK return code, or how the TLS
    session failed (plain ssl sockets: no client library's retry loop in the way)."""
    import socket

    ctx = ssl.create_default_context(cafile=tls["ca_file"])
    if tls.get("cert_file"):
        ctx.load_cert_chain(tls["cert_file"], tls["key_file"])
    try:
        with socket.create_connection((host, port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as sock:
            sock.sendall(_connect_packet(user, password))
            reply = sock.recv(4)
    except ssl.SSLCertVerificationError:
        return "tls: the broker's certificate is not trusted"
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
        return f"tls: refused ({type(exc).__name__})"
    if len(reply) < 4:
        return "closed"
    return {0: "Success", 4: "Bad user name or password", 5: "Not authorized"}.get(
        reply[3], f"refused {reply[3]}")


def test_a_device_on_its_certificate_carries_its_messages_end_to_end(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    tlsca.init_ca(ca_dir)
    db = tmp_path / "medge.db"
    with Store(db) as store:
        dev_pw = accounts.add(store, "sim-0001", "device", actor="test")[1]
        ingest_pw = accounts.add(store, "ingest-tls", "host", actor="test")[1]
    dev_tls = tlsca.issue_client(ca_dir, "sim-0001").as_dict()
    ingest_tls = tlsca.issue_client(ca_dir, "ingest-tls").as_dict()
    server = tlsca.issue_server(ca_dir)
    tls_port = free_port()
    broker = Broker("mosquitto", data_dir=tmp_path / "broker", accounts=registry_accounts(db),
                    tls=TlsListener(tls_port, server.ca_file, server.cert_file,
                                    server.key_file))
    broker.start()
    ingest = Ingest(db, broker.host, tls_port, "ingest-tls", username="ingest-tls",
                    password=ingest_pw)
    ingest.tls = ingest_tls
    try:
        # Refusals on the TLS port: no certificate, another CA's, a wrong password.
        other = tlsca.init_ca(tmp_path / "other-ca")
        stranger = tlsca.issue_client(tmp_path / "other-ca", "sim-0001").as_dict()
        for creds in ({"ca_file": dev_tls["ca_file"]}, dict(stranger, ca_file=dev_tls["ca_file"])):
            got = tls_connack(broker.host, tls_port, creds, "sim-0001", dev_pw)
            assert got.startswith("tls: refused") or got == "closed", got
        assert tls_connack(broker.host, tls_port, {"ca_file": str(other.ca_file)},
                           "sim-0001", dev_pw) == "tls: the broker's certificate is not trusted"
        assert tls_connack(broker.host, tls_port, dev_tls, "sim-0001", "wrong") == "Not authorized"
        assert tls_connack(broker.host, tls_port, dev_tls, "sim-0001", dev_pw) == "Success"

        ingest.start()
        assert ingest.wait_connected(10)
        assert ingest.mqtt5  # the probe asked over TLS too: v5, so --group works there
        fleet = Fleet(FleetParams(n_devices=1, sample_rate_hz=250, speed=8.0, seed=3),
                      broker.host, tls_port, state_dir=tmp_path / "devices",
                      link_factory=lambda device_id: PahoLink(
                          broker.host, tls_port, device_id, username=device_id,
                          password=dev_pw, tls=dev_tls))
        fleet.run(6.0, threading.Event())
        assert fleet.shutdown(timeout_s=10)
        assert wait_stored(db, fleet.last_seqs(), timeout_s=10) == {}
    finally:
        ingest.stop()
        broker.stop()
    with Store(db, readonly=True) as store:
        first, last = fleet.first_seqs["sim-0001"], fleet.last_seqs()["sim-0001"]
        assert store.seqs("sim-0001") == list(range(first, last + 1))
        assert store.vitals_count("sim-0001") == 6
        assert ingest.stats()["rejected"] == {}

"""The TLS listener with per-account client certificates from the local CA (issue 11
acceptance): a simulated device on its own certificate and password carries its
messages end to end (device -> mosquitto TLS -> ingest over TLS -> store); a client
without a certificate, with a certificate from another CA, or with a right certificate
but a wrong password is refused."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
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


def _connack(broker: Broker, port: int, tls: dict | None, user: str, password: str) -> str:
    """The CONNACK (or the TLS failure) a client gets on ``port``."""
    result: list[str] = []
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv311)
    c.username_pw_set(user, password)
    if tls is not None:
        c.tls_set(ca_certs=tls["ca_file"], certfile=tls.get("cert_file"),
                  keyfile=tls.get("key_file"))
    c.on_connect = lambda cl, ud, fl, rc, pr: (result.append(str(rc)), done.set())
    c.on_disconnect = lambda *_: done.set()  # a refused certificate: closed, no CONNACK
    try:
        c.connect(broker.host, port)
    except (OSError, ssl.SSLError) as exc:
        return f"tls: {type(exc).__name__}"
    c.loop_start()
    done.wait(3)
    c.disconnect()
    c.loop_stop()
    return result[0] if result else "no connack (closed)"


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
        assert _connack(broker, tls_port, {"ca_file": dev_tls["ca_file"]}, "sim-0001",
                        dev_pw) != "Success"
        assert _connack(broker, tls_port, dict(stranger, ca_file=dev_tls["ca_file"]),
                        "sim-0001", dev_pw) != "Success"
        assert _connack(broker, tls_port, {"ca_file": str(other.ca_file)}, "sim-0001",
                        dev_pw).startswith("tls:")  # the broker's certificate is not trusted
        assert _connack(broker, tls_port, dev_tls, "sim-0001", "wrong") == "Not authorized"
        assert _connack(broker, tls_port, dev_tls, "sim-0001", dev_pw) == "Success"

        ingest.start()
        assert ingest.wait_connected(10)
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

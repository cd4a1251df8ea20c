"""Broker security on a real mosquitto with the files generated from the registry
(issue 11 acceptance): anonymous and wrong-password clients refused; a device reads
and writes only its own topics (data, retained status, commands); the host reads
every device and commands them; a client id presented with another account's
credentials is refused (the real session keeps its queued messages, the real device
stays connected); a removal closes the live connection at once; passwords are
stored in mosquitto's own $7$ format (cross-checked with mosquitto_passwd)."""

from __future__ import annotations

import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from host.broker.launch import Broker, registry_accounts
from host.services import accounts, audit
from host.services.store import Store

T = "medge/v1/dev"


class Peer:
    """A paho MQTT client (v5; v3.1.1 on the embedded broker, which speaks no v5)
    with blocking helpers (connect, subscribe, publish, recv)."""

    def __init__(self, broker: Broker, client_id: str, user: str | None = None,
                 password: str | None = None, *, clean: bool = True,
                 tls: dict | None = None, port: int | None = None) -> None:
        v5 = broker.kind.value == "mosquitto"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
                                  clean_session=None if v5 else clean)
        if user is not None:
            self.client.username_pw_set(user, password)
        if tls is not None:
            self.client.tls_set(ca_certs=tls["ca_file"], certfile=tls.get("cert_file"),
                                keyfile=tls.get("key_file"))
        self.inbox: queue.Queue = queue.Queue()
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.disconnects: list[str] = []
        self._connected = threading.Event()
        self._acks: dict[int, tuple[ReasonCode, threading.Event]] = {}
        self._subacks: dict[int, list] = {}
        self._sub_done = threading.Event()
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = lambda cl, ud, fl, rc, pr: self.disconnects.append(str(rc))
        c.on_message = lambda cl, ud, m: self.inbox.put((m.topic, m.payload, m.retain))
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        props = None
        if not clean and v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        if v5:
            c.connect(broker.host, port or broker.port, clean_start=clean, properties=props)
        else:
            c.connect(broker.host, port or broker.port)
        c.loop_start()
        assert self._connected.wait(5), "no CONNACK"

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        self.connack = rc
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_publish(self, client, userdata, mid, rc, props) -> None:
        self._acks.setdefault(mid, (rc, threading.Event()))
        self._acks[mid] = (rc, self._acks[mid][1])
        self._acks[mid][1].set()

    def _on_subscribe(self, client, userdata, mid, rcs, props) -> None:
        self._subacks[mid] = [int(rc.value) for rc in rcs]
        self._sub_done.set()

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic: str) -> int:
        self._sub_done.clear()
        _, mid = self.client.subscribe(topic, qos=1)
        assert self._sub_done.wait(5)
        return self._subacks[mid][0]

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        for _ in range(500):
            if info.mid in self._acks and self._acks[info.mid][1].is_set():
                return int(self._acks[info.mid][0].value)
            time.sleep(0.01)
        raise AssertionError("no PUBACK")

    def drain(self, wait_s: float = 0.3) -> list[tuple[str, bytes]]:
        got = []
        deadline = time.monotonic() + wait_s
        while True:
            try:
                topic, payload, _ = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
                got.append((topic, payload))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Broker, Path, dict]]:
    tmp = tmp_path_factory.mktemp("security")
    db = tmp / "registry.db"
    with Store(db) as store:
        creds = {name: accounts.add(store, name, role, actor="test")[1]
                 for name, role in (("dev-a", "device"), ("dev-b", "device"),
                                    ("ingest", "host"), ("ingest-2", "host"),
                                    ("ops", "operator"))}
    broker = Broker("mosquitto", data_dir=tmp / "broker", accounts=registry_accounts(db))
    broker.start()
    try:
        yield broker, db, creds
    finally:
        broker.stop()


def test_anonymous_and_wrong_passwords_are_refused(secured) -> None:
    broker, _, creds = secured
    for peer in (Peer(broker, "anon"), Peer(broker, "dev-a", "dev-a", "wrong"),
                 Peer(broker, "x", "nobody", creds["dev-a"]),
                 Peer(broker, "dev-a", "dev-b", creds["dev-a"])):
        assert peer.connack is not None and peer.connack.is_failure
        # 0x86 bad user name or password, 0x87 not authorised
        assert int(peer.connack.value) in (0x86, 0x87), peer.connack
        peer.close()
    ok = Peer(broker, "dev-a", "dev-a", creds["dev-a"])
    assert ok.accepted
    ok.close()


def test_a_device_is_confined_to_its_own_topics(secured) -> None:
    broker, _, c = secured
    host = Peer(broker, "ingest", "ingest", c["ingest"])
    a = Peer(broker, "dev-a", "dev-a", c["dev-a"])
    b = Peer(broker, "dev-b", "dev-b", c["dev-b"])
    try:
        assert host.subscribe("medge/v1/#") == 1
        assert b.subscribe(f"{T}/dev-b/cmd") == 1
        # A cannot read B's topics (its data, its commands), nor everything: mosquitto
        # 2.0 grants the subscriptions and checks every message against A's ACL.
        for topic in (f"{T}/dev-b/vitals", f"{T}/dev-b/cmd", "medge/v1/#"):
            a.subscribe(topic)
        assert a.subscribe(f"{T}/dev-a/cmd") == 1
        # A cannot publish B's data or retained status, nor command B.
        assert a.publish(f"{T}/dev-b/vitals", b"forged") == NOT_AUTHORIZED
        assert a.publish(f"{T}/dev-b/status", b'{"state":"offline"}', retain=True) \
            == NOT_AUTHORIZED
        assert a.publish(f"{T}/dev-b/cmd", b"reboot") == NOT_AUTHORIZED
        # ... and its own topics work.
        assert a.publish(f"{T}/dev-a/vitals", b"a-own") == 0
        assert b.publish(f"{T}/dev-b/vitals", b"b-own") == 0
        # A second host account shares the load: shared subscriptions pass the ACL.
        worker = Peer(broker, "ingest-2", "ingest-2", c["ingest-2"])
        assert worker.subscribe("$share/ward/medge/v1/#") == 1
        assert a.publish(f"{T}/dev-a/vitals", b"a-shared") == 0
        assert (f"{T}/dev-a/vitals", b"a-shared") in worker.drain(0.3)
        worker.close()
        # The host reads every device but cannot command one; an operator commands B
        # (B gets it, A does not) and reads B's answers, but no patient data.
        assert host.publish(f"{T}/dev-b/cmd", b"host-cmd") == NOT_AUTHORIZED
        ops = Peer(broker, "ops", "ops", c["ops"])
        ops.subscribe(f"{T}/+/vitals")
        ops.subscribe(f"{T}/dev-b/ack")
        assert ops.publish(f"{T}/dev-b/cmd", b"ping-b") == 0
        assert ops.publish(f"{T}/dev-b/vitals", b"ops-forged") == NOT_AUTHORIZED
        assert b.publish(f"{T}/dev-b/ack", b"b-ack") == 0
        assert ops.drain(0.3) == [(f"{T}/dev-b/ack", b"b-ack")]  # no vitals reach it
        ops.close()
        # A host cannot forge a device's data.
        assert host.publish(f"{T}/dev-b/vitals", b"host-forged") == NOT_AUTHORIZED
        seen = host.drain()
        assert (f"{T}/dev-a/vitals", b"a-own") in seen
        assert (f"{T}/dev-b/vitals", b"b-own") in seen
        assert not [p for t, p in seen if b"forged" in p or t.endswith("dev-b/status")]
        assert b.drain(0.1) == [(f"{T}/dev-b/cmd", b"ping-b")]  # not host-cmd
        a_got = a.drain(0.1)
        assert not [t for t, _ in a_got if "/dev-b/" in t], a_got
        # No forged retained status was kept for B: a fresh host subscriber sees none.
        late = Peer(broker, "ingest-2", "ingest-2", c["ingest-2"])
        late.subscribe(f"{T}/dev-b/status")
        assert late.drain(0.3) == []
        late.close()
    finally:
        for p in (host, a, b):
            p.close()


def test_a_client_id_with_other_credentials_is_refused(secured) -> None:
    broker, _, c = secured
    assert broker.dynsec_plugin, "mosquitto's dynamic-security plugin ships with mosquitto 2"
    # ingest's persistent session, then offline while a device publishes 5 messages.
    ingest = Peer(broker, "ingest", "ingest", c["ingest"], clean=False)
    assert ingest.subscribe("medge/v1/#") == 1
    ingest.close()
    a = Peer(broker, "dev-a", "dev-a", c["dev-a"])
    for i in range(5):
        assert a.publish(f"{T}/dev-a/vitals", b"q%d" % i) == 0
    # Impostors present ingest's client id with a clean start (which would wipe the
    # session) under another host account and under a device account: refused.
    for user in ("ingest-2", "dev-b"):
        impostor = Peer(broker, "ingest", user, c[user])
        assert impostor.connack is not None and impostor.connack.is_failure
        assert impostor.connack.getName() == "Not authorized"
        impostor.close()
    # A device's id under another account is refused and does not kick the device off.
    impostor = Peer(broker, "dev-a", "dev-b", c["dev-b"])
    assert impostor.connack is not None and impostor.connack.is_failure
    impostor.close()
    time.sleep(0.3)
    assert a.disconnects == [] and a.publish(f"{T}/dev-a/vitals", b"still-here") == 0
    a.close()
    # An account's own credentials under any other client id are refused too.
    other = Peer(broker, "medge-ingest-x", "ingest", c["ingest"])
    assert other.connack is not None and other.connack.is_failure
    other.close()
    # The real ingest comes back to its session with every queued message.
    back = Peer(broker, "ingest", "ingest", c["ingest"], clean=False)
    assert back.session_present
    payloads = [p for _, p in back.drain(0.5)]
    assert payloads == [b"q0", b"q1", b"q2", b"q3", b"q4", b"still-here"]
    back.close()


def test_a_new_account_is_bound_to_its_client_id_at_once(tmp_path: Path) -> None:
    """An account added while the broker runs is bound through the plugin's $CONTROL
    topic on reload; a removed one's binding goes with it."""
    db = tmp_path / "r.db"
    with Store(db) as store:
        accounts.add(store, "bed-1", "device", actor="alice")
    with Broker("mosquitto", data_dir=tmp_path / "b", accounts=registry_accounts(db)) as b:
        with Store(db) as store:
            pw = accounts.add(store, "bed-2", "device", actor="alice")[1]
        b.reload()
        time.sleep(0.2)
        assert Peer(b, "bed-2", "bed-2", pw).accepted
        wrong = Peer(b, "bed-1", "bed-2", pw)
        assert wrong.connack is not None and wrong.connack.is_failure
        wrong.close()
        with Store(db) as store:
            accounts.remove(store, "bed-2", actor="alice")
        b.reload()
        assert "bed-2" not in b._bound
        # The admin login exists only for $CONTROL: it reads no device data.
        assert "_medge-broker" not in (tmp_path / "b" / "mosquitto.passwd").read_text()


def test_without_the_plugin_an_impostor_is_remapped_not_let_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback where mosquitto's dynamic-security plugin is not installed: the
    client id is replaced by the username, so an impostor gets its own session."""
    monkeypatch.setenv("MEDGE_MOSQUITTO_DYNSEC", str(tmp_path / "absent.so"))
    db = tmp_path / "r.db"
    with Store(db) as store:
        pw = {n: accounts.add(store, n, r, actor="t")[1] for n, r in (("ingest", "host"),
                                                                     ("bed-1", "device"))}
    with Broker("mosquitto", data_dir=tmp_path / "b", accounts=registry_accounts(db)) as b:
        assert b.dynsec_plugin is None and "remapped" in b.client_ids_bound
        assert "use_username_as_clientid true" in b.config_path.read_text()
        ingest = Peer(b, "ingest", "ingest", pw["ingest"], clean=False)
        assert ingest.subscribe("medge/v1/#") == 1
        ingest.close()
        dev = Peer(b, "bed-1", "bed-1", pw["bed-1"])
        assert dev.publish(f"{T}/bed-1/vitals", b"kept") == 0
        impostor = Peer(b, "ingest", "bed-1", pw["bed-1"])  # clean start on ingest's id
        assert impostor.accepted and impostor.drain(0.2) == []
        impostor.close()
        dev.close()
        back = Peer(b, "ingest", "ingest", pw["ingest"], clean=False)
        assert back.session_present and [p for _, p in back.drain(0.5)] == [b"kept"]
        back.close()


def test_the_embedded_broker_enforces_the_same_accounts(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """amqtt with the registry's files: anonymous, wrong-password and foreign-client-id
    connections refused; a device reads and writes only its own topics; a removal is
    enforced from the next message on; the start-up line still says trusted loopback."""
    db = tmp_path / "r.db"
    with Store(db) as store:
        c = {n: accounts.add(store, n, r, actor="t")[1]
             for n, r in (("dev-a", "device"), ("dev-b", "device"), ("ingest", "host"))}
    with Broker("embedded", data_dir=tmp_path / "b", accounts=registry_accounts(db)) as b:
        assert b.secure and "trusted network only" in b.client_ids_bound
        for peer in (Peer(b, "anon"), Peer(b, "dev-a", "dev-a", "wrong"),
                     Peer(b, "ingest", "dev-a", c["dev-a"])):
            assert peer.connack is not None and peer.connack.getName() == "Not authorized"
            peer.close()
        host = Peer(b, "ingest", "ingest", c["ingest"])
        assert host.accepted and host.subscribe("medge/v1/#") == 1
        a = Peer(b, "dev-a", "dev-a", c["dev-a"])
        assert a.subscribe(f"{T}/dev-b/cmd") == 0x80 and a.subscribe(f"{T}/dev-a/cmd") == 1
        a.publish(f"{T}/dev-a/vitals", b"own")
        a.publish(f"{T}/dev-b/status", b"forged", retain=True)
        assert host.drain(0.5) == [(f"{T}/dev-a/vitals", b"own")]
        with Store(db) as store:
            accounts.remove(store, "dev-a", actor="t")
        b.reload()
        a.publish(f"{T}/dev-a/vitals", b"after-removal")
        assert host.drain(0.5) == []
        again = Peer(b, "dev-a", "dev-a", c["dev-a"])
        assert again.connack is not None and again.connack.is_failure
        for p in (again, a, host):
            p.close()
    start = (tmp_path / "b" / "embedded_broker.log").read_text()
    assert "anonymous clients refused" in start and "trusted loopback" in start


def test_a_removal_takes_effect_at_once(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with Store(db) as store:
        password = accounts.add(store, "bed-9", "device", actor="alice")[1]
    with Broker("mosquitto", data_dir=tmp_path / "b", accounts=registry_accounts(db)) as b:
        live = Peer(b, "bed-9", "bed-9", password)
        assert live.accepted
        with Store(db) as store:
            accounts.remove(store, "bed-9", actor="alice")
            assert [e.action for e in audit.entries(store)] == ["account.add", "account.remove"]
        b.reload()
        for _ in range(100):
            if live.disconnects:
                break
            time.sleep(0.02)
        assert live.disconnects, "the removed account's connection is still open"
        live.close()
        again = Peer(b, "bed-9", "bed-9", password)
        assert again.connack is not None and again.connack.is_failure
        again.close()
        # Provisioned again: a new password and a new incarnation (a new unit).
        with Store(db) as store:
            before = accounts.account(store, "bed-9")
            acc, new = accounts.add(store, "bed-9", "device", actor="alice")
            assert acc.incarnation != before.incarnation and new != password
        b.reload()
        time.sleep(0.2)
        assert Peer(b, "bed-9", "bed-9", new).accepted


def test_hashes_are_mosquittos_own_format(tmp_path: Path) -> None:
    stored = accounts.mosquitto_hash("s3cret")
    assert stored.startswith(f"$7${accounts.PBKDF2_ITERATIONS}$")
    assert accounts.check_password("s3cret", stored)
    assert not accounts.check_password("s3cret!", stored)
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is installed with mosquitto"
    pw = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(pw), "u", "from-the-tool"], check=True)
    theirs = pw.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$") and accounts.check_password("from-the-tool", theirs)
    assert not accounts.check_password("other", theirs)


def test_a_forged_will_for_another_device_is_never_delivered(secured) -> None:
    """A device that sets its last will on another device's status (a forged 'offline'
    when it drops) is let in, but the broker never publishes that will."""
    import socket

    broker, _, c = secured
    host = Peer(broker, "ingest", "ingest", c["ingest"])
    host.subscribe(f"{T}/+/status")
    liar = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-a",
                       protocol=mqtt.MQTTv311)
    liar.username_pw_set("dev-a", c["dev-a"])
    liar.will_set(f"{T}/dev-b/status", b'{"state":"offline","reason":"lost"}', qos=1,
                  retain=True)
    up = threading.Event()
    liar.on_connect = lambda *args: up.set()
    liar.connect(broker.host, broker.port)
    liar.loop_start()
    assert up.wait(5)
    liar.socket().shutdown(socket.SHUT_RDWR)  # dies without DISCONNECT: the will is due
    liar.loop_stop()
    assert host.drain(0.8) == []
    own = Peer(broker, "dev-a", "dev-a", c["dev-a"])  # its own status is delivered
    assert own.publish(f"{T}/dev-a/status", b'{"state":"online"}', retain=True) == 0
    assert host.drain(0.3) == [(f"{T}/dev-a/status", b'{"state":"online"}')]
    own.close()
    host.close()


def test_an_account_added_while_the_broker_starts_is_picked_up(tmp_path: Path) -> None:
    """medge broker's watcher takes its baseline before the broker reads the registry:
    an account added during start-up (after the files were written, before the
    watcher's first look) is still loaded by the first poll (a fresh clone's run lost
    it once when the baseline was read after the start)."""
    from host.broker.launch import RegistryWatcher

    db = tmp_path / "r.db"
    Store(db).close()
    b = Broker("mosquitto", data_dir=tmp_path / "b", accounts=registry_accounts(db))
    watcher = RegistryWatcher(b, db, poll_s=0.1)
    watcher.take_baseline()
    b.start()
    try:
        with Store(db) as store:  # the start-up has written its files already
            password = accounts.add(store, "bed-3", "device", actor="t")[1]
        watcher.start()
        deadline = time.monotonic() + 10
        while watcher.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watcher.reloads >= 1
        assert Peer(b, "bed-3", "bed-3", password).accepted
    finally:
        watcher.stop()
        b.stop()

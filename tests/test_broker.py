"""Tests for host/broker/launch.py and host/broker/embedded.py (real broker child processes).

The mosquitto tests never skip: a missing binary is a failure naming the install
command (`make test` installs mosquitto first, or stops naming it: tests/sysdeps.sh).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
import pytest

import host.broker.embedded as embedded_mod
import host.broker.launch as broker_mod
from host.broker.launch import Broker, BrokerKind, find_mosquitto, free_port, mosquitto_config

pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 10.0


def _require(kind: str) -> None:
    if kind == BrokerKind.MOSQUITTO and find_mosquitto() is None:
        pytest.fail("mosquitto is needed by the broker tests: run  sudo apt-get install -y "
                    "mosquitto  (or `make test`, which installs it when it can)")


@pytest.fixture(params=[BrokerKind.MOSQUITTO.value, BrokerKind.EMBEDDED.value])
def kind(request: pytest.FixtureRequest) -> str:
    _require(request.param)
    return str(request.param)


@pytest.fixture
def broker(kind: str, tmp_path: Path):
    b = Broker(kind, data_dir=tmp_path / "broker")
    try:
        b.start()
        yield b
    finally:
        b.stop()


class Client:
    """A paho 2.x client with blocking helpers; collects received messages."""

    def __init__(self, broker: Broker, client_id: Optional[str] = None,
                 clean_session: bool = True) -> None:
        self.broker = broker
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:10]}"
        self.messages: list[mqtt.MQTTMessage] = []
        self.session_present: Optional[bool] = None
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._disconnected = threading.Event()
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=clean_session)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = lambda *_a: self._subscribed.set()
        c.on_message = self._on_message
        self.mqtt = c

    def _on_connect(self, _c, _u, flags, reason_code, _p) -> None:
        if not reason_code.is_failure:
            self.session_present = bool(flags.session_present)
            self._connected.set()

    def _on_disconnect(self, *_a) -> None:
        self._disconnected.set()

    def _on_message(self, _c, _u, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def connect(self) -> Client:
        self.mqtt.connect(self.broker.host, self.broker.port, keepalive=30)
        self.mqtt.loop_start()
        assert self._connected.wait(WAIT_S), "no CONNACK"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._subscribed.clear()
        self.mqtt.subscribe(topic, qos=qos)
        assert self._subscribed.wait(WAIT_S), "no SUBACK"

    def publish(self, topic: str, payload: str, qos: int = 1, retain: bool = False) -> None:
        info = self.mqtt.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT_S)
        assert info.is_published()

    def wait_messages(self, n: int, timeout: float = WAIT_S) -> list[mqtt.MQTTMessage]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return list(self.messages)

    def close(self) -> None:
        if self._connected.is_set() and not self._disconnected.is_set():
            self.mqtt.disconnect()
            self._disconnected.wait(WAIT_S)
        self.mqtt.loop_stop()


@pytest.fixture
def clients():
    made: list[Client] = []

    def make(broker: Broker, **kw) -> Client:
        c = Client(broker, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def _refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except OSError:
        return True


# --------------------------------------------------------------------- per kind


def test_qos1_publish_reaches_subscriber(broker: Broker, clients) -> None:
    assert broker.running and broker.url == f"mqtt://127.0.0.1:{broker.port}"
    sub = clients(broker).connect()
    sub.subscribe("medge/test/vitals", qos=1)
    pub = clients(broker).connect()
    pub.publish("medge/test/vitals", "hr=72", qos=1)
    msgs = sub.wait_messages(1)
    assert [(m.topic, m.payload, m.qos) for m in msgs] == [("medge/test/vitals", b"hr=72", 1)]


def test_retained_message_reaches_late_subscriber(broker: Broker, clients) -> None:
    pub = clients(broker).connect()
    pub.publish("medge/test/status", "online", qos=1, retain=True)
    late = clients(broker).connect()
    late.subscribe("medge/test/#", qos=1)
    msgs = late.wait_messages(1)
    got = [(m.topic, m.payload, m.retain) for m in msgs]
    assert got == [("medge/test/status", b"online", True)]


def test_stop_closes_port_and_restart_reuses_it(broker: Broker, clients) -> None:
    port = broker.port
    broker.restart()
    assert broker.running and broker.port == port
    sub = clients(broker).connect()
    sub.subscribe("medge/test/r")
    pub = clients(broker).connect()
    pub.publish("medge/test/r", "after-restart")
    assert [m.payload for m in sub.wait_messages(1)] == [b"after-restart"]
    sub.close()
    pub.close()

    broker.stop()
    assert not broker.running
    assert _refused(broker.host, port)
    broker.stop()  # idempotent
    broker.start()
    assert broker.running and broker.port == port and not _refused(broker.host, port)


def test_start_fails_with_log_tail_when_port_taken(kind: str, tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        b = Broker(kind, port=port, data_dir=tmp_path)
        try:
            with pytest.raises(RuntimeError, match="broker") as err:
                b.start(timeout_s=5)
        finally:
            b.stop()
    assert "in use" in str(err.value).lower()  # the log tail explains why
    assert not b.running


# ------------------------------------------------------ persistent sessions (QoS 1)
#
# mosquitto keeps persistent sessions, their queued QoS 1 messages and retained
# messages across a graceful restart; the embedded broker keeps them within one run
# only (host/broker/embedded.py) and its start-up line says so.

N_OFFLINE = 50


def _offline_round(broker: Broker, clients, restart_broker: bool) -> Client:
    """Persistent subscriber goes offline, N_OFFLINE QoS 1 messages are published,
    optionally the broker restarts gracefully, then the subscriber reconnects."""
    sub_id = f"persist-{uuid.uuid4().hex[:8]}"
    sub = clients(broker, client_id=sub_id, clean_session=False).connect()
    sub.subscribe("medge/test/q/#", qos=1)
    sub.close()
    time.sleep(0.2)  # let the broker finish processing the DISCONNECT

    pub = clients(broker).connect()
    for i in range(N_OFFLINE):
        pub.publish(f"medge/test/q/{i % 3}", str(i), qos=1)
    pub.close()

    if restart_broker:
        broker.restart()

    # No new SUBSCRIBE: the session (with its subscription and queue) must be kept.
    return clients(broker, client_id=sub_id, clean_session=False).connect()


def test_persistent_session_survives_client_reconnect(broker: Broker, clients) -> None:
    again = _offline_round(broker, clients, restart_broker=False)
    assert again.session_present is True
    msgs = again.wait_messages(N_OFFLINE)
    assert [int(m.payload) for m in msgs] == list(range(N_OFFLINE))  # all, in order
    assert all(m.qos == 1 for m in msgs)
    time.sleep(0.3)
    assert len(again.messages) == N_OFFLINE  # exactly once
    again.close()


def test_mosquitto_persistent_session_survives_graceful_restart(tmp_path: Path, clients) -> None:
    _require(BrokerKind.MOSQUITTO)
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path) as broker:
        again = _offline_round(broker, clients, restart_broker=True)
        assert again.session_present is True
        msgs = again.wait_messages(N_OFFLINE)
        assert {int(m.payload) for m in msgs} == set(range(N_OFFLINE))
        assert all(m.qos == 1 for m in msgs)
        assert (tmp_path / "mosquitto.db").is_file()
        again.close()


def test_mosquitto_restored_session_queues_messages_published_before_reconnect(
    tmp_path: Path, clients
) -> None:
    """The race that loses data without persistence: devices reconnect and publish
    after a broker restart before the persistent subscriber (ingest) is back."""
    _require(BrokerKind.MOSQUITTO)
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path) as broker:
        sub_id = f"ingest-{uuid.uuid4().hex[:8]}"
        sub = clients(broker, client_id=sub_id, clean_session=False).connect()
        sub.subscribe("medge/test/race/#", qos=1)
        sub.close()
        time.sleep(0.2)
        broker.restart()

        pub = clients(broker).connect()
        for i in range(N_OFFLINE):
            pub.publish(f"medge/test/race/{i % 3}", str(i), qos=1)
        pub.close()

        again = clients(broker, client_id=sub_id, clean_session=False).connect()
        assert again.session_present is True
        msgs = again.wait_messages(N_OFFLINE)
        assert [int(m.payload) for m in msgs] == list(range(N_OFFLINE))
        assert all(m.qos == 1 for m in msgs)
        again.close()


def test_mosquitto_retained_messages_survive_restart(tmp_path: Path, clients) -> None:
    _require(BrokerKind.MOSQUITTO)
    binary = bytes(range(256))
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path) as broker:
        pub = clients(broker).connect()
        pub.publish("medge/test/ret/bin", binary, qos=1, retain=True)  # type: ignore[arg-type]
        pub.publish("medge/test/ret/gone", "x", qos=1, retain=True)
        pub.publish("medge/test/ret/gone", "", qos=1, retain=True)  # clears it
        pub.close()
        broker.restart()
        late = clients(broker).connect()
        late.subscribe("medge/test/ret/#", qos=1)
        msgs = late.wait_messages(1)
        time.sleep(0.3)
        got = [(m.topic, m.payload, m.retain) for m in late.messages]
        assert got == [("medge/test/ret/bin", binary, True)], msgs


@pytest.mark.parametrize("persistence", [True, False])
def test_embedded_restart_keeps_nothing_and_says_so(
    tmp_path: Path, clients, persistence: bool
) -> None:
    """In memory only, whatever ``persistence`` says: after a restart the persistent
    session, its queued QoS 1 messages and the retained messages are gone."""
    with Broker(BrokerKind.EMBEDDED, data_dir=tmp_path, persistence=persistence) as broker:
        pub = clients(broker).connect()
        pub.publish("medge/test/status", "online", qos=1, retain=True)
        pub.close()
        again = _offline_round(broker, clients, restart_broker=True)
        assert again.session_present is False
        again.subscribe("medge/test/#", qos=1)
        assert again.wait_messages(1, timeout=0.5) == []
        again.close()
        starts = [ln for ln in broker.log_tail().splitlines() if "listening on" in ln]
        assert len(starts) == 2 and all(embedded_mod.KEEPS in ln for ln in starts), starts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["embedded_broker.log"]


# ------------------------------------------------------------------ no broker run


def test_mosquitto_config_content(tmp_path: Path) -> None:
    text = mosquitto_config("127.0.0.1", 18830, tmp_path)
    lines = text.splitlines()
    assert "listener 18830 127.0.0.1" in lines
    assert "allow_anonymous true" in lines
    assert "persistence true" in lines
    assert f"persistence_location {tmp_path.resolve()}{os.sep}" in lines
    # Saved after every 100 changes, not every N seconds (host/broker/losswindow.py).
    assert "autosave_on_changes true" in lines and "autosave_interval 100" in lines
    # Limits (tests/test_broker_limits.py checks a real mosquitto enforces them).
    assert "message_size_limit 262144" in lines  # 256 KiB: device messages are < 4 KB
    assert "max_inflight_messages 10000" in lines and "max_inflight_bytes 16777216" in lines
    assert "max_queued_messages 400000" in lines
    assert "max_queued_bytes 268435456" in lines  # 256 MiB: never 0 (no limit)
    assert "log_type information" not in lines  # it would log every autosave
    assert f"log_dest file {tmp_path.resolve() / 'mosquitto.log'}" in lines
    assert not any("0.0.0.0" in ln for ln in lines)
    assert "development" in text.lower()  # the anonymous default is explained
    no_persist = mosquitto_config("::1", 1, tmp_path, persistence=False).splitlines()
    assert "persistence false" in no_persist and "listener 1 ::1" in no_persist
    assert not any(ln.startswith("persistence_location") for ln in no_persist)


def test_generated_config_file_is_used(tmp_path: Path) -> None:
    _require(BrokerKind.MOSQUITTO)
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path) as b:
        assert b.config_path.read_text() == mosquitto_config(b.host, b.port, tmp_path)
        # notice level and up (information would log every autosave)
        assert "New client connected" in (tmp_path / "mosquitto.log").read_text()


def test_auto_kind_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: "/opt/fake/mosquitto")
    assert Broker("auto", data_dir=tmp_path).kind is BrokerKind.MOSQUITTO
    assert Broker(data_dir=tmp_path).kind is BrokerKind.MOSQUITTO
    assert Broker("embedded", data_dir=tmp_path).kind is BrokerKind.EMBEDDED

    monkeypatch.setattr(broker_mod, "find_mosquitto", lambda: None)
    assert Broker("auto", data_dir=tmp_path).kind is BrokerKind.EMBEDDED
    with pytest.raises(RuntimeError, match="mosquitto"):
        Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path)
    with pytest.raises(ValueError, match="kind"):
        Broker("rabbitmq", data_dir=tmp_path)


def test_port_resolution_and_loopback_default(tmp_path: Path) -> None:
    b = Broker("embedded", data_dir=tmp_path)
    assert b.host == "127.0.0.1" and b.port > 0 and not b.running
    assert Broker("embedded", port=18999, data_dir=tmp_path).port == 18999
    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))  # really free
    b.stop()  # stop before start is a no-op


def _child_output(args: list[str], before_exit=lambda proc: None) -> tuple[int, str]:
    """Run ``python ARGS`` in the repo; call ``before_exit(proc)``, wait for the exit."""
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        before_exit(proc)
        out, _ = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("kind", ["auto", "embedded"])
def test_run_broker_forever_stops_on_sigterm(tmp_path: Path, kind: str) -> None:
    port = free_port()
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO);"
        "from host.broker.launch import run_broker_forever;"
        f"sys.exit(run_broker_forever({kind!r}, '127.0.0.1', {port}, {str(tmp_path)!r}))"
    )

    def sigterm_once_up(proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + WAIT_S
        while _refused("127.0.0.1", port):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "broker did not come up"
            time.sleep(0.05)
        time.sleep(0.6)  # let run_broker_forever reach its wait loop (it logs first)
        proc.send_signal(signal.SIGTERM)

    returncode, text = _child_output(["-c", code], sigterm_once_up)
    assert returncode == 0, text
    assert "listening on mqtt://127.0.0.1:" in text and "development default" in text
    assert "AUTHENTICATION OFF" in text  # without a registry (medge broker --insecure)
    assert (embedded_mod.KEEPS in text) == (kind == "embedded"), text
    assert _refused("127.0.0.1", port)


def test_embedded_broker_exits_when_its_parent_is_gone() -> None:
    """``--parent-pid`` names a process that is not (or no longer) its parent: it stops."""
    returncode, text = _child_output(
        ["-m", "host.broker.embedded", "--port", str(free_port()),
         "--parent-pid", str(os.getpid() + 1)])  # its parent is us, not that pid
    assert returncode == 0, text
    assert "parent process" in text and "embedded MQTT broker stopped" in text, text

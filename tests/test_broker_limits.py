"""The generated mosquitto config's limits, account and persistence, on a real mosquitto.

- a payload above ``message_size_limit`` is discarded: the connection stays up,
  an MQTT 3.1.1 publisher gets a plain PUBACK, an MQTT 5 one a failure PUBACK
  (0x95 from mosquitto 2.0.11), and no subscriber receives it;
- an offline persistent session's queue stops growing at ``max_queued_messages``
  and at ``max_queued_bytes`` (small overrides keep the test bounded);
- started as root, mosquitto runs as the ``mosquitto`` account and owns its files,
  or stays root with the reason when that account cannot reach the data dir;
- a SIGKILL of mosquitto while ingest is offline loses at most about
  ``autosave_interval`` acknowledged messages (host/broker/losswindow.py), where
  the former ``autosave_interval 5`` (timed) lost every one of them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt
import pytest

from host.broker import losswindow
from host.broker.launch import (
    MOSQUITTO_DEFAULTS,
    Broker,
    BrokerKind,
    _encode_remaining_length,
    find_mosquitto,
    mosquitto_user,
)

pytestmark = pytest.mark.timeout(60)

WAIT_S = 10.0
LIMIT = int(MOSQUITTO_DEFAULTS["message_size_limit"])


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.fail("mosquitto is needed: run  sudo apt-get install -y mosquitto  (or `make test`)")


@pytest.fixture
def reachable_dir():
    """A data dir's parent that mosquitto's own account can search (pytest's is 0700)."""
    with tempfile.TemporaryDirectory(prefix="medge-limits-") as tmp:
        os.chmod(tmp, 0o711)
        yield Path(tmp)


class Client:
    """A paho 2.x client (MQTT 3.1.1 or 5) with blocking helpers."""

    def __init__(self, broker: Broker, v5: bool = False, client_id: Optional[str] = None,
                 clean: bool = True) -> None:
        self.v5 = v5
        self.messages: list[mqtt.MQTTMessage] = []
        self.acks: dict[int, int] = {}  # mid -> PUBACK reason code value
        self.disconnected = threading.Event()
        self._cond = threading.Condition()
        connected = threading.Event()
        kw = ({"protocol": mqtt.MQTTv5} if v5 else
              {"protocol": mqtt.MQTTv311, "clean_session": clean})
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id or f"lim-{uuid.uuid4().hex[:8]}", **kw)
        c.on_connect = lambda *_a: connected.set()
        c.on_disconnect = lambda *_a: self.disconnected.set()
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = lambda *_a: self._note("suback")
        c.connect(broker.host, broker.port, keepalive=30)
        c.loop_start()
        assert connected.wait(WAIT_S), "no CONNACK"
        self.mqtt = c

    def _note(self, _what: str) -> None:
        with self._cond:
            self._cond.notify_all()

    def _on_message(self, _c, _u, msg) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _on_publish(self, _c, _u, mid, reason_code, _p) -> None:
        with self._cond:
            self.acks[mid] = reason_code.value
            self._cond.notify_all()

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.mqtt.on_subscribe = lambda *_a: done.set()
        self.mqtt.subscribe(topic, qos=1)
        assert done.wait(WAIT_S), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish QoS 1, wait for the PUBACK; return its reason code value."""
        info = self.mqtt.publish(topic, payload, qos=1)
        with self._cond:
            assert self._cond.wait_for(lambda: info.mid in self.acks, WAIT_S), "no PUBACK"
            return self.acks[info.mid]

    def wait_messages(self, n: int, timeout: float = WAIT_S) -> int:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= n, timeout)
            return len(self.messages)

    def settle(self, quiet_s: float = 0.5) -> int:
        """Wait until no message arrived for ``quiet_s``; return the count."""
        last = -1
        while True:
            with self._cond:
                self._cond.wait(quiet_s)
                if len(self.messages) == last:
                    return last
                last = len(self.messages)

    def close(self) -> None:
        if not self.disconnected.is_set():
            self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def broker(tmp_path: Path):
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path / "broker") as b:
        yield b


# ------------------------------------------------------------------- message size


def test_payload_above_size_limit_is_discarded_and_connection_kept(broker: Broker) -> None:
    """MQTT 3.1.1 (what devices speak): a plain PUBACK, the message is dropped, the
    connection stays, so the device's outbox moves on instead of resending it."""
    sub = Client(broker)
    sub.subscribe("medge/v1/size/#")
    pub = Client(broker)
    try:
        assert pub.publish("medge/v1/size/a", b"x" * LIMIT) == 0  # at the limit: accepted
        assert sub.wait_messages(1) == 1
        assert pub.publish("medge/v1/size/b", b"x" * (LIMIT + 1)) == 0  # acknowledged ...
        assert pub.publish("medge/v1/size/c", b"after") == 0  # same connection, still up
        assert sub.wait_messages(2) == 2
        assert sub.settle() == 2  # ... but never delivered
        assert [m.topic for m in sub.messages] == ["medge/v1/size/a", "medge/v1/size/c"]
        assert not pub.disconnected.is_set()
    finally:
        pub.close()
        sub.close()


def _read_packet(sock: socket.socket) -> bytes:
    head = sock.recv(2)
    assert len(head) == 2, "connection closed"
    assert head[1] < 128, "short packets only"
    body = b""
    while len(body) < head[1]:
        chunk = sock.recv(head[1] - len(body))
        assert chunk, "connection closed"
        body += chunk
    return head + body


def test_mqtt5_payload_above_size_limit_gets_a_failure_puback(broker: Broker) -> None:
    """MQTT 5, on the wire: mosquitto 2.0.11 answers PUBACK reason 0x95 (packet too
    large; its man page says 0x83) and keeps the connection. paho-mqtt 2.x takes
    0x95 in a PUBACK for a malformed packet and drops the connection itself (seen
    here), so an MQTT 5 paho publisher would resend the message on every
    reconnect: medge's devices publish with MQTT 3.1.1 (test above)."""
    with socket.create_connection((broker.host, broker.port), timeout=WAIT_S) as sock:
        connect = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + b"\x00\x04lim5"
        sock.sendall(b"\x10" + _encode_remaining_length(len(connect)) + connect)
        connack = _read_packet(sock)
        assert connack[0] == 0x20 and connack[3] == 0, connack.hex()  # accepted
        header = b"\x00\x0amedge/v1/x" + b"\x00\x07" + b"\x00"  # topic, mid 7, no props
        for payload, mid in ((b"x" * (LIMIT + 1), 7), (b"ok", 8)):
            vh = header[:-3] + mid.to_bytes(2, "big") + b"\x00"
            body = vh + payload
            sock.sendall(b"\x32" + _encode_remaining_length(len(body)) + body)
            ack = _read_packet(sock)
            assert ack[0] == 0x40 and ack[2:4] == mid.to_bytes(2, "big"), ack.hex()
            reason = ack[4] if len(ack) > 4 else 0
            if mid == 7:
                assert reason in (0x83, 0x95), ack.hex()  # refused, the flow completed
            else:
                assert reason in (0x00, 0x10), ack.hex()  # accepted (no subscriber: 0x10)


def test_four_megabyte_payload_is_refused(broker: Broker) -> None:
    """The fault probe's 4 MB payload (which mosquitto used to accept and queue)."""
    sub_id = f"ingest-{uuid.uuid4().hex[:6]}"
    sub = Client(broker, client_id=sub_id, clean=False)
    sub.subscribe("medge/v1/big/#")
    sub.close()
    pub = Client(broker)  # MQTT 3.1.1, as devices publish
    try:
        assert pub.publish("medge/v1/big/x", b"y" * (4 << 20)) == 0
    finally:
        pub.close()
    again = Client(broker, client_id=sub_id, clean=False)
    try:
        assert again.settle() == 0  # nothing was queued for the offline session
    finally:
        again.close()


# ------------------------------------------------------------------- queue limits


def _queued_after_offline(broker: Broker, n: int, payload: bytes) -> int:
    """Publish ``n`` QoS 1 messages to an offline persistent session; return how
    many it receives when it comes back."""
    sub_id = f"ingest-{uuid.uuid4().hex[:6]}"
    sub = Client(broker, client_id=sub_id, clean=False)
    sub.subscribe("medge/v1/q/#")
    sub.close()
    time.sleep(0.2)
    pub = Client(broker)
    try:
        for i in range(n):
            assert pub.publish(f"medge/v1/q/{i % 5}", payload) == 0  # all acknowledged
    finally:
        pub.close()
    again = Client(broker, client_id=sub_id, clean=False)
    try:
        return again.settle(quiet_s=0.7)
    finally:
        again.close()


def test_offline_session_queue_stops_at_max_queued_messages(tmp_path: Path) -> None:
    limit = 40
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path / "b",
                options={"max_queued_messages": limit}) as b:
        got = _queued_after_offline(b, 4 * limit, b"m" * 100)
    # Offline, nothing is in flight: the queue holds exactly the limit, the rest
    # was dropped (after the publisher had its PUBACK: docs/scaling.md).
    assert got == limit


def test_offline_session_queue_stops_at_max_queued_bytes(tmp_path: Path) -> None:
    size, limit_bytes = 1000, 20_000
    with Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path / "b",
                options={"max_queued_bytes": limit_bytes}) as b:
        got = _queued_after_offline(b, 100, b"b" * size)
    assert limit_bytes // size <= got <= limit_bytes // size + 1


# ------------------------------------------------------------ unprivileged account


def _process_user(pid: int) -> str:
    return subprocess.run(["ps", "-o", "user=", "-p", str(pid)], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_as_root_mosquitto_runs_as_its_own_account(reachable_dir: Path) -> None:
    import pwd

    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto account (mosquitto falls back to nobody)")
    data = reachable_dir / "broker"
    with Broker(BrokerKind.MOSQUITTO, data_dir=data) as b:
        assert b.pid is not None and _process_user(b.pid) == "mosquitto"
        assert "user mosquitto" in b.config_path.read_text().splitlines()
        sub_id = f"ingest-{uuid.uuid4().hex[:6]}"
        c = Client(b, client_id=sub_id, clean=False)
        c.subscribe("medge/v1/#")
        c.close()
        b.restart()  # saves mosquitto.db as that account, and loads it again
        again = Client(b, client_id=sub_id, clean=False)
        again.close()
        assert b.pid is not None and _process_user(b.pid) == "mosquitto"
    for path in (data, data / "mosquitto.db", data / "mosquitto.log"):
        assert path.stat().st_uid == account.pw_uid, path
    assert "Error" not in (data / "mosquitto.log").read_text()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_as_root_unreachable_data_dir_falls_back_to_root_and_says_why(
    tmp_path: Path, reachable_dir: Path
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    user, why = mosquitto_user(private / "broker")
    assert user == "root" and "cannot reach" in why
    assert mosquitto_user(reachable_dir / "broker")[0] in ("mosquitto", "nobody")
    (reachable_dir / "notes.txt").write_text("not the broker's")
    user, why = mosquitto_user(reachable_dir)  # never hand over a folder shared with others
    assert user == "root" and "other files" in why


def test_not_root_means_no_user_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert mosquitto_user(tmp_path) == (None, "")


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown mosquitto option"):
        Broker(BrokerKind.MOSQUITTO, data_dir=tmp_path, options={"max_queud_messages": 1})


# ------------------------------------------------------------ loss after SIGKILL


def test_sigkill_loses_at_most_autosave_interval_acknowledged_messages() -> None:
    """Ingest offline, 2 s of QoS 1 publishing, SIGKILL, restart, reconnect."""
    result = losswindow.measure(seconds=2.0)
    assert result.acknowledged > 500, result
    # At most autosave_interval changes since the last save, plus the packets read
    # in the loop pass that triggers the save (at most the publisher's window).
    bound = int(MOSQUITTO_DEFAULTS["autosave_interval"]) + losswindow.WINDOW
    assert result.lost <= bound, result.line()
    assert result.lost_seconds < 0.5, result.line()


def test_timed_autosave_loses_what_arrived_since_the_last_save() -> None:
    """The former setting, for contrast: 5 s timed autosave lost every message of a
    2 s burst (the test above would catch a return to it)."""
    result = losswindow.measure(seconds=2.0, options={"autosave_interval": 5,
                                                       "autosave_on_changes": False})
    assert result.acknowledged > 500 and result.lost == result.acknowledged, result.line()


# ------------------------------------------- shared subscription, a worker dies
#
# docs/scaling.md: mosquitto 2.0.11 keeps dispatching round-robin to a dead
# worker's (offline) session; its share waits in that session's queue and is
# dropped, not re-dispatched, if the session expires (eclipse/mosquitto#2662).
# medge's answer: a stable client id per worker, a long session expiry, and the
# dead worker restarted under the same id.


def _worker(broker: Broker, cid: str, expiry_s: int, got: list[int],
            clean: bool) -> tuple[mqtt.Client, dict]:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    ready = threading.Event()
    flags_seen: dict = {}

    def on_connect(_c, _u, flags, _rc, _p) -> None:
        flags_seen["present"] = flags.session_present
        ready.set()

    c.on_connect = on_connect
    c.on_message = lambda _c, _u, m: got.append(int(m.payload))
    c.connect(broker.host, broker.port, keepalive=30, clean_start=clean, properties=props)
    c.loop_start()
    assert ready.wait(WAIT_S), "no CONNACK"
    return c, flags_seen


def _shared_run(broker: Broker, expiry_s: int, restart: bool, wait_s: float) -> tuple[int, int]:
    """Two workers share ``$share/ingest/medge/v1/#``; w1 dies (socket closed, no
    DISCONNECT) after 50 of 150 messages; optionally w1 comes back under its id.
    Return (distinct messages delivered, duplicates)."""
    g1: list[int] = []
    g2: list[int] = []
    workers = []
    for cid, expiry, got in (("w1", expiry_s, g1), ("w2", 3600, g2)):
        c, _ = _worker(broker, cid, expiry, got, clean=True)
        done = threading.Event()
        c.on_subscribe = lambda *_a, done=done: done.set()
        c.subscribe("$share/ingest/medge/v1/#", qos=1)
        assert done.wait(WAIT_S), "no SUBACK"
        workers.append(c)
    pub = Client(broker)
    try:
        for i in range(150):
            if i == 50:
                time.sleep(0.3)
                workers[0].loop_stop()
                workers[0].socket().close()  # SIGKILL-like: no DISCONNECT
                time.sleep(0.3)
            assert pub.publish(f"medge/v1/d{i % 5}/vitals", str(i).encode()) == 0
        time.sleep(wait_s)
        if restart:
            again, flags = _worker(broker, "w1", expiry_s, g1, clean=False)
            workers.append(again)
            assert flags["present"] is True  # the same session, with its queue
        time.sleep(1.0)
    finally:
        pub.close()
        for c in workers[1:]:
            c.disconnect()
            c.loop_stop()
    return len(set(g1) | set(g2)), len(g1) + len(g2) - len(set(g1) | set(g2))


def test_shared_subscription_dead_worker_restarted_under_its_id_loses_nothing(
    broker: Broker,
) -> None:
    assert _shared_run(broker, expiry_s=3600, restart=True, wait_s=0.3) == (150, 0)


def test_shared_subscription_expired_session_drops_its_queue_on_mosquitto(
    broker: Broker,
) -> None:
    """The trap medge's settings avoid: a 1 s session expiry, the dead worker not
    back in time. mosquitto 2.0.11 drops its share (about half of the 100
    messages sent after it died) instead of handing it to the live worker."""
    distinct, dups = _shared_run(broker, expiry_s=1, restart=False, wait_s=2.5)
    assert dups == 0 and 150 - distinct >= 25, distinct

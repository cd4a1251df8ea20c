"""Tests for firmware/net/mqtt_client.py (MQTT 3.1.1 client core).

Part 1 checks every byte against MQTT 3.1.1 (OASIS 2014) with a scripted fake
stream injected through ``sock_factory``.  Part 2 talks to a real mosquitto
(host.broker.launch.Broker, started on a free loopback port) with a paho-mqtt 2.x
client on the other side.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from firmware.net import mqtt_client as umqtt
from firmware.net.mqtt_client import MQTTClient, MQTTException
from host.broker.launch import Broker

pytestmark = pytest.mark.timeout(30)

CONNACK_OK = b"\x20\x02\x00\x00"


class FakeStream:
    """Scripted transport: records writes, replays ``rx`` chunks on read.

    When the script is exhausted a blocking read returns b"" (peer closed) and
    a non-blocking read returns None (nothing yet), like a MicroPython socket.
    ``trickle`` returns one byte per read; ``max_write`` forces short writes.
    """

    def __init__(self, *rx, trickle=False, max_write=None):
        self.rx = bytearray(b"".join(rx))
        self.tx = bytearray()
        self.trickle = trickle
        self.max_write = max_write
        self.blocking = True
        self.blocking_calls = []
        self.closed = False

    def feed(self, data):
        self.rx += data

    def read(self, n):
        if self.closed:
            raise OSError(9, "closed")
        if not self.rx:
            return b"" if self.blocking else None
        n = 1 if self.trickle else n
        out = bytes(self.rx[:n])
        del self.rx[:n]
        return out

    def write(self, buf):
        if self.closed:
            raise OSError(9, "closed")
        buf = bytes(buf)
        if self.max_write is not None:
            buf = buf[: self.max_write]
        self.tx += buf
        return len(buf)

    def setblocking(self, flag):
        self.blocking = bool(flag)
        self.blocking_calls.append(bool(flag))

    def close(self):
        self.closed = True

    def take(self):
        """Bytes written since the last take()."""
        out = bytes(self.tx)
        self.tx.clear()
        return out


def make_client(stream, client_id="c1", **kw):
    opened = []

    def factory(server, port):
        opened.append((server, port))
        return stream

    c = MQTTClient(client_id, "broker.example", sock_factory=factory, **kw)
    c.opened = opened
    return c


def connected(*rx, **kw):
    """A client connected over a FakeStream whose script continues with ``rx``."""
    timeout = kw.pop("timeout", 0.3)
    s = FakeStream(CONNACK_OK, *rx, trickle=kw.pop("trickle", False),
                   max_write=kw.pop("max_write", None))
    c = make_client(s, **kw)
    c.connect(timeout=timeout)
    s.take()
    return c, s


# ---------------------------------------------------------------------------
# Remaining length (2.2.3, Table 2.4 boundaries)


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_table(n, encoded):
    buf = bytearray(5)
    end = umqtt._put_len(buf, 1, n)
    assert bytes(buf[1:end]) == encoded
    # and the decoder reads it back
    c = MQTTClient("x", "h", sock_factory=lambda s, p: None)
    c.sock = FakeStream(encoded)
    assert c._recv_len() == n


def test_remaining_length_limits():
    with pytest.raises(ValueError):
        umqtt._put_len(bytearray(5), 1, 268435456)
    c = MQTTClient("x", "h")
    c.sock = FakeStream(b"\xff\xff\xff\xff\x01")  # a fifth length byte
    with pytest.raises(OSError):
        c._recv_len()


# ---------------------------------------------------------------------------
# CONNECT / CONNACK (3.1, 3.2)


def test_connect_minimal_bytes():
    s = FakeStream(CONNACK_OK)
    c = make_client(s)
    assert c.connect() is False
    assert c.opened == [("broker.example", 1883)]  # default port (not TLS)
    assert s.take() == bytes(
        [
            0x10, 14,  # CONNECT, remaining length 10 + 2 + 2
            0x00, 0x04, 0x4D, 0x51, 0x54, 0x54,  # protocol name "MQTT" (3.1.2.1)
            0x04,  # protocol level 4 = 3.1.1 (3.1.2.2)
            0x02,  # connect flags: clean session only
            0x00, 0x00,  # keep alive 0 = off
            0x00, 0x02, 0x63, 0x31,  # client id "c1"
        ]
    )  # fmt: skip
    assert s.blocking  # left blocking after the polled CONNACK wait


def test_connect_full_bytes_will_user_password_keepalive():
    s = FakeStream(b"\x20\x02\x01\x00")  # session present
    c = make_client(s, user="u", password="pw", keepalive=60, port=1884)
    c.set_last_will("w/t", b"bye", retain=True, qos=1)
    assert c.connect(clean_session=True) is True
    assert c.opened == [("broker.example", 1884)]
    assert s.take() == bytes(
        [
            0x10, 31,  # 10 + (2+2) + (2+3) + (2+3) + (2+1) + (2+2)
            0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04,
            0xEE,  # user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08
                   # | will 0x04 | clean session 0x02
            0x00, 0x3C,  # keep alive 60 s
            0x00, 0x02, 0x63, 0x31,  # client id "c1"
            0x00, 0x03, 0x77, 0x2F, 0x74,  # will topic "w/t"
            0x00, 0x03, 0x62, 0x79, 0x65,  # will message "bye"
            0x00, 0x01, 0x75,  # user name "u"
            0x00, 0x02, 0x70, 0x77,  # password "pw"
        ]
    )  # fmt: skip


def test_connect_user_only_persistent_session_big_keepalive():
    s = FakeStream(CONNACK_OK)
    c = make_client(s, client_id=b"dev-7", user=b"alice", keepalive=300)
    c.set_last_will(b"s", "x", qos=2)
    c.connect(clean_session=False)
    assert s.take() == bytes(
        [
            0x10, 30,  # 10 + (2+5) + (2+1) + (2+1) + (2+5)
            0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04,
            0x94,  # user 0x80 | will QoS2 0x10 | will 0x04; no password, not clean
            0x01, 0x2C,  # keep alive 300 s
            0x00, 0x05, *b"dev-7",
            0x00, 0x01, *b"s",
            0x00, 0x01, *b"x",
            0x00, 0x05, *b"alice",
        ]
    )  # fmt: skip


def test_connect_validation():
    with pytest.raises(ValueError):
        MQTTClient("c", "h", keepalive=65536)
    with pytest.raises(ValueError):
        MQTTClient("c", "h", password="pw")  # password without user (3.1.2.9)
    c = MQTTClient("c", "h")
    with pytest.raises(ValueError):
        c.set_last_will("t", "m", qos=3)
    with pytest.raises(ValueError):
        c.set_last_will("", "m")


@pytest.mark.parametrize("code", [1, 2, 3, 4, 5])
def test_connack_refused_raises_with_code(code):
    s = FakeStream(bytes([0x20, 0x02, 0x00, code]))
    c = make_client(s)
    with pytest.raises(MQTTException) as info:
        c.connect()
    assert info.value.code == code
    assert info.value.args[0] == code
    assert isinstance(info.value, OSError)
    assert s.closed


def test_connack_timeout_and_closed_connection():
    s = FakeStream()  # broker never answers: non-blocking reads return None
    c = make_client(s)
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        c.connect(timeout=0.1)
    assert info.value.errno == umqtt.ETIMEDOUT
    assert time.monotonic() - t0 < 1.0
    assert s.closed
    # peer closes right away: b"" even while polling
    s = FakeStream()
    s.read = lambda n: b""
    with pytest.raises(OSError):
        make_client(s).connect(timeout=0.1)


def test_connect_trickled_connack_and_short_writes():
    s = FakeStream(b"\x20\x02\x00\x00", trickle=True, max_write=3)
    c = make_client(s)
    c.connect(timeout=0.5)
    assert s.take()[:2] == b"\x10\x0e"


# ---------------------------------------------------------------------------
# PUBLISH / PUBACK (3.3, 3.4)


def test_publish_qos0_bytes():
    c, s = connected()
    c.publish("t", "hi")
    assert s.take() == b"\x30\x05\x00\x01t" + b"hi"
    c.publish(b"a/b", bytearray(b"\x00\xff"), retain=True)
    assert s.take() == b"\x31\x07\x00\x03a/b\x00\xff"


def test_publish_qos1_retain_bytes_and_packet_ids():
    c, s = connected(b"\x40\x02\x00\x01", b"\x40\x02\x00\x02")
    c.publish("a/b", b"on", retain=True, qos=1)
    assert s.take() == bytes([0x33, 9, 0, 3, *b"a/b", 0x00, 0x01, *b"on"])
    c.publish("a/b", b"off", qos=1)
    assert s.take() == bytes([0x32, 10, 0, 3, *b"a/b", 0x00, 0x02, *b"off"])


def test_publish_two_byte_remaining_length():
    c, s = connected()
    payload = bytes(range(200))
    c.publish("a/b", payload)
    assert s.take() == bytes([0x30, 0xCD, 0x01, 0x00, 0x03, *b"a/b"]) + payload  # 205


def test_publish_three_byte_remaining_length_qos1_retain():
    topic = b"medge/ward3/bed12/ecg"
    payload = b"\x5a" * (16384 - 2 - len(topic) - 2)  # remaining length exactly 16384
    c, s = connected(b"\x40\x02\x00\x01")
    c.publish(topic, payload, retain=True, qos=1)
    out = s.take()
    assert out[:4] == b"\x33\x80\x80\x01"
    assert out[4:6] == bytes([0, len(topic)])
    assert out[6 : 6 + len(topic)] == topic
    assert out[6 + len(topic) : 8 + len(topic)] == b"\x00\x01"
    assert out[8 + len(topic) :] == payload
    assert len(out) == 4 + 16384


def test_publish_short_writes_same_bytes():
    c, s = connected(max_write=2)
    c.publish("a/b", b"x" * 300)
    assert s.take() == bytes([0x30, 0xB1, 0x02, 0x00, 0x03, *b"a/b"]) + b"x" * 300


def test_publish_validation():
    c, s = connected()

    class Huge:  # a payload whose length alone is too big; never written
        def __len__(self):
            return 268435455

    with pytest.raises(ValueError):
        c.publish("t", Huge())
    with pytest.raises(ValueError):
        c.publish(b"x" * 65536, b"")
    with pytest.raises(ValueError):
        c.publish("t", b"", qos=2)
    assert s.take() == b""
    # largest topic is fine
    c.publish(b"x" * 65535, b"")
    assert s.take()[:6] == b"\x30\x81\x80\x04\xff\xff"  # 65537 = 0x81 0x80 0x04


def test_puback_matching_skips_unrelated_packets():
    got = []
    c, s = connected(
        b"\x40\x02\x00\x07",  # stale PUBACK for another id
        b"\xd0\x00",  # PINGRESP
        b"\x30\x06\x00\x01t" + b"abc",  # incoming QoS 0 PUBLISH -> callback
        b"\x32\x06\x00\x01u\x12\x34" + b"z",  # incoming QoS 1 PUBLISH, id 0x1234
        b"\x40\x02\x00\x01",  # our PUBACK
        trickle=True,
    )
    c.set_callback(lambda t, m: got.append((t, m)))
    c.publish("p", b"1", qos=1)
    assert got == [(b"t", b"abc"), (b"u", b"z")]
    assert s.take() == b"\x32\x06\x00\x01p\x00\x011" + b"\x40\x02\x12\x34"
    assert s.blocking


def test_packet_id_wraps_and_skips_zero():
    c, s = connected(b"\x40\x02\xff\xff", b"\x40\x02\x00\x01")
    c.pid = 65534
    c.publish("t", b"", qos=1)
    assert s.take()[5:7] == b"\xff\xff"
    c.publish("t", b"", qos=1)
    assert s.take()[5:7] == b"\x00\x01"


def test_puback_timeout_is_bounded():
    c, s = connected(timeout=0.15)
    t0 = time.monotonic()
    with pytest.raises(OSError) as info:
        c.publish("t", b"x", qos=1)
    assert info.value.errno == umqtt.ETIMEDOUT
    assert 0.1 < time.monotonic() - t0 < 1.0
    assert s.blocking  # restored after the polled wait


def test_puback_timeout_despite_stream_of_other_packets():
    c, s = connected(timeout=0.1)
    real_read = s.read

    def read(n):  # PINGRESPs keep coming, the PUBACK never does
        if not s.rx:
            s.feed(b"\xd0\x00")
        return real_read(n)

    s.read = read
    t0 = time.monotonic()
    with pytest.raises(OSError):
        c.publish("t", b"x", qos=1)
    assert time.monotonic() - t0 < 1.0


def test_peer_closes_while_waiting_for_puback():
    c, s = connected(b"\x40\x02")  # half a PUBACK, then the connection ends
    s.read = lambda n, r=s.read: r(n) or b""
    with pytest.raises(OSError) as info:
        c.publish("t", b"x", qos=1)
    assert info.value.errno == umqtt.ECONNRESET


# ---------------------------------------------------------------------------
# SUBSCRIBE / SUBACK (3.8, 3.9), incoming PUBLISH, PING, DISCONNECT


def test_subscribe_bytes_and_suback():
    c, s = connected(b"\x90\x03\x00\x01\x01", b"\x90\x03\x00\x02\x00")
    c.set_callback(lambda t, m: None)
    assert c.subscribe("a/+", qos=1) == 1
    assert s.take() == b"\x82\x08\x00\x01\x00\x03a/+\x01"
    assert c.subscribe(b"#") == 0
    assert s.take() == b"\x82\x06\x00\x02\x00\x01#\x00"


def test_subscribe_refused_and_validation():
    c, _s = connected(b"\x90\x03\x00\x01\x80")
    with pytest.raises(ValueError):
        c.subscribe("a")  # no callback set
    c.set_callback(lambda t, m: None)
    with pytest.raises(ValueError):
        c.subscribe("a", qos=2)
    with pytest.raises(ValueError):
        c.subscribe("")
    with pytest.raises(MQTTException) as info:
        c.subscribe("a")
    assert info.value.code == 0x80


def test_incoming_publish_dispatch():
    got = []
    c, s = connected(
        b"\x30\x07\x00\x03a/bhi",  # QoS 0
        b"\x31\x05\x00\x01rok",  # QoS 0 retained
        b"\x32\x08\x00\x01q\x00\x2ahey",  # QoS 1, id 42
        b"\xd0\x00",  # PINGRESP
    )
    c.set_callback(lambda t, m: got.append((t, m)))
    assert c.wait_msg() == 0x30
    assert c.wait_msg() == 0x31
    assert c.wait_msg() == 0x32
    assert s.take() == b"\x40\x02\x00\x2a"  # PUBACK after the callback
    assert c.wait_msg() is None
    assert got == [(b"a/b", b"hi"), (b"r", b"ok"), (b"q", b"hey")]


def test_check_msg():
    got = []
    c, s = connected()
    c.set_callback(lambda t, m: got.append((t, m)))
    assert c.check_msg() is None  # nothing pending: returns at once
    assert s.blocking
    s.feed(b"\x30\x04\x00\x01t!")
    assert c.check_msg() == 0x30
    assert got == [(b"t", b"!")]
    assert s.blocking


def test_peer_closed_mid_read():
    c, _s = connected(b"\x30\x07\x00\x03a")  # truncated PUBLISH, then EOF
    c.set_callback(lambda t, m: None)
    with pytest.raises(OSError):
        c.wait_msg()
    c, _s = connected()  # EOF before any byte
    with pytest.raises(OSError):
        c.wait_msg()


def test_incoming_qos2_is_refused():
    c, _s = connected(b"\x34\x05\x00\x01t\x00\x01")
    c.set_callback(lambda t, m: pytest.fail("QoS 2 must not be delivered"))
    with pytest.raises(OSError):
        c.wait_msg()


def test_ping_and_disconnect():
    c, s = connected()
    c.ping()
    assert s.take() == b"\xc0\x00"
    c.disconnect()
    assert s.take() == b"\xe0\x00"
    assert s.closed
    with pytest.raises(OSError):  # using a closed client is a network error
        c.publish("t", b"x")


def test_reconnect_closes_old_stream():
    streams = [FakeStream(CONNACK_OK), FakeStream(CONNACK_OK)]
    c = MQTTClient("c", "h", sock_factory=lambda h, p: streams.pop(0))
    c.connect()
    first = c.sock
    c.connect()
    assert first.closed and c.sock is not first


# ---------------------------------------------------------------------------
# Against a real mosquitto, with paho-mqtt 2.x on the other side

WAIT_S = 5.0


@pytest.fixture(scope="module")
def broker_port(tmp_path_factory):
    with Broker("mosquitto", data_dir=tmp_path_factory.mktemp("mosquitto"),
                persistence=False) as broker:
        yield broker.port


class Paho:
    """A paho-mqtt 2.x client with bounded blocking helpers."""

    def __init__(self, port):
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-" + uid())
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        assert self.connected.wait(WAIT_S), "paho did not connect"

    def subscribe(self, topic):
        self.subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self.subscribed.wait(WAIT_S), "paho SUBACK missing"

    def next(self):
        return self.messages.get(timeout=WAIT_S)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def paho(broker_port):
    p = Paho(broker_port)
    try:
        yield p
    finally:
        p.close()


def uid():
    return uuid.uuid4().hex[:8]


def test_real_connect_default_socket_path(broker_port):
    c = MQTTClient("dev-" + uid(), "127.0.0.1", port=broker_port, keepalive=30)
    assert c.connect(timeout=WAIT_S) is False
    assert isinstance(c.sock, umqtt._SocketStream)  # CPython adapter in use
    c.ping()
    c.sock.sock.settimeout(WAIT_S)  # bound the blocking wait (recv raises on expiry)
    assert c.wait_msg() is None  # PINGRESP
    c.disconnect()


def test_real_refused_persistent_session_without_client_id(broker_port):
    c = MQTTClient("", "127.0.0.1", port=broker_port)
    with pytest.raises(MQTTException) as info:
        c.connect(clean_session=False, timeout=WAIT_S)
    assert info.value.code == 2  # identifier rejected (3.2.2.3)


def test_real_publish_qos1_to_paho(broker_port, paho):
    topic = "medge/test/" + uid()
    c = MQTTClient("dev-" + uid(), "127.0.0.1", port=broker_port)
    c.connect(timeout=WAIT_S)
    c.publish(topic + "/status", "online", retain=True, qos=1)  # before paho subscribes
    paho.subscribe(topic + "/#")
    m = paho.next()
    assert (m.topic, m.payload, m.qos, m.retain) == (topic + "/status", b"online", 1, True)
    big = bytes(range(256)) * 80  # 20480 bytes: 3-byte remaining length
    c.publish(topic + "/vitals", big, qos=1)
    m = paho.next()
    assert (m.topic, m.payload, m.qos, m.retain) == (topic + "/vitals", big, 1, False)
    c.publish(topic + "/status", b"", retain=True, qos=1)  # clear the retained message
    paho.next()
    c.disconnect()


def test_real_paho_to_our_subscription(broker_port, paho):
    topic = "medge/cmd/" + uid()
    got = []
    c = MQTTClient("dev-" + uid(), "127.0.0.1", port=broker_port)
    c.set_callback(lambda t, m: got.append((t, m)))
    c.connect(timeout=WAIT_S)
    assert c.subscribe(topic, qos=1) == 1
    assert c.subscribe(topic + "/q0") == 0
    watchdog = threading.Timer(WAIT_S, c.sock.sock.shutdown, (socket.SHUT_RDWR,))
    watchdog.start()  # a hung wait_msg fails with OSError instead of hanging
    try:
        paho.c.publish(topic, b"\x00set rate 250", qos=1).wait_for_publish(WAIT_S)
        assert c.wait_msg() == 0x32  # QoS 1 delivery, acknowledged by us
        paho.c.publish(topic + "/q0", "qos0", qos=0).wait_for_publish(WAIT_S)
        assert c.wait_msg() == 0x30
    finally:
        watchdog.cancel()
    assert got == [(topic.encode(), b"\x00set rate 250"), (topic.encode() + b"/q0", b"qos0")]
    deadline = time.monotonic() + WAIT_S  # check_msg polling also works
    paho.c.publish(topic, b"poll", qos=1)
    while len(got) < 3 and time.monotonic() < deadline:
        c.check_msg()
        time.sleep(0.01)
    assert got[-1] == (topic.encode(), b"poll")
    c.disconnect()


def test_real_last_will_on_abrupt_close(broker_port, paho):
    topic = "medge/lwt/" + uid()
    paho.subscribe(topic)
    c = MQTTClient("dev-" + uid(), "127.0.0.1", port=broker_port, keepalive=30)
    c.set_last_will(topic, "offline", qos=1)
    c.connect(timeout=WAIT_S)
    c.publish(topic, "online", qos=1)
    assert paho.next().payload == b"online"
    c.sock.close()  # no DISCONNECT: the broker must publish the will
    m = paho.next()
    assert (m.topic, m.payload, m.qos) == (topic, b"offline", 1)


def test_real_clean_disconnect_sends_no_will(broker_port, paho):
    topic = "medge/lwt/" + uid()
    paho.subscribe(topic)
    c = MQTTClient("dev-" + uid(), "127.0.0.1", port=broker_port)
    c.set_last_will(topic, "offline")
    c.connect(timeout=WAIT_S)
    c.disconnect()
    with pytest.raises(queue.Empty):
        paho.messages.get(timeout=0.3)

"""host/services/fastpaho.py: the buffered, lean-decoding paho client that ingest
connects with receives exactly what paho's own client receives (real mosquitto)."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from host.broker.launch import Broker
from host.services.fastpaho import BufferedSocket, FastClient, ReceivedMessage

TOPIC = "medge/v1/dev/{}/vitals"
N_MIX = 400


def test_buffered_socket_returns_the_stream_byte_for_byte_in_any_read_sizes() -> None:
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(300_000))
    a, b = socket.socketpair()
    a.setblocking(False)
    sock = BufferedSocket(a)

    def send() -> None:
        pos = 0
        while pos < len(data):
            n = rng.choice((1, 3, 100, 5000, 70_000))
            b.sendall(data[pos:pos + n])
            pos += n
        b.close()

    sender = threading.Thread(target=send)
    sender.start()
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(rng.choice((1, 2, 4, 250, 100_000)))
        except BlockingIOError:
            assert sock.pending() == 0  # nothing buffered when the kernel has nothing
            time.sleep(0.001)
            continue
        if not chunk:
            break
        got += chunk
        assert sock.pending() >= 0
    sender.join()
    assert bytes(got) == data
    assert sock.fileno() == a.fileno()  # everything else is the socket's
    a.close()


@pytest.fixture
def broker(tmp_path: Path):
    with Broker("mosquitto", data_dir=tmp_path / "broker") as b:
        yield b


def _subscriber(cls: type[mqtt.Client], broker: Broker, cid: str,
                got: list[mqtt.MQTTMessage], ack: bool) -> mqtt.Client:
    client = cls(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5,
                 manual_ack=True)
    subscribed = threading.Event()

    def on_message(c, userdata, msg) -> None:
        got.append(msg)
        if ack and msg.qos == 1:
            c.ack(msg.mid, msg.qos)

    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_connect = lambda c, *a: c.subscribe("medge/v1/dev/+/+", qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 300
    client.connect(broker.host, broker.port, clean_start=False, properties=props)
    client.loop_start()
    assert subscribed.wait(10)
    return client


def _publish_mix(broker: Broker) -> list[tuple[str, bytes, int, bool]]:
    """QoS 0 and 1, retained, with and without v5 properties, empty and 200 KB
    payloads (a packet split across many reads)."""
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    rng = random.Random(3)
    sent = []
    infos = []
    for i in range(N_MIX):
        topic = TOPIC.format(f"d{i % 7}")
        size = rng.choice((0, 1, 120, 300, 4000, 200_000 if i % 97 == 0 else 50))
        payload = rng.randbytes(size)
        qos = 1 if i % 5 else 0
        props = None
        if i % 11 == 0:  # a user property: FastClient hands this packet to paho's decoder
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("k", str(i))
        infos.append(pub.publish(topic, payload, qos=qos, properties=props))
        sent.append((topic, payload, qos, False))
    for info in infos:
        info.wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()
    return sent


def _wait_for(got: list, n: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_fast_client_receives_what_paho_receives(broker: Broker) -> None:
    stock: list[mqtt.MQTTMessage] = []
    fast: list[mqtt.MQTTMessage] = []
    a = _subscriber(mqtt.Client, broker, "stock", stock, ack=True)
    b = _subscriber(FastClient, broker, "fast", fast, ack=True)
    try:
        sent = _publish_mix(broker)
        _wait_for(stock, len(sent))
        _wait_for(fast, len(sent))
    finally:
        for c in (a, b):
            c.loop_stop()
            c.disconnect()

    def view(msgs: list[mqtt.MQTTMessage]) -> list[tuple[str, bytes, int, bool]]:
        return [(m.topic, bytes(m.payload), m.qos, m.retain) for m in msgs]

    # Each QoS level keeps its order; mosquitto may pass a QoS 0 message ahead of
    # queued QoS 1 ones, so the two levels are compared apart.
    for qos in (0, 1):
        want = [m for m in sent if m[2] == qos]
        assert [m for m in view(stock) if m[2] == qos] == want
        assert [m for m in view(fast) if m[2] == qos] == want
    assert len(fast) == len(stock) == len(sent)
    lean = [m for m in fast if isinstance(m, ReceivedMessage)]
    assert len(lean) > len(sent) // 2  # the QoS 1 packets without properties: the fast path
    assert all(m.properties is None and m.qos == 1 for m in lean)
    with_props = [m for m in fast if m.properties is not None and
                  getattr(m.properties, "UserProperty", None)]
    assert len(with_props) == len(range(0, N_MIX, 11))  # paho's decoder


def test_ack_many_acknowledges_and_unacknowledged_messages_come_back(broker: Broker) -> None:
    got: list[mqtt.MQTTMessage] = []
    sub = _subscriber(FastClient, broker, "batch", got, ack=False)
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="p2", protocol=mqtt.MQTTv311)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    for i in range(300):
        pub.publish(TOPIC.format("d1"), b"%d" % i, qos=1).wait_for_publish(10)
    _wait_for(got, 300)
    assert [bytes(m.payload) for m in got] == [b"%d" % i for i in range(300)]
    # acknowledge the first 200 in one write, leave 100 unacknowledged, drop the link
    assert sub.ack_many([m.mid for m in got[:200]]) == mqtt.MQTT_ERR_SUCCESS
    time.sleep(0.3)
    sub.loop_stop()
    sub._sock_close()  # a crash: no DISCONNECT
    again: list[mqtt.MQTTMessage] = []
    sub2 = _subscriber(FastClient, broker, "batch", again, ack=True)
    _wait_for(again, 100)
    time.sleep(0.3)
    try:
        assert sorted(int(m.payload) for m in again) == list(range(200, 300))
        assert all(m.dup for m in again)  # redelivered
    finally:
        sub2.loop_stop()
        sub2.disconnect()
        pub.loop_stop()
        pub.disconnect()

"""A paho-mqtt client that receives a stream of small QoS 1 messages at a
fraction of paho's per-message cost: what ``medge ingest`` connects with.

paho-mqtt 2.x spends most of a small message's receive time on three things
(cProfile of 20,000 queued 250-byte vitals messages, MQTT v5, manual ack):

1. **Syscalls per packet**: it reads the fixed header with ``recv(1)``, each
   remaining-length byte with ``recv(1)`` and then the body, and its loop
   handles one packet per ``select()``: four or more system calls a message.
2. **MQTT v5 properties**: every PUBLISH builds a ``Properties`` object, whose
   constructor and ``unpack()`` (it walks all 27 property names with
   ``str.replace`` and ``hasattr``) cost ~26 us even when the packet carries no
   property at all, as every device message does.
3. **One PUBACK, one wake-up write**: each ``ack()`` queues a 4-byte packet and
   writes a byte to the loop's socket pair.

:class:`FastClient` is a ``paho.mqtt.client.Client`` (same API, callbacks,
reconnects, TLS, session handling) with three changes:

- the socket is wrapped in :class:`BufferedSocket`, which reads up to 64 KiB at
  a time and answers paho's small reads from that buffer; it has ``pending()``,
  the hook paho already uses for TLS sockets (bytes decrypted but not read), so
  paho's loop does not wait in ``select()`` while buffered bytes remain, and
  :meth:`FastClient.loop_read` drains the buffer in one call;
- :meth:`FastClient._handle_publish` decodes a QoS 1 PUBLISH **without
  properties** itself into a :class:`ReceivedMessage` (``properties`` and
  ``info`` are None: a stock MQTTMessage's ``info`` makes a
  ``threading.Condition`` per message) and hands everything else (QoS 0 and
  2, any property, anything malformed) to paho's own decoder, so the unusual
  cases keep paho's checks;
- :meth:`FastClient.ack_many` acknowledges a batch of packet ids with one
  queued write (the PUBACKs back to back, as on the wire).

It overrides three underscore methods of paho (``_create_socket``,
``_handle_publish``; it calls ``_packet_queue``), so ``pyproject.toml`` pins
paho-mqtt below 3 and ``tests/test_fastpaho.py`` runs it against a real
mosquitto (large payloads split across reads, redelivery, acks) and compares it
message for message with the stock client. Its effect is in ``make bench``
(``host.bench_ingest``, the ingest consumers) and docs/scaling.md (receive +
PUBACK CPU per message, stock vs this client, 10,000 queued vitals messages).
"""

from __future__ import annotations

import struct
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

__all__ = ["RECV_BYTES", "BufferedSocket", "FastClient", "ReceivedMessage"]

#: Bytes asked of the kernel per read.
RECV_BYTES = 65536
#: Packets :meth:`FastClient.loop_read` handles from the buffer before it lets
#: paho's loop run its keep-alive and write steps.
_DRAIN_MAX = 1000
_PUBACK = 0x40


class BufferedSocket:
    """A socket (plain or TLS) whose ``recv(n)`` is served from a read-ahead
    buffer; every other attribute is the wrapped socket's."""

    __slots__ = ("_buf", "_pos", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._sock.recv(max(n, RECV_BYTES))  # BlockingIOError: paho's "again"
            if not buf:
                return buf  # the peer closed the connection
            pos = 0
        end = min(pos + n, len(buf))
        self._buf, self._pos = buf, end
        return buf[pos:end]

    def pending(self) -> int:
        """Bytes received but not read yet (ours, plus a TLS socket's own)."""
        inner = getattr(self._sock, "pending", None)
        return len(self._buf) - self._pos + (inner() if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ReceivedMessage(mqtt.MQTTMessage):
    """A received QoS 1 message without properties.  ``info`` (the delivery
    state of a message *we* publish, with a ``threading.Condition`` that costs
    ~5 us to make) is None; ``properties`` is None."""

    __slots__ = ()

    def __init__(self, mid: int, topic: bytes, payload: bytes, dup: bool, retain: bool) -> None:
        self.timestamp = time.monotonic()  # paho's clock for received messages
        self.state = 0  # mqtt_ms_invalid
        self.dup = dup
        self.mid = mid
        self._topic = topic
        self.payload = payload
        self.qos = 1
        self.retain = retain
        self.info = None  # type: ignore[assignment]
        self.properties = None


class FastClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered reads, a lean decode of QoS 1
    PUBLISH packets without properties, and batched acknowledgements."""

    def _create_socket(self) -> Any:
        return BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        for _ in range(_DRAIN_MAX):
            sock = self._sock
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or sock is None or not sock.pending():
                break
            rc = super().loop_read(max_packets)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        packet = self._in_packet["packet"]
        n = len(packet)
        if self._protocol != MQTTProtocolVersion.MQTTv5 or (header & 0x06) != 0x02 or n < 2:
            return super()._handle_publish()
        end = 2 + ((packet[0] << 8) | packet[1])
        # topic, packet id (2 bytes), property length 0 (1 byte)
        if end < 3 or end + 3 > n or packet[end + 2] != 0:
            return super()._handle_publish()
        mid = (packet[end] << 8) | packet[end + 1]
        if mid == 0:
            return super()._handle_publish()
        view = memoryview(packet)
        self._handle_on_message(ReceivedMessage(mid, bytes(view[2:end]), bytes(view[end + 3:]),
                                                bool(header & 0x08), bool(header & 0x01)))
        if self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(mid)

    def ack_many(self, mids: list[int]) -> MQTTErrorCode:
        """Acknowledge the QoS 1 messages ``mids`` (``manual_ack=True``) in one write."""
        if not mids:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        packet = b"".join([struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids])
        return self._packet_queue(_PUBACK, packet, 0, 1)

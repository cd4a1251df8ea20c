"""Minimal MQTT 3.1.1 client with the API of micropython-lib's ``umqtt.simple``.

Runs unchanged on MicroPython (>= 1.22) and CPython (>= 3.9).  Packet formats
follow MQTT Version 3.1.1, OASIS Standard, 29 October 2014:

- 2.2 fixed header; 2.2.3 Remaining Length (1-4 bytes, 7 bits each, at most
  268,435,455); 1.5.3 strings and 3.1.3 binary fields carry a 2-byte length,
  so topics, client id, will message, user and password are <= 65535 bytes;
- 3.1 CONNECT (3.1.2.3 flags: user 0x80, password 0x40, will retain 0x20,
  will QoS 0x18, will 0x04, clean session 0x02; 3.1.2.10 keep alive) and
  3.2 CONNACK (3.2.2.2 session present, 3.2.2.3 return codes 1-5);
- 3.3 PUBLISH (flags: QoS << 1 | retain) and 3.4 PUBACK; 2.3.1 packet ids are
  non-zero, so they run 1..65535 and wrap to 1;
- 3.8 SUBSCRIBE (first byte 0x82) and 3.9 SUBACK (0x80 = failure);
- 3.12/3.13 PINGREQ/PINGRESP, 3.14 DISCONNECT.

The transport is injectable: ``sock_factory(server, port)`` returns a stream
with ``write(buf) -> int``, ``read(n) -> bytes`` (``b""`` at end of stream,
``None`` when non-blocking and nothing is buffered), ``setblocking(flag)``
and ``close()``.  The default factory opens a (u)socket; on CPython a small
adapter gives the socket ``read``/``write``.  Waits for CONNACK, PUBACK and
SUBACK are bounded by ``timeout`` (seconds, set in ``connect``): the stream
is polled non-blocking and ``OSError(ETIMEDOUT)`` is raised when it expires.
A closed connection raises ``OSError(ECONNRESET)``; a broker refusal raises
``MQTTException`` (an ``OSError``) carrying the return code.  ``wait_msg``
blocks without a bound, as in umqtt.simple; ``check_msg`` does not.  Messages
that arrive while waiting for an ack go to the callback right away; the
callback should not publish with QoS 1 itself (an inner wait could swallow
the outer PUBACK, which then times out).

Deliberately not implemented: QoS 2 (publish, subscribe and incoming),
UNSUBSCRIBE, several filters per SUBSCRIBE, automatic keep-alive pings (call
``ping()``), resending unacknowledged messages after a reconnect (DUP), a size
limit for incoming packets, MQTT 5, and TLS beyond passing ``ssl`` through: it
must be an SSLContext-like object, and ``ssl.wrap_socket(sock,
server_hostname=server, **ssl_params)`` is called.
"""

try:
    import utime as time  # type: ignore[import-not-found]
except ImportError:
    import time

_MICROPYTHON = hasattr(time, "ticks_ms")
if _MICROPYTHON:
    ticks_ms, ticks_add, ticks_diff = time.ticks_ms, time.ticks_add, time.ticks_diff
    sleep_ms = time.sleep_ms
else:  # CPython: a monotonic millisecond count needs no wrap-around handling

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_add(t, ms):
        return t + ms

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        time.sleep(ms / 1000)


ECONNRESET = 104  # same numbers on Linux and in MicroPython's mperrno.h
ETIMEDOUT = 110
EPROTO = 71
MAX_REMAINING = 268435455  # 2.2.3
DEFAULT_TIMEOUT = 10  # seconds
POLL_MS = 5


class MQTTException(OSError):
    """The broker refused: CONNACK return code 1-5, or 0x80 from SUBACK."""

    @property
    def code(self):
        return self.args[0]


def _bytes(s):
    return s.encode() if isinstance(s, str) else s


def _put_len(buf, i, n):
    """Write remaining length ``n`` (2.2.3) into ``buf`` at ``i``; return end index."""
    if n < 0 or n > MAX_REMAINING:
        raise ValueError("MQTT packet too large")
    while n > 0x7F:
        buf[i] = (n & 0x7F) | 0x80
        n >>= 7
        i += 1
    buf[i] = n
    return i + 1


def _put_str(out, s):
    """Append a 2-byte length-prefixed field (1.5.3) to bytearray ``out``."""
    n = len(s)
    if n > 65535:
        raise ValueError("MQTT string longer than 65535 bytes")
    out.append(n >> 8)
    out.append(n & 0xFF)
    out.extend(s)


class _SocketStream:
    """CPython only: MicroPython stream semantics (None = would block) on a socket."""

    def __init__(self, sock):
        self.sock = sock

    def read(self, n):
        return self._io(self.sock.recv, n)

    def write(self, buf):
        return self._io(self.sock.send, buf)

    def _io(self, op, arg):
        try:
            return op(arg)
        except OSError as e:  # BlockingIOError, or ssl.SSLWantReadError/WriteError
            if isinstance(e, BlockingIOError) or type(e).__name__.startswith("SSLWant"):
                return None
            raise

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def close(self):
        self.sock.close()


class MQTTClient:
    def __init__(self, client_id, server, port=0, user=None, password=None, keepalive=0,
                 ssl=None, ssl_params=None, sock_factory=None):
        if not 0 <= keepalive <= 65535:
            raise ValueError("keepalive must be 0..65535 s")
        if password is not None and not user:
            raise ValueError("password needs a user name (3.1.2.9)")
        self.client_id = _bytes(client_id)
        self.server = server
        self.port = port or (8883 if ssl else 1883)
        self.user = _bytes(user) if user else None
        self.pswd = _bytes(password) if password is not None else None
        self.keepalive = keepalive
        self.ssl = ssl
        self.ssl_params = ssl_params or {}
        self.sock_factory = sock_factory
        self.sock = None
        self.cb = None
        self.pid = 0
        self.timeout = DEFAULT_TIMEOUT
        self.lw_topic = None
        self.lw_msg = None
        self.lw_qos = 0
        self.lw_retain = False
        self._deadline = None  # ticks deadline while the stream is polled, else None
        self._body = b""  # body of the last non-PUBLISH packet read
        self._hdr = bytearray(7)  # PUBLISH: type, <= 4 length bytes, topic length
        self._hdr_mv = memoryview(self._hdr)
        self._pidbuf = bytearray(2)
        self._puback = bytearray(b"\x40\x02\0\0")

    # -- transport -----------------------------------------------------------

    def _open(self, timeout):
        if self.sock_factory is not None:
            return self.sock_factory(self.server, self.port)
        try:
            import usocket as socket  # type: ignore[import-not-found]
        except ImportError:
            import socket
        if self.ssl and not hasattr(self.ssl, "wrap_socket"):
            raise ValueError("ssl must be an SSLContext-like object")
        err = OSError(ECONNRESET, "no address for " + str(self.server))
        for ai in socket.getaddrinfo(self.server, self.port):
            if ai[1] and ai[1] != socket.SOCK_STREAM:
                continue  # CPython lists UDP/raw entries too
            s = socket.socket(ai[0], socket.SOCK_STREAM)
            try:
                if hasattr(s, "settimeout"):
                    s.settimeout(timeout)  # bounds connect and the TLS handshake
                s.connect(ai[-1])
                if self.ssl:
                    kw = {"server_hostname": self.server}
                    kw.update(self.ssl_params)
                    s = self.ssl.wrap_socket(s, **kw)
                s.setblocking(True)
            except OSError as e:
                s.close()
                err = e
                continue
            # CPython sockets (and SSLSocket.read) raise instead of returning None
            return s if _MICROPYTHON else _SocketStream(s)
        raise err

    def _later(self):
        return ticks_add(ticks_ms(), int(self.timeout * 1000))

    def _mode(self, deadline):
        """Blocking stream when ``deadline`` is None, else polled until it."""
        if (deadline is None) != (self._deadline is None):
            self.sock.setblocking(deadline is None)
        self._deadline = deadline

    def _wait(self, deadline, what, nap=True):
        """Raise OSError(ETIMEDOUT) if ``deadline`` passed, else nap a little."""
        if deadline is not None and ticks_diff(deadline, ticks_ms()) <= 0:
            raise OSError(ETIMEDOUT, "MQTT timeout waiting for " + what)
        if nap:
            sleep_ms(POLL_MS)

    def _write(self, buf):
        n = self.sock.write(buf)
        if n is not None and n == len(buf):
            return
        mv = memoryview(buf)  # short write: finish it, bounded by the timeout
        n = n or 0
        deadline = self._deadline if self._deadline is not None else self._later()
        while n < len(mv):
            k = self.sock.write(mv[n:])
            if k:
                n += k
            else:
                self._wait(deadline, "write")

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.read(n - len(data))
            if chunk is None:
                self._wait(self._deadline, "data")
            elif not chunk:
                raise OSError(ECONNRESET, "MQTT connection closed")
            else:
                data = data + chunk if data else chunk
        return data

    def _recv_len(self):
        n = sh = 0
        while sh < 28:
            b = self._read(1)[0]
            n |= (b & 0x7F) << sh
            if not b & 0x80:
                return n
            sh += 7
        raise OSError(EPROTO, "MQTT bad remaining length")

    # -- packets -------------------------------------------------------------

    def _recv(self):
        """Read one packet: dispatch PUBLISH, keep others' body in ``_body``.

        Returns the first byte, or None when a non-blocking stream had nothing.
        """
        b = self.sock.read(1)
        if b is None:
            return None
        if not b:
            raise OSError(ECONNRESET, "MQTT connection closed")
        op = b[0]
        sz = self._recv_len()
        if op & 0xF0 != 0x30:
            self._body = self._read(sz)
            return op
        qos = (op >> 1) & 3
        tl = self._read(2)
        tl = tl[0] << 8 | tl[1]
        topic = self._read(tl)
        sz -= tl + 2
        if qos:
            pid = self._read(2)
            sz -= 2
        if sz < 0 or qos == 3:
            raise OSError(EPROTO, "MQTT malformed PUBLISH")
        msg = self._read(sz)
        if qos == 2:
            raise OSError(EPROTO, "MQTT QoS 2 not supported")
        if self.cb is not None:
            self.cb(topic, msg)
        if qos == 1:  # 3.4: acknowledge after the callback returned
            self._puback[2] = pid[0]
            self._puback[3] = pid[1]
            self._write(self._puback)
        return op

    def _await(self, want, pid, what):
        """Handle packets until ``want`` (with packet id ``pid``) arrives."""
        prev = self._deadline
        deadline = self._later()
        self._mode(deadline)
        try:
            while True:
                op = self._recv()
                if op == want:
                    body = self._body
                    if len(body) < 2:
                        raise OSError(EPROTO, "MQTT short " + what)
                    if pid is None or (body[0] << 8 | body[1]) == pid:
                        return body
                self._wait(deadline, what, op is None)  # nap only if nothing came
        finally:
            self._mode(prev)

    def _recv_one(self, deadline):
        prev = self._deadline
        self._mode(deadline)
        try:
            op = self._recv()
        finally:
            self._mode(prev)
        return None if op == 0xD0 else op  # umqtt.simple hides PINGRESP

    def _send(self, first, body):
        """Write fixed header + ``body`` in one write (no Nagle stall between)."""
        hdr = bytearray(5)
        hdr[0] = first
        n = _put_len(hdr, 1, len(body))
        self._write(hdr[:n] + body)

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1  # 1..65535, never 0 (2.3.1)
        return self.pid

    # -- API -----------------------------------------------------------------

    def set_callback(self, f):
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0):
        if qos not in (0, 1, 2):
            raise ValueError("will QoS must be 0, 1 or 2")
        topic = _bytes(topic)
        if not topic:
            raise ValueError("will topic is empty")
        self.lw_topic = topic
        self.lw_msg = _bytes(msg)
        self.lw_qos = qos
        self.lw_retain = retain

    def connect(self, clean_session=True, timeout=None):
        """Open the connection, send CONNECT, return CONNACK's session-present flag."""
        if timeout is not None:
            self.timeout = timeout
        pkt = bytearray(b"\x00\x04MQTT\x04\x00\x00\x00")  # 3.1.2.1-3.1.2.10
        pkt[7] = (0x02 if clean_session else 0) | (0x80 if self.user else 0)
        pkt[8] = self.keepalive >> 8
        pkt[9] = self.keepalive & 0xFF
        _put_str(pkt, self.client_id)
        if self.lw_topic:
            pkt[7] |= 0x04 | self.lw_qos << 3 | (0x20 if self.lw_retain else 0)
            _put_str(pkt, self.lw_topic)
            _put_str(pkt, self.lw_msg)
        if self.user:
            _put_str(pkt, self.user)
            if self.pswd is not None:
                pkt[7] |= 0x40
                _put_str(pkt, self.pswd)
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self._deadline = None
        self.sock = self._open(self.timeout)
        try:
            self._send(0x10, pkt)
            body = self._await(0x20, None, "CONNACK")
            if body[1]:
                raise MQTTException(body[1])
            return bool(body[0] & 1)
        except BaseException:
            self.sock.close()
            raise

    def disconnect(self):
        try:
            self._write(b"\xe0\0")
        finally:
            self.sock.close()

    def ping(self):
        self._write(b"\xc0\0")

    def publish(self, topic, msg, retain=False, qos=0):
        if qos != 0 and qos != 1:
            raise ValueError("QoS 2 is not supported")
        topic = _bytes(topic)
        msg = _bytes(msg)
        tl = len(topic)
        if tl > 65535:
            raise ValueError("MQTT topic longer than 65535 bytes")
        hdr = self._hdr
        hdr[0] = 0x30 | qos << 1 | (1 if retain else 0)
        i = _put_len(hdr, 1, 2 + tl + len(msg) + (2 if qos else 0))
        hdr[i] = tl >> 8
        hdr[i + 1] = tl & 0xFF
        self._write(self._hdr_mv[: i + 2])
        self._write(topic)
        if qos:
            pid = self._next_pid()
            self._pidbuf[0] = pid >> 8
            self._pidbuf[1] = pid & 0xFF
            self._write(self._pidbuf)
        self._write(msg)
        if qos:
            self._await(0x40, pid, "PUBACK")

    def subscribe(self, topic, qos=0):
        """Subscribe to one filter; return the granted QoS."""
        if self.cb is None:
            raise ValueError("set_callback() before subscribe()")
        if qos != 0 and qos != 1:
            raise ValueError("QoS 2 is not supported")
        topic = _bytes(topic)
        if not topic:
            raise ValueError("empty topic filter")
        pid = self._next_pid()
        pkt = bytearray(2)
        pkt[0] = pid >> 8
        pkt[1] = pid & 0xFF
        _put_str(pkt, topic)
        pkt.append(qos)
        self._send(0x82, pkt)  # 3.8.1: reserved flag bits 0010
        body = self._await(0x90, pid, "SUBACK")
        if len(body) < 3 or body[2] == 0x80:
            raise MQTTException(0x80)
        return body[2]

    def wait_msg(self):
        """Block for one packet and handle it; PUBLISH goes to the callback.

        Returns the packet's first byte (0x30-0x3F for PUBLISH), None for PINGRESP.
        """
        return self._recv_one(None)

    def check_msg(self):
        """Like wait_msg, but return None at once when nothing is pending."""
        return self._recv_one(self._later())  # a packet that has begun must finish

"""MQTT link on CPython through paho-mqtt 2.x (Raspberry Pi, simulator).

Each connection is a fresh ``paho.mqtt.client.Client`` with its own network
thread.  paho's automatic reconnect and its internal re-send queue are *not*
used: the device's outbox already re-sends unacknowledged messages after a
reconnect, and a second re-send layer would only multiply duplicates and
confuse tokens.  Reconnect timing (capped exponential backoff) lives in the
device loop so that it is the same on every platform.

:meth:`PahoLink.drop` cuts the connection the way a power cut or a pulled
cable does (no MQTT DISCONNECT: the broker publishes the will), for fault
tests and the simulator; ``MemoryLink.drop`` is the in-memory counterpart.

Credentials: ``username``/``password`` are sent in CONNECT (the broker's account;
with medge's mosquitto config the account's name is also the session's client id).
``tls`` is a dict with ``ca_file`` (the CA that signed the broker's certificate:
the broker is verified, host name included) and optionally ``cert_file`` and
``key_file`` (this device's client certificate).  A refused CONNECT (wrong password,
unknown account) is logged with its reason code only; no credential is logged.
"""

import logging
import socket
import threading

import paho.mqtt.client as mqtt

from firmware.net.commands import INBOX_MAX

log = logging.getLogger(__name__)


class PahoLink:
    def __init__(self, host, port, client_id, keepalive_s=30, connect_timeout_s=5.0,
                 username=None, password=None, tls=None):
        if password is not None and username is None:
            raise ValueError("a password needs a username")
        self.host = host
        self.port = port
        self.client_id = client_id
        self.username = username
        self._password = password
        self.tls = dict(tls) if tls else None
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self._client = None
        self._connected = threading.Event()
        self._answered = threading.Event()  # a CONNACK came, accepted or refused
        self._refusal = None
        self._acked = []
        self._inbox = []  # (topic, payload) received, for messages()
        self.inbox_dropped = 0  # received while INBOX_MAX were waiting
        self._lock = threading.Lock()

    # paho callbacks (run on paho's network thread) -------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if client is self._client and not reason_code.is_failure:
            self._connected.set()
        else:
            self._refusal = str(reason_code)
            log.warning("%s: connect refused: %s", self.client_id, reason_code)
        if client is self._client:
            self._answered.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if client is self._client:
            self._connected.clear()
        # Stop paho's own reconnect loop: the device decides when to reconnect.
        client.disconnect()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if client is self._client:
            with self._lock:
                self._acked.append(mid)

    def _on_message(self, client, userdata, msg):
        if client is self._client:
            with self._lock:
                if len(self._inbox) < INBOX_MAX:
                    self._inbox.append((msg.topic, bytes(msg.payload)))
                else:
                    self.inbox_dropped += 1

    # link surface -----------------------------------------------------------
    def connect(self, will_topic, will_payload):
        self._close()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.will_set(will_topic, will_payload, qos=1, retain=True)
        if self.username is not None:
            client.username_pw_set(self.username, self._password)
        if self.tls is not None:
            client.tls_set(ca_certs=self.tls.get("ca_file"), certfile=self.tls.get("cert_file"),
                           keyfile=self.tls.get("key_file"))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        self._answered.clear()
        self._refusal = None
        with self._lock:
            self._acked = []
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive_s)
        except OSError:  # ssl.SSLError is one
            self._client = None
            raise
        client.loop_start()
        self._answered.wait(self.connect_timeout_s)
        if not self._connected.is_set():
            refusal = self._refusal
            self._close()
            if refusal is not None:
                raise OSError("%s:%d refused the connection: %s" % (self.host, self.port,
                                                                     refusal))
            raise OSError("no CONNACK from %s:%d" % (self.host, self.port))

    def connected(self):
        return self._connected.is_set()

    def publish(self, topic, payload, retain):
        client = self._client
        if client is None or not self._connected.is_set():
            raise OSError("not connected")
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError("publish failed: %s" % mqtt.error_string(info.rc))
        return info.mid

    def poll(self):
        with self._lock:
            acked = self._acked
            self._acked = []
        return acked

    def subscribe(self, topic):
        """Receive ``topic`` (QoS 1) on this connection; see :meth:`messages`."""
        client = self._client
        if client is None or not self._connected.is_set():
            raise OSError("not connected")
        rc, _mid = client.subscribe(topic, qos=1)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError("subscribe failed: %s" % mqtt.error_string(rc))

    def messages(self):
        """The ``(topic, payload bytes)`` received since the last call."""
        with self._lock:
            got = self._inbox
            self._inbox = []
        return got

    def disconnect(self):
        client = self._client
        if client is not None and self._connected.is_set():
            client.disconnect()
        self._close()

    def drop(self):
        """Cut the connection without an MQTT DISCONNECT: the TCP socket is shut
        down under paho, so the broker sees it die and publishes the will.
        Unacknowledged publishes stay unacknowledged; :meth:`connect` starts over."""
        client = self._client
        self._client = None
        self._connected.clear()
        if client is None:
            return
        sock = client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            client.loop_stop()
        except Exception:  # paho may complain about the dead socket
            pass
        try:
            sock = client.socket()
            if sock is not None:
                sock.close()
        except OSError:
            pass

    def _close(self):
        client = self._client
        self._client = None
        self._connected.clear()
        if client is not None:
            client.disconnect()
            client.loop_stop()

"""MQTT link on MicroPython through the umqtt-compatible core in firmware/net/mqtt_client.py.

umqtt's QoS 1 ``publish`` blocks until the broker's PUBACK arrives (bounded),
so a publish that returns has already been acknowledged: its token is handed
back by the next :meth:`poll`.  Keepalive pings are sent from :meth:`poll`
when half the keepalive period has passed without traffic.

Credentials: ``user``/``password`` go into CONNECT.  TLS where the port has it:
``ssl`` is an SSLContext-like object (MicroPython's ``ssl.SSLContext`` with the CA,
and the client certificate loaded by the caller), passed to the core, which wraps
the socket; ports without ``ssl`` run without it.
"""

from firmware.hw.compat import ticks_diff, ticks_ms
from firmware.net.commands import INBOX_MAX
from firmware.net.mqtt_client import MQTTClient


class UmqttLink:
    def __init__(self, server, port, client_id, keepalive_s=30, sock_factory=None,
                 user=None, password=None, ssl=None):
        self.server = server
        self.port = port
        self.client_id = client_id
        self.user = user
        self._password = password
        self.ssl = ssl
        self.keepalive_s = keepalive_s
        self.sock_factory = sock_factory
        self._client = None
        self._acked = []
        self._inbox = []  # (topic, payload) received, for messages()
        self.inbox_dropped = 0
        self._next_token = 1
        self._last_io = 0

    def _on_message(self, topic, msg):
        if len(self._inbox) < INBOX_MAX:
            self._inbox.append((topic.decode() if isinstance(topic, bytes) else topic,
                                bytes(msg)))
        else:
            self.inbox_dropped += 1

    def connect(self, will_topic, will_payload):
        self._close()
        client = MQTTClient(
            self.client_id,
            self.server,
            port=self.port,
            user=self.user,
            password=self._password,
            keepalive=self.keepalive_s,
            ssl=self.ssl,
            sock_factory=self.sock_factory,
        )
        client.set_last_will(will_topic, will_payload, retain=True, qos=1)
        client.set_callback(self._on_message)
        client.connect(clean_session=True)
        self._client = client
        self._acked = []
        self._inbox = []
        self._last_io = ticks_ms()

    def connected(self):
        return self._client is not None

    def publish(self, topic, payload, retain):
        if self._client is None:
            raise OSError("not connected")
        try:
            self._client.publish(topic, payload, retain, 1)
        except OSError:
            self._close()
            raise
        token = self._next_token
        self._next_token += 1
        self._acked.append(token)
        self._last_io = ticks_ms()
        return token

    def poll(self):
        client = self._client
        if client is not None:
            try:
                client.check_msg()
                if ticks_diff(ticks_ms(), self._last_io) > self.keepalive_s * 500:
                    client.ping()
                    self._last_io = ticks_ms()
            except OSError:
                self._close()
        acked = self._acked
        self._acked = []
        return acked

    def subscribe(self, topic):
        """Receive ``topic`` (QoS 1): blocks (bounded) for the SUBACK."""
        if self._client is None:
            raise OSError("not connected")
        try:
            self._client.subscribe(topic, 1)
        except OSError:
            self._close()
            raise
        self._last_io = ticks_ms()

    def messages(self):
        """The ``(topic, payload bytes)`` received since the last call (by :meth:`poll`)."""
        got = self._inbox
        self._inbox = []
        return got

    def disconnect(self):
        if self._client is not None:
            try:
                self._client.disconnect()
            except OSError:
                pass
        self._close()

    def _close(self):
        client = self._client
        self._client = None
        if client is not None:
            try:
                client.sock.close()
            except (OSError, AttributeError):
                pass

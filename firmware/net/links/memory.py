"""In-memory MQTT link for tests: records what the device publishes.

Behaves like a broker connection that acknowledges every QoS 1 publish at the
next :meth:`poll`.  Tests can refuse connections (``online = False``) or cut
the current one (:meth:`drop`) to exercise the outbox and reconnect logic.
"""


class MemoryLink:
    def __init__(self):
        self.online = True  # False: connect() is refused, as with a broker outage
        self.published = []  # (topic, payload bytes, retain) accepted by the "broker"
        self.will = None
        self.connects = 0
        self._connected = False
        self._pending = []
        self._next_token = 1

    def connect(self, will_topic, will_payload):
        if not self.online:
            raise OSError("memory link: broker offline")
        self.will = (will_topic, will_payload)
        self._connected = True
        self._pending = []
        self.connects += 1

    def connected(self):
        return self._connected

    def publish(self, topic, payload, retain):
        if not self._connected:
            raise OSError("memory link: not connected")
        token = self._next_token
        self._next_token += 1
        self.published.append((topic, payload, retain))
        self._pending.append(token)
        return token

    def poll(self):
        if not self._connected:
            return []
        acked = self._pending
        self._pending = []
        return acked

    def drop(self):
        """Cut the connection: un-acked publishes stay unacknowledged."""
        self._connected = False
        self._pending = []

    def disconnect(self):
        self._connected = False

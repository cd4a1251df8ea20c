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
        self.subscriptions = []  # topics subscribed on the current connection
        self.inbox = []  # (topic, payload) a test delivers; taken by messages()

    def connect(self, will_topic, will_payload):
        if not self.online:
            raise OSError("memory link: broker offline")
        self.will = (will_topic, will_payload)
        self._connected = True
        self._pending = []
        self.subscriptions = []
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

    def subscribe(self, topic):
        if not self._connected:
            raise OSError("memory link: not connected")
        self.subscriptions.append(topic)

    def messages(self):
        """What a test put in :attr:`inbox` for a subscribed topic, once."""
        if not self._connected:
            return []
        got = [m for m in self.inbox if m[0] in self.subscriptions]
        self.inbox = [m for m in self.inbox if m[0] not in self.subscriptions]
        return got

    def drop(self):
        """Cut the connection: un-acked publishes stay unacknowledged."""
        self._connected = False
        self._pending = []

    def disconnect(self):
        self._connected = False

"""MQTT link adapters: the one place the device loop meets a real MQTT client.

Every adapter has the same small surface, used by :mod:`firmware.device`:

``connect(will_topic, will_payload)``
    Open a clean MQTT session with a retained QoS 1 last will; raise OSError
    on failure (refused, timeout, CONNACK error).
``connected() -> bool``
``publish(topic, payload, retain) -> token``
    Send a QoS 1 PUBLISH; the token comes back from :meth:`poll` once the
    broker's PUBACK arrives.  Raise OSError when the connection is gone.
``poll() -> list``
    Service the connection; return the tokens acknowledged since last call.
``disconnect()``
``subscribe(topic)`` and ``messages() -> list`` (optional)
    Receive ``topic`` at QoS 1 on this connection (subscribed again after each
    connect); ``messages`` returns the ``(topic, payload bytes)`` pairs received
    since the last call (at most :data:`firmware.net.commands.INBOX_MAX` wait;
    more are dropped and counted in ``inbox_dropped``).  The device's commands
    arrive this way.

Which adapter runs is decided at start-up (:func:`firmware.main.make_link`):
``paho.PahoLink`` on CPython (paho-mqtt 2.x), ``umqtt.UmqttLink`` on
MicroPython (our umqtt-compatible core in :mod:`firmware.net.mqtt_client`), and
``memory.MemoryLink`` in tests.
"""

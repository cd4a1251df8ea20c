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

Which adapter runs is decided at start-up (:func:`firmware.main.make_link`):
``paho.PahoLink`` on CPython (paho-mqtt 2.x), ``umqtt.UmqttLink`` on
MicroPython (our umqtt-compatible core in :mod:`firmware.net.mqtt_client`), and
``memory.MemoryLink`` in tests.
"""

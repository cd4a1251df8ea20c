"""A paho-mqtt link without a network thread, for big simulated fleets.

``firmware.net.links.paho.PahoLink`` gives each connection its own paho network
thread, which waits in ``select.select``: with more than ~300 connections in
one process the file descriptors pass ``FD_SETSIZE`` (1024) and paho's
thread fails (``ValueError: filedescriptor out of range in select()``), and
hundreds of threads fight over the GIL.  :class:`PolledPahoLink` has the same
link surface (``firmware.net.links``) but does all of paho's I/O in the caller's
thread through paho's external-loop API: a publish is written to the socket
at once (``loop_write``), and :meth:`poll` (called by the device loop on
every step) reads whatever arrived (``loop_read`` on the non-blocking
socket), sends keep-alives (``loop_misc``) and collects PUBACKs.  The MQTT
session, will, QoS 1 and reconnect semantics are those of ``PahoLink``.
"""

from __future__ import annotations

import logging
import select
import time
from typing import Any

import paho.mqtt.client as mqtt

from firmware.net.commands import INBOX_MAX

log = logging.getLogger(__name__)

__all__ = ["PolledPahoLink"]

_MISC_PERIOD_S = 1.0


class PolledPahoLink:
    def __init__(self, host: str, port: int, client_id: str, keepalive_s: int = 30,
                 connect_timeout_s: float = 5.0, username: str | None = None,
                 password: str | None = None) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.username = username
        self._password = password
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self._client: Any = None
        self._connected = False
        self._acked: list[int] = []
        self._inbox: list[tuple[str, bytes]] = []
        self.inbox_dropped = 0
        self._next_misc = 0.0

    # paho callbacks (run in this thread, inside loop_read) -----------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is self._client and not reason_code.is_failure:
            self._connected = True
        else:
            log.warning("%s: connect refused: %s", self.client_id, reason_code)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if client is self._client:
            self._connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if client is self._client:
            self._acked.append(mid)

    def _on_message(self, client, userdata, msg) -> None:
        if client is self._client:
            if len(self._inbox) < INBOX_MAX:
                self._inbox.append((msg.topic, bytes(msg.payload)))
            else:
                self.inbox_dropped += 1

    # link surface -------------------------------------------------------------------
    def connect(self, will_topic: str, will_payload: bytes) -> None:
        self._close()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             clean_session=True, protocol=mqtt.MQTTv311)
        client.will_set(will_topic, will_payload, qos=1, retain=True)
        if self.username is not None:
            client.username_pw_set(self.username, self._password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        self._acked = []
        self._inbox = []
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive_s)
        except OSError:
            self._client = None
            raise
        sock = client.socket()
        poller = select.poll()  # any fd number, unlike select.select
        poller.register(sock, select.POLLIN)
        deadline = time.monotonic() + self.connect_timeout_s
        while not self._connected:
            left = deadline - time.monotonic()
            if left <= 0 or self._client is None:
                self._close()
                raise OSError(f"no CONNACK from {self.host}:{self.port}")
            if client.want_write():
                client.loop_write()
            if poller.poll(min(left, 0.1) * 1000):
                if client.loop_read() != mqtt.MQTT_ERR_SUCCESS and not self._connected:
                    self._close()
                    raise OSError(f"connection to {self.host}:{self.port} failed")
        self._next_misc = time.monotonic() + _MISC_PERIOD_S

    def connected(self) -> bool:
        return self._connected

    def publish(self, topic: str, payload: bytes, retain: bool) -> int:
        client = self._client
        if client is None or not self._connected:
            raise OSError("not connected")
        info = client.publish(topic, payload, qos=1, retain=retain)  # written at once
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"publish failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def poll(self) -> list[int]:
        client = self._client
        if client is not None:
            if client.want_write():
                client.loop_write()
            client.loop_read()  # non-blocking socket: returns at once when nothing came
            now = time.monotonic()
            if now >= self._next_misc:
                self._next_misc = now + _MISC_PERIOD_S
                client.loop_misc()
            if client.socket() is None:
                self._connected = False
        acked, self._acked = self._acked, []
        return acked

    def subscribe(self, topic: str) -> None:
        """Receive ``topic`` (QoS 1); the SUBSCRIBE goes out with the next poll."""
        client = self._client
        if client is None or not self._connected:
            raise OSError("not connected")
        rc, _mid = client.subscribe(topic, qos=1)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise OSError(f"subscribe failed: {mqtt.error_string(rc)}")

    def messages(self) -> list[tuple[str, bytes]]:
        got, self._inbox = self._inbox, []
        return got

    def disconnect(self) -> None:
        client = self._client
        if client is not None and self._connected:
            client.disconnect()
        self._close()

    def drop(self) -> None:
        """Abort the TCP connection without DISCONNECT (the broker sends the will)."""
        client = self._client
        self._client = None
        self._connected = False
        if client is not None:
            sock = client.socket()
            if sock is not None:
                sock.close()

    def _close(self) -> None:
        client = self._client
        self._client = None
        self._connected = False
        if client is not None:
            try:
                client.disconnect()
            except OSError:
                pass
            sock = client.socket()
            if sock is not None:
                sock.close()

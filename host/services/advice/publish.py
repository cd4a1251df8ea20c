"""Alerts to the bedside: each alert opened, escalated or resolved is published to
the topic of the device on the patient, ``medge/v1/dev/{device_id}/alert`` (QoS 1,
not retained), so the device can show it.  Only pseudonymous ids travel.

Message (v1, host -> device; schema ``host/schemas/v1/alert.schema.json``)::

    {"v": 1, "type": "alert", "device_id": "bed-12", "alert_uid": "...",
     "patient_id": "p-0001",
     "kind": "news2", "severity": "medium", "state": "open", "ts_ms": ...,
     "text": "NEWS2 5: medium risk ..."}

``state``: open, acknowledged or resolved (the stored alert's state);
``text`` at most :data:`TEXT_MAX` characters.  Optional (added compatibly: a
message without them is still valid): ``event``, why this message was sent
(``open``, ``escalate``, ``remind``: still open and not acknowledged after the
reminder interval, ``ack``, ``resolve``; :data:`EVENTS`), and ``event_ms``, when.
"""

from __future__ import annotations

import json
import threading
from typing import Any

__all__ = ["EVENTS", "TEXT_MAX", "AlertPublisher", "alert_message", "alert_topic"]

TEXT_MAX = 500
#: Values of the message's ``event`` (host/schemas/v1/alert.schema.json).
EVENTS = ("open", "escalate", "remind", "ack", "resolve")


def alert_topic(device_id: str) -> str:
    return f"medge/v1/dev/{device_id}/alert"


def alert_message(device_id: str, alert: dict[str, Any]) -> dict[str, Any]:
    """The wire form of one stored alert (:func:`host.services.advice.records.list_alerts`)
    for the device ``device_id``; the alert's ``event``/``event_ms``, when given, go
    along."""
    cond = (alert.get("detail") or {}).get("condition") or {}
    msg = {"v": 1, "type": "alert", "device_id": device_id, "alert_uid": alert["alert_uid"],
           "patient_id": alert["patient_id"], "kind": alert["kind"],
           "severity": alert["severity"], "state": alert["state"],
           "ts_ms": alert["ts_ms"], "text": str(cond.get("text", alert["kind"]))[:TEXT_MAX]}
    if alert.get("event") in EVENTS:
        msg["event"] = alert["event"]
        if isinstance(alert.get("event_ms"), int):
            msg["event_ms"] = alert["event_ms"]
    return msg


class AlertPublisher:
    """A paho 2.x client publishing alert messages at QoS 1."""

    def __init__(self, host: str, port: int, *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self.timeout_s = timeout_s
        self._connected = threading.Event()
        # A broker with accounts refuses any client id but the username.
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=client_id or username or "medge-advice")
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = lambda _c, _u, _f, rc, _p: (not rc.is_failure) and self._connected.set()
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self.client = c
        if not self._connected.wait(timeout_s):
            self.close()
            raise OSError(f"cannot connect to the broker at {host}:{port}")
        self.sent = 0

    def publish(self, device_id: str, alert: dict[str, Any]) -> None:
        payload = json.dumps(alert_message(device_id, alert), separators=(",", ":"))
        info = self.client.publish(alert_topic(device_id), payload, qos=1)
        info.wait_for_publish(self.timeout_s)
        self.sent += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

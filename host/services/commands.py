"""Commands to devices: recorded, published, answered (``medge fleet cmd``).

A command is built (:func:`command_message`, checked against the v1 ``cmd``
schema), recorded with its sender in the ``commands`` table and the audit log
(``command.send``) in one transaction (:func:`record`), then published at QoS 1
on the device's ``cmd`` topic by a host account (:class:`CommandClient`), which
subscribes to the device's ``ack`` topic first and waits, bounded, for the
answer with the same ``cmd_id``.  The device acts on a ``cmd_id`` once
(firmware/net/commands.py), so sending the same message again is safe.

Where answers live: an ``ack`` is a device message like any other, stored by
ingest in ``messages`` (type ``ack``); :func:`list_commands` joins the recorded
commands with them, so a command is ``ok``, ``rejected`` or ``failed`` (the
device's answer), ``unanswered`` or ``expired`` (no answer, and past its
``expires_ms``).  The table ``command_acks`` of schema 4 stays unused: one home
per fact.

Devices have clean sessions: a command sent while a device is offline is not
delivered and stays ``unanswered`` (sending it again later is safe).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from host.services import audit
from host.services.messages import Accepted, check, schema_error
from host.services.store import now_ms, transaction

#: How long a command stays valid by default (the device rejects it after), s.
DEFAULT_EXPIRES_S = 60.0


class CommandError(ValueError):
    """A command that cannot be sent (bad name, args or device)."""


def cmd_topic(device_id: str) -> str:
    return f"medge/v1/dev/{device_id}/cmd"


def ack_topic(device_id: str) -> str:
    return f"medge/v1/dev/{device_id}/ack"


def new_cmd_id(ts_ms: int) -> str:
    """``c-<ms>-<8 hex>``: unique, sortable by time, inside the schema's pattern."""
    return f"c-{ts_ms}-{secrets.token_hex(4)}"


def command_message(device_id: str, name: str, args: dict[str, Any], *, ts_ms: int,
                    expires_ms: int | None, cmd_id: str | None = None) -> dict[str, Any]:
    """The wire form of one command, checked against the v1 ``cmd`` schema."""
    msg: dict[str, Any] = {"v": 1, "type": "cmd", "device_id": device_id,
                           "cmd_id": cmd_id or new_cmd_id(ts_ms), "ts_ms": ts_ms,
                           "name": name, "args": args}
    if expires_ms is not None:
        msg["expires_ms"] = expires_ms
    error = schema_error("cmd", msg)
    if error is not None:
        raise CommandError(error)
    return msg


def record(store: Any, msg: dict[str, Any], actor: str, *,
           summary: dict[str, Any] | None = None, audited: bool = True) -> None:
    """The command and its audit row, in one transaction, before it is sent.
    ``summary`` replaces the args in the record (a model chunk's data is not kept);
    ``audited=False`` for the steps of an audited whole (an update campaign)."""
    args = msg["args"] if summary is None else summary
    with transaction(store) as db:
        db.execute("INSERT INTO commands (command_id, device_id, kind, body, created_ms, "
                   "created_by, sent_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (msg["cmd_id"], msg["device_id"], msg["name"], json.dumps({"args": args}),
                    msg["ts_ms"], actor, None, msg.get("expires_ms")))
        if audited:
            audit.record(store, actor, "command.send", msg["device_id"], None,
                         {"cmd_id": msg["cmd_id"], "name": msg["name"], "args": args})


def mark_sent(store: Any, cmd_id: str, sent_ms: int) -> None:
    with transaction(store) as db:
        db.execute("UPDATE commands SET sent_ms = ? WHERE command_id = ?", (sent_ms, cmd_id))


def send_and_wait(store: Any, client: CommandClient, device_id: str, name: str,
                  args: dict[str, Any], actor: str, *, wait_s: float, expires_s: float,
                  summary: dict[str, Any] | None = None, audited: bool = True
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Build, record, publish one command and wait for its ack: ``(message, ack or
    None)``.  ``client`` must already :meth:`~CommandClient.watch` the device."""
    now = now_ms()
    msg = command_message(device_id, name, args, ts_ms=now,
                          expires_ms=now + int(expires_s * 1000))
    record(store, msg, actor, summary=summary, audited=audited)
    client.send(msg)
    mark_sent(store, msg["cmd_id"], now_ms())
    return msg, client.wait_ack(msg["cmd_id"], wait_s)


def stored_acks(store: Any, device_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The first stored ack (lowest seq) of each cmd_id, from ``messages``."""
    sql = "SELECT payload FROM messages WHERE type = 'ack'"
    params: list[Any] = []
    if device_id is not None:
        sql += " AND device_id = ?"
        params.append(device_id)
    out: dict[str, dict[str, Any]] = {}
    for (payload,) in store.db.execute(sql + " ORDER BY seq", params).fetchall():
        try:
            doc = json.loads(payload)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("cmd_id"), str):
            out.setdefault(doc["cmd_id"], doc)
    return out


@dataclass(frozen=True)
class CommandRow:
    cmd_id: str
    device_id: str
    name: str
    args: dict[str, Any]
    created_ms: int
    created_by: str | None
    sent_ms: int | None
    expires_ms: int | None
    status: str  # ok | rejected | failed | unanswered | expired
    reason: str | None
    data: dict[str, Any] | None
    answered_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status_of(ack: dict[str, Any] | None, expires_ms: int | None, now: int) -> str:
    if ack is not None:
        return str(ack["result"])
    if expires_ms is not None and now > expires_ms:
        return "expired"
    return "unanswered"


def list_commands(store: Any, device_id: str | None = None, *, limit: int = 50,
                  now: int | None = None) -> list[CommandRow]:
    """The newest ``limit`` commands (of one device), newest first, with their answers."""
    now = now_ms() if now is None else now
    sql = ("SELECT command_id, device_id, kind, body, created_ms, created_by, sent_ms, "
           "expires_ms FROM commands")
    params: list[Any] = []
    if device_id is not None:
        sql += " WHERE device_id = ?"
        params.append(device_id)
    rows = store.db.execute(sql + " ORDER BY created_ms DESC, command_id DESC LIMIT ?",
                            [*params, limit]).fetchall()
    acks = stored_acks(store, device_id)
    out = []
    for cmd_id, dev, name, body, created, by, sent, expires in rows:
        ack = acks.get(cmd_id)
        try:
            args = json.loads(body).get("args", {})
        except (ValueError, AttributeError):
            args = {}
        out.append(CommandRow(cmd_id, dev, name, args, int(created), by,
                              None if sent is None else int(sent),
                              None if expires is None else int(expires),
                              status_of(ack, expires, now),
                              None if ack is None else ack.get("reason"),
                              None if ack is None else ack.get("data"),
                              None if ack is None else int(ack["ts_ms"])))
    return out


class CommandClient:
    """A paho 2.x host client: subscribes to a device's acks, publishes its commands at
    QoS 1 and waits for the answers (``username`` is also the client id: a broker with
    accounts refuses any other)."""

    def __init__(self, host: str, port: int, *, username: str | None = None,
                 password: str | None = None, timeout_s: float = 10.0) -> None:
        import paho.mqtt.client as mqtt

        self.timeout_s = timeout_s
        self._connected = threading.Event()
        self._refused: str | None = None
        self._subacked: set[int] = set()  # SUBSCRIBE message ids the broker granted
        self._acks: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self.rejected = 0  # ack topic messages that failed validation
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                        client_id=username or f"medge-cmd-{secrets.token_hex(4)}")
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.connect(host, port, keepalive=30)
        c.loop_start()
        self.client = c
        if not self._connected.wait(timeout_s) or self._refused is not None:
            self.close()
            why = f"refused: {self._refused}" if self._refused else "no answer"
            raise OSError(f"cannot connect to the broker at {host}:{port} ({why})")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            self._refused = str(rc)
        self._connected.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with self._cond:  # may come before subscribe() has returned the mid
            self._subacked.add(mid)
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        got = check(msg.topic, bytes(msg.payload))
        with self._cond:
            if isinstance(got, Accepted) and got.msg_type == "ack":
                self._acks.setdefault(got.payload["cmd_id"], got.payload)
                self._cond.notify_all()
            else:
                self.rejected += 1

    def watch(self, device_id: str) -> None:
        """Subscribe to the device's acks (before sending, so none is missed)."""
        rc, mid = self.client.subscribe(ack_topic(device_id), qos=1)
        if rc != 0:
            raise OSError(f"subscribe to {ack_topic(device_id)} failed ({rc})")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacked, self.timeout_s):
                raise OSError(f"no SUBACK for {ack_topic(device_id)}")

    def send(self, msg: dict[str, Any]) -> None:
        payload = json.dumps(msg, separators=(",", ":"))
        info = self.client.publish(cmd_topic(msg["device_id"]), payload, qos=1)
        info.wait_for_publish(self.timeout_s)
        if not info.is_published():
            raise OSError(f"the broker did not acknowledge the command {msg['cmd_id']}")

    def wait_ack(self, cmd_id: str, timeout_s: float) -> dict[str, Any] | None:
        with self._cond:
            self._cond.wait_for(lambda: cmd_id in self._acks, timeout_s)
            return self._acks.get(cmd_id)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

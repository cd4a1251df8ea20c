"""Embedded pure-Python MQTT broker (amqtt 0.11/0.12) for medge.

Run by :class:`host.broker.launch.Broker` as a child process when mosquitto is not installed::

    python -m host.broker.embedded --host 127.0.0.1 --port 1883 [--data-dir DIR]

It listens on ``host:port`` only (TCP, no websocket listener), publishes no ``$SYS``
topics, lets every client in (development default, like mosquitto's
``allow_anonymous true``) and shuts down cleanly on SIGTERM/SIGINT, or when the
parent process given by ``--parent-pid`` goes away.

Persistent sessions (checked against amqtt 0.12.1, see tests/test_broker.py):

* amqtt keeps a ``clean_session=False`` session, its subscriptions and the QoS 1/2
  messages published while the client is offline, and delivers them in order when
  the client reconnects with the same client id -- **but only if the session is not
  flagged anonymous**. amqtt's own ``AnonymousAuthPlugin`` (allow_anonymous) flags
  *every* session anonymous, after which the broker neither queues messages for it
  nor keeps it once disconnected (its session monitor drops it within ~1 s; the
  client reconnects with session_present=0 and receives nothing). We therefore use
  :class:`OpenAuthPlugin`, which accepts everyone without that flag.
* Messages queued for an offline session are re-delivered with the RETAIN flag set
  (an amqtt quirk); subscribers must not rely on ``retain`` to tell a retained
  "last value" from a queued message.
* Messages are delivered at the *subscription's* QoS, not min(publish, subscription)
  as MQTT 3.1.1 requires (a QoS 0 publish reaches a QoS 1 subscriber as QoS 1).
* The per-session offline queue is unbounded and sessions never expire.

Persistence across broker restarts (``--data-dir DIR``; what mosquitto's
``persistence true`` gives):

* :class:`PersistencePlugin` saves, to ``DIR/embedded_broker.json``: every
  persistent (``clean_session=False``) session with its subscriptions (filter, QoS)
  and the QoS >= 1 messages not yet acknowledged by it (sent and awaiting PUBACK,
  then queued while it was offline, in that order), plus the broker's retained
  messages. It writes on a graceful shutdown (SIGTERM/SIGINT, see :func:`serve`) and
  every ``--autosave-interval`` seconds (5 s) if anything changed; always to a temp
  file that is fsync'ed and then ``os.replace``'d over the old one.
* At start it restores them *before the listener accepts connections* (amqtt's
  ``broker_pre_start`` event): each session exists, offline, with its
  subscriptions, so messages that other clients publish before the session's owner
  reconnects are queued for it (as mosquitto does), and the owner gets
  session_present=1 and every queued message when it reconnects.
* A file that cannot be read or parsed is logged (WARNING, naming it), moved aside
  to ``embedded_broker.json.corrupt`` and the broker starts empty.
* On a graceful shutdown the broker first stops reading from its clients, waits
  (at most ``QUIESCE_TIMEOUT_S``) until the messages already acknowledged to
  publishers have been routed to their subscribers' sessions, saves, and only then
  closes the connections. Messages in flight to a connected subscriber are saved
  too and re-sent after the restart, so a subscriber may receive a message twice
  (normal QoS 1 at-least-once); no acknowledged message is lost, unless routing
  had not finished when the quiesce wait ran out (logged as a WARNING).
* Not persisted: clean sessions (as in MQTT), QoS 2 exactly-once state (an
  unacknowledged QoS 2 message is re-sent as a new PUBLISH: it may be duplicated),
  messages a client sent us that are half-way through the QoS 2 handshake, will
  messages of offline sessions, session timestamps. After a crash (SIGKILL, power
  loss) the state of the last autosave is restored: up to ``--autosave-interval``
  seconds of newer messages are lost and messages delivered since are re-sent.

amqtt API used by the persistence, checked against amqtt 0.12.1.
:func:`check_amqtt_persistence_api` verifies all of it when the broker starts and
the broker refuses to start (exit code 1, clear error) if something is missing,
rather than silently running without persistence:

* Plugin API (public): ``BasePlugin``; ``BrokerContext.sessions``,
  ``.get_session()``, ``.subscriptions`` (``{filter: [(Session, qos)]}``),
  ``.retained_messages`` (``{topic: RetainedApplicationMessage}``) and
  ``.add_subscription(client_id, topic, qos)`` (which creates an offline session
  when ``topic``/``qos`` are None); the ``broker_pre_start`` event firing after
  ``Broker.start()`` has cleared its state and before the listeners start (and
  ``Broker.shutdown()`` clearing every session right after ``broker_pre_shutdown``,
  which is why saving stops for good after the final save);
  ``PluginManager.get_plugin(name)``; ``amqtt.broker.RetainedApplicationMessage``.
* ``Session`` attributes (public but not documented as stable): ``client_id``,
  ``clean_session``, ``is_anonymous``, ``inflight_out``
  (``{packet_id: OutgoingApplicationMessage}``), ``retained_messages`` (asyncio
  Queue: the offline queue, read by taking every item out and putting it back in one
  synchronous step) and ``delivered_message_queue``.
* Broker internals: ``Broker._broadcast_queue`` (asyncio Queue of accepted messages
  not yet routed; used only to wait for it to drain at shutdown) and, best effort
  (no check, skipped if missing), the client socket behind
  ``handler.writer._writer.transport`` (``StreamWriterAdapter``) to pause and close
  client connections at shutdown.

amqtt's contrib ``SessionDBPlugin`` (0.12) was not used: it needs SQLAlchemy, it
deletes its database on a *graceful* shutdown by default (it is meant for crash
recovery), with ``clear_on_shutdown=False`` it never removes delivered messages
(they would be re-delivered after every restart), it stores payloads as text
(``bytes.decode()``, so binary payloads fail), ignores unsubscriptions and
restores only after the listeners have started.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import amqtt
from amqtt.broker import Broker, BrokerContext, RetainedApplicationMessage
from amqtt.errors import AMQTTError, BrokerError, PluginError
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin
from amqtt.session import Session

logger = logging.getLogger("host.broker.embedded")

SHUTDOWN_TIMEOUT_S = 2.0
PARENT_POLL_S = 1.0

#: Name of the persistence file inside ``--data-dir``.
PERSISTENCE_FILE = "embedded_broker.json"
#: Suffix added to a persistence file that could not be loaded.
CORRUPT_SUFFIX = ".corrupt"
AUTOSAVE_INTERVAL_S = 5.0
#: At shutdown, longest wait for already-acknowledged messages to be routed.
QUIESCE_TIMEOUT_S = 1.0
_QUIESCE_POLL_S = 0.01
_FORMAT = "medge-embedded-broker"
_FORMAT_VERSION = 1
#: amqtt version the persistence was checked against (see the module docstring).
CHECKED_AMQTT_VERSION = "0.12.1"


class OpenAuthPlugin(BaseAuthPlugin):
    """Accept every client (development default) without flagging the session anonymous.

    amqtt's ``AnonymousAuthPlugin`` sets ``session.is_anonymous``, which makes the
    broker drop persistent (clean_session=False) sessions and their queued QoS>=1
    messages as soon as the client disconnects; this plugin does not.
    """

    @dataclass
    class Config:
        """No options."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


# ----------------------------------------------------------------- persistence


class PersistenceUnavailableError(RuntimeError):
    """The installed amqtt lacks something the persistence relies on."""


def check_amqtt_persistence_api() -> None:
    """Raise :class:`PersistenceUnavailableError` unless every amqtt API used is there."""
    missing: list[str] = []
    for name in ("sessions", "get_session", "subscriptions", "retained_messages",
                 "add_subscription"):
        if not hasattr(BrokerContext, name):
            missing.append(f"BrokerContext.{name}")
    if not hasattr(Broker, "create_offline_session"):  # used by add_subscription
        missing.append("Broker.create_offline_session")
    try:
        session = Session()
        for name in ("client_id", "clean_session", "is_anonymous"):
            if not hasattr(session, name):
                missing.append(f"Session.{name}")
        if not isinstance(getattr(session, "inflight_out", None), dict):
            missing.append("Session.inflight_out (dict)")
        for name in ("retained_messages", "delivered_message_queue"):
            if not isinstance(getattr(session, name, None), asyncio.Queue):
                missing.append(f"Session.{name} (asyncio.Queue)")
        msg = RetainedApplicationMessage(None, "t", b"x", 1)
        if (msg.topic, bytes(msg.data), msg.qos) != ("t", b"x", 1):
            missing.append("RetainedApplicationMessage(source_session, topic, data, qos)")
    except Exception as exc:  # an incompatible constructor, say
        missing.append(f"amqtt.session / RetainedApplicationMessage ({exc!r})")
    if missing:
        raise PersistenceUnavailableError(
            f"amqtt {getattr(amqtt, '__version__', '?')} lacks {', '.join(missing)}, which the "
            f"embedded broker's persistence uses (checked against amqtt "
            f"{CHECKED_AMQTT_VERSION}; see host/broker/embedded.py). Install amqtt "
            f"{CHECKED_AMQTT_VERSION}, use mosquitto, or run without --data-dir "
            "(Broker(..., persistence=False)): nothing then survives a broker restart."
        )


def _check_broker_internals(broker: Broker) -> None:
    missing = []
    if not isinstance(getattr(broker, "_broadcast_queue", None), asyncio.Queue):
        missing.append("Broker._broadcast_queue (asyncio.Queue)")
    if not hasattr(getattr(broker, "plugins_manager", None), "get_plugin"):
        missing.append("Broker.plugins_manager.get_plugin")
    if missing:
        raise PersistenceUnavailableError(
            f"amqtt {getattr(amqtt, '__version__', '?')} lacks {', '.join(missing)} "
            f"(checked against amqtt {CHECKED_AMQTT_VERSION}; see host/broker/embedded.py)"
        )
    version = getattr(amqtt, "__version__", "?")
    if version != CHECKED_AMQTT_VERSION:
        logger.warning(
            "amqtt %s: the embedded broker's persistence was checked against amqtt %s; the "
            "API it uses is present, but verify with tests/test_broker.py", version,
            CHECKED_AMQTT_VERSION,
        )


def _b64(data: bytes | bytearray) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def _message_record(msg: Any) -> dict[str, Any]:
    return {
        "topic": msg.topic,
        "payload": _b64(msg.data or b""),
        "qos": msg.qos,
        "retain": bool(msg.retain),
    }


def _queue_items(queue: asyncio.Queue[Any]) -> list[Any]:
    """Return the items of an unbounded asyncio queue without consuming them.

    Takes every item out and puts it back in one synchronous step (no other task can
    run in between), using only the public Queue API.
    """
    items = []
    while True:
        try:
            items.append(queue.get_nowait())
        except asyncio.QueueEmpty:
            break
    for item in items:
        queue.put_nowait(item)
    return items


def _is_persistent(session: Session) -> bool:
    # Same rule as amqtt's session monitor, which keeps exactly these sessions.
    return bool(session.client_id) and not session.clean_session and not session.is_anonymous


class _Corrupt(ValueError):
    pass


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise _Corrupt(what)


def _parse_qos(value: Any, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    _require(type(value) is int and 0 <= value <= 2, f"bad qos {value!r}")
    return int(value)


def _parse_payload(value: Any) -> bytes:
    _require(isinstance(value, str), "payload is not a string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _Corrupt(f"payload is not base64: {exc}") from None


def _parse_topic(value: Any) -> str:
    _require(isinstance(value, str) and value != "", f"bad topic {value!r}")
    return str(value)


@dataclass
class _StoredSession:
    client_id: str
    subscriptions: list[tuple[str, int]]
    messages: list[tuple[str, bytes, int, bool]]


def parse_state(text: str) -> tuple[list[_StoredSession], list[tuple[str, bytes, Optional[int]]]]:
    """Validate and decode a persistence file; raise ValueError if it is not valid."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise _Corrupt(f"not JSON: {exc}") from None
    _require(isinstance(doc, dict), "top level is not an object")
    _require(doc.get("format") == _FORMAT, f"format is not {_FORMAT!r}")
    _require(doc.get("version") == _FORMAT_VERSION,
             f"unsupported version {doc.get('version')!r} (expected {_FORMAT_VERSION})")
    sessions_doc, retained_doc = doc.get("sessions"), doc.get("retained")
    _require(isinstance(sessions_doc, list) and isinstance(retained_doc, list),
             "'sessions' and 'retained' must be lists")
    sessions: list[_StoredSession] = []
    seen: set[str] = set()
    for s in sessions_doc:
        _require(isinstance(s, dict), "session is not an object")
        cid = s.get("client_id")
        _require(isinstance(cid, str) and cid != "" and cid not in seen,
                 f"bad or duplicate client_id {cid!r}")
        seen.add(cid)
        subs, msgs = s.get("subscriptions"), s.get("messages")
        _require(isinstance(subs, list) and isinstance(msgs, list),
                 f"session {cid!r}: 'subscriptions' and 'messages' must be lists")
        parsed_subs = []
        for sub in subs:
            _require(isinstance(sub, dict), f"session {cid!r}: subscription is not an object")
            parsed_subs.append((_parse_topic(sub.get("topic")), int(_parse_qos(sub.get("qos")))))
        parsed_msgs = []
        for m in msgs:
            _require(isinstance(m, dict), f"session {cid!r}: message is not an object")
            _require(isinstance(m.get("retain", False), bool), "retain is not a boolean")
            parsed_msgs.append((
                _parse_topic(m.get("topic")),
                _parse_payload(m.get("payload")),
                int(_parse_qos(m.get("qos"))),
                bool(m.get("retain", False)),
            ))
        sessions.append(_StoredSession(cid, parsed_subs, parsed_msgs))
    retained = []
    for r in retained_doc:
        _require(isinstance(r, dict), "retained message is not an object")
        retained.append((_parse_topic(r.get("topic")), _parse_payload(r.get("payload")),
                         _parse_qos(r.get("qos"), allow_none=True)))
    return sessions, retained


class PersistencePlugin(BasePlugin[BrokerContext]):
    """Save persistent sessions and retained messages to a JSON file; restore at start.

    See the module docstring for what is saved, when, and the amqtt API it relies on.
    Saving is suspended for good once :meth:`final_save` ran (amqtt's shutdown then
    clears all state, which must not be written over the saved file).
    """

    @dataclass
    class Config:
        file: str = ""
        """The persistence file (required)."""
        autosave_interval: float = AUTOSAVE_INTERVAL_S
        """Seconds between saves while running (only if something changed); 0: none."""

    def __init__(self, context: BrokerContext) -> None:
        super().__init__(context)
        if not self.config.file:
            raise PluginError("PersistencePlugin: no 'file' configured")
        self.path = Path(self.config.file)
        self.interval = float(self.config.autosave_interval)
        self.restored = False
        self.failed: Optional[str] = None  # set if restoring failed half-way
        self._closed = False  # no more saves (after final_save, or a failed restore)
        self._changes = 0  # bumped by broker events (see _fingerprint)
        self._saved_fingerprint: Any = None
        self._saved_bytes: Optional[bytes] = None
        self._generation = itertools.count(1)
        self._written_generation = 0
        self._write_lock = threading.Lock()
        self._autosave_task: Optional[asyncio.Task[None]] = None

    # --------------------------------------------------------------- amqtt events

    async def on_broker_pre_start(self) -> None:
        """Restore before the listeners start (``Broker.start()`` cleared its state)."""
        try:
            await self.restore()
        except Exception as exc:  # a bug or an amqtt incompatibility: fail loudly
            logger.exception("restoring %s failed", self.path)
            self.failed = f"restoring {self.path} failed: {exc!r}"
            self._closed = True  # never overwrite the file with a partial state

    async def on_broker_post_start(self) -> None:
        if self.interval > 0 and not self._closed:
            self._autosave_task = asyncio.create_task(self._autosave_loop())

    async def on_broker_pre_shutdown(self) -> None:
        # Normally serve() has already called final_save(); this covers other callers
        # of Broker.shutdown() (it clears every session right after this event).
        await self.final_save()

    async def on_broker_client_connected(self, **_: Any) -> None:
        self._changes += 1

    async def on_broker_client_disconnected(self, **_: Any) -> None:
        self._changes += 1

    async def on_broker_client_subscribed(self, **_: Any) -> None:
        self._changes += 1

    async def on_broker_client_unsubscribed(self, **_: Any) -> None:
        self._changes += 1

    async def on_broker_retained_message(self, **_: Any) -> None:
        self._changes += 1

    async def close(self) -> None:
        await self._stop_autosave()

    # -------------------------------------------------------------------- restore

    async def restore(self) -> None:
        t0 = time.perf_counter()
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            logger.info("no persistence file %s yet; starting empty", self.path)
            self.restored = True
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(f"cannot be read ({exc})")
            return
        try:
            sessions, retained = parse_state(text)
        except ValueError as exc:
            self._set_aside(f"is not a valid persistence file ({exc})")
            return

        ctx = self.context
        if any(True for _ in ctx.sessions) or ctx.subscriptions or ctx.retained_messages:
            raise PersistenceUnavailableError(
                "broker state is not empty before start (amqtt changed?)")
        n_msgs = 0
        for stored in sessions:
            await ctx.add_subscription(stored.client_id, None, None)  # offline session
            session = ctx.get_session(stored.client_id)
            if session is None:
                raise PersistenceUnavailableError(
                    f"BrokerContext.add_subscription did not create session {stored.client_id!r}")
            session.clean_session = False
            for topic_filter, qos in stored.subscriptions:
                await ctx.add_subscription(stored.client_id, topic_filter, qos)
            for topic, data, qos, _retain in stored.messages:
                # amqtt's offline queue; delivered (retain=1, an amqtt quirk) on reconnect.
                session.retained_messages.put_nowait(
                    RetainedApplicationMessage(None, topic, data, qos))
                n_msgs += 1
        for topic, data, qos in retained:
            ctx.retained_messages[topic] = RetainedApplicationMessage(None, topic, data, qos)
        self.restored = True
        self._saved_bytes = text.encode("utf-8")
        self._saved_fingerprint = self._fingerprint()
        logger.info(
            "restored %d persistent session(s) with %d queued message(s) and %d retained "
            "message(s) from %s in %.1f ms",
            len(sessions), n_msgs, len(retained), self.path, (time.perf_counter() - t0) * 1e3,
        )

    def _set_aside(self, why: str) -> None:
        aside = self.path.with_name(self.path.name + CORRUPT_SUFFIX)
        try:
            os.replace(self.path, aside)
            where = f"moved it to {aside}"
        except OSError as exc:
            where = f"could not move it aside to {aside}: {exc}"
        logger.warning(
            "persistence file %s %s; %s and starting with NO restored sessions or retained "
            "messages", self.path, why, where,
        )
        self.restored = True

    # ----------------------------------------------------------------------- save

    def snapshot(self) -> dict[str, Any]:
        """The state to persist, as a JSON-able dict (synchronous: a consistent view)."""
        subs: dict[str, list[dict[str, Any]]] = {}
        for topic_filter, entries in self.context.subscriptions.items():
            for session, qos in entries:
                if session.client_id:
                    subs.setdefault(session.client_id, []).append(
                        {"topic": topic_filter, "qos": qos})
        sessions = []
        for session in self.context.sessions:
            if not _is_persistent(session):
                continue
            # Sent but not yet acknowledged first (oldest), then the offline queue.
            pending = [m for m in session.inflight_out.values() if m.qos in (1, 2)]
            pending += [m for m in _queue_items(session.retained_messages) if m.qos in (1, 2)]
            sessions.append({
                "client_id": session.client_id,
                "subscriptions": subs.get(session.client_id, []),
                "messages": [_message_record(m) for m in pending],
            })
        retained = [
            {"topic": topic, "payload": _b64(msg.data), "qos": msg.qos}
            for topic, msg in self.context.retained_messages.items()
            if msg.data
        ]
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "amqtt": getattr(amqtt, "__version__", None),
            "sessions": sessions,
            "retained": retained,
        }

    def _fingerprint(self) -> Any:
        """Cheap summary that changes whenever the persisted state may have changed."""
        return (
            self._changes,
            sum(len(v) for v in self.context.subscriptions.values()),
            tuple(
                (s.client_id, s.retained_messages.qsize(), tuple(s.inflight_out))
                for s in self.context.sessions
                if _is_persistent(s)
            ),
        )

    def _encode(self) -> tuple[bytes, Any, dict[str, int]]:
        fingerprint = self._fingerprint()
        doc = self.snapshot()
        data = json.dumps(doc, separators=(",", ":")).encode("utf-8")
        stats = {
            "sessions": len(doc["sessions"]),
            "messages": sum(len(s["messages"]) for s in doc["sessions"]),
            "retained": len(doc["retained"]),
        }
        return data, fingerprint, stats

    def _write(self, data: bytes, generation: int) -> bool:
        """Atomically replace the file with ``data`` unless a newer save got there first."""
        with self._write_lock:
            if generation <= self._written_generation:
                return False
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
                with contextlib.suppress(OSError):
                    fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            self._written_generation = generation
            return True

    async def save(self, *, force: bool = False) -> bool:
        """Save if something changed (or ``force``); return True if the file was written."""
        if self._closed or not self.restored:
            return False
        if not force and self._fingerprint() == self._saved_fingerprint:
            return False
        t0 = time.perf_counter()
        data, fingerprint, stats = self._encode()
        if not force and data == self._saved_bytes:
            self._saved_fingerprint = fingerprint
            return False
        generation = next(self._generation)
        t1 = time.perf_counter()
        # The file I/O (and fsync) runs in a thread; the snapshot above did not.
        written = await asyncio.to_thread(self._write, data, generation)
        if written:
            self._saved_bytes, self._saved_fingerprint = data, fingerprint
            logger.debug(
                "autosaved %(sessions)d session(s), %(messages)d queued and %(retained)d "
                "retained message(s) to %(path)s (%(n)d bytes; snapshot %(snap).1f ms, "
                "write %(write).1f ms)",
                dict(stats, path=self.path, n=len(data), snap=(t1 - t0) * 1e3,
                     write=(time.perf_counter() - t1) * 1e3),
            )
        return written

    async def final_save(self) -> bool:
        """Save now (blocking) and stop saving for good; return False if it failed."""
        if self._closed:
            return self.failed is None
        await self._stop_autosave()
        self._closed = True
        if not self.restored:
            return True
        t0 = time.perf_counter()
        data, _fingerprint, stats = self._encode()
        t1 = time.perf_counter()
        try:
            self._write(data, next(self._generation))
        except OSError as exc:
            logger.error("could not save the broker state to %s: %s", self.path, exc)
            return False
        logger.info(
            "saved %(sessions)d persistent session(s), %(messages)d queued and %(retained)d "
            "retained message(s) to %(path)s (%(n)d bytes; snapshot %(snap).1f ms, "
            "write %(write).1f ms)",
            dict(stats, path=self.path, n=len(data), snap=(t1 - t0) * 1e3,
                 write=(time.perf_counter() - t1) * 1e3),
        )
        return True

    async def _autosave_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.save()
            except OSError as exc:
                logger.warning("autosave to %s failed (will retry): %s", self.path, exc)
            except Exception:  # keep autosaving; the final save may still work
                logger.exception("autosave to %s failed (will retry)", self.path)

    async def _stop_autosave(self) -> None:
        task, self._autosave_task = self._autosave_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ----------------------------------------------------------------------- broker


def broker_config(
    host: str,
    port: int,
    persistence_file: Optional[Path] = None,
    autosave_interval: float = AUTOSAVE_INTERVAL_S,
) -> dict[str, Any]:
    """amqtt 0.12 broker config (``amqtt.contexts.BrokerConfig`` as a dict)."""
    plugins: dict[str, Any] = {_dotted(OpenAuthPlugin): {}}
    if persistence_file is not None:
        plugins[_dotted(PersistencePlugin)] = {
            "file": str(persistence_file),
            "autosave_interval": float(autosave_interval),
        }
    return {
        # Only the "default" listener: TCP on host:port. ("::1:1883" works for IPv6
        # too: amqtt splits the bind string at the last colon.)
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        # Giving "plugins" explicitly replaces amqtt's defaults: no BrokerSysPlugin
        # ($SYS topics every 20 s, psutil deprecation warning), no Event/Packet
        # logger plugins.
        "plugins": plugins,
    }


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _client_transports(broker: Broker) -> list[asyncio.BaseTransport]:
    """The sockets of the connected clients (best effort).

    Uses amqtt internals (``StreamWriterAdapter._writer``); returns nothing for a
    client whose handler does not have them.
    """
    found = []
    for _session, handler in list(broker.sessions.values()):
        writer = getattr(getattr(handler, "writer", None), "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None and not transport.is_closing():
            found.append(transport)
    return found


def _close_client_connections(broker: Broker) -> None:
    """Close every client socket before ``Broker.shutdown()`` (best effort).

    Each connection's reader task then ends on EOF by itself instead of having to be
    cancelled by shutdown(), which avoids the hang described in :func:`serve`.
    """
    for transport in _client_transports(broker):
        transport.close()


async def _quiesce(broker: Broker, timeout_s: float = QUIESCE_TIMEOUT_S) -> bool:
    """Stop reading from clients and wait until accepted messages have been routed.

    amqtt acknowledges a QoS 1 PUBLISH as soon as it has parsed it, and routes it to
    the subscribers' sessions later (per-connection delivery queue, then the broker's
    broadcast queue). Saving before that has happened would lose messages the
    publisher considers delivered. Returns False if still busy after ``timeout_s``.
    """
    for transport in _client_transports(broker):
        with contextlib.suppress(AttributeError, RuntimeError):
            transport.pause_reading()  # type: ignore[attr-defined]

    def busy() -> bool:
        return not broker._broadcast_queue.empty() or any(
            not session.delivered_message_queue.empty()
            for session, _handler in list(broker.sessions.values())
        )

    deadline = time.monotonic() + timeout_s
    quiet_polls = 0
    while quiet_polls < 2:  # twice in a row: a message may be between the two queues
        await asyncio.sleep(_QUIESCE_POLL_S)
        quiet_polls = 0 if busy() else quiet_polls + 1
        if time.monotonic() > deadline:
            return False
    return True


async def serve(
    host: str,
    port: int,
    parent_pid: Optional[int] = None,
    data_dir: Optional[Path] = None,
    autosave_interval: float = AUTOSAVE_INTERVAL_S,
) -> int:
    """Run the broker until SIGTERM/SIGINT (or the parent exits); return an exit code.

    With ``data_dir``, persistent sessions and retained messages are restored from
    and saved to ``data_dir/embedded_broker.json`` (see the module docstring).
    """
    persistence_file = Path(data_dir) / PERSISTENCE_FILE if data_dir is not None else None
    try:
        if persistence_file is not None:
            check_amqtt_persistence_api()
        broker = Broker(broker_config(host, port, persistence_file, autosave_interval))
        if persistence_file is not None:
            _check_broker_internals(broker)
        await broker.start()
    except PersistenceUnavailableError as exc:
        logger.error("embedded MQTT broker cannot persist its state: %s", exc)
        return 1
    except (BrokerError, PluginError, AMQTTError, OSError) as exc:
        logger.error("embedded MQTT broker failed to start on %s:%s: %s", host, port, exc)
        return 1

    persistence: Optional[PersistencePlugin] = None
    if persistence_file is not None:
        plugin = broker.plugins_manager.get_plugin(PersistencePlugin.__name__)
        if not isinstance(plugin, PersistencePlugin) or not plugin.restored:
            reason = plugin.failed if isinstance(plugin, PersistencePlugin) else None
            logger.error(
                "embedded MQTT broker: %s; refusing to run without the persisted state",
                reason or "the persistence plugin did not run at start",
            )
            _close_client_connections(broker)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT_S)
            return 1
        persistence = plugin

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(reason: str) -> None:
        if not stop.is_set():
            logger.info("%s: shutting down", reason)
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, request_stop, signal.Signals(sig).name)
        except (NotImplementedError, RuntimeError):  # Windows
            signal.signal(
                sig,
                lambda s, _f: loop.call_soon_threadsafe(request_stop, signal.Signals(s).name),
            )

    async def watch_parent() -> None:
        while parent_pid is not None:
            await asyncio.sleep(PARENT_POLL_S)
            if os.getppid() != parent_pid:
                request_stop(f"parent process {parent_pid} exited")
                return

    watchdog = asyncio.create_task(watch_parent())
    logger.info(
        "embedded MQTT broker (amqtt %s, pid %d) listening on mqtt://%s:%d; anonymous clients "
        "allowed (development default); %s",
        getattr(amqtt, "__version__", "?"), os.getpid(), host, port,
        f"state persisted in {persistence_file}" if persistence_file else "in-memory only",
    )
    await stop.wait()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watchdog

    code = 0
    if persistence is not None:
        if not await _quiesce(broker):
            logger.warning(
                "clients still had unrouted messages %.1f s into the shutdown; saving anyway",
                QUIESCE_TIMEOUT_S,
            )
        if not await persistence.final_save():
            code = 1
    # amqtt 0.12.1 (seen on CPython 3.11): if shutdown() cancels a connection's reader
    # task while PUBACKs are still arriving (e.g. right after a resumed persistent
    # session was sent its queued messages), the cancellation can be swallowed inside
    # asyncio.wait_for and shutdown() then waits for that task until the client's
    # keep-alive expires. Closing the client sockets first lets every reader end on
    # EOF instead (clients see the connection drop, as with any broker shutdown, so
    # their wills are published). The timeout below is the backstop.
    _close_client_connections(broker)
    try:
        await asyncio.wait_for(broker.shutdown(), SHUTDOWN_TIMEOUT_S)
    except asyncio.TimeoutError:
        # The state was saved above (or there is none to keep), so nothing is lost by
        # leaving now; exit hard so that asyncio.run() does not wait for the stuck task.
        logger.warning(
            "amqtt shutdown did not finish within %.0f s; exiting without waiting for it",
            SHUTDOWN_TIMEOUT_S,
        )
        logging.shutdown()
        os._exit(code)
    logger.info("embedded MQTT broker stopped")
    return code


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="exit when this process is no longer our parent")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"persist sessions and retained messages in DATA_DIR/"
                             f"{PERSISTENCE_FILE} (default: in memory only)")
    parser.add_argument("--autosave-interval", type=float, default=AUTOSAVE_INTERVAL_S,
                        help="seconds between saves of changed state (default %(default)s; "
                             "0: only at shutdown)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: amqtt INFO (every connection), -vv: DEBUG")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.verbose >= 2:
        logger.setLevel(logging.DEBUG)
    amqtt_level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(amqtt_level if name == "amqtt" else logging.WARNING)
    if args.data_dir is not None:
        args.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(serve(args.host, args.port, args.parent_pid, args.data_dir,
                                 args.autosave_interval))
    except KeyboardInterrupt:  # SIGINT before the handler was installed
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Ingest service: MQTT -> validate -> de-duplicate -> store.

Subscribes to ``medge/v1/#`` with QoS 1 over MQTT v5 in a persistent session
(fixed client id, ``clean_start=False``, session expiry SESSION_EXPIRY_S), so
messages published while ingest is down are queued by the broker.  With
``group`` the subscription is the shared ``$share/<group>/medge/v1/#``: any
number of ingest processes (each with its own client id) share the load, each
message going to one of them.  A broker that does not speak MQTT v5 (the
embedded amqtt broker) is detected at start and talked to in 3.1.1 (no groups).

The client is :class:`host.services.fastpaho.FastClient` (paho with buffered
reads and a lean decode of small QoS 1 messages).  Acknowledgements are manual
(paho ``manual_ack``): the network thread only queues each message; a writer
thread validates a batch (what has arrived, up to ``batch_max`` messages,
waiting at most ``batch_ms`` after the first), commits it in one transaction
(:meth:`host.services.store.Store.write_batch`, group commit) and only then
sends the PUBACKs of the batch in one write.  A SIGKILL at any moment loses nothing: what was not
committed was not acknowledged, and the broker redelivers it.

Every message gets exactly one committed outcome, then its PUBACK: stored,
duplicate (same (device, incarnation, seq) and content), conflict (same key,
other content: kept aside in the ``conflicts`` table, the first-committed
message stays), ignored (host -> device traffic), or rejected with a
:class:`host.services.messages.Reason`; an unexpected exception while handling
a message is itself a rejection ``internal``.  Rejections and conflicts are
logged rate-limited (the first 10 per reason, then every 100th), counted, and
kept bounded in the store.

Storage outage (locked database, disk full, read-only file): the batch is
rolled back, nothing is acknowledged, and the writer retries with capped
backoff (0.05 s doubling to 2 s) until the store takes it; the broker stops
sending once its in-flight window (RECEIVE_MAXIMUM, 1,000) is full.  :meth:`Ingest.stats` then says
``storage failing since <time>: <reason>``; one WARNING when it starts, one
every 30 s while it lasts, one INFO line when it ends.  No restart needed.

Reaching the broker (``medge ingest``, :func:`run_ingest_forever`): at start-up
ingest waits at most ``connect_timeout_s`` (10 s) for its first connection and
subscription, retrying with paho's capped backoff, then gives up with
:class:`BrokerUnreachable` (one line: where it tried and why it failed).  Once
connected it never gives up: each lost connection and each failed reconnect
is a WARNING, and paho reconnects (0.1 s .. 2 s backoff).  ``connect_timeout_s=None``
retries from the start for ever, a WARNING per failed attempt.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.net import protocol
from host.services import messages
from host.services.fastpaho import FastClient
from host.services.storage.target import parse_target
from host.services.store import Accept, Item, Outcome, Reject, StorageUnavailable, Store, now_ms

log = logging.getLogger(__name__)


class BrokerUnreachable(ConnectionError):
    """Ingest could not connect and subscribe in its start-up time; ``str()`` is one line."""

SUBSCRIPTION = protocol.TOPIC_ROOT + "/#"
#: Seconds the broker keeps ingest's session (and queues its messages) while it is away.
SESSION_EXPIRY_S = 24 * 3600
#: Unacknowledged QoS 1 messages the broker may have in flight to one ingest process:
#: two of the largest batches, so the network thread receives the next one while the
#: writer commits (with 100, one batch, receiving and writing took turns); the
#: generated mosquitto config allows as many (``max_inflight_messages``).
RECEIVE_MAXIMUM = 10000
#: Group commit: the writer takes what has arrived, at most BATCH_MAX messages, and
#: waits at most BATCH_MS after the first.  The batch grows with the load (what
#: arrived during the previous commit): with 1,000 devices each message dirties
#: about one B-tree leaf per index (the keys start with the device), so a SQLite
#: commit of 250 messages wrote 11.8 KB of WAL per message, of 5,000 3.1 KB, and
#: the store's CPU per message fell from 130 to 59 us (measured on 60,000
#: vitals messages from 1,000 devices).  At 1,000 messages/s a batch is still ~20 ms.
BATCH_MAX = 5000
BATCH_MS = 20
_RETRY_MIN_S = 0.05
_RETRY_MAX_S = 2.0
_STORAGE_WARN_EVERY_S = 30.0
_LOG_FIRST_N = 10  # per reason, then one log line every _LOG_EVERY rejections
_LOG_EVERY = 100


def subscription(group: str | None) -> str:
    """The topic filter ingest subscribes to (shared with ``group``)."""
    return SUBSCRIPTION if group is None else f"$share/{group}/{SUBSCRIPTION}"


def check_group(group: str) -> str:
    """A shared-subscription group name: 1..64 of ``[A-Za-z0-9_-]``; ValueError otherwise."""
    if not 1 <= len(group) <= 64 or not all(c.isalnum() or c in "_-" for c in group) \
            or not group.isascii():
        raise ValueError(f"group name {group[:80]!r}: expected 1..64 letters, digits, _ or -")
    return group


def speaks_mqtt5(host: str, port: int, timeout_s: float = 2.0,
                 tls: dict[str, str] | None = None) -> bool | None:
    """Does the broker answer an MQTT v5 CONNECT?  None if nothing listens there.
    ``tls`` (``ca_file``, optional ``cert_file``/``key_file``): ask over TLS, as
    ingest will connect (a plain probe of a TLS port gets no answer)."""
    client_id = f"medge-probe-{os.getpid()}-{time.monotonic_ns() % 10**6}".encode()
    # CONNECT: "MQTT", level 5, clean start, keepalive 10, no properties (0), the client id.
    var = b"\x00\x04MQTT\x05\x02\x00\x0a\x00" + struct.pack(">H", len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            sock = raw
            if tls:
                import ssl

                ctx = ssl.create_default_context(cafile=tls["ca_file"])
                if tls.get("cert_file"):
                    ctx.load_cert_chain(tls["cert_file"], tls.get("key_file"))
                sock = ctx.wrap_socket(raw, server_hostname=host)
            sock.sendall(b"\x10" + bytes([len(var)]) + var)
            try:
                head = sock.recv(2)
            except OSError:
                return False
            # A v5 CONNACK carries properties (remaining length >= 3); a 3.1.1 broker
            # answers 0x20 0x02 0x00 0x01 (unacceptable protocol version).
            if len(head) == 2 and head[0] == 0x20 and head[1] >= 3:
                sock.sendall(b"\xe0\x00")  # DISCONNECT
                return True
            return False
    except OSError:
        return None


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


class Ingest:
    def __init__(
        self, db_path: str | Path, host: str, port: int, client_id: str | None = None, *,
        group: str | None = None, username: str | None = None, password: str | None = None,
        batch_max: int = BATCH_MAX, batch_ms: int = BATCH_MS,
    ) -> None:
        if group is not None:
            check_group(group)
        if not 1 <= batch_max <= 10_000 or not 0 <= batch_ms <= 10_000:
            raise ValueError(f"batch_max {batch_max} (1..10000), batch_ms {batch_ms} (0..10000)")
        self.store = Store(db_path, busy_timeout_s=1.0, checkpointer=True)
        self.db_path = db_path
        self.host = host
        self.port = port
        self.group = group
        # A broker with accounts refuses any client id but the username.
        self.client_id = client_id or username or (
            "medge-ingest" if group is None else f"medge-ingest-{group}-{socket.gethostname()}")
        self.username = username
        self.password = password
        self.batch_max = batch_max
        self.batch_ms = batch_ms
        self.mqtt5 = True
        self.received = 0
        self.stored = 0
        self.duplicates = 0
        self.conflicts = 0
        self.ignored = 0
        self.rejected: Counter[str] = Counter()
        self.errors = 0  # storage failures (batches retried; messages left unacknowledged)
        self.lag_ms = 0  # receive-to-commit time of the oldest message of the last batch
        self.storage_failing_since_ms: int | None = None
        self.storage_error: str | None = None
        self._storage_warned = 0.0
        self._lock = threading.Lock()  # the store and the counters
        self._queue: queue.Queue[tuple[mqtt.MQTTMessage, int]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._busy = False  # the writer holds a batch taken from the queue
        self._stopping = threading.Event()
        self._client: FastClient | None = None
        self._connected = threading.Event()
        #: Log failed connection attempts as WARNINGs (off while a bounded start-up
        #: wait is running: its caller reports the outcome in one line).
        self.warn_connect_failures = True
        self.connect_failures = 0
        self.refused: str | None = None  # the broker's CONNACK/SUBACK refusal, if any

    # -- message handling (no broker needed: tests call it directly) --------
    def handle(self, topic: str, payload: bytes) -> str:
        """Validate and store one message now; return its outcome name
        (``stored``, ``duplicate``, ``conflict``, ``ignored``, ``rejected:<reason>``).
        Raises :class:`StorageUnavailable` when the store cannot be written."""
        item = self._check(topic, payload, now_ms())
        if item is None:
            with self._lock:
                self.ignored += 1
            return "ignored"
        [outcome] = self._commit([item])
        return _outcome_name(item, outcome)

    def _check(self, topic: str, payload: bytes, received: int,
               retained: bool = False) -> Item | None:
        """The store item for one message (None: ignored); never raises."""
        try:
            result = messages.check(topic, payload)
        except Exception as exc:  # a bug or a limit we did not foresee: a counted rejection
            log.debug("ingest: internal error validating %r", topic[:200], exc_info=True)
            return Reject(messages.Reason.INTERNAL.value,
                          f"validation failed: {type(exc).__name__}: {exc}"[:300], topic,
                          payload, received)
        if isinstance(result, messages.Rejected):
            return Reject(result.reason.value, result.detail, topic, payload, received)
        if isinstance(result, messages.Ignored):
            return None
        return Accept(result.msg_type, result.device_id, result.payload, received, retained)

    def _commit(self, items: list[Item]) -> list[Outcome]:
        with self._lock:
            outcomes = self.store.write_batch(items)
            for item, outcome in zip(items, outcomes):
                self._count(item, outcome)
            return outcomes

    def _count(self, item: Item, outcome: Outcome) -> None:
        self.received += 1
        if outcome is Outcome.STORED:
            self.stored += 1
        elif outcome is Outcome.DUPLICATE:
            self.duplicates += 1
        elif outcome is Outcome.CONFLICT:
            self.conflicts += 1
            if self.conflicts <= _LOG_FIRST_N or self.conflicts % _LOG_EVERY == 0:
                assert isinstance(item, Accept)
                log.warning(
                    "conflict (#%d): %s seq %s (incarnation %r) differs from the stored "
                    "message; kept aside in the conflicts table (a forged or corrupted "
                    "message, or a reset device without an incarnation)", self.conflicts,
                    item.device_id, item.doc.get("seq"), item.doc.get("incarnation", ""))
        else:
            reason = item.reason if isinstance(item, Reject) else "internal"
            self.rejected[reason] += 1
            count = self.rejected[reason]
            if count <= _LOG_FIRST_N or count % _LOG_EVERY == 0:
                topic = item.topic if isinstance(item, Reject) else item.device_id
                detail = item.detail if isinstance(item, Reject) else ""
                log.warning("rejected (%s, #%d) on %r: %s", reason, count, topic[:200], detail)

    def stats(self) -> dict[str, object]:
        with self._lock:
            since = self.storage_failing_since_ms
            return {
                "received": self.received,
                "stored": self.stored,
                "duplicates": self.duplicates,
                "conflicts": self.conflicts,
                "ignored": self.ignored,
                "rejected": dict(self.rejected),
                "errors": self.errors,
                "lag_ms": self.lag_ms,
                "queued": self._queue.qsize(),
                "connected": self._connected.is_set(),
                "storage": "ok" if since is None else
                f"storage failing since {_iso(since)}: {self.storage_error}",
                "storage_failing_since_ms": since,
            }

    # -- the writer thread: batch, commit, then acknowledge -----------------
    def _next_batch(self) -> list[tuple[mqtt.MQTTMessage, int]]:
        try:
            batch = [self._queue.get(timeout=0.1)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.batch_ms / 1000
        get_nowait = self._queue.get_nowait
        while len(batch) < self.batch_max:
            try:  # what has arrived, without a timed wait per message
                batch.append(get_nowait())
                continue
            except queue.Empty:
                pass
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=timeout))
            except queue.Empty:
                break
        return batch

    def _write_loop(self) -> None:
        while not self._stopping.is_set():
            self._busy = True
            try:
                batch = self._next_batch()
                if batch:
                    self._write(batch)
            finally:
                self._busy = False

    def _write(self, batch: list[tuple[mqtt.MQTTMessage, int]]) -> None:
        pending = [(msg, self._check(msg.topic, msg.payload, received, msg.retain))
                   for msg, received in batch]
        items = [item for _, item in pending if item is not None]
        delay = _RETRY_MIN_S
        while items:
            try:
                self._commit(items)
                break
            except Exception as exc:  # StorageUnavailable, or a bug: retry, never ack
                self._storage_failed(exc)
                if self._stopping.wait(delay):
                    return  # stopping: nothing of this batch is acknowledged
                delay = min(delay * 2, _RETRY_MAX_S)
        self._storage_ok()
        with self._lock:
            self.ignored += len(pending) - len(items)
            self.lag_ms = now_ms() - batch[0][1]
        client = self._client
        if client is None:
            return
        client.ack_many([msg.mid for msg, _ in pending if msg.qos == 1])
        for msg, _ in pending:
            if msg.qos == 2:
                client.ack(msg.mid, msg.qos)

    def _storage_failed(self, exc: Exception) -> None:
        reason = str(exc) if isinstance(exc, StorageUnavailable) else \
            f"{type(exc).__name__}: {exc}"[:200]
        with self._lock:
            self.errors += 1
            first = self.storage_failing_since_ms is None
            if first:
                self.storage_failing_since_ms = now_ms()
            self.storage_error = reason
        now = time.monotonic()
        if first or now - self._storage_warned >= _STORAGE_WARN_EVERY_S:
            self._storage_warned = now
            log.warning("ingest: storage failing (%s); retrying, nothing acknowledged meanwhile",
                        reason, exc_info=not isinstance(exc, StorageUnavailable))

    def _storage_ok(self) -> None:
        if self.storage_failing_since_ms is None:
            return
        with self._lock:
            since, self.storage_failing_since_ms = self.storage_failing_since_ms, None
            self.storage_error = None
        log.info("ingest: storage back after %.1f s", (now_ms() - since) / 1000)

    # -- MQTT -----------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = f"the broker refused the connection: {reason_code}"
            self.connect_failures += 1
            if self.warn_connect_failures:
                log.warning("ingest: broker refused connection: %s", reason_code)
            return
        client.subscribe(subscription(self.group), qos=1)
        log.info(
            "ingest: connected to %s:%d as %s (session present: %s)",
            self.host,
            self.port,
            self.client_id,
            flags.session_present,
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.refused = f"the broker refused the subscription to {subscription(self.group)}"
            if self.warn_connect_failures:
                log.error("ingest: subscription to %s refused: %s", subscription(self.group),
                          reason_codes)
            return
        self._connected.set()  # ready: connected *and* subscribed

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._client is None:  # stop(): our own DISCONNECT
            log.info("ingest: disconnected (%s)", reason_code)
        elif was_connected:
            log.warning("ingest: lost the broker at %s:%d (%s); reconnecting",
                        self.host, self.port, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self.connect_failures += 1
        if self.warn_connect_failures:
            log.warning("ingest: cannot reach the broker at %s:%d (attempt %d); retrying",
                        self.host, self.port, self.connect_failures)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((msg, now_ms()))  # the writer commits, then acknowledges

    def start(self) -> None:
        if speaks_mqtt5(self.host, self.port, tls=getattr(self, "tls", None)) is False:
            if self.group is not None:
                raise BrokerUnreachable(f"the broker at {self.host}:{self.port} does not speak "
                                        "MQTT v5: shared subscriptions (--group) need it")
            self.mqtt5 = False
            log.info("ingest: the broker at %s:%d does not speak MQTT v5; using 3.1.1",
                     self.host, self.port)
        if self.mqtt5:
            client = FastClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            client = FastClient(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                clean_session=False, protocol=mqtt.MQTTv311, manual_ack=True)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        tls = getattr(self, "tls", None)  # medge ingest --tls-ca/--tls-cert/--tls-key
        if tls:
            client.tls_set(ca_certs=tls["ca_file"], certfile=tls.get("cert_file"),
                           keyfile=tls.get("key_file"))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.reconnect_delay_set(min_delay=0.1, max_delay=2)
        client.max_inflight_messages_set(RECEIVE_MAXIMUM)
        self._client = client
        self._stopping.clear()
        self._writer = threading.Thread(target=self._write_loop, name="ingest-writer",
                                        daemon=True)
        self._writer.start()
        if self.mqtt5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            client.connect_async(self.host, self.port, keepalive=30, clean_start=False,
                                 properties=props)
        else:
            client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until ingest is connected and its subscription is acknowledged."""
        return self._connected.wait(timeout_s)

    def unreachable_reason(self) -> str:
        """Why ingest is not connected, in the user's terms (after a failed wait)."""
        if self.refused:
            return self.refused
        try:  # paho does not say why a connect failed: ask the network once
            with socket.create_connection((self.host, self.port), timeout=2):
                return "a TCP server answers there, but not as an MQTT broker"
        except socket.gaierror as exc:
            return f"cannot resolve the host name ({exc.strerror or exc})"
        except OSError as exc:
            return (exc.strerror or str(exc) or type(exc).__name__).lower()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every received message is committed and acknowledged."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() or self._busy:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self) -> None:
        """Stop cleanly: commit and acknowledge what was received (unless the
        store is failing), then disconnect."""
        client = self._client
        writer = self._writer
        if writer is not None:
            self.drain(2.0)
            self._stopping.set()
            writer.join(5)
            self._writer = None
        self._client = None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        with self._lock:
            self.store.close()

    def write_stats_file(self) -> None:
        """Write :meth:`stats` to :func:`stats_dir` / ``<client id>.json`` (for ``--stats``)."""
        folder = stats_dir(self.db_path)
        doc = {"client_id": self.client_id, "group": self.group, "pid": os.getpid(),
               "updated_ms": now_ms(), **self.stats()}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{self.client_id}.json.tmp"
            tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
            os.replace(tmp, folder / f"{self.client_id}.json")
        except OSError as exc:  # a full disk: the store's own outage is reported elsewhere
            log.debug("ingest: cannot write the stats file: %s", exc)


def _outcome_name(item: Item, outcome: Outcome) -> str:
    if outcome is Outcome.REJECTED:
        return "rejected:" + (item.reason if isinstance(item, Reject) else "internal")
    return outcome.value


def stats_dir(db_path: str | Path) -> Path:
    """Where ingest workers of the store ``db_path`` write their health (``<db>.d/ingest``)."""
    return parse_target(db_path).state_dir() / "ingest"


def worker_health(db_path: str | Path) -> list[dict[str, Any]]:
    """Each ingest worker's last health file (:meth:`Ingest.write_stats_file`) of the
    store ``db_path``, by client id; unreadable or half-written ones are skipped."""
    try:
        folder = stats_dir(db_path)
    except ValueError:  # not a store location: no workers
        return []
    out = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
    return out


def read_stats(db_path: str | Path) -> dict[str, object]:
    """``medge ingest --stats``: the store's committed counters and each worker's health."""
    with Store(db_path, readonly=True) as store:
        counters = store.counters()
        conflicts = len(store.conflicts())
    workers = worker_health(db_path)
    rejected = {k[len("rejected."):]: v for k, v in counters.items() if k.startswith("rejected.")}
    return {
        "received": counters.get("received", 0), "stored": counters.get("stored", 0),
        "duplicates": counters.get("duplicate", 0), "conflicts": counters.get("conflict", 0),
        "conflicts_kept": conflicts, "rejected": rejected, "workers": workers,
    }


def run_ingest_forever(
    db_path: str | Path,
    host: str,
    port: int,
    stop: threading.Event,
    connect_timeout_s: float | None = 10.0,
    *,
    group: str | None = None,
    client_id: str | None = None,
    username: str | None = None,
    password: str | None = None,
    on_ingest: Callable[[Ingest], None] | None = None,
) -> int:
    """``medge ingest``: run until ``stop`` is set; log counters every 10 s and
    write them to the stats file (:func:`stats_dir`) every second.

    Raises :class:`host.services.store.StoreError` before any network traffic when
    the store cannot be used, and :class:`BrokerUnreachable` when no connection was
    made within ``connect_timeout_s`` (``None``: keep trying; module docstring).
    ``on_ingest`` is called with the :class:`Ingest` before it connects (e.g. to
    serve its :meth:`Ingest.stats` as metrics: ``--metrics-port``)."""
    ingest = Ingest(db_path, host, port, client_id, group=group, username=username,
                    password=password)
    if on_ingest is not None:
        on_ingest(ingest)
    ingest.warn_connect_failures = connect_timeout_s is None
    try:
        ingest.start()
        if connect_timeout_s is not None:
            deadline = time.monotonic() + connect_timeout_s
            while not ingest.wait_connected(0.1):
                if stop.is_set():
                    return 0
                if time.monotonic() >= deadline:
                    raise BrokerUnreachable(
                        f"no MQTT broker reachable at {host}:{port} after "
                        f"{connect_timeout_s:g} s: {ingest.unreachable_reason()}")
            ingest.warn_connect_failures = True
    except BaseException:
        ingest.stop()
        raise
    log.info("ingest: storing into %s", db_path)
    last = time.monotonic()
    try:
        while not stop.wait(1.0):
            ingest.write_stats_file()
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                log.info("ingest: %s", ingest.stats())
    finally:
        ingest.stop()
        ingest.write_stats_file()
    return 0

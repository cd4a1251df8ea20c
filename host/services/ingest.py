"""Ingest service: MQTT -> validate -> de-duplicate -> SQLite.

Subscribes to ``medge/v1/#`` with QoS 1 in a persistent session (fixed
client id, ``clean_session=False``) so that messages published while ingest
is down are queued by the broker.  Acknowledgements are manual: the PUBACK
for a QoS 1 message is sent only after the message is committed to the store,
so a message is never acknowledged before it is on disk.  A message that fails
to store (disk full, locked database) stays unacknowledged and the broker
redelivers it after the next reconnect.

Every message gets exactly one outcome: stored, duplicate (already stored,
dropped by (device, seq)), ignored (host -> device traffic), or rejected with
a :class:`host.services.messages.Reason`.  Rejections are logged (rate-limited per
reason), counted per reason, and written to the ``rejections`` table; ingest
keeps running whatever arrives.

Reaching the broker (``medge ingest``, :func:`run_ingest_forever`): at start-up
ingest waits at most ``connect_timeout_s`` (10 s) for its first connection and
subscription, retrying with paho's capped backoff, then gives up with
:class:`BrokerUnreachable` (one line: where it tried and why it failed).  Once
connected it never gives up: each lost connection and each failed reconnect
is a WARNING, and paho reconnects (0.1 s .. 2 s backoff).  ``connect_timeout_s=None``
retries from the start for ever, a WARNING per failed attempt.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import paho.mqtt.client as mqtt

from firmware.net import protocol
from host.services import messages
from host.services.store import Store, now_ms

log = logging.getLogger(__name__)


class BrokerUnreachable(ConnectionError):
    """Ingest could not connect and subscribe in its start-up time; ``str()`` is one line."""

SUBSCRIPTION = protocol.TOPIC_ROOT + "/#"
_LOG_FIRST_N = 10  # per reason, then one log line every _LOG_EVERY rejections
_LOG_EVERY = 100


class Ingest:
    def __init__(
        self, db_path: str | Path, host: str, port: int, client_id: str = "medge-ingest"
    ) -> None:
        self.store = Store(db_path)
        self.host = host
        self.port = port
        self.client_id = client_id
        self.stored = 0
        self.duplicates = 0
        self.ignored = 0
        self.rejected: Counter[str] = Counter()
        self.errors = 0  # storage failures (message left unacknowledged)
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        #: Log failed connection attempts as WARNINGs (off while a bounded start-up
        #: wait is running: its caller reports the outcome in one line).
        self.warn_connect_failures = True
        self.connect_failures = 0
        self.refused: str | None = None  # the broker's CONNACK/SUBACK refusal, if any

    # -- message handling (no broker needed: tests call it directly) --------
    def handle(self, topic: str, payload: bytes) -> str:
        """Validate and store one message; return its outcome name."""
        received = now_ms()
        result = messages.check(topic, payload)
        with self._lock:
            if isinstance(result, messages.Rejected):
                reason = result.reason.value
                self.rejected[reason] += 1
                count = self.rejected[reason]
                if count <= _LOG_FIRST_N or count % _LOG_EVERY == 0:
                    log.warning(
                        "rejected (%s, #%d) on %r: %s", reason, count, topic[:200], result.detail
                    )
                self.store.add_rejection(reason, result.detail, topic, payload, received)
                return "rejected:" + reason
            if isinstance(result, messages.Ignored):
                self.ignored += 1
                return "ignored"
            if self.store.add(result.msg_type, result.device_id, result.payload, received):
                self.stored += 1
                return "stored"
            self.duplicates += 1
            return "duplicate"

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "stored": self.stored,
                "duplicates": self.duplicates,
                "ignored": self.ignored,
                "rejected": dict(self.rejected),
                "errors": self.errors,
                "connected": self._connected.is_set(),
            }

    # -- MQTT -----------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = f"the broker refused the connection: {reason_code}"
            self.connect_failures += 1
            if self.warn_connect_failures:
                log.warning("ingest: broker refused connection: %s", reason_code)
            return
        client.subscribe(SUBSCRIPTION, qos=1)
        log.info(
            "ingest: connected to %s:%d (session present: %s)",
            self.host,
            self.port,
            flags.session_present,
        )

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            self.refused = f"the broker refused the subscription to {SUBSCRIPTION}"
            if self.warn_connect_failures:
                log.error("ingest: subscription to %s refused: %s", SUBSCRIPTION, reason_codes)
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
        try:
            self.handle(msg.topic, msg.payload)
        except Exception:  # never let one message kill the network thread
            with self._lock:
                self.errors += 1
            log.exception("ingest: failed to store message on %r; left unacknowledged", msg.topic)
            return
        client.ack(msg.mid, msg.qos)

    def start(self) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        client.reconnect_delay_set(min_delay=0.1, max_delay=2)
        client.max_inflight_messages_set(100)
        self._client = client
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

    def stop(self) -> None:
        client = self._client
        self._client = None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        with self._lock:
            self.store.close()


def run_ingest_forever(
    db_path: str | Path,
    host: str,
    port: int,
    stop: threading.Event,
    connect_timeout_s: float | None = 10.0,
) -> int:
    """``medge ingest``: run until ``stop`` is set; log counters every 10 s.

    Raises :class:`host.services.store.StoreError` before any network traffic when
    the store cannot be used, and :class:`BrokerUnreachable` when no connection was
    made within ``connect_timeout_s`` (``None``: keep trying; module docstring)."""
    ingest = Ingest(db_path, host, port)
    ingest.warn_connect_failures = connect_timeout_s is None
    ingest.start()
    try:
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
        while not stop.wait(0.5):
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                log.info("ingest: %s", ingest.stats())
    finally:
        ingest.stop()
    return 0

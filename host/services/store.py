"""The store of everything medge keeps: one interface, two backends.

``Store(db)``: ``db`` is a SQLite file path (the default kind; WAL mode) or a URL,
``sqlite:///path`` or ``postgresql://user@host:port/dbname`` (psycopg 3; see
:mod:`host.services.storage.target`).  The SQL is written once
(:mod:`host.services.storage.dialect` holds what differs), the schema is one
logical schema with versioned migrations (:mod:`host.services.storage.migrate`;
applied on every writable open, or by ``medge store migrate``), retention is
:mod:`host.services.storage.prune` (``medge store prune``).

Tables (schema 4).  Times are integer milliseconds since 1970 UTC (``*_ms``);
every write from a device is idempotent on (device_id, incarnation, seq), where
``incarnation`` is '' when the device sends none.  Time-series tables have an
index on (device, time).

Ingest (written today)
    ``messages``     every accepted sequenced message, key (device_id, incarnation,
                     seq): the de-duplication key.  A re-delivered message (QoS 1
                     re-send, retained replay) with the same content is a
                     *duplicate*; the same key with other content is a *conflict*.
                     Indexes (device_id, ts_ms), (received_ms).
    ``conflicts``    messages whose key was already stored with other content (a
                     forged or corrupted message, a reset unit without an
                     incarnation): kept aside, at most CONFLICTS_KEEP_PER_DEVICE per
                     device; the first-committed message stays in ``messages``.
    ``vitals``       the vitals messages in columns, key (device_id, incarnation,
                     seq) (schema 3; it was (device_id, seq)), index (device_id, ts_ms).
    ``devices``      one row per known device: description from its birth, state from
                     its last status message, last-seen time (host clock), its
                     ``incarnation`` and ``provisioned_ms`` (set by provisioning), and
                     ``messages``: its rows in ``messages``, kept by the writer and
                     the prune (schema 5; no per-read COUNT over years of history).
    ``rejections``   rejected messages: reason, detail, topic, first 1 KB of the
                     payload; the newest REJECTIONS_KEEP_PER_REASON per reason.
    ``counters``     running totals (received, stored, duplicate, conflict,
                     rejected.<reason>), written in the same transaction as the
                     messages they count, so they agree with the store.
    ``meta``, ``schema_version``  the schema's version and migration history.

Clinical and fleet tables.  Written today: ``accounts`` (host/services/accounts.py),
``audit_log`` (host/services/audit.py), ``patients``, ``assignments`` and
``observations`` (host/services/patients.py), ``alerts`` (host/services/advice/).
Rhythm events arrive as ``event`` messages and are read from ``messages``
(host/services/advice/live.py).  ``bp_readings``, ``beat_counts``,
``rhythm_events``, ``event_beats``, ``advice``, ``command_acks`` and the OTA tables
are written by nothing yet; ``commands`` by host/services/commands.py (the acks are
device messages, read from ``messages``); ``device_config`` (schema 6: device_id,
desired JSON, updated_ms, updated_by) by host/services/fleetconfig.py.
    ``accounts``       username (key), device_id (unique when set), role
                       (device|host|operator|admin), password_hash, incarnation,
                       created_ms, disabled_ms.
    ``patients``       patient_id (pseudonymous key), profile (JSON text), created/updated.
    ``assignments``    device_id, patient_id, from_ms, until_ms (NULL: still
                       assigned); unique (device_id, from_ms); index (patient_id, from_ms).
    ``bp_readings``    NIBP: systolic/diastolic/mean mmHg, pulse, method, quality;
                       key (device_id, incarnation, seq); index (device_id, ts_ms).
    ``beat_counts``    beats per class (N S V F Q) per minute (minute_ms); key
                       (device_id, incarnation, seq); index (device_id, minute_ms).
    ``rhythm_events``  rhythm, onset_ms, offset_ms, evidence (JSON); key (device_id,
                       incarnation, seq); index (device_id, onset_ms).
    ``event_beats``    the individual beats around an event: key (device_id,
                       incarnation, seq, beat_index), ts_ms, label, rr_ms.
    ``observations``   manual observations: obs_uid (unique, the idempotency key of
                       a client's retry), patient, optional device, kind, value, unit,
                       entered_by/entered_ms; index (patient_id, ts_ms).
    ``alerts``         alert_uid (unique), device/patient, kind, severity, source
                       (rule), detail JSON, acked_ms/by, cleared_ms; indexes (device,
                       time), (patient, time).
    ``advice``         advice_uid (unique), patient, rule, score, text, rationale JSON.
    ``commands``       command_id (key), device, kind, body JSON, created/sent/expires;
                       ``command_acks`` keyed (device_id, incarnation, seq), with
                       command_id, result, detail.
    ``ota_campaigns``  campaign_id, artifact_kind (firmware|model), version, sha256,
                       signature, state, rollout JSON; ``ota_jobs`` (campaign_id,
                       device_id) with state, attempts, updated_ms.
    ``audit_log``      append-only: id, ts_ms, actor, action, subject, detail JSON,
                       prev_hash, hash (unique; each row hashes its content and the
                       previous row's hash).  Never pruned.

PostgreSQL partitioning of the time-series tables: not now.  Measured on 1e6 vitals
rows (:mod:`host.services.storage.partbench`, figures there): per-device queries
equal, only fleet-wide time scans and retention gain, and a partitioned table
could not keep the (device_id, incarnation, seq) key.  Revisit past ~1e8 rows.

Writes go through :meth:`Store.write_batch`: one transaction for a batch of
accepted and rejected messages (group commit), one outcome per message.  A
message that makes the write raise something other than a storage failure is
rolled back alone (a savepoint) and recorded as a rejection ``internal``.  A
storage failure (locked database, disk full, read-only file, a lost PostgreSQL
connection) rolls the whole batch back and raises :class:`StorageUnavailable`:
the caller retries (a lost PostgreSQL connection is re-opened) and acknowledges
nothing meanwhile.

One ``Store`` object is used by one thread at a time (the caller serialises);
readers in other threads or processes open their own.  WAL lets the monitor and
the CLI read while ingest writes.

Opening checks the store first and says what is wrong in one line
(:class:`StoreError`, its :class:`StoreProblem`): a folder, a file that is not
SQLite, a database without medge's tables, a read-only or unreadable location,
an unreachable PostgreSQL server, a store made by a newer medge, or (read-only)
one that needs ``medge store migrate``.  A missing store opened read-only is
``FileNotFoundError``.  A new store is created in one transaction, so a reader
never sees half of it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Union

from host.services.storage import sqlite as sqlite_backend
from host.services.storage.dialect import POSTGRESQL, SQLITE, Dialect
from host.services.storage.errors import StoreError, StoreProblem
from host.services.storage.migrate import LATEST, NewerSchema, current_version, migrate
from host.services.storage.target import Backend, Target, parse_target

__all__ = [
    "SCHEMA_VERSION",
    "Accept",
    "DeviceRow",
    "Item",
    "Outcome",
    "Reject",
    "StorageUnavailable",
    "Store",
    "StoreError",
    "StoreProblem",
    "Target",
    "now_ms",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = LATEST
#: Rejected messages kept per reason (older ones are deleted; the counters keep counting).
REJECTIONS_KEEP_PER_REASON = 1000
#: Conflicting messages kept per device.
CONFLICTS_KEEP_PER_DEVICE = 1000
#: Bytes of a rejected payload kept for inspection.
REJECTION_HEAD_BYTES = 1024

_INSERT_MESSAGE = (
    "INSERT INTO messages (device_id, seq, type, ts_ms, received_ms, payload, incarnation) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_INSERT_VITALS = (
    "INSERT INTO vitals (device_id, incarnation, seq, ts_ms, window_ms, hr_bpm, beats, "
    "quality) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
#: (device_id, seen_ms, seen_ms, n): the device was alive at seen_ms and n of its
#: messages were stored (devices.messages counts them: schema 5).
_TOUCH_DEVICE = (
    "INSERT INTO devices (device_id, first_seen_ms, last_seen_ms, messages) "
    "VALUES (?, ?, ?, ?) ON CONFLICT(device_id) DO UPDATE SET "
    "last_seen_ms = CASE WHEN excluded.last_seen_ms > devices.last_seen_ms "
    "THEN excluded.last_seen_ms ELSE devices.last_seen_ms END, "
    "messages = devices.messages + excluded.messages")


def _vitals_row(device_id: str, incarnation: str, seq: int, doc: dict[str, Any]) -> tuple:
    """The ``vitals`` table's row of one vitals message (the columns of _INSERT_VITALS)."""
    return (device_id, incarnation, seq, doc["ts_ms"], doc["window_ms"], doc["hr_bpm"],
            doc["beats"], doc["quality"])


#: Seconds without news after which an online device is shown ``stale`` (devices
#: publish vitals every second and a birth on every connect; 30 s is several
#: missed windows plus a reconnect).
STALE_AFTER_S = 30.0


def stale_after_default() -> float:
    """:data:`STALE_AFTER_S`, or ``$MEDGE_STALE_AFTER_S`` when set to a number > 0."""
    import os

    try:
        value = float(os.environ.get("MEDGE_STALE_AFTER_S", ""))
    except ValueError:
        return STALE_AFTER_S
    return value if value > 0 else STALE_AFTER_S


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextmanager
def transaction(store: Any) -> Iterator[Any]:
    """One write transaction on ``store`` (a :class:`Store`): committed at the end,
    rolled back on error; yields the connection."""
    db = store.db
    store._begin()
    try:
        yield db
        db.commit()
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise


@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    patient_id: str | None
    fw_version: str | None
    model_version: str | None
    sample_rate_hz: int | None
    boot_id: int | None
    state: str
    state_reason: str | None
    first_seen_ms: int
    last_seen_ms: int
    hr_bpm: int | None
    vitals_ts_ms: int | None
    messages: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Outcome(str, Enum):
    """What committing one message did."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # the same key and content was already stored
    CONFLICT = "conflict"  # the same key with other content: kept aside in ``conflicts``
    REJECTED = "rejected"  # recorded in ``rejections`` (by validation, or ``internal``)


@dataclass(frozen=True)
class Accept:
    """A validated message to store."""

    msg_type: str
    device_id: str
    doc: dict[str, Any]
    received_ms: int
    #: The broker delivered it as a retained message (a replay of an old message
    #: to a subscriber that just came), not as news: it does not make the device
    #: "seen" now, only at its own ``ts_ms``.
    retained: bool = False

    @property
    def seen_ms(self) -> int:
        """When this message shows the device was alive (host clock): its arrival,
        or for a retained replay the device's own timestamp (never later)."""
        if not self.retained:
            return self.received_ms
        ts = self.doc.get("ts_ms")
        return min(ts, self.received_ms) if isinstance(ts, int) else 0


@dataclass(frozen=True)
class Reject:
    """A rejected message to record."""

    reason: str
    detail: str
    topic: str
    payload: bytes
    received_ms: int


Item = Union[Accept, Reject]


class StorageUnavailable(Exception):
    """The store cannot be written right now (locked, full, read-only, I/O error);
    nothing of the batch was committed.  ``str()`` is the reason, one line."""


def _storage_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


_NOT_MEDGE = "a database, but not a medge store (no medge tables: wrong file?)"


class Store:
    """``Store(db)`` creates the store if needed and migrates it to the latest schema;
    ``readonly=True`` only reads an existing, up-to-date one (``FileNotFoundError``
    if there is none).  Either raises :class:`StoreError` when ``db`` cannot be a
    medge store.  ``migrate=False`` opens the store at whatever version it is
    (``medge store info`` read-only, ``medge store migrate`` writable)."""

    def __init__(self, path: str | Path | Target, *, readonly: bool = False,
                 busy_timeout_s: float = 10.0, migrate: bool = True,
                 checkpointer: bool = False) -> None:
        try:
            self.target = parse_target(path)
        except ValueError as exc:
            raise StoreError(str(path), StoreProblem.OTHER, str(exc)) from None
        self.backend = self.target.backend
        self.readonly = readonly
        #: The SQLite file, or the URL as shown (password masked).
        self.path: Path | str = (self.target.path if self.target.path is not None
                                 else self.target.display)
        self.dialect: Dialect = SQLITE if self.backend is Backend.SQLITE else POSTGRESQL
        if self.backend is Backend.SQLITE:
            self.db: Any = self._open_sqlite(readonly, busy_timeout_s, migrate)
        else:
            self.db = self._open_postgres(readonly, busy_timeout_s, migrate)
        #: SQLite, ``checkpointer=True`` (a busy writer: ingest): WAL checkpoints run
        #: in a thread of their own, not inside this connection's commits.
        self.checkpointer: sqlite_backend.Checkpointer | None = None
        if checkpointer and not readonly and self.backend is Backend.SQLITE:
            assert self.target.path is not None
            self.db.execute("PRAGMA wal_autocheckpoint=0")
            self.checkpointer = sqlite_backend.Checkpointer(self.target.path)
        #: Batches written by the set-based path (:meth:`_write_fast`), for tests.
        self.fast_batches = 0
        #: Tests: called at the start of every write transaction; raise
        #: ``sqlite3.OperationalError`` from it to simulate a storage outage.
        self.fault_hook: Callable[[], None] | None = None

    def _open_sqlite(self, readonly: bool, busy_timeout_s: float, run_migrations: bool
                     ) -> sqlite3.Connection:
        path = self.target.path
        assert path is not None
        sqlite_backend.check_path(path)
        if readonly and not path.exists():
            raise FileNotFoundError(f"no medge store at {path}")
        if not readonly:
            sqlite_backend.make_parent(path)
        db: sqlite3.Connection | None = None
        try:
            db = sqlite_backend.connect(path, readonly=readonly, busy_timeout_s=busy_timeout_s)
            conn = db
            self._check_and_migrate(db, lambda: sqlite_backend.tables(conn), readonly,
                                    run_migrations)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise sqlite_backend.open_error(path, exc, readonly) from None
        except BaseException:
            if db is not None:
                db.close()
            raise
        return db

    def _open_postgres(self, readonly: bool, busy_timeout_s: float, run_migrations: bool
                       ) -> Any:
        try:
            import psycopg

            from host.services.storage.postgres import PgConnection
        except ImportError:
            raise StoreError(self.path, StoreProblem.OTHER,
                             "PostgreSQL needs psycopg 3: pip install 'medge[pg]'") from None
        try:
            db = PgConnection(str(self.target.url), readonly=readonly)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise StoreError(self.path, StoreProblem.UNREACHABLE,
                             f"cannot connect to PostgreSQL: {reason}") from None
        try:
            db.execute(f"SET lock_timeout = {int(busy_timeout_s * 1000)}")
            if readonly and not db.tables():
                raise FileNotFoundError(f"no medge store at {self.path} (an empty database)")
            self._check_and_migrate(db, db.tables, readonly, run_migrations)
        except psycopg.Error as exc:
            db.close()
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise StoreError(self.path, StoreProblem.OTHER, f"cannot open the store: {reason}"
                             ) from None
        except BaseException:
            db.close()
            raise
        return db

    def _check_and_migrate(self, db: Any, tables: Callable[[], set[str]], readonly: bool,
                           run_migrations: bool) -> None:
        present = tables()
        medge = bool({"meta", "schema_version"} & present)
        if present and not medge:
            raise StoreError(self.path, StoreProblem.NOT_MEDGE, _NOT_MEDGE)
        if readonly or not run_migrations:
            if not present:
                if readonly:
                    raise StoreError(self.path, StoreProblem.EMPTY,
                                     "an empty database, not (yet) a medge store")
                return
            version = current_version(db, present)
            if version > LATEST:
                raise StoreError(self.path, StoreProblem.NEWER,
                                 f"the store is at schema {version}; this medge knows up to "
                                 f"{LATEST} (upgrade medge)")
            if readonly and run_migrations and version < LATEST:
                raise StoreError(self.path, StoreProblem.OUTDATED,
                                 f"the store is at schema {version}, this medge needs "
                                 f"{LATEST}: run `medge store migrate --db {self.path}`")
            return
        try:
            applied = migrate(db, self.dialect, tables, now_ms)
        except NewerSchema as exc:
            raise StoreError(self.path, StoreProblem.NEWER, str(exc)) from None
        if applied and present:
            log.info("store %s: migrated to schema %d (steps %s)", self.path, LATEST, applied)

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _begin(self) -> None:
        if self.readonly:
            raise StorageUnavailable(f"{self.path}: opened read-only")
        if self.backend is Backend.POSTGRESQL:
            self.db.ensure()
        self.db.execute(self.dialect.begin)

    def schema_version(self) -> int:
        """The store's schema version (== :data:`SCHEMA_VERSION` once migrated)."""
        tables = (sqlite_backend.tables(self.db) if self.backend is Backend.SQLITE
                  else self.db.tables())
        return current_version(self.db, tables)

    def migrate(self) -> list[int]:
        """Apply the pending migrations (a store opened with ``migrate=False``)."""
        if self.readonly:
            raise StoreError(self.path, StoreProblem.READ_ONLY, "opened read-only")
        tables = ((lambda: sqlite_backend.tables(self.db)) if self.backend is Backend.SQLITE
                  else self.db.tables)
        try:
            return migrate(self.db, self.dialect, tables, now_ms)
        except NewerSchema as exc:
            raise StoreError(self.path, StoreProblem.NEWER, str(exc)) from None

    def table_counts(self) -> dict[str, int]:
        """Rows per table (``medge store info``)."""
        tables = (sqlite_backend.tables(self.db) if self.backend is Backend.SQLITE
                  else self.db.tables())
        return {t: self.db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                for t in sorted(tables) if not t.startswith("sqlite_")}

    # -- writes (ingest) ---------------------------------------------------
    def add(self, msg_type: str, device_id: str, doc: dict[str, Any], received_ms: int) -> bool:
        """Store one accepted message; return False if it was not stored (a
        duplicate or a conflict).

        Messages without ``seq`` (the last will) are not sequenced: they only
        update the device's state and are always applied.
        """
        [outcome] = self.write_batch([Accept(msg_type, device_id, doc, received_ms)])
        return outcome is Outcome.STORED

    def add_rejection(
        self, reason: str, detail: str, topic: str, payload: bytes, received_ms: int
    ) -> None:
        self.write_batch([Reject(reason, detail, topic, payload, received_ms)])

    def write_batch(self, items: Sequence[Item]) -> list[Outcome]:
        """Commit ``items`` in one transaction; one :class:`Outcome` per item.

        Raises :class:`StorageUnavailable` (nothing committed) when the store
        cannot be written; see the module docstring."""
        counts: Counter[str] = Counter()
        outcomes: list[Outcome] = []
        try:
            if self.fault_hook is not None:
                self.fault_hook()
            self._begin()
            fast = self._write_fast(items, counts)
            if fast is not None:
                outcomes = fast
            for item in items if fast is None else ():
                self.db.execute("SAVEPOINT item")
                try:
                    outcome = self._write_item(item, counts)
                except Exception as exc:
                    if self.dialect.is_storage_failure(exc):
                        raise
                    self.db.execute("ROLLBACK TO item")
                    detail = f"storing failed: {type(exc).__name__}: {exc}"[:300]
                    log.debug("store: internal error on %r", item, exc_info=True)
                    topic = f"medge/v1/dev/{item.device_id}/{item.msg_type}" if isinstance(
                        item, Accept) else item.topic
                    payload = (json.dumps(item.doc, default=repr).encode() if isinstance(
                        item, Accept) else item.payload)
                    outcome = self._write_item(
                        Reject("internal", detail, topic, payload, item.received_ms), counts)
                self.db.execute("RELEASE item")
                outcomes.append(outcome)
            counts["received"] += len(items)
            self.db.executemany(
                "INSERT INTO counters VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                sorted(counts.items()))
            self.db.commit()
        except Exception as exc:
            try:
                if self.db.in_transaction:
                    self.db.rollback()
            except Exception:
                log.debug("store: rollback failed", exc_info=True)
            if isinstance(exc, StorageUnavailable) or self.dialect.is_storage_failure(exc):
                raise StorageUnavailable(_storage_reason(exc)) from exc
            raise
        return outcomes

    def _write_fast(self, items: Sequence[Item], counts: Counter[str]) -> list[Outcome] | None:
        """The whole batch in a few statements when it is the common case: every
        item a sequenced message other than ``status``, all of them new.  Returns
        None (nothing written) otherwise, or when one row would not go in: the
        caller then writes the batch item by item, which sorts out duplicates,
        conflicts and bad rows."""
        rows = []
        vitals = []
        seen: dict[str, int] = {}
        stored: Counter[str] = Counter()
        for item in items:
            if not isinstance(item, Accept) or item.msg_type == "status":
                return None
            doc = item.doc
            seq = doc.get("seq")
            if seq is None:
                return None
            incarnation = doc.get("incarnation", "")
            rows.append((item.device_id, seq, item.msg_type, doc["ts_ms"], item.received_ms,
                         json.dumps(doc, separators=(",", ":"), sort_keys=True), incarnation))
            if item.msg_type == "vitals":
                vitals.append(_vitals_row(item.device_id, incarnation, seq, doc))
            if seen.get(item.device_id, -1) < item.seen_ms:
                seen[item.device_id] = item.seen_ms
            stored[item.device_id] += 1
        self.db.execute("SAVEPOINT batch")
        try:
            cur = self.db.executemany(_INSERT_MESSAGE, rows)
            if cur.rowcount != len(rows):  # a duplicate or conflict in the batch
                self.db.execute("ROLLBACK TO batch")
                self.db.execute("RELEASE batch")
                return None
            if vitals:
                self.db.executemany(_INSERT_VITALS, vitals)
            self.db.executemany(_TOUCH_DEVICE,
                                [(d, ms, ms, stored[d]) for d, ms in seen.items()])
        except Exception as exc:
            if self.dialect.is_storage_failure(exc):
                raise
            self.db.execute("ROLLBACK TO batch")
            self.db.execute("RELEASE batch")
            return None
        self.db.execute("RELEASE batch")
        self.fast_batches += 1
        counts[Outcome.STORED.value] += len(rows)
        return [Outcome.STORED] * len(rows)

    def _write_item(self, item: Item, counts: Counter[str]) -> Outcome:
        if isinstance(item, Reject):
            self._insert_rejection(item)
            counts["rejected." + item.reason] += 1
            return Outcome.REJECTED
        outcome = self._write_accepted(item)
        counts[outcome.value] += 1
        return outcome

    def _write_accepted(self, item: Accept) -> Outcome:
        msg_type, device_id, doc, received_ms = item.msg_type, item.device_id, item.doc, \
            item.received_ms
        seq = doc.get("seq")
        if seq is None:  # the broker's will: the device is gone, not seen
            self._touch_device(device_id, None)
        else:
            incarnation = doc.get("incarnation", "")
            body = json.dumps(doc, separators=(",", ":"), sort_keys=True)
            cur = self.db.execute(
                _INSERT_MESSAGE,
                (device_id, seq, msg_type, doc["ts_ms"], received_ms, body, incarnation))
            if cur.rowcount == 0:  # a duplicate or conflict: no news of the device
                return self._duplicate_or_conflict(item, incarnation, seq, body)
            self._touch_device(device_id, item.seen_ms, stored=1)
        if msg_type == "vitals":
            self.db.execute(_INSERT_VITALS,
                            _vitals_row(device_id, doc.get("incarnation", ""), seq, doc))
        elif msg_type == "status" and not self._newer_status_stored(device_id, doc):
            self._apply_status(device_id, doc)
        return Outcome.STORED

    def _duplicate_or_conflict(self, item: Accept, incarnation: str, seq: int,
                               body: str) -> Outcome:
        (first,) = self.db.execute(
            "SELECT payload FROM messages WHERE device_id=? AND incarnation=? AND seq=?",
            (item.device_id, incarnation, seq)).fetchone()
        if first == body:
            return Outcome.DUPLICATE
        cur = self.db.execute(
            "INSERT INTO conflicts (received_ms, device_id, incarnation, seq, type, "
            "payload) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (item.received_ms, item.device_id, incarnation, seq, item.msg_type, body))
        if cur.rowcount == 0:
            return Outcome.DUPLICATE  # the same conflicting message again (a re-delivery)
        self.db.execute(
            "DELETE FROM conflicts WHERE device_id=? AND id <= (SELECT id FROM conflicts "
            "WHERE device_id=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (item.device_id, item.device_id, CONFLICTS_KEEP_PER_DEVICE))
        return Outcome.CONFLICT

    def _insert_rejection(self, item: Reject) -> None:
        head = item.payload[:REJECTION_HEAD_BYTES].decode("utf-8", errors="backslashreplace")
        self.db.execute(
            "INSERT INTO rejections (received_ms, reason, detail, topic, payload_head) "
            "VALUES (?, ?, ?, ?, ?)",
            (item.received_ms, item.reason, item.detail[:1000], item.topic[:512], head))
        self.db.execute(
            "DELETE FROM rejections WHERE reason=? AND id <= (SELECT id FROM rejections "
            "WHERE reason=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
            (item.reason, item.reason, REJECTIONS_KEEP_PER_REASON))

    def _touch_device(self, device_id: str, seen_ms: int | None, stored: int = 0) -> None:
        """Make sure the device has a row; ``seen_ms``: it was alive then (the
        newest such time is its ``last_seen_ms``) and ``stored`` more of its
        messages went into ``messages``."""
        if seen_ms is None:
            self.db.execute("INSERT INTO devices (device_id, first_seen_ms, last_seen_ms) "
                            "VALUES (?, 0, 0) ON CONFLICT (device_id) DO NOTHING",
                            (device_id,))
            return
        self.db.execute(_TOUCH_DEVICE, (device_id, seen_ms, seen_ms, stored))

    def _newer_status_stored(self, device_id: str, doc: dict[str, Any]) -> bool:
        """A status message of this incarnation with a higher seq is already stored:
        the state it set is the newer truth (a late or replayed birth must not undo
        a shutdown)."""
        seq = doc.get("seq")
        if seq is None:
            return False
        (newest,) = self.db.execute(
            "SELECT MAX(seq) FROM messages WHERE device_id = ? AND incarnation = ? AND "
            "type = 'status'", (device_id, doc.get("incarnation", ""))).fetchone()
        return newest is not None and newest > seq

    def _apply_status(self, device_id: str, doc: dict[str, Any]) -> None:
        if doc["state"] == "online":
            self.db.execute(
                "UPDATE devices SET state='online', state_reason=NULL, patient_id=?, fw_version=?, "
                "model_version=?, sample_rate_hz=?, boot_id=? WHERE device_id=?",
                (
                    doc["patient_id"],
                    doc["fw_version"],
                    doc["model_version"],
                    doc["sample_rate_hz"],
                    doc["boot_id"],
                    device_id,
                ),
            )
        else:
            self.db.execute(
                "UPDATE devices SET state='offline', state_reason=? WHERE device_id=?",
                (doc["reason"], device_id),
            )

    # -- reads (CLI, monitor, tests) ---------------------------------------
    def devices(self, at_ms: int | None = None,
                stale_after_s: float | None = None) -> list[DeviceRow]:
        """Every known device.  ``state`` is the device's own word (``online``
        from its birth, ``offline`` from its shutdown or its will), except that
        an ``online`` device not seen for ``stale_after_s`` (default
        :data:`STALE_AFTER_S`; ``$MEDGE_STALE_AFTER_S``) is ``stale``: it stopped
        without a will reaching us (power cut, broker crash, network)."""
        rows = self._device_rows()
        limit = stale_after_s if stale_after_s is not None else stale_after_default()
        now = at_ms if at_ms is not None else now_ms()
        return [dataclasses.replace(row, state="stale")
                if row.state == "online" and now - row.last_seen_ms > limit * 1000 else row
                for row in rows]

    def _device_rows(self) -> list[DeviceRow]:
        rows = self.db.execute(
            """
            SELECT d.device_id, d.patient_id, d.fw_version, d.model_version, d.sample_rate_hz,
                   d.boot_id, d.state, d.state_reason, d.first_seen_ms, d.last_seen_ms,
                   (SELECT hr_bpm FROM vitals v WHERE v.device_id = d.device_id
                     ORDER BY ts_ms DESC, seq DESC LIMIT 1),
                   (SELECT ts_ms FROM vitals v WHERE v.device_id = d.device_id
                     ORDER BY ts_ms DESC, seq DESC LIMIT 1),
                   d.messages
            FROM devices d ORDER BY d.device_id
            """
        ).fetchall()
        return [DeviceRow(*row) for row in rows]

    def seqs(self, device_id: str) -> list[int]:
        rows = self.db.execute(
            "SELECT seq FROM messages WHERE device_id=? ORDER BY seq", (device_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def seq_gaps(self, device_id: str) -> list[tuple[int, int]]:
        """Missing seq ranges (first, last) between the lowest and highest stored."""
        seqs = self.seqs(device_id)
        return [(a + 1, b - 1) for a, b in zip(seqs, seqs[1:]) if b - a > 1]

    def vitals_count(self, device_id: str | None = None) -> int:
        if device_id is None:
            return self.db.execute("SELECT COUNT(*) FROM vitals").fetchone()[0]
        return self.db.execute(
            "SELECT COUNT(*) FROM vitals WHERE device_id=?", (device_id,)
        ).fetchone()[0]

    def rejection_counts(self) -> dict[str, int]:
        """Rejections per reason since the store was made (the kept rows are fewer)."""
        return {name[len("rejected."):]: value for name, value in self.counters().items()
                if name.startswith("rejected.")}

    def counters(self) -> dict[str, int]:
        """The running totals (``received``, ``stored``, ``duplicate``, ``conflict``,
        ``rejected.<reason>``), as committed."""
        return dict(self.db.execute("SELECT name, value FROM counters ORDER BY name"))

    def conflicts(self, device_id: str | None = None) -> list[dict[str, Any]]:
        """The kept conflicting messages, oldest first."""
        query = "SELECT received_ms, device_id, incarnation, seq, type, payload FROM conflicts"
        if device_id is None:
            rows = self.db.execute(query + " ORDER BY id").fetchall()
        else:
            rows = self.db.execute(query + " WHERE device_id = ? ORDER BY id",
                                   (device_id,)).fetchall()
        keys = ("received_ms", "device_id", "incarnation", "seq", "type", "payload")
        return [dict(zip(keys, row)) for row in rows]

    def payload(self, device_id: str, seq: int, incarnation: str = "") -> dict[str, Any] | None:
        """The stored message (device_id, incarnation, seq), or None."""
        row = self.db.execute(
            "SELECT payload FROM messages WHERE device_id=? AND incarnation=? AND seq=?",
            (device_id, incarnation, seq)).fetchone()
        return None if row is None else json.loads(row[0])

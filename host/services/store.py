"""SQLite store of everything the ingest service accepts (WAL mode).

Tables
------
``messages``   every accepted sequenced message, primary key
               (device_id, incarnation, seq): the de-duplication key
               (``incarnation`` is '' when the device does not send one).
               Storing is idempotent: a re-delivered message (QoS 1 re-send,
               retained replay) with the same content is a *duplicate*; one
               with the same key and different content is a *conflict*.
``conflicts``  messages whose key was already stored with other content (a
               forged or corrupted message, or a reset unit without an
               incarnation): kept aside, at most CONFLICTS_KEEP_PER_DEVICE per
               device; the first-committed message stays in ``messages``.
``vitals``     the vitals messages in columns, for queries and the monitor.
               Its key is (device_id, seq): a later incarnation's vitals with
               a seq already there stays in ``messages`` only (logged).
``devices``    one row per known device: description from its birth, state
               from its last status message, last-seen time (host clock).
``rejections`` rejected messages: reason, detail, topic, first 1 KB of the
               payload; the newest REJECTIONS_KEEP_PER_REASON per reason (a ring).
``counters``   running totals (received, stored, duplicates, conflicts,
               rejected.<reason>), written in the same transaction as the
               messages they count, so they agree with the store.

Writes go through :meth:`Store.write_batch`: one transaction for a batch of
accepted and rejected messages (group commit), one outcome per message.  A
message that makes the write raise something other than a storage failure is
rolled back alone (a savepoint) and recorded as a rejection ``internal``.  A
storage failure (locked database, disk full, read-only file) rolls the whole
batch back and raises :class:`StorageUnavailable`: the caller retries and
acknowledges nothing meanwhile.

One ``Store`` object is used by one thread at a time (the caller serialises);
readers in other
threads or processes open their own.  WAL lets the monitor and the CLI read
while ingest writes.

Opening checks the path first and says what is wrong in one line
(:class:`StoreError`, its :class:`StoreProblem`): a folder, a file that is not
SQLite, a SQLite file without medge's tables, a read-only or unreadable
location.  A missing store opened read-only is ``FileNotFoundError``.  The
schema is created in one transaction, so a reader never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Union

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
#: Rejected messages kept per reason (older ones are deleted; the counters keep counting).
REJECTIONS_KEEP_PER_REASON = 1000
#: Conflicting messages kept per device.
CONFLICTS_KEEP_PER_DEVICE = 1000
#: Bytes of a rejected payload kept for inspection.
REJECTION_HEAD_BYTES = 1024

_MESSAGES_TABLE = """(
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    incarnation  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (device_id, incarnation, seq)
) WITHOUT ROWID;
"""

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id      TEXT PRIMARY KEY,
    patient_id     TEXT,
    fw_version     TEXT,
    model_version  TEXT,
    sample_rate_hz INTEGER,
    boot_id        INTEGER,
    state          TEXT NOT NULL DEFAULT 'offline',
    state_reason   TEXT,
    first_seen_ms  INTEGER NOT NULL,
    last_seen_ms   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages """ + _MESSAGES_TABLE + """
CREATE TABLE IF NOT EXISTS conflicts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms  INTEGER NOT NULL,
    device_id    TEXT NOT NULL,
    incarnation  TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    UNIQUE (device_id, incarnation, seq, payload)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vitals (
    device_id  TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    ts_ms      INTEGER NOT NULL,
    window_ms  INTEGER NOT NULL,
    hr_bpm     INTEGER,
    beats      INTEGER NOT NULL,
    quality    TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vitals_by_time ON vitals (device_id, ts_ms);
CREATE TABLE IF NOT EXISTS rejections (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ms  INTEGER NOT NULL,
    reason       TEXT NOT NULL,
    detail       TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload_head TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_by_reason ON rejections (reason, id);
"""

# Schema 1 -> 2: the messages key gains the incarnation; counters start from the rows.
_MIGRATE_1_TO_2 = """
CREATE TABLE messages_v2 """ + _MESSAGES_TABLE + """
INSERT INTO messages_v2 (device_id, seq, type, ts_ms, received_ms, payload)
    SELECT device_id, seq, type, ts_ms, received_ms, payload FROM messages;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
INSERT OR IGNORE INTO counters SELECT 'rejected.' || reason, COUNT(*) FROM rejections
    GROUP BY reason;
INSERT OR IGNORE INTO counters SELECT 'stored', COUNT(*) FROM messages;
UPDATE meta SET value = '2' WHERE key = 'schema_version';
"""


_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 file


class StoreProblem(str, Enum):
    """Why a store path cannot be used."""

    FOLDER = "folder"  # the path is a directory
    NOT_SQLITE = "not-sqlite"  # a file, but not a SQLite database
    EMPTY = "empty"  # a SQLite database without tables (a store being created right now)
    NOT_MEDGE = "not-medge"  # a SQLite database without medge's tables
    READ_ONLY = "read-only"  # the file or its folder cannot be written
    UNREADABLE = "unreadable"  # no permission to read
    OTHER = "other"


class StoreError(Exception):
    """The store at ``path`` cannot be used; ``str()`` is one line naming the path."""

    def __init__(self, path: Path, problem: StoreProblem, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.problem = problem


def _check_path(path: Path) -> None:
    """Refuse a folder or a non-SQLite file before SQLite sees it (its errors are vague)."""
    if path.is_dir():
        raise StoreError(path, StoreProblem.FOLDER,
                         f"is a folder, not a store file (e.g. {path / 'medge.db'})")
    if path.is_file():
        try:
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(path, StoreProblem.UNREADABLE,
                             f"cannot read the store: {exc.strerror or exc}") from None
        if head and head != _SQLITE_MAGIC:
            raise StoreError(path, StoreProblem.NOT_SQLITE,
                             "not a SQLite database (not a medge store: wrong file?)")


def _make_parent(path: Path) -> None:
    parent = path.parent
    for folder in (parent, *parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise StoreError(path, StoreProblem.OTHER,
                                 f"cannot create the store: {folder} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = (StoreProblem.READ_ONLY if isinstance(exc, PermissionError)
                   or exc.errno == 30 else StoreProblem.OTHER)  # 30: EROFS
        raise StoreError(path, problem,
                         f"cannot create the folder {parent}: {exc.strerror or exc}") from None


def _open_error(path: Path, exc: sqlite3.Error, readonly: bool) -> StoreError:
    """Translate SQLite's error at open into the user's terms."""
    text = str(exc)
    folder = path.parent
    if "not a database" in text:
        return StoreError(path, StoreProblem.NOT_SQLITE, "not a SQLite database")
    if "readonly database" in text:
        return StoreError(path, StoreProblem.READ_ONLY,
                          "the store is read-only here (cannot write to the file)")
    if "unable to open" in text or "disk I/O" in text:
        if not os.access(folder, os.W_OK):
            need = (f"reading a WAL-mode store needs to create {path.name}-shm next to it"
                    if readonly else "the store and its WAL files are created there")
            return StoreError(path, StoreProblem.READ_ONLY,
                              f"the folder {folder} is read-only ({need})")
        if path.exists() and not os.access(path, os.R_OK | (0 if readonly else os.W_OK)):
            return StoreError(path, StoreProblem.READ_ONLY if readonly else
                              StoreProblem.UNREADABLE, "no permission to open the store")
        return StoreError(path, StoreProblem.OTHER, f"cannot open the store here ({text})")
    if "locked" in text:
        return StoreError(path, StoreProblem.OTHER,
                          "the store is locked by another process (try again)")
    return StoreError(path, StoreProblem.OTHER, f"cannot open the store ({text})")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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


_NOT_STORAGE = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError,
                sqlite3.InterfaceError, sqlite3.NotSupportedError)


def _is_storage_failure(exc: BaseException) -> bool:
    return (isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, _NOT_STORAGE)) \
        or isinstance(exc, StorageUnavailable)


def _storage_reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


_NOT_MEDGE = "a SQLite database, but not a medge store (no medge tables: wrong file?)"


class Store:
    """``Store(path)`` creates the store if needed; ``readonly=True`` only reads an
    existing one (``FileNotFoundError`` if there is none).  Either raises
    :class:`StoreError` when the path cannot be a medge store."""

    def __init__(self, path: str | Path, *, readonly: bool = False,
                 busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        _check_path(self.path)
        if readonly and not self.path.exists():
            raise FileNotFoundError(f"no medge store at {self.path}")
        if not readonly:
            _make_parent(self.path)
        db: sqlite3.Connection | None = None
        try:
            if readonly:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                db = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s,
                                     check_same_thread=False)
                tables = {row[0] for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            else:
                db = sqlite3.connect(self.path, timeout=busy_timeout_s, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                tables = {row[0] for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "meta" not in tables:
                    raise StoreError(self.path, StoreProblem.NOT_MEDGE, _NOT_MEDGE)
                db.executescript(
                    "BEGIN;" + _DDL + "INSERT OR IGNORE INTO meta VALUES ('schema_version', "
                    f"'{SCHEMA_VERSION}');")
                columns = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
                if "incarnation" not in columns:  # a schema-1 store: migrate in this transaction
                    for statement in _MIGRATE_1_TO_2.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute("COMMIT")
                tables = {"meta", "devices"}
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            raise _open_error(self.path, exc, readonly) from None
        except StoreError:
            if db is not None:
                db.close()
            raise
        if not tables or not {"meta", "devices"} <= tables:
            db.close()
            if not tables:
                raise StoreError(self.path, StoreProblem.EMPTY,
                                 "an empty SQLite database, not (yet) a medge store")
            raise StoreError(self.path, StoreProblem.NOT_MEDGE, _NOT_MEDGE)
        self.db = db
        #: Tests: called at the start of every write transaction; raise
        #: ``sqlite3.OperationalError`` from it to simulate a storage outage.
        self.fault_hook: Callable[[], None] | None = None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            self.db.execute("BEGIN IMMEDIATE")
            for item in items:
                self.db.execute("SAVEPOINT item")
                try:
                    outcome = self._write_item(item, counts)
                except Exception as exc:
                    if _is_storage_failure(exc):
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
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                sorted(counts.items()))
            self.db.commit()
        except Exception as exc:
            if self.db.in_transaction:
                self.db.rollback()
            if _is_storage_failure(exc):
                raise StorageUnavailable(_storage_reason(exc)) from exc
            raise
        return outcomes

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
        self._touch_device(device_id, received_ms)
        seq = doc.get("seq")
        if seq is not None:
            incarnation = doc.get("incarnation", "")
            body = json.dumps(doc, separators=(",", ":"), sort_keys=True)
            cur = self.db.execute(
                "INSERT OR IGNORE INTO messages (device_id, seq, type, ts_ms, received_ms, "
                "payload, incarnation) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, seq, msg_type, doc["ts_ms"], received_ms, body, incarnation))
            if cur.rowcount == 0:
                return self._duplicate_or_conflict(item, incarnation, seq, body)
        if msg_type == "vitals":
            cur = self.db.execute(
                "INSERT OR IGNORE INTO vitals VALUES (?, ?, ?, ?, ?, ?, ?)",
                (device_id, seq, doc["ts_ms"], doc["window_ms"], doc["hr_bpm"], doc["beats"],
                 doc["quality"]))
            if cur.rowcount == 0:
                log.warning("store: vitals %s seq %d (incarnation %r) is in messages only: "
                            "another incarnation's vitals has that seq", device_id, seq,
                            doc.get("incarnation", ""))
        elif msg_type == "status":
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
            "INSERT OR IGNORE INTO conflicts (received_ms, device_id, incarnation, seq, type, "
            "payload) VALUES (?, ?, ?, ?, ?, ?)",
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

    def _touch_device(self, device_id: str, received_ms: int) -> None:
        self.db.execute(
            "INSERT INTO devices (device_id, first_seen_ms, last_seen_ms) VALUES (?, ?, ?) "
            "ON CONFLICT(device_id) DO UPDATE SET "
            "last_seen_ms = MAX(last_seen_ms, excluded.last_seen_ms)",
            (device_id, received_ms, received_ms),
        )

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
    def devices(self) -> list[DeviceRow]:
        rows = self.db.execute(
            """
            SELECT d.device_id, d.patient_id, d.fw_version, d.model_version, d.sample_rate_hz,
                   d.boot_id, d.state, d.state_reason, d.first_seen_ms, d.last_seen_ms,
                   (SELECT hr_bpm FROM vitals v WHERE v.device_id = d.device_id
                     ORDER BY seq DESC LIMIT 1),
                   (SELECT ts_ms FROM vitals v WHERE v.device_id = d.device_id
                     ORDER BY seq DESC LIMIT 1),
                   (SELECT COUNT(*) FROM messages m WHERE m.device_id = d.device_id)
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
        rows = self.db.execute(
            "SELECT received_ms, device_id, incarnation, seq, type, payload FROM conflicts "
            "WHERE ?1 IS NULL OR device_id = ?1 ORDER BY id", (device_id,)).fetchall()
        keys = ("received_ms", "device_id", "incarnation", "seq", "type", "payload")
        return [dict(zip(keys, row)) for row in rows]

    def payload(self, device_id: str, seq: int, incarnation: str = "") -> dict[str, Any] | None:
        """The stored message (device_id, incarnation, seq), or None."""
        row = self.db.execute(
            "SELECT payload FROM messages WHERE device_id=? AND incarnation=? AND seq=?",
            (device_id, incarnation, seq)).fetchone()
        return None if row is None else json.loads(row[0])

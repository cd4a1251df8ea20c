"""SQLite store of everything the ingest service accepts (WAL mode).

Tables
------
``messages``   every accepted sequenced message, primary key (device_id, seq):
               the de-duplication key.  Storing is idempotent: a re-delivered
               message (QoS 1 re-send, retained replay) is recognised and
               dropped inside the same transaction.
``vitals``     the vitals messages in columns, for queries and the monitor.
``devices``    one row per known device: description from its birth, state
               from its last status message, last-seen time (host clock).
``rejections`` every rejected message: reason, detail, topic, head of payload.

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
import os
import sqlite3
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

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
CREATE TABLE IF NOT EXISTS messages (
    device_id    TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    type         TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
) WITHOUT ROWID;
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


_NOT_MEDGE = "a SQLite database, but not a medge store (no medge tables: wrong file?)"


class Store:
    """``Store(path)`` creates the store if needed; ``readonly=True`` only reads an
    existing one (``FileNotFoundError`` if there is none).  Either raises
    :class:`StoreError` when the path cannot be a medge store."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
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
                db = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
                tables = {row[0] for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
            else:
                db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                tables = {row[0] for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if tables and "meta" not in tables:
                    raise StoreError(self.path, StoreProblem.NOT_MEDGE, _NOT_MEDGE)
                db.executescript(
                    "BEGIN;" + _DDL + "INSERT OR IGNORE INTO meta VALUES ('schema_version', "
                    f"'{SCHEMA_VERSION}');COMMIT;")
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

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes (ingest) ---------------------------------------------------
    def add(self, msg_type: str, device_id: str, doc: dict[str, Any], received_ms: int) -> bool:
        """Store one accepted message; return False if it was a duplicate.

        Messages without ``seq`` (the last will) are not sequenced: they only
        update the device's state and are always applied.
        """
        with self.db:
            self._touch_device(device_id, received_ms)
            seq = doc.get("seq")
            if seq is not None:
                cur = self.db.execute(
                    "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        device_id,
                        seq,
                        msg_type,
                        doc["ts_ms"],
                        received_ms,
                        json.dumps(doc, separators=(",", ":"), sort_keys=True),
                    ),
                )
                if cur.rowcount == 0:
                    return False
            if msg_type == "vitals":
                self.db.execute(
                    "INSERT INTO vitals VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        device_id,
                        seq,
                        doc["ts_ms"],
                        doc["window_ms"],
                        doc["hr_bpm"],
                        doc["beats"],
                        doc["quality"],
                    ),
                )
            elif msg_type == "status":
                self._apply_status(device_id, doc)
            return True

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

    def add_rejection(
        self, reason: str, detail: str, topic: str, payload: bytes, received_ms: int
    ) -> None:
        head = payload[:200].decode("utf-8", errors="backslashreplace")
        with self.db:
            self.db.execute(
                "INSERT INTO rejections (received_ms, reason, detail, topic, payload_head) "
                "VALUES (?, ?, ?, ?, ?)",
                (received_ms, reason, detail, topic[:512], head),
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
        rows = self.db.execute("SELECT reason, COUNT(*) FROM rejections GROUP BY reason").fetchall()
        return dict(rows)

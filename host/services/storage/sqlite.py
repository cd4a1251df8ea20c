"""The SQLite backend: path checks before SQLite sees a path (its own errors are
vague), opening in WAL mode, and SQLite's errors at open in the user's terms."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from host.services.storage.errors import StoreError, StoreProblem


def check_path(path: Path) -> None:
    """Refuse a folder (:class:`~host.services.store.StoreError`).  A file that is not
    a SQLite database is refused by SQLite itself at the first statement
    (:func:`open_error`).  The file is never opened here: on POSIX, closing *any*
    descriptor of a database file drops every lock this process's SQLite connections
    hold on it (fcntl locks are per process; "How To Corrupt An SQLite Database
    File", section 2.2), and another process's connection that then closes believes
    it is the last one, checkpoints and deletes the WAL under the live connections
    (seen as "disk I/O error" in ``medge demo`` after ``medge patient add``)."""
    if path.is_dir():
        raise StoreError(path, StoreProblem.FOLDER,
                         f"is a folder, not a store file (e.g. {path / 'medge.db'})")


def make_parent(path: Path) -> None:
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


def connect(path: Path, *, readonly: bool, busy_timeout_s: float) -> sqlite3.Connection:
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, check_same_thread=False)
    db = sqlite3.connect(path, timeout=busy_timeout_s, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        db.close()
        raise
    return db


def tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def open_error(path: Path, exc: sqlite3.Error, readonly: bool) -> StoreError:
    """SQLite's error at open as a :class:`~host.services.store.StoreError`."""
    text = str(exc)
    folder = path.parent
    if "not a database" in text:
        return StoreError(path, StoreProblem.NOT_SQLITE,
                          "not a SQLite database (not a medge store: wrong file?)")
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


class Checkpointer:
    """Checkpoints a WAL-mode store from a thread and a connection of its own.

    By default SQLite checkpoints inside the commit that pushes the WAL past
    1,000 pages: that commit copies the pages into the database and waits for
    the fsync (measured here: 7 ms a commit on average over 200 batches of 100
    vitals messages, more than the inserts took).  A writer that opens the store
    with ``checkpointer=True`` (ingest) turns that off for its own connection
    (``wal_autocheckpoint=0``) and this thread runs ``wal_checkpoint(PASSIVE)``
    every ``interval_s``: it never blocks the writer or a reader, the writer's
    commits only append to the WAL, and the WAL stays about ``interval_s`` of
    writes long.  :meth:`stop` runs a last checkpoint.  If a checkpoint fails
    (a full disk) it is retried on the next tick; the writer's own commits
    report the outage.
    """

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        import threading

        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer",
                                        daemon=True)
        self._thread.start()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error:
            self.failures += 1

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, timeout=1.0, check_same_thread=False)
        except sqlite3.Error:
            self.failures += 1
            return
        try:
            while not self._stop.wait(self.interval_s):
                self._checkpoint(db)
            self._checkpoint(db)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

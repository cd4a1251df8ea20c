"""The SQLite backend: path checks before SQLite sees a path (its own errors are
vague), opening in WAL mode, and SQLite's errors at open in the user's terms."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from host.services.storage.errors import StoreError, StoreProblem

_SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 file


def check_path(path: Path) -> None:
    """Refuse a folder or a non-SQLite file (:class:`~host.services.store.StoreError`)."""
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

"""Why a store cannot be opened: :class:`StoreError` (one line) and its :class:`StoreProblem`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path


class StoreProblem(str, Enum):
    """Why a store path or URL cannot be used."""

    FOLDER = "folder"  # the path is a directory
    NOT_SQLITE = "not-sqlite"  # a file, but not a SQLite database
    EMPTY = "empty"  # a database without tables (a store being created right now)
    NOT_MEDGE = "not-medge"  # a database without medge's tables
    READ_ONLY = "read-only"  # the file or its folder cannot be written
    UNREADABLE = "unreadable"  # no permission to read
    UNREACHABLE = "unreachable"  # PostgreSQL: no server, refused, authentication failed
    OUTDATED = "outdated"  # opened read-only, but the schema needs migrating first
    NEWER = "newer"  # migrated by a newer medge
    OTHER = "other"


class StoreError(Exception):
    """The store at ``path`` cannot be used; ``str()`` is one line naming the store
    (a path, or a URL with its password masked)."""

    def __init__(self, path: Path | str, problem: StoreProblem, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.problem = problem

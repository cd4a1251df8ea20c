"""Which store a ``--db`` names: a SQLite file or a PostgreSQL database.

``--db`` takes a path (``var/medge.db``: SQLite, the default), ``sqlite:///path``
(the same, as a URL: three slashes then a relative path, four for an absolute
one: ``sqlite:////srv/medge.db``) or ``postgresql://user@host:port/dbname``
(``postgres://`` too; any libpq URL parameters pass through).  A password in a URL
is never printed: :attr:`Target.display` masks it.

Files that belong to a store but not in it (ingest workers' health, the demo's
broker and device state) live in :meth:`Target.state_dir`: ``<file>.d`` next to a
SQLite store; for PostgreSQL ``$MEDGE_STATE_DIR`` (default ``var/``) /
``pg-<host>-<port>-<dbname>.d``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Backend(str, Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


_PG_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class Target:
    backend: Backend
    path: Path | None = None  # SQLite
    url: str | None = None  # PostgreSQL

    @property
    def display(self) -> str:
        """The store as shown to people: the path, or the URL with its password masked."""
        if self.path is not None:
            return str(self.path)
        assert self.url is not None
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", self.url)

    def state_dir(self) -> Path:
        if self.path is not None:
            return self.path.with_name(self.path.name + ".d")
        parts = urlsplit(self.url or "")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_",
                      f"pg-{parts.hostname or 'local'}-{parts.port or 5432}-"
                      f"{parts.path.lstrip('/') or 'default'}")
        return Path(os.environ.get("MEDGE_STATE_DIR", "var")) / f"{name}.d"

    def __str__(self) -> str:
        return self.display


def parse_target(db: str | Path | Target) -> Target:
    """``--db`` as a :class:`Target`; ``ValueError`` for a URL of another kind."""
    if isinstance(db, Target):
        return db
    if isinstance(db, Path):
        return Target(Backend.SQLITE, path=db)
    text = str(db)
    scheme = text.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://",
                                                        text) else ""
    if not scheme:
        return Target(Backend.SQLITE, path=Path(text))
    if scheme in _PG_SCHEMES:
        return Target(Backend.POSTGRESQL, url=text)
    if scheme == "sqlite":
        rest = unquote(text[len("sqlite://"):])
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(f"expected sqlite:///relative/path or sqlite:////absolute/path, "
                             f"got {text!r}")
        return Target(Backend.SQLITE, path=Path(rest[1:]))
    raise ValueError(f"unknown store URL scheme {scheme!r} in {text!r} "
                     "(a file path, sqlite:///PATH or postgresql://...)")


def db_argument(text: str) -> str | Path:
    """An argparse ``type`` for ``--db``: a ``Path`` for a file, the URL text otherwise
    (``Path`` would fold ``postgresql://`` into ``postgresql:/``)."""
    import argparse

    try:
        target = parse_target(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return target.path if target.path is not None else text

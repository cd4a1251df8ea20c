"""Versioned migrations: numbered steps (:mod:`host.services.storage.migrations`)
and a ``schema_version`` table, one row per applied step.

Why not Alembic: it needs SQLAlchemy, which nothing else in medge uses (the store
speaks sqlite3 and psycopg directly), and its value is autogenerating migrations
from ORM models, which medge does not have.  The two dialects differ only in a few
types (:mod:`host.services.storage.dialect`), so one SQL text per step serves
both, and a step that moves data can be Python.  The runner is ~60 lines.

How it runs (on every writable open, and by ``medge store migrate``): each pending
step in its own transaction (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL
``BEGIN`` plus a transaction-scoped advisory lock), re-reading the version inside
the transaction so two processes opening one store at once apply each step once;
DDL is transactional on both, so a failed step leaves the previous version whole.
A store made before the ``schema_version`` table existed (schema 1 or 2: only
``meta.schema_version``) is baselined: its version's rows are recorded, then the
later steps run.  ``meta.schema_version`` is kept equal to the latest version.
A store newer than this code is refused (:class:`NewerSchema`).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from host.services.storage import migrations
from host.services.storage.dialect import Dialect
from host.services.storage.target import Backend

#: pg_advisory_xact_lock key of the migration runner ("medge" in ASCII).
_PG_LOCK_KEY = 0x6D65646765


@dataclass(frozen=True)
class Step:
    version: int
    name: str
    sql: str
    up: Callable[[Any], None] | None


class NewerSchema(Exception):
    """The store was migrated by a newer medge than this one."""


def _load_steps() -> list[Step]:
    found = []
    for info in pkgutil.iter_modules(migrations.__path__):
        m = re.fullmatch(r"v(\d{4})_(\w+)", info.name)
        if m is None:
            continue
        module = importlib.import_module(f"{migrations.__name__}.{info.name}")
        found.append(Step(int(m.group(1)), m.group(2), getattr(module, "SQL", ""),
                          getattr(module, "up", None)))
    found.sort(key=lambda s: s.version)
    if [s.version for s in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration steps not numbered 1..N: {[s.version for s in found]}")
    return found


STEPS = _load_steps()
LATEST = STEPS[-1].version


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def current_version(db: Any, tables: set[str]) -> int:
    """The store's schema version; 0 for an empty database."""
    if "schema_version" in tables:
        (version,) = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(version or 0)
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0
    return 0


def migrate(db: Any, dialect: Dialect, tables: Callable[[], set[str]],
            now_ms: Callable[[], int], target: int = LATEST) -> list[int]:
    """Apply every pending step up to ``target``; return the versions applied."""
    applied: list[int] = []
    while True:
        db.execute(dialect.begin)
        try:
            if dialect.backend is Backend.POSTGRESQL:
                db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
            present = tables()
            version = current_version(db, present)
            if version > LATEST:
                raise NewerSchema(f"the store is at schema {version}; this medge knows up to "
                                  f"{LATEST} (upgrade medge)")
            if "schema_version" not in present:
                db.execute(dialect.ddl(
                    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_ms INTEGER NOT NULL, "
                    "baseline INTEGER NOT NULL DEFAULT 0)"))
                if version >= 1:  # step 1 is all IF NOT EXISTS: fill in what an old store lacks
                    for statement in statements(dialect.ddl(STEPS[0].sql)):
                        db.execute(statement)
                for step in STEPS[:version]:
                    db.execute("INSERT INTO schema_version VALUES (?, ?, ?, 1)",
                               (step.version, step.name, now_ms()))
            if version >= target:
                db.commit()
                return applied
            step = STEPS[version]
            for statement in statements(dialect.ddl(step.sql)):
                db.execute(statement)
            if step.up is not None:
                step.up(db)
            db.execute("INSERT INTO schema_version VALUES (?, ?, ?, 0)",
                       (step.version, step.name, now_ms()))
            db.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = excluded.value", (str(step.version),))
            db.commit()
            applied.append(step.version)
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise


def history(db: Any) -> list[dict[str, Any]]:
    rows = db.execute("SELECT version, name, applied_ms, baseline FROM schema_version "
                      "ORDER BY version").fetchall()
    return [{"version": v, "name": n, "applied_ms": a, "baseline": bool(b)}
            for v, n, a, b in rows]

"""The audit log: who changed what, when, from what to what; append-only, hash-chained.

One call records a change, for every capability that changes something (accounts,
credentials, configuration, assignments, overrides, campaigns)::

    from host.services import audit
    audit.record(store, actor, "account.add", "dev-1", before=None, after={...})

``actor`` is who did it: the OS user (:func:`default_actor`) unless the command was
given ``--actor``.  ``action`` is a dotted name, ``<thing>.<verb>`` (``account.add``,
``account.remove``, ``credential.reset``, ``patient.override`` ...).  ``subject`` is
what it was done to (a device id, a patient id, a campaign id) or None.  ``before``
and ``after`` are JSON-able values (None when the thing did not exist / no longer
exists).  They must not hold a secret: a key named ``password``, ``password_hash``,
``secret``, ``private_key`` or ``key_pem`` anywhere inside them is refused with
``ValueError`` (the audit log is read by people who must not learn credentials; say
``"credentials": "set"`` instead).

Table ``audit_log`` (schema 4, :mod:`host.services.storage.migrations.v0004_clinical`):
``id, ts_ms, actor, action, subject, detail, prev_hash, hash``; ``detail`` is the
canonical JSON ``{"after": ..., "before": ...}``.

The chain.  Row ``n`` has ``id = n`` (1, 2, 3 ... with no gaps), ``prev_hash`` = the
``hash`` of row ``n - 1`` (:data:`GENESIS` for row 1) and
``hash = sha256(canonical JSON [id, ts_ms, actor, action, subject, detail, prev_hash])``
in hex.  The newest row's ``id:hash`` is also kept in ``meta`` (key ``audit.head``),
written in the same transaction.  :func:`verify` recomputes every hash and names the
first row that is wrong: an edited row (its hash no longer matches its content), a
deleted row (a gap in the ids, or a ``prev_hash`` that names no row), or deleted
newest rows (the head in ``meta`` is past the last row).

Limits (what a hash chain in the same database can and cannot show).  Someone who can
write the database *and* recompute the chain from the edited row onward (and the
head) is not detected by the store alone: :func:`head` gives the newest ``id:hash``,
which an operator can keep elsewhere (a ticket, a print-out, another system) and pass
back as ``verify(store, anchor=...)`` (``medge audit verify --anchor``): a rewritten
history no longer contains that anchor.  The chain shows tampering; it cannot
prevent it (database permissions do that).

Concurrency: appends are serialised by the write transaction (SQLite ``BEGIN
IMMEDIATE``; PostgreSQL a transaction-scoped advisory lock), so two writers cannot
fork the chain.  When the caller is already inside a write transaction (recording a
change in the same transaction as the change itself, the right way), :func:`record`
appends inside it and the caller commits; otherwise it opens and commits its own.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from host.services.storage.target import Backend

__all__ = ["GENESIS", "AuditEntry", "Verdict", "default_actor", "entries", "head", "record",
           "verify"]

#: ``prev_hash`` of the first row.
GENESIS = "0" * 64
#: Keys never allowed in before/after (credentials do not go into the audit log).
SECRET_KEYS = frozenset({"password", "password_hash", "secret", "private_key", "key_pem"})
#: ``meta`` key of the newest row's ``id:hash``.
HEAD_KEY = "audit.head"
#: pg_advisory_xact_lock key serialising appends on PostgreSQL ("audit" in ASCII).
_PG_LOCK_KEY = 0x6175646974


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts_ms: int
    actor: str
    action: str
    subject: str | None
    before: Any
    after: Any
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`: ``ok``, rows checked, and when not ok the first
    bad row's id and the reason in one line."""

    ok: bool
    rows: int
    head: str | None
    bad_id: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_actor() -> str:
    """The OS user running this process (``user@host`` is not used: the host is the
    same for every row), or ``uid:N`` when there is no user name."""
    try:
        return getpass.getuser()
    except Exception:  # no name for the uid (a container): the number is still who
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _row_hash(row_id: int, ts_ms: int, actor: str, action: str, subject: str | None,
              detail: str, prev_hash: str) -> str:
    text = _canonical([row_id, ts_ms, actor, action, subject, detail, prev_hash])
    return hashlib.sha256(text.encode()).hexdigest()


def _check_no_secret(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).lower() in SECRET_KEYS:
                raise ValueError(f"audit: {where} holds a secret ({k!r}); record "
                                 "'credentials': 'set' instead")
            _check_no_secret(v, where)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_no_secret(v, where)


def record(store: Any, actor: str, action: str, subject: str | None, before: Any,
           after: Any, *, ts_ms: int | None = None) -> AuditEntry:
    """Append one change to the audit log; see the module docstring.

    ``store`` is a writable :class:`host.services.store.Store`.  Raises ``ValueError``
    for an empty actor or action, or a secret in ``before``/``after``."""
    if not actor or not isinstance(actor, str):
        raise ValueError("audit: actor must be a non-empty string")
    if not action or not isinstance(action, str):
        raise ValueError("audit: action must be a non-empty string")
    _check_no_secret(before, "before")
    _check_no_secret(after, "after")
    detail = _canonical({"before": before, "after": after})
    if ts_ms is None:
        from host.services.store import now_ms

        ts_ms = now_ms()
    db = store.db
    own = not db.in_transaction
    if own:
        store._begin()
    try:
        if store.backend is Backend.POSTGRESQL:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
        last = db.execute("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
        row_id, prev_hash = (1, GENESIS) if last is None else (int(last[0]) + 1, last[1])
        digest = _row_hash(row_id, ts_ms, actor, action, subject, detail, prev_hash)
        db.execute(
            "INSERT INTO audit_log (id, ts_ms, actor, action, subject, detail, prev_hash, "
            "hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, ts_ms, actor, action, subject, detail, prev_hash, digest))
        db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) "
                   "DO UPDATE SET value = excluded.value", (HEAD_KEY, f"{row_id}:{digest}"))
        if own:
            db.commit()
    except BaseException:
        if own and db.in_transaction:
            db.rollback()
        raise
    return AuditEntry(row_id, ts_ms, actor, action, subject, before, after, prev_hash, digest)


_COLUMNS = "id, ts_ms, actor, action, subject, detail, prev_hash, hash"


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    row_id, ts_ms, actor, action, subject, detail, prev_hash, digest = row
    try:
        doc = json.loads(detail)
    except ValueError:
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    return AuditEntry(int(row_id), int(ts_ms), actor, action, subject, doc.get("before"),
                      doc.get("after"), prev_hash, digest)


def entries(store: Any, *, subject: str | None = None, action: str | None = None,
            since_ms: int | None = None, until_ms: int | None = None,
            limit: int | None = None) -> list[AuditEntry]:
    """Audit rows, oldest first, filtered by subject, action (exact, or a prefix
    ending in ``.``: ``account.``), time (``since`` inclusive, ``until`` exclusive);
    ``limit`` keeps the newest N."""
    where, params = [], []
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    if action is not None:
        if action.endswith("."):
            where.append("substr(action, 1, ?) = ?")
            params += [len(action), action]
        else:
            where.append("action = ?")
            params.append(action)
    if since_ms is not None:
        where.append("ts_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("ts_ms < ?")
        params.append(until_ms)
    sql = f"SELECT {_COLUMNS} FROM audit_log"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    rows = store.db.execute(sql, params).fetchall() if params else \
        store.db.execute(sql).fetchall()
    return [_entry(r) for r in reversed(rows)]


def head(store: Any) -> str | None:
    """The newest row as ``id:hash`` (what ``--anchor`` takes), or None when empty."""
    row = store.db.execute("SELECT value FROM meta WHERE key = ?", (HEAD_KEY,)).fetchone()
    return None if row is None else row[0]


def _rows(store: Any, batch: int = 1000) -> Iterator[tuple[Any, ...]]:
    last = 0
    while True:
        rows = store.db.execute(f"SELECT {_COLUMNS} FROM audit_log WHERE id > ? ORDER BY id "
                                f"LIMIT {batch}", (last,)).fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def verify(store: Any, *, anchor: str | None = None) -> Verdict:
    """Recompute the chain; the first bad row and why, or ok.  ``anchor`` (an
    ``id:hash`` from :func:`head`, kept outside the store) must be in the chain."""
    anchor_id: int | None = None
    anchor_hash = None
    if anchor is not None:
        try:
            text_id, anchor_hash = anchor.split(":", 1)
            anchor_id = int(text_id)
        except ValueError:
            raise ValueError(f"{anchor!r} is not ID:HASH") from None
    recorded = head(store)
    expect_id, prev_hash, n = 1, GENESIS, 0
    for row in _rows(store):
        row_id, ts_ms, actor, action, subject, detail, row_prev, digest = row
        row_id = int(row_id)
        n += 1
        if row_id != expect_id:
            missing = (f"row {expect_id}" if row_id == expect_id + 1
                       else f"rows {expect_id}..{row_id - 1}")
            return Verdict(False, n, recorded, expect_id,
                           f"{missing} deleted (ids jump from {expect_id - 1} to {row_id})")
        if row_prev != prev_hash:
            return Verdict(False, n, recorded, row_id,
                           f"row {row_id}: prev_hash does not match row {row_id - 1}'s hash "
                           "(the row before was edited or replaced)")
        if _row_hash(row_id, int(ts_ms), actor, action, subject, detail, row_prev) != digest:
            return Verdict(False, n, recorded, row_id,
                           f"row {row_id} edited (its content no longer matches its hash)")
        if anchor_id == row_id and digest != anchor_hash:
            return Verdict(False, n, recorded, row_id,
                           f"row {row_id} is not the anchored row (history rewritten)")
        expect_id, prev_hash = row_id + 1, digest
    last_id = expect_id - 1
    if recorded is not None:
        head_id = int(recorded.split(":", 1)[0])
        if head_id > last_id:
            gone = f"row {head_id}" if head_id == last_id + 1 else f"rows {last_id + 1}..{head_id}"
            return Verdict(False, n, recorded, last_id + 1,
                           f"{gone} deleted (the recorded head is row {head_id}, the last "
                           f"row is {last_id})")
        if recorded != f"{last_id}:{prev_hash}":
            return Verdict(False, n, recorded, last_id,
                           f"the recorded head {recorded} is not the last row "
                           f"{last_id}:{prev_hash}")
    elif n:
        return Verdict(False, n, recorded, last_id, "rows present but no recorded head "
                       f"({HEAD_KEY} in meta was deleted)")
    if anchor_id is not None and anchor_id > last_id:
        return Verdict(False, n, recorded, last_id + 1,
                       f"the anchor row {anchor_id} is gone (the last row is {last_id})")
    return Verdict(True, n, None if not n else f"{last_id}:{prev_hash}")

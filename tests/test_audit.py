"""The audit log (host/services/audit.py): record appends a hash-chained row, verify
passes on an untouched store and names the row that was edited or deleted, on SQLite
and PostgreSQL; secrets are refused; a change recorded inside the caller's
transaction is committed (or rolled back) with it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store import BACKENDS, store_location

from host.services import audit
from host.services.store import Store


def _open(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_location(backend, request, tmp_path) as location:
        s = Store(location)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture(params=BACKENDS)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Both backends (the SQL that differs: the advisory lock, explicit ids)."""
    yield from _open(request.param, request, tmp_path)


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """SQLite (the tampering cases are the same SQL on both backends)."""
    yield from _open("sqlite", request, tmp_path)


def fill(store: Store, n: int = 5) -> list[audit.AuditEntry]:
    return [audit.record(store, "alice", "account.add", f"dev-{i}", None,
                         {"role": "device", "credentials": "set"}, ts_ms=1_000 + i)
            for i in range(1, n + 1)]


def test_chain_links_and_verifies(any_store: Store) -> None:
    store = any_store
    rows = fill(store)
    assert [r.id for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:]))
    verdict = audit.verify(store)
    assert verdict.ok and verdict.rows == 5 and verdict.head == f"5:{rows[-1].hash}"
    assert audit.head(store) == verdict.head
    listed = audit.entries(store, subject="dev-3")
    assert [(e.id, e.actor, e.action, e.before, e.after) for e in listed] == [
        (3, "alice", "account.add", None, {"role": "device", "credentials": "set"})]
    assert [e.id for e in audit.entries(store, action="account.", limit=2)] == [4, 5]
    assert audit.entries(store, action="account.remove") == []
    assert audit.verify(Store(store.target)).ok  # another connection sees it committed


def test_edit_and_delete_are_found_on_both_backends(any_store: Store) -> None:
    store = any_store
    fill(store)
    edit(store, "UPDATE audit_log SET actor = 'mallory' WHERE id = 2")
    assert audit.verify(store).bad_id == 2
    edit(store, "DELETE FROM audit_log WHERE id = 2")
    assert audit.verify(store).reason == "row 2 deleted (ids jump from 1 to 3)"


def test_empty_log_verifies(store: Store) -> None:
    verdict = audit.verify(store)
    assert verdict.ok and verdict.rows == 0 and verdict.head is None


def edit(store: Store, sql: str, params: tuple = ()) -> None:
    store.db.execute(store.dialect.begin)
    store.db.execute(sql, params)
    store.db.commit()


@pytest.mark.parametrize("column,value", [
    ("actor", "mallory"), ("detail", json.dumps({"before": None, "after": {"role": "host"}})),
    ("ts_ms", 5), ("subject", "dev-9"), ("action", "account.remove")])
def test_an_edited_row_is_named(store: Store, column: str, value: object) -> None:
    fill(store)
    edit(store, f"UPDATE audit_log SET {column} = ? WHERE id = 3", (value,))
    verdict = audit.verify(store)
    assert not verdict.ok and verdict.bad_id == 3
    assert verdict.reason == "row 3 edited (its content no longer matches its hash)"


@pytest.mark.parametrize("deleted,bad,reason", [
    ((3,), 3, "row 3 deleted (ids jump from 2 to 4)"),
    ((1,), 1, "row 1 deleted (ids jump from 0 to 2)"),
    ((2, 3), 2, "rows 2..3 deleted (ids jump from 1 to 4)"),
    ((5,), 5, "row 5 deleted (the recorded head is row 5, the last row is 4)"),
    ((4, 5), 4, "rows 4..5 deleted (the recorded head is row 5, the last row is 3)"),
])
def test_a_deleted_row_is_named(store: Store, deleted: tuple[int, ...], bad: int,
                                reason: str) -> None:
    fill(store)
    for row_id in deleted:
        edit(store, "DELETE FROM audit_log WHERE id = ?", (row_id,))
    verdict = audit.verify(store)
    assert (verdict.ok, verdict.bad_id, verdict.reason) == (False, bad, reason)


def test_renumbering_after_a_delete_breaks_the_link(store: Store) -> None:
    fill(store)
    edit(store, "DELETE FROM audit_log WHERE id = 3")
    edit(store, "UPDATE audit_log SET id = id - 1 WHERE id > 3")
    edit(store, "UPDATE meta SET value = ? WHERE key = ?",
         (audit.entries(store)[-1].id.__str__() + ":" + audit.entries(store)[-1].hash,
          audit.HEAD_KEY))
    verdict = audit.verify(store)
    assert not verdict.ok and verdict.bad_id == 3 and "prev_hash" in (verdict.reason or "")


def test_a_rewritten_history_misses_its_anchor(store: Store) -> None:
    rows = fill(store, 3)
    anchor = audit.head(store)
    assert audit.verify(store, anchor=anchor).ok
    edit(store, "DELETE FROM audit_log")
    edit(store, "DELETE FROM meta WHERE key = ?", (audit.HEAD_KEY,))
    forged = [audit.record(store, "mallory", "account.add", f"dev-{i}", None, {},
                           ts_ms=r.ts_ms) for i, r in enumerate(rows, 1)]
    assert audit.verify(store).ok  # a consistent forgery passes on its own ...
    verdict = audit.verify(store, anchor=anchor)  # ... but not against the kept anchor
    assert not verdict.ok and verdict.bad_id == 3 and forged[-1].hash != rows[-1].hash


def test_secrets_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="secret"):
        audit.record(store, "alice", "account.add", "dev-1", None, {"password": "x"})
    with pytest.raises(ValueError, match="secret"):
        audit.record(store, "alice", "account.add", "dev-1", [{"nested": {"Secret": 1}}], None)
    with pytest.raises(ValueError, match="actor"):
        audit.record(store, "", "account.add", "dev-1", None, None)
    assert audit.entries(store) == []


def test_inside_the_callers_transaction(any_store: Store) -> None:
    store = any_store
    store._begin()
    audit.record(store, "alice", "patient.override", "p-1", {"x": 1}, {"x": 2})
    assert store.db.in_transaction  # record did not commit the caller's transaction
    store.db.rollback()
    assert audit.entries(store) == [] and audit.verify(store).ok
    store._begin()
    audit.record(store, "alice", "patient.override", "p-1", {"x": 1}, {"x": 2})
    store.db.commit()
    assert [e.after for e in audit.entries(store)] == [{"x": 2}]


def test_default_actor_is_a_name() -> None:
    assert audit.default_actor()


def test_account_changes_are_audited_on_both_backends(any_store: Store) -> None:
    from host.services import accounts

    store = any_store
    acc, pw = accounts.add(store, "bed-1", "device", actor="alice")
    assert acc.active and acc.incarnation and accounts.check_password(pw, acc.password_hash)
    with pytest.raises(accounts.AccountError, match="exists"):
        accounts.add(store, "bed-1", "device", actor="alice")
    acc2, pw2 = accounts.reset(store, "bed-1", actor="bob")
    assert acc2.incarnation == acc.incarnation and pw2 != pw
    accounts.remove(store, "bed-1", actor="bob")
    got = accounts.provision(store, ["bed-1", "bed-2"], "device", actor="carol")
    assert sorted(got) == ["bed-1", "bed-2"]
    assert accounts.account(store, "bed-1").incarnation != acc.incarnation  # a new unit
    with pytest.raises(accounts.AccountError, match="is a device account"):
        accounts.provision(store, ["bed-2"], "host", actor="carol")
    assert [(e.actor, e.action, e.subject) for e in audit.entries(store)] == [
        ("alice", "account.add", "bed-1"), ("bob", "credential.reset", "bed-1"),
        ("bob", "account.remove", "bed-1"), ("carol", "account.add", "bed-1"),
        ("carol", "account.add", "bed-2")]
    assert audit.verify(store).ok
    assert all(e.before is None or "password" not in json.dumps(e.before)
               for e in audit.entries(store))

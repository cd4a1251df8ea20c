"""Stores made by earlier releases (tests/data/stores/) upgrade through the migrations
with every row kept; the migration runner's own rules."""

from __future__ import annotations

import io
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from host.services.export import ExportFormat, VitalsFilter, export
from host.services.storage.migrate import LATEST, STEPS
from host.services.store import SCHEMA_VERSION, Store, StoreError, StoreProblem

STORES = Path(__file__).parent / "data" / "stores"
OLD_TABLES = {  # table -> the columns every release had
    "devices": ("device_id", "patient_id", "fw_version", "model_version", "sample_rate_hz",
                "boot_id", "state", "state_reason", "first_seen_ms", "last_seen_ms"),
    "messages": ("device_id", "seq", "type", "ts_ms", "received_ms", "payload"),
    "vitals": ("device_id", "seq", "ts_ms", "window_ms", "hr_bpm", "beats", "quality"),
    "rejections": ("id", "received_ms", "reason", "detail", "topic", "payload_head"),
}


def rows(db: Path, table: str, columns: tuple[str, ...]) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return sorted(con.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall(),
                      key=repr)
    finally:
        con.close()


def copy(name: str, tmp_path: Path) -> Path:
    db = tmp_path / name
    shutil.copy(STORES / name, db)
    return db


@pytest.mark.parametrize("name", ["schema1.db", "schema2.db"])
def test_an_old_release_store_upgrades_with_every_row_kept(name: str, tmp_path: Path) -> None:
    db = copy(name, tmp_path)
    before = {t: rows(db, t, cols) for t, cols in OLD_TABLES.items()}
    old_version = int(sqlite3.connect(db).execute(
        "SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    with pytest.raises(StoreError) as err:  # a reader does not migrate: it says how
        Store(db, readonly=True)
    assert err.value.problem is StoreProblem.OUTDATED and "medge store migrate" in str(err.value)

    with Store(db) as store:
        assert store.schema_version() == SCHEMA_VERSION == LATEST
        history = store.db.execute(
            "SELECT version, baseline FROM schema_version ORDER BY version").fetchall()
    assert history == [(v, int(v <= old_version)) for v in range(1, LATEST + 1)]

    after = {t: rows(db, t, cols) for t, cols in OLD_TABLES.items()}
    for table in ("devices", "messages", "rejections"):
        assert after[table] == before[table], table
    # vitals: every old row kept, plus the later incarnation's rows schema 2 left out.
    assert set(before["vitals"]) <= set(after["vitals"])
    vitals_messages = [m for m in before["messages"] if m[2] == "vitals"]
    assert len(after["vitals"]) == len(vitals_messages) == (12 if name == "schema1.db" else 14)
    assert rows(db, "messages", ("incarnation",)) == sorted(
        [("",)] * 15 + [("i2",)] * (0 if name == "schema1.db" else 3))
    inc = dict(((d, s, t), i) for d, i, s, t in rows(db, "vitals", (
        "device_id", "incarnation", "seq", "ts_ms")))
    for device_id, seq, _type, ts_ms, _r, payload in vitals_messages:
        assert inc[(device_id, seq, ts_ms)] == ("i2" if '"incarnation":"i2"' in payload else "")

    with Store(db) as store:  # counters: from the rows (schema 1) or as they were (schema 2)
        counters = store.counters()
        assert store.rejection_counts() == ({"schema": 1, "not_json": 1} if name == "schema1.db"
                                            else {"schema": 1, "not_json": 1, "topic": 1})
        assert counters["stored"] >= len(before["messages"])
        dev_a = next(r for r in store.devices() if r.device_id == "dev-a")
        assert dev_a.messages == len([m for m in before["messages"] if m[0] == "dev-a"])
    # The export of the upgraded store: one row per stored vitals message, device then seq.
    out = io.StringIO()
    assert export(db, ExportFormat.CSV, VitalsFilter(), out) == len(vitals_messages)
    lines = out.getvalue().splitlines()[1:]
    header = out.getvalue().splitlines()[0].split(",")
    got = [tuple(line.split(",")[header.index(c)] for c in ("device_id", "seq", "ts_ms"))
           for line in lines]
    want = sorted((m[0], m[1], m[3]) for m in vitals_messages)
    assert got == [(d, str(s), str(t)) for d, s, t in want]


def test_opening_twice_changes_nothing_and_steps_are_numbered(tmp_path: Path) -> None:
    assert [s.version for s in STEPS] == list(range(1, LATEST + 1))
    db = tmp_path / "new.db"
    Store(db).close()
    with Store(db) as store:
        history = store.db.execute("SELECT version, baseline FROM schema_version").fetchall()
        assert history == [(v, 0) for v in range(1, LATEST + 1)]
        meta = store.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        assert meta == (str(LATEST),)


def test_concurrent_openers_apply_each_step_once(tmp_path: Path) -> None:
    db = copy("schema1.db", tmp_path)
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            Store(db).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert rows(db, "schema_version", ("version",)) == [(v,) for v in range(1, LATEST + 1)]


def test_a_store_from_a_newer_medge_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    with Store(db) as store:
        store.db.execute("INSERT INTO schema_version VALUES (999, 'future', 0, 0)")
        store.db.commit()
    for readonly in (False, True):
        with pytest.raises(StoreError) as err:
            Store(db, readonly=readonly)
        assert err.value.problem is StoreProblem.NEWER and "upgrade medge" in str(err.value)


def test_a_failing_step_leaves_the_previous_version_whole(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    from host.services.storage import migrate as m

    db = copy("schema2.db", tmp_path)
    before = rows(db, "vitals", OLD_TABLES["vitals"])
    broken = m.Step(3, "broken", STEPS[2].sql + "; SELECT no_such_column FROM vitals", None)
    monkeypatch.setattr(m, "STEPS", [*STEPS[:2], broken, *STEPS[3:]])
    with pytest.raises(StoreError):
        Store(db)
    assert rows(db, "vitals", OLD_TABLES["vitals"]) == before
    # The baseline and step 3 were one transaction: the store is schema 2 as it was.
    assert rows(db, "meta", ("value",)) == [("2",)]
    assert "schema_version" not in {r[0] for r in sqlite3.connect(db).execute(
        "SELECT name FROM sqlite_master WHERE type='table'")}

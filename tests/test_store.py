"""The Store contract, on both backends (SQLite and the throw-away PostgreSQL, a
fresh database per test): idempotent on (device, incarnation, seq), device state
from status messages, conflicts, one outcome per message, storage outages."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from firmware.net import protocol
from host.services.store import (
    SCHEMA_VERSION,
    Accept,
    Outcome,
    Reject,
    StorageUnavailable,
    Store,
    StoreError,
    StoreProblem,
)

T0 = 1_700_000_000_000


def fresh_pg_database(server_url: str) -> str:
    """A new, empty database in the test server; its ``postgresql://`` URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(server_url: str, url: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


BACKENDS = ("sqlite", "postgresql")


@contextmanager
def store_location(backend: str, request: pytest.FixtureRequest, tmp_path: Path
                   ) -> Iterator[Path | str]:
    """A store location that does not exist yet: a SQLite file in ``tmp_path`` or a new,
    empty database in the session's PostgreSQL server (dropped afterwards)."""
    if backend == "sqlite":
        yield tmp_path / "s.db"
        return
    server = request.getfixturevalue("postgres")
    url = fresh_pg_database(server)
    try:
        yield url
    finally:
        drop_pg_database(server, url)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    with store_location(request.param, request, tmp_path) as location:
        yield location


def birth(seq: int, boot: int = 1) -> dict:
    return protocol.birth(
        "dev-1",
        seq,
        T0,
        {
            "fw_version": "0.1.0",
            "model_version": "m1",
            "patient_id": "p-1",
            "sample_rate_hz": 250,
            "boot_id": boot,
        },
    )


def test_duplicates_are_stored_once(db: Path | str) -> None:
    with Store(db) as store:
        doc = protocol.vitals("dev-1", 3, T0, 1000, 70, 1, protocol.QUALITY_GOOD)
        assert store.add("vitals", "dev-1", doc, T0) is True
        assert store.add("vitals", "dev-1", doc, T0 + 5) is False
        assert store.vitals_count("dev-1") == 1
        assert store.seqs("dev-1") == [3]


def test_state_follows_birth_will_and_shutdown(db: Path | str) -> None:
    with Store(db) as store:
        store.add("status", "dev-1", birth(0), T0)
        [row] = store.devices(at_ms=T0 + 5)
        assert (row.state, row.fw_version, row.model_version, row.patient_id) == (
            "online",
            "0.1.0",
            "m1",
            "p-1",
        )
        store.add("status", "dev-1", protocol.offline("dev-1", T0, "lost", boot_id=1), T0 + 1)
        assert store.devices(at_ms=T0 + 5)[0].state == "offline"
        assert store.devices()[0].state_reason == "lost"
        assert store.devices()[0].last_seen_ms == T0  # the will: gone, not seen
        store.add("status", "dev-1", birth(1, boot=2), T0 + 2)
        assert store.devices(at_ms=T0 + 5)[0].state == "online"
        # A re-delivered (retained) old birth changes nothing, not even last seen.
        store.add("status", "dev-1", protocol.offline("dev-1", T0, "shutdown", seq=2), T0 + 3)
        store.add("status", "dev-1", birth(1, boot=2), T0 + 4)
        assert store.devices(at_ms=T0 + 5)[0].state == "offline"
        assert store.devices()[0].last_seen_ms == T0 + 3


def test_state_tells_the_truth(db: Path | str) -> None:
    """Stale after the silence timeout; a retained replay is seen at its own time;
    a late birth (lower seq) does not undo a newer shutdown (issue 11 item 5)."""
    from host.services.store import Accept

    with Store(db) as store:
        store.add("status", "dev-1", birth(0), T0)
        store.add("vitals", "dev-1", vitals(1), T0 + 1000)
        assert store.devices(at_ms=T0 + 30_000)[0].state == "online"
        assert store.devices(at_ms=T0 + 31_001)[0].state == "stale"
        assert store.devices(at_ms=T0 + 31_001, stale_after_s=60)[0].state == "online"
        # a fresh store fed a retained birth long after: seen at the birth's own time
        store.write_batch([Accept("status", "dev-2", {**birth(0), "device_id": "dev-2",
                                                       "ts_ms": T0}, T0 + 3_600_000, True)])
        dev2 = next(r for r in store.devices(at_ms=T0 + 3_600_000) if r.device_id == "dev-2")
        assert (dev2.last_seen_ms, dev2.state) == (T0, "stale")
        # shutdown (seq 5) stored, then a late birth (seq 4): still offline
        store.add("status", "dev-1", protocol.offline("dev-1", T0, "shutdown", seq=5), T0 + 2000)
        store.add("status", "dev-1", birth(4), T0 + 2500)
        assert store.devices(at_ms=T0 + 3000)[0].state == "offline"


def test_seq_gaps(db: Path | str) -> None:
    with Store(db) as store:
        for seq in (0, 1, 2, 5, 6, 9):
            store.add(
                "vitals",
                "dev-1",
                protocol.vitals("dev-1", seq, T0, 1000, None, 0, "unreliable"),
                T0,
            )
        assert store.seq_gaps("dev-1") == [(3, 4), (7, 8)]


def test_readonly_store_requires_an_existing_file(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(FileNotFoundError):
        Store(tmp_path / "missing.db", readonly=True)


def vitals(seq: int, hr: int | None = 70, **extra: object) -> dict:
    return {**protocol.vitals("dev-1", seq, T0 + seq, 1000, hr, 1, protocol.QUALITY_GOOD),
            **extra}


def test_every_write_is_idempotent_on_device_incarnation_seq(db: Path | str) -> None:
    with Store(db) as store:
        assert store.add("vitals", "dev-1", vitals(1), T0)
        assert store.add("vitals", "dev-1", vitals(1, incarnation="i2"), T0)  # a reset unit
        assert not store.add("vitals", "dev-1", vitals(1, incarnation="i2"), T0 + 1)
        assert store.vitals_count("dev-1") == 2  # both incarnations' vitals are in ``vitals``
        assert store.payload("dev-1", 1, "i2")["incarnation"] == "i2"
        outcomes = store.write_batch([Accept("vitals", "dev-1", vitals(1, hr=99), T0 + 2),
                                      Accept("vitals", "dev-1", vitals(1, hr=99), T0 + 3)])
        assert outcomes == [Outcome.CONFLICT, Outcome.DUPLICATE]
        assert [c["seq"] for c in store.conflicts("dev-1")] == [1]
        assert store.conflicts("dev-x") == []
        assert store.payload("dev-1", 1)["hr_bpm"] == 70  # the first-committed message stays
        assert store.counters() == {"conflict": 1, "duplicate": 2, "received": 5, "stored": 2}


def test_a_message_that_breaks_the_write_is_an_internal_rejection(db: Path | str) -> None:
    with Store(db) as store:
        outcomes = store.write_batch([
            Accept("vitals", "dev-1", vitals(1), T0),
            Accept("vitals", "dev-1", {**vitals(2), "ts_ms": 2**64}, T0),  # overflows BIGINT
            Reject("schema", "bad", "medge/v1/dev/dev-1/vitals", b"{}", T0),
            Accept("vitals", "dev-1", vitals(3), T0)])
        assert outcomes == [Outcome.STORED, Outcome.REJECTED, Outcome.REJECTED, Outcome.STORED]
        assert store.seqs("dev-1") == [1, 3]
        assert store.rejection_counts() == {"internal": 1, "schema": 1}
        [row] = store.devices()
        assert (row.device_id, row.hr_bpm, row.messages) == ("dev-1", 70, 2)


def test_readers_see_what_writers_committed_and_cannot_write(db: Path | str) -> None:
    with Store(db) as store:
        store.add("status", "dev-1", birth(0), T0)
        with Store(db, readonly=True) as reader:
            assert [r.device_id for r in reader.devices()] == ["dev-1"]
            with pytest.raises(StorageUnavailable):
                reader.add("vitals", "dev-1", vitals(1), T0)


def test_a_storage_fault_commits_nothing_and_the_store_recovers(db: Path | str) -> None:
    with Store(db) as store:
        store.add("vitals", "dev-1", vitals(1), T0)
        if store.backend.value == "postgresql":  # the server drops the connection
            import psycopg

            pid = store.db.conn.info.backend_pid
            with psycopg.connect(str(db), autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        else:
            import sqlite3

            def fault() -> None:
                store.fault_hook = None
                raise sqlite3.OperationalError("database is locked")

            store.fault_hook = fault
        with pytest.raises(StorageUnavailable):
            store.write_batch([Accept("vitals", "dev-1", vitals(2), T0)])
        assert store.write_batch([Accept("vitals", "dev-1", vitals(2), T0)]) == [Outcome.STORED]
        assert store.seqs("dev-1") == [1, 2]
        assert store.counters()["received"] == 2


def test_fresh_store_is_at_the_latest_schema_with_every_table(db: Path | str) -> None:
    from host.services.storage.migrate import LATEST

    with Store(db) as store:
        assert store.schema_version() == LATEST
        for table in ("accounts", "patients", "assignments", "bp_readings", "beat_counts",
                      "rhythm_events", "event_beats", "observations", "alerts", "advice",
                      "commands", "command_acks", "ota_campaigns", "ota_jobs", "audit_log"):
            assert store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone() == (0,)


def test_unreachable_postgresql_is_one_line() -> None:
    from host.services.storage.pgserver import free_port

    url = f"postgresql://medge@127.0.0.1:{free_port()}/medge"
    with pytest.raises(StoreError) as err:
        Store(url)
    assert err.value.problem is StoreProblem.UNREACHABLE
    assert "\n" not in str(err.value) and "cannot connect to PostgreSQL" in str(err.value)
    with pytest.raises(StoreError) as err:
        Store("postgresql://medge:secret@127.0.0.1:1/x")
    assert "secret" not in str(err.value) and "***" in str(err.value)


def test_db_urls_name_the_backend(tmp_path: Path) -> None:
    from host.services.storage.target import Backend, parse_target

    assert parse_target("var/m.db").path == Path("var/m.db")
    assert parse_target("sqlite:///var/m.db").path == Path("var/m.db")
    assert parse_target("sqlite:////srv/m.db").path == Path("/srv/m.db")
    assert parse_target("postgres://h/db").backend is Backend.POSTGRESQL
    with pytest.raises(ValueError):
        parse_target("mysql://h/db")
    with Store(f"sqlite:///{tmp_path}/u.db") as store:
        assert store.path == tmp_path / "u.db"


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from host.cli import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_store_prune_deletes_by_each_tables_age(db: Path | str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from host.services.storage.prune import DAY_MS, RULES
    from host.services.store import now_ms

    now = now_ms()
    old, recent = now - 40 * DAY_MS, now - DAY_MS
    with Store(db) as store:
        store.add("status", "dev-1", {**birth(0), "ts_ms": old}, old)  # a raw message, 40 d
        store.add("status", "dev-1", {**birth(1), "ts_ms": recent}, recent)
        store.add("vitals", "dev-1", {**vitals(2), "ts_ms": now - 4000 * DAY_MS}, old)
        store.add("vitals", "dev-1", {**vitals(3), "ts_ms": old}, old)  # clinical: kept
        store.add_rejection("schema", "bad", "t", b"{}", old)
        store.add_rejection("schema", "bad", "t", b"{}", recent)
        store.db.execute("INSERT INTO audit_log (ts_ms, actor, action, detail, prev_hash, hash) "
                         "VALUES (?, 'me', 'x', '{}', '', 'h')", (0,))
        store.db.commit()
    args = ["store", "prune", "--db", str(db), "--json"]
    code, out, _ = run_cli([*args, "--dry-run"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["dry_run"] is True and doc["rows"] == 4
    want = {"messages": 1, "vitals": 2, "rejections": 1}  # vitals: its row and its message
    assert {t: r["rows"] for t, r in doc["tables"].items() if r["rows"]} == want
    assert set(doc["tables"]) == {r.table for r in RULES if r.days is not None}
    assert "audit_log" not in doc["tables"]
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and json.loads(out)["rows"] == 4
    with Store(db, readonly=True) as store:
        assert store.seqs("dev-1") == [1, 3]
        assert store.vitals_count("dev-1") == 1
        assert store.db.execute("SELECT COUNT(*) FROM rejections").fetchone() == (1,)
        assert store.db.execute("SELECT COUNT(*) FROM audit_log").fetchone() == (1,)
    code, out, _ = run_cli([*args, "--older-than", "messages=1", "--dry-run"], capsys)
    assert json.loads(out)["tables"]["messages"] == {
        "older_than_days": 1, "before_ms": json.loads(out)["tables"]["messages"]["before_ms"],
        "rows": 1}
    for bad in ("audit_log=5", "nope=3", "0", "x"):
        code, _, err = run_cli([*args, "--older-than", bad], capsys)
        assert code == 2 and err.count("\n") == 1 and "--older-than" in err


def test_store_info_and_migrate(db: Path | str, capsys: pytest.CaptureFixture[str]) -> None:
    from host.services.storage.migrate import LATEST

    code, out, _ = run_cli(["store", "migrate", "--db", str(db), "--json"], capsys)
    assert code == 0 and json.loads(out) == {
        "store": str(db), "from": 0, "to": LATEST, "applied": list(range(1, LATEST + 1))}
    code, out, _ = run_cli(["store", "migrate", "--db", str(db), "--json"], capsys)
    assert json.loads(out)["applied"] == []
    code, out, _ = run_cli(["store", "info", "--db", str(db), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["schema_version"] == doc["latest"] == LATEST
    assert doc["backend"] == ("sqlite" if isinstance(db, Path) else "postgresql")
    assert doc["tables"]["messages"] == 0 and len(doc["migrations"]) == LATEST


# -- bad --db at the CLI: one line, never a traceback ----------------------------
def _db_commands(db: str) -> dict[str, tuple[str, ...]]:
    from test_cli_boundary import free_port

    return {
        "ingest": ("ingest", "--port", str(free_port()), "--connect-timeout", "1", "--db", db),
        "fleet": ("fleet", "list", "--json", "--db", db),
        "export": ("export", "--format", "csv", "--db", db),
        "store": ("store", "prune", "--json", "--db", db),
    }


@pytest.mark.parametrize("command", ["ingest", "fleet", "export", "store"])
def test_unreachable_postgresql_at_the_cli(tmp_path: Path, command: str) -> None:
    from test_cli_boundary import assert_one_line_error, medge

    from host.services.storage.pgserver import free_port

    url = f"postgresql://medge:pw@127.0.0.1:{free_port()}/medge"
    proc = medge(*_db_commands(url)[command], cwd=tmp_path, timeout=30)
    code = 2 if command in ("fleet", "export", "ingest") else 1
    assert_one_line_error(proc, code, "postgresql://medge:***@127.0.0.1", "cannot connect")
    assert "pw@" not in proc.stderr


@pytest.mark.parametrize("command", ["export", "store"])
def test_export_and_prune_refuse_a_folder_and_a_read_only_store(tmp_path: Path,
                                                                command: str) -> None:
    from test_cli_boundary import _read_only, assert_one_line_error, medge

    folder = tmp_path / "store.db"
    folder.mkdir()
    proc = medge(*_db_commands(str(folder))[command], cwd=tmp_path, timeout=30)
    assert_one_line_error(proc, 2, str(folder), "is a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    db = ro / "medge.db"
    Store(db).close()
    try:
        proc = medge(*_db_commands(str(db))[command], cwd=tmp_path, prefix=_read_only(ro),
                     timeout=30)
    finally:
        ro.chmod(0o755)
    assert_one_line_error(proc, 2, str(db), "read-only")


def test_a_reader_of_an_outdated_store_is_told_to_migrate(tmp_path: Path) -> None:
    import shutil

    from test_cli_boundary import assert_one_line_error, medge

    db = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "data" / "stores" / "schema2.db", db)
    proc = medge("fleet", "list", "--json", "--db", str(db), cwd=tmp_path, timeout=30)
    assert_one_line_error(proc, 2, str(db), "medge store migrate")
    proc = medge("store", "migrate", "--db", str(db), cwd=tmp_path, timeout=30)
    assert proc.returncode == 0 and f"schema 2 -> {SCHEMA_VERSION}" in proc.stdout
    proc = medge("fleet", "list", "--json", "--db", str(db), cwd=tmp_path, timeout=30)
    assert proc.returncode == 0 and len(json.loads(proc.stdout)) == 3


def test_a_batch_gives_the_same_rows_and_outcomes_whichever_way_it_is_written(
        db: Path | str, tmp_path: Path) -> None:
    """write_batch writes a batch of new sequenced messages in a few set-based
    statements and falls back to one item at a time when any item is a duplicate,
    a conflict, a bad row or a status message: the outcomes, rows and counters are
    those of writing every message alone."""
    new = [Accept("vitals", f"dev-{i % 3}", vitals(i), T0 + i) for i in range(12)]
    mixed = [Accept("vitals", "dev-0", vitals(12), T0 + 12),
             new[0],  # duplicate
             Accept("vitals", "dev-0", vitals(3, hr=99), T0 + 13),  # conflict
             Accept("vitals", "dev-2", vitals(14), T0 + 14),
             Accept("vitals", "dev-2", vitals(14), T0 + 15),  # duplicate inside the batch
             Accept("vitals", "dev-1", {**vitals(15), "ts_ms": 2**64}, T0)]  # bad row

    def run(store: Store, batches: list[list[Accept]]) -> list[Outcome]:
        return [o for batch in batches for o in store.write_batch(batch)]

    with Store(db) as batched, Store(tmp_path / "alone.db") as alone:
        got = run(batched, [new, mixed])
        want = run(alone, [[item] for item in new + mixed])
        assert got == want == [Outcome.STORED] * 12 + [
            Outcome.STORED, Outcome.DUPLICATE, Outcome.CONFLICT, Outcome.STORED,
            Outcome.DUPLICATE, Outcome.REJECTED]
        assert batched.fast_batches == 1  # ``new`` went the set-based way, ``mixed`` not
        assert batched.counters() == alone.counters()
        for device in ("dev-0", "dev-1", "dev-2"):
            assert batched.seqs(device) == alone.seqs(device)
            assert [batched.payload(device, s) for s in batched.seqs(device)] == \
                [alone.payload(device, s) for s in alone.seqs(device)]
        assert [(d.device_id, d.messages, d.hr_bpm) for d in batched.devices()] == \
            [(d.device_id, d.messages, d.hr_bpm) for d in alone.devices()]


def test_a_busy_writer_leaves_checkpoints_to_a_thread_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with Store(path, checkpointer=True) as store:
        assert store.db.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        before = path.stat().st_size
        for b in range(20):
            store.write_batch([Accept("vitals", "dev-1", vitals(b * 100 + i), T0)
                               for i in range(100)])
        wal = Path(f"{path}-wal").stat().st_size
        assert wal > 4096 * 50  # the commits only appended to the WAL
        deadline = time.monotonic() + 10
        while store.checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.checkpointer.checkpoints >= 1 and store.checkpointer.failures == 0
        assert path.stat().st_size > before + 4096 * 20  # the pages reached the database file
    with Store(path, readonly=True) as reader:
        assert reader.vitals_count("dev-1") == 2000


def test_the_device_row_counts_its_stored_messages_through_every_write_path(
        db: Path | str) -> None:
    """devices.messages (schema 5) equals COUNT(*) of the device's messages after the
    set-based batch path, the item-by-item path (duplicates and conflicts counted out),
    and a prune."""
    from host.services.storage.prune import RULES, prune

    day = 24 * 3600 * 1000
    old = [Accept("vitals", "dev-1", {**vitals(i), "ts_ms": T0 - 400 * day}, T0 - 400 * day)
           for i in range(5)]
    with Store(db) as store:
        store.write_batch(old)  # fast path
        store.write_batch([Accept("status", "dev-1", birth(5), T0),  # item path
                           Accept("vitals", "dev-1", vitals(6), T0),
                           Accept("vitals", "dev-1", vitals(6), T0),  # duplicate
                           Accept("vitals", "dev-1", vitals(6, hr=99), T0)])  # conflict
        store.write_batch([Accept("vitals", "dev-1", vitals(i), T0) for i in range(7, 10)])

        def counted() -> tuple[int, int]:
            (n,) = store.db.execute(
                "SELECT COUNT(*) FROM messages WHERE device_id='dev-1'").fetchone()
            return store.devices(at_ms=T0)[0].messages, n

        assert counted() == (10, 10)
        ages = {r.table: r.days for r in RULES if r.days is not None}
        report = prune(store, {**ages, "vitals": 365}, T0)
        assert report["vitals"]["rows"] >= 5
        assert counted() == (5, 5)


def test_opening_the_store_again_keeps_this_processs_sqlite_locks(tmp_path: Path) -> None:
    """The monitor re-opens the store while ingest's connection lives in the same
    process (``medge demo``).  Closing any descriptor of the file drops every POSIX
    lock the process's SQLite connections hold, so the store must never open the file
    itself: else another process's connection, closing, believes it is the last one
    and deletes the WAL under the live connection (its next write: disk I/O error)."""
    import subprocess
    import sys

    db = tmp_path / "s.db"
    with Store(db) as writer:
        assert writer.add("vitals", "dev-1", vitals(1), T0)
        with Store(db, readonly=True) as again:  # what every monitor refresh does
            assert again.devices()
        script = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                  "c.execute('PRAGMA journal_mode=WAL'); c.close()")
        subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
        assert db.with_name("s.db-wal").exists()  # the other process saw this one
        assert writer.add("vitals", "dev-1", vitals(2), T0 + 1000)
        assert len(writer.db.execute("SELECT seq FROM messages").fetchall()) == 2

"""Poison messages, conflicts, incarnations and storage outages: every message gets
exactly one committed outcome and its acknowledgement, and ingest heals itself."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from test_ingest import wait_for  # tests/ is on sys.path (pytest rootdir import)

from firmware.net import protocol
from firmware.net.wire import encode
from host.broker.launch import Broker
from host.services import messages
from host.services.ingest import Ingest
from host.services.store import REJECTIONS_KEEP_PER_REASON, StorageUnavailable, Store

T0 = 1_764_000_000_000
TOPIC = "medge/v1/dev/dev-1/vitals"


def vitals(seq: int, device_id: str = "dev-1", hr: int = 70, **extra: object) -> dict:
    return {**protocol.vitals(device_id, seq, T0 + seq, 1000, hr, 1, protocol.QUALITY_GOOD),
            **extra}


def ack_doc(seq: int, ts_ms: object) -> dict:
    return {"v": 1, "type": "ack", "device_id": "dev-1", "seq": seq, "ts_ms": ts_ms,
            "cmd_id": "c1", "result": "ok"}


#: The probe's poison payloads (issue 10): reason each must be rejected with.
POISON = {
    "nested": (TOPIC, b"[" * 5000 + b"]" * 5000, "too_deep"),
    "ack_ts_2_64": ("medge/v1/dev/dev-1/ack", json.dumps(ack_doc(1, 2**64)).encode(), "schema"),
    "seq_float": (TOPIC, json.dumps(vitals(5)).replace('"seq": 5', '"seq": 5.0').encode(),
                  "schema"),
    "ts_1e300": (TOPIC, json.dumps(vitals(6)).replace(f'"ts_ms": {T0 + 6}', '"ts_ms": 1e300')
                 .encode(), "schema"),
}


@pytest.mark.parametrize("name", POISON)
def test_each_poison_payload_is_a_counted_rejection(name: str) -> None:
    topic, payload, reason = POISON[name]
    result = messages.check(topic, payload)
    assert isinstance(result, messages.Rejected) and result.reason.value == reason, result


@pytest.mark.parametrize("field,value", [("seq", True), ("hr_bpm", 70.0), ("beats", 1.5),
                                         ("ts_ms", 2**53 + 1), ("window_ms", -1)])
def test_integers_are_integers_and_bounded(field: str, value: object) -> None:
    doc = vitals(1)
    doc[field] = value
    result = messages.check(TOPIC, json.dumps(doc).encode())
    assert isinstance(result, messages.Rejected) and result.reason is messages.Reason.SCHEMA


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    doc = {"v": 1, "type": "ack", "device_id": "dev-1", "seq": 1, "ts_ms": T0,
           "cmd_id": "c1", "result": "failed", "reason": "[" * 200}
    assert isinstance(messages.check("medge/v1/dev/dev-1/ack", encode(doc)), messages.Accepted)


def test_an_unexpected_exception_is_an_internal_rejection(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ingest = Ingest(tmp_path / "m.db", "127.0.0.1", 1)

    def boom(topic: str, payload: bytes) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(messages, "check", boom)
    payload = b"x" * 5000
    assert ingest.handle(TOPIC, payload) == "rejected:internal"
    monkeypatch.undo()
    assert ingest.handle(TOPIC, encode(vitals(1))) == "stored"
    ingest.stop()
    with Store(tmp_path / "m.db", readonly=True) as store:
        assert store.rejection_counts() == {"internal": 1}
        (head,) = store.db.execute("SELECT payload_head FROM rejections").fetchone()
        assert len(head) == 1024


def test_conflict_is_kept_aside_and_the_first_message_stays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A forger claiming the device's next seq: the real message with that seq is a
    conflict (kept, counted, one WARNING); the forged one is never silently dropped or
    silently kept as if it were a duplicate."""
    ingest = Ingest(tmp_path / "m.db", "127.0.0.1", 1)
    forged, real = encode(vitals(3, hr=180)), encode(vitals(3, hr=70))
    assert ingest.handle(TOPIC, forged) == "stored"
    assert ingest.handle(TOPIC, real) == "conflict"
    assert ingest.handle(TOPIC, real) == "duplicate"  # a re-delivery of the conflict
    assert ingest.handle(TOPIC, forged) == "duplicate"
    assert ingest.handle(TOPIC, encode(vitals(4))) == "stored"
    stats = ingest.stats()
    assert (stats["stored"], stats["conflicts"], stats["duplicates"]) == (2, 1, 2)
    ingest.stop()
    assert sum("conflict" in r.getMessage() for r in caplog.records) == 1
    with Store(tmp_path / "m.db", readonly=True) as store:
        [kept] = store.conflicts("dev-1")
        assert json.loads(kept["payload"])["hr_bpm"] == 70 and kept["seq"] == 3
        assert store.payload("dev-1", 3)["hr_bpm"] == 180
        assert store.counters()["conflict"] == 1


def test_incarnation_keeps_a_reset_unit_apart_from_its_past(tmp_path: Path) -> None:
    ingest = Ingest(tmp_path / "m.db", "127.0.0.1", 1)
    old = [ingest.handle(TOPIC, encode(vitals(s, incarnation="boot-a"))) for s in range(3)]
    new = [ingest.handle(TOPIC, encode(vitals(s, hr=90, incarnation="boot-b")))
           for s in range(3)]
    assert old == new == ["stored"] * 3
    ingest.stop()
    with Store(tmp_path / "m.db", readonly=True) as store:
        assert store.payload("dev-1", 0, "boot-a")["hr_bpm"] == 70
        assert store.payload("dev-1", 0, "boot-b")["hr_bpm"] == 90
        assert store.conflicts() == []


def test_rejections_are_kept_bounded_and_counted(tmp_path: Path) -> None:
    with Store(tmp_path / "m.db") as store:
        for i in range(REJECTIONS_KEEP_PER_REASON + 50):
            store.add_rejection("not_json", "x", TOPIC, b"nope", T0 + i)
        (rows,) = store.db.execute("SELECT COUNT(*) FROM rejections").fetchone()
        assert rows == REJECTIONS_KEEP_PER_REASON
        assert store.rejection_counts() == {"not_json": REJECTIONS_KEEP_PER_REASON + 50}


def test_schema_1_store_is_migrated_with_every_row(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE devices (device_id TEXT PRIMARY KEY, patient_id TEXT, fw_version TEXT,
            model_version TEXT, sample_rate_hz INTEGER, boot_id INTEGER,
            state TEXT NOT NULL DEFAULT 'offline', state_reason TEXT,
            first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL);
        CREATE TABLE messages (device_id TEXT NOT NULL, seq INTEGER NOT NULL,
            type TEXT NOT NULL, ts_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
            payload TEXT NOT NULL, PRIMARY KEY (device_id, seq)) WITHOUT ROWID;
        INSERT INTO messages VALUES ('dev-1', 0, 'vitals', 1, 2, '{}');
        CREATE TABLE rejections (id INTEGER PRIMARY KEY AUTOINCREMENT,
            received_ms INTEGER NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
            topic TEXT NOT NULL, payload_head TEXT NOT NULL);
        INSERT INTO rejections VALUES (NULL, 1, 'schema', 'd', 't', 'p');
    """)
    con.close()
    with Store(db) as store:
        assert store.seqs("dev-1") == [0]
        assert store.rejection_counts() == {"schema": 1}
        assert store.add("vitals", "dev-1", vitals(1), T0) is True


def test_storage_failure_raises_and_commits_nothing(tmp_path: Path) -> None:
    ingest = Ingest(tmp_path / "m.db", "127.0.0.1", 1)

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    ingest.store.fault_hook = locked
    with pytest.raises(StorageUnavailable, match="locked"):
        ingest.handle(TOPIC, encode(vitals(1)))
    ingest.store.fault_hook = None
    assert ingest.handle(TOPIC, encode(vitals(1))) == "stored"
    ingest.stop()


# -- on a real mosquitto ------------------------------------------------------

@pytest.fixture
def broker(tmp_path: Path):
    with Broker("mosquitto", data_dir=tmp_path / "broker") as b:
        yield b


def publish_all(broker: Broker, batch: list[tuple[str, bytes]]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pub")
    client.max_inflight_messages_set(200)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in batch]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()



def test_poison_traffic_then_valid_traffic_on_mosquitto_also_after_a_restart(
        broker: Broker, tmp_path: Path) -> None:
    """100 of each poison payload, then valid messages: all valid ones stored, all
    poison ones rejected *and* acknowledged (the broker's queue drains)."""
    db = tmp_path / "m.db"
    first = Ingest(db, broker.host, broker.port)
    first.start()
    assert first.wait_connected(10)
    first.stop()  # the session stays: what follows is queued for ingest
    poison = [(topic, payload) for topic, payload, _ in POISON.values() for _ in range(100)]
    valid = [(TOPIC, encode(vitals(100 + i))) for i in range(50)]
    publish_all(broker, poison + valid)

    second = Ingest(db, broker.host, broker.port)
    second.start()
    try:
        assert wait_for(lambda: second.stats()["stored"] == 50)
        assert sum(second.stats()["rejected"].values()) == 400
    finally:
        second.stop()
    # A restart gets nothing again (all acknowledged), and new valid traffic flows.
    publish_all(broker, [(TOPIC, encode(vitals(200 + i))) for i in range(10)])
    third = Ingest(db, broker.host, broker.port)
    third.start()
    try:
        assert wait_for(lambda: third.stats()["stored"] == 10)
        time.sleep(0.5)
        assert third.stats()["received"] == 10  # no poison redelivered
    finally:
        third.stop()
    with Store(db, readonly=True) as store:
        assert store.seqs("dev-1") == list(range(100, 150)) + list(range(200, 210))
        assert store.rejection_counts() == {"too_deep": 100, "schema": 300}

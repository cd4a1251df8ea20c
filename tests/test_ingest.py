"""Ingest against a real mosquitto: malformed messages are rejected, counted, logged,
and ingest keeps storing what is valid."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from firmware.net import protocol
from firmware.net.wire import encode
from host.broker.launch import Broker
from host.services.ingest import Ingest
from host.services.store import Store

T0 = 1_764_000_000_000


def vitals(device_id: str, seq: int) -> dict:
    return protocol.vitals(device_id, seq, T0 + seq, 1000, 70, 1, protocol.QUALITY_GOOD)


MALFORMED = {
    "not_json": ("medge/v1/dev/dev-1/vitals", b"\x00garbage{"),
    "schema": ("medge/v1/dev/dev-1/vitals",
               json.dumps({**vitals("dev-1", 1), "hr_bpm": "fast"}).encode()),
    "oversized": ("medge/v1/dev/dev-1/vitals", b"[" + b"1," * 20_000 + b"1]"),
    "device_mismatch": ("medge/v1/dev/dev-2/vitals", encode(vitals("dev-1", 2))),
    "unknown_type": ("medge/v1/dev/dev-1/ecg-raw", encode(vitals("dev-1", 3))),
    "bad_topic": ("medge/v1/dev/dev-1/vitals/extra", encode(vitals("dev-1", 4))),
    "type_mismatch": ("medge/v1/dev/dev-1/status", encode(vitals("dev-1", 5))),
}


@pytest.fixture
def broker(tmp_path: Path):
    with Broker("mosquitto", data_dir=tmp_path / "broker") as b:
        yield b


def publisher(broker: Broker) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pub")
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def wait_for(predicate, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_each_malformed_kind_is_rejected_counted_and_ingest_keeps_running(
        broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="host.services.ingest")
    db = tmp_path / "medge.db"
    ingest = Ingest(db, broker.host, broker.port)
    ingest.start()
    pub = publisher(broker)
    try:
        assert ingest.wait_connected(10)
        for i, (topic, payload) in enumerate(MALFORMED.values()):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
            # Interleave valid traffic: every valid message after a bad one is stored.
            pub.publish("medge/v1/dev/dev-1/vitals", encode(vitals("dev-1", 100 + i)),
                        qos=1).wait_for_publish(5)
        assert wait_for(lambda: ingest.stats()["stored"] == len(MALFORMED))
        assert wait_for(lambda: sum(ingest.stats()["rejected"].values()) == len(MALFORMED))
    finally:
        pub.loop_stop()
        pub.disconnect()
        ingest.stop()

    assert ingest.stats()["rejected"] == dict.fromkeys(MALFORMED, 1)
    with Store(db, readonly=True) as store:
        assert store.rejection_counts() == dict.fromkeys(MALFORMED, 1)
        assert store.seqs("dev-1") == [100 + i for i in range(len(MALFORMED))]
    logged = " ".join(r.getMessage() for r in caplog.records)
    for reason in MALFORMED:
        assert f"rejected ({reason}" in logged


def test_duplicates_are_counted_not_stored(tmp_path: Path) -> None:
    ingest = Ingest(tmp_path / "medge.db", "127.0.0.1", 1)  # handle() needs no broker
    payload = encode(vitals("dev-1", 7))
    outcomes = [ingest.handle("medge/v1/dev/dev-1/vitals", payload) for _ in range(3)]
    assert outcomes == ["stored", "duplicate", "duplicate"]
    assert ingest.stats()["duplicates"] == 2
    ingest.stop()


def test_rhythm_events_are_stored_for_the_advice_engine(tmp_path: Path) -> None:
    """The device's ``event`` messages (issue 13) are a device message type: stored,
    de-duplicated, readable by the advice engine from the store."""
    from host.services.advice.live import event_from_payload

    ingest = Ingest(tmp_path / "medge.db", "127.0.0.1", 1)
    onset = protocol.event("dev-1", 8, T0 + 8000, "VT", "onset", T0 + 5000, None,
                           {"rate_bpm": 180, "beats": 4})
    end = protocol.event("dev-1", 9, T0 + 40_000, "VT", "end", T0 + 5000, T0 + 39_000,
                         {"rate_bpm": 176, "beats": 96, "sustained": 1})
    topic = "medge/v1/dev/dev-1/event"
    assert [ingest.handle(topic, encode(d)) for d in (onset, end, end)] == [
        "stored", "stored", "duplicate"]
    bad = dict(end, seq=10, kind="STROKE")
    assert ingest.handle(topic, encode(bad)) == "rejected:schema"
    ingest.stop()
    with Store(tmp_path / "medge.db", readonly=True) as store:
        assert store.seqs("dev-1") == [8, 9]
        rows = store.db.execute("SELECT payload FROM messages WHERE type = 'event' "
                                "ORDER BY seq").fetchall()
    items = [event_from_payload(p) for (p,) in rows]
    assert all(item is not None for item in items)
    assert items[1][1].rhythm == "VT" and items[1][1].offset_ms == T0 + 39_000


def test_restarting_ingest_does_not_bring_a_dead_device_back(
        broker: Broker, tmp_path: Path) -> None:
    """A device's retained birth, published long ago, is replayed to every ingest that
    subscribes: it is seen at its own time, so the device stays stale, on a new
    store and after a restart (issue 11 item 5)."""
    db = tmp_path / "m.db"
    pub = publisher(broker)
    birth = protocol.birth("dev-9", 0, T0, {"fw_version": "0.1.0", "model_version": "m",
                                            "patient_id": "p9", "sample_rate_hz": 250,
                                            "boot_id": 1})
    pub.publish("medge/v1/dev/dev-9/status", encode(birth), qos=1,
                retain=True).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    for expected in ("stored", "duplicates"):
        ingest = Ingest(db, broker.host, broker.port)
        ingest.start()
        try:
            assert ingest.wait_connected(10)
            assert wait_for(lambda e=expected, i=ingest: i.stats()[e] >= 1)  # the replay
        finally:
            ingest.stop()
        with Store(db, readonly=True) as store:
            [row] = store.devices()
        assert (row.device_id, row.last_seen_ms, row.state) == ("dev-9", T0, "stale")


def test_rejection_logging_is_rate_limited(tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="host.services.ingest")
    ingest = Ingest(tmp_path / "medge.db", "127.0.0.1", 1)
    for _ in range(250):
        ingest.handle("medge/v1/dev/dev-1/vitals", b"nope")
    assert ingest.stats()["rejected"] == {"not_json": 250}
    assert 10 <= len(caplog.records) <= 13  # first 10, then every 100th
    ingest.stop()


def test_ingest_catches_up_after_being_offline(broker: Broker, tmp_path: Path) -> None:
    """The persistent session: messages sent while ingest is down are delivered later."""
    db = tmp_path / "medge.db"
    first = Ingest(db, broker.host, broker.port)
    first.start()
    assert first.wait_connected(10)
    first.stop()
    pub = publisher(broker)
    try:
        for seq in range(20):
            pub.publish("medge/v1/dev/dev-9/vitals", encode(vitals("dev-9", seq)),
                        qos=1).wait_for_publish(5)
    finally:
        pub.loop_stop()
        pub.disconnect()
    second = Ingest(db, broker.host, broker.port)
    second.start()
    try:
        assert wait_for(lambda: second.stats()["stored"] == 20)
    finally:
        second.stop()
    with Store(db, readonly=True) as store:
        assert store.seqs("dev-9") == list(range(20))

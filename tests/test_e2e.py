"""End to end on real parts: simulated devices -> real broker -> ingest -> SQLite.

For each broker (a real mosquitto started here on a free loopback port, and
the embedded amqtt broker) the broker is stopped for several seconds in the
middle of the run and restarted.  mosquitto keeps ingest's persistent session
and its queue across the restart, so afterwards every message every device
published must be in the store exactly once.  The embedded broker keeps
nothing across a restart (host/broker/embedded.py, README "Brokers"): messages
the devices re-send after it comes back, before ingest has subscribed again,
are acknowledged by the broker and delivered to nobody.  For it the test
asserts what is documented: nothing stored twice, the store in seq order, the
run's last message stored, and every loss visible as a gap in the device's
sequence numbers (nothing silently renumbered).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from host.broker.launch import Broker, find_mosquitto
from host.services.demo import wait_stored
from host.services.ingest import Ingest
from host.services.store import Store
from sim.fleet import Fleet, FleetParams

OUTAGE_S = 4.0


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def stored_vitals(db: Path) -> int:
    with Store(db, readonly=True) as store:
        return store.vitals_count()


@pytest.mark.parametrize("kind", ["mosquitto", "embedded"])
def test_broker_outage_mid_run_loses_nothing_and_stores_nothing_twice(
    kind: str, tmp_path: Path
) -> None:
    if kind == "mosquitto":
        assert find_mosquitto(), "mosquitto is required (apt-get install mosquitto)"
    db = tmp_path / "medge.db"
    broker = Broker(kind, data_dir=tmp_path / "broker")
    broker.start()
    ingest = Ingest(db, broker.host, broker.port)
    stop = threading.Event()
    runner: threading.Thread | None = None
    try:
        ingest.start()
        assert ingest.wait_connected(10)
        fleet = Fleet(
            FleetParams(n_devices=3, sample_rate_hz=250, speed=4.0, seed=7),
            broker.host,
            broker.port,
            state_dir=tmp_path / "devices",
        )
        runner = threading.Thread(target=fleet.run, args=(48.0, stop))
        runner.start()
        assert wait_until(lambda: db.exists() and stored_vitals(db) >= 9, 20)

        broker.stop()
        time.sleep(OUTAGE_S)
        queued = sum(len(d.outbox) for d in fleet.devices)
        broker.start()

        runner.join(timeout=60)
        assert not runner.is_alive()
        assert fleet.shutdown(timeout_s=20)
        missing = wait_stored(db, fleet.last_seqs(), timeout_s=20)
        if kind == "mosquitto":
            assert missing == {}
    finally:
        stop.set()
        if runner is not None:
            runner.join(timeout=10)
        ingest.stop()
        broker.stop()

    assert queued >= 3 * 8  # the devices really held messages during the outage
    with Store(db, readonly=True) as store:
        for device in fleet.devices:
            device_id = device.cfg.device_id
            first, last = fleet.first_seqs[device_id], fleet.last_seqs()[device_id]
            seqs = store.seqs(device_id)
            if kind == "mosquitto":
                assert seqs == list(range(first, last + 1)), device_id
                assert store.vitals_count(device_id) == device.reports == 48
            else:  # in memory only: losses around the restart, each one a seq gap
                assert seqs == sorted(set(seqs)) and seqs[-1] == last, device_id
                assert set(seqs) <= set(range(first, last + 1))
                assert device.reports == 48
            assert device.outbox.dropped == 0
            assert device.link.connected() is False
            births = store.db.execute(
                "SELECT COUNT(*) FROM messages WHERE device_id=? AND type='status' "
                "AND payload LIKE '%\"online\"%'",
                (device_id,),
            ).fetchone()[0]
            assert births >= 2  # reconnected after the outage
        assert {r.state for r in store.devices()} == {"offline"}
        assert store.rejection_counts() == {}

"""``medge demo``: the whole system on one machine.

Starts a broker (mosquitto when installed, else the embedded one), the ingest
service writing to the SQLite store, and N simulated devices running the real
firmware loop; shows the live monitor; and with a duration stops by itself:
devices shut down cleanly (their outboxes drain), ingest waits until every
message each device sent is stored, and a summary checks every device's
sequence numbers for gaps.  Exit code 0 only if nothing was lost.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from host.broker.launch import Broker
from host.services.ingest import Ingest
from host.services.monitor import run_monitor
from host.services.store import Store
from sim.fleet import Fleet, FleetParams

log = logging.getLogger(__name__)


def wait_stored(store_path: Path, last_seqs: dict[str, int], timeout_s: float) -> dict[str, int]:
    """Wait until the store holds each device's last seq; return the missing counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing: dict[str, int] = {}
        with Store(store_path, readonly=True) as store:
            for device_id, last in last_seqs.items():
                seqs = store.seqs(device_id)
                if not seqs or seqs[-1] < last:
                    missing[device_id] = last - (seqs[-1] if seqs else -1)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.1)


def run_demo(
    *,
    devices: int,
    duration_s: float | None,
    db_path: Path,
    speed: float = 1.0,
    seed: int = 0,
    broker_kind: str = "auto",
    sample_rate_hz: int = 250,
    scenario: str | None = None,
    sensor: str = "direct",
    faults: str = "",
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    work_dir = db_path.parent
    broker = Broker(broker_kind, data_dir=work_dir / "broker")
    broker.start()
    print(
        f"demo: {broker.kind.value} broker on {broker.host}:{broker.port}; store {db_path}",
        file=out,
        flush=True,
    )
    ingest = Ingest(db_path, broker.host, broker.port)
    fleet: Fleet | None = None
    stop = threading.Event()
    try:
        ingest.start()
        if not ingest.wait_connected(10):
            print("demo: ingest could not connect to the broker", file=out)
            return 1
        fleet = Fleet(
            FleetParams(n_devices=devices, sample_rate_hz=sample_rate_hz, speed=speed, seed=seed,
                        scenario=scenario, sensor=sensor, faults=faults),
            broker.host,
            broker.port,
            state_dir=work_dir / "devices",
            broker=broker,
        )
        runner = threading.Thread(target=fleet.run, args=(duration_s, stop), name="fleet")
        runner.start()
        try:
            run_monitor(db_path, stop=stop, until=runner, out=out)
        except KeyboardInterrupt:
            print("demo: interrupted, shutting down", file=out)
        stop.set()
        runner.join()
        drained = fleet.shutdown(timeout_s=15)
        missing = wait_stored(db_path, fleet.last_seqs(), timeout_s=15)
        return _summary(db_path, fleet, ingest, drained, missing, out)
    finally:
        stop.set()
        ingest.stop()
        broker.stop()


def _summary(
    db_path: Path, fleet: Fleet, ingest: Ingest, drained: bool, missing: dict[str, int], out: TextIO
) -> int:
    ok = drained and not missing
    with Store(db_path, readonly=True) as store:
        for device in fleet.devices:
            device_id = device.cfg.device_id
            first, last = fleet.first_seqs[device_id], fleet.last_seqs()[device_id]
            seqs = [s for s in store.seqs(device_id) if first <= s <= last]
            lost = (last - first + 1) - len(seqs)
            ok = ok and lost == 0
            print(
                f"demo: {device_id}: seq {first}..{last}, {len(seqs)} messages stored, "
                f"{lost} missing, {store.vitals_count(device_id)} vitals in store, "
                f"outbox dropped {device.outbox.dropped}",
                file=out,
            )
    stats = ingest.stats()
    print(
        f"demo: ingest stored {stats['stored']}, duplicates {stats['duplicates']}, "
        f"rejected {stats['rejected'] or 'none'}",
        file=out,
    )
    if missing:
        print(f"demo: messages not stored: {missing}", file=out)
    print("demo: OK, nothing lost" if ok else "demo: FAILED", file=out, flush=True)
    return 0 if ok else 1

"""Three `medge ingest --group` workers share one MQTT v5 shared subscription on a
real mosquitto; one is SIGKILLed mid-stream and restarted: zero rows lost, zero
duplicated (contract 12)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from test_ingest import wait_for  # tests/ is on sys.path (pytest rootdir import)
from test_store import BACKENDS, store_location

from firmware.net import protocol
from firmware.net.wire import encode
from host.broker.launch import Broker
from host.services.ingest import stats_dir
from host.services.store import Store

T0 = 1_764_000_000_000
DEVICES = ("dev-a", "dev-b", "dev-c")
PER_DEVICE = 1000  # ~10 s at 300 messages/s in all
RATE_HZ = 300


@pytest.fixture(params=BACKENDS)
def store_db(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Path | str]:
    """The store on each backend; the workers' health files in ``tmp_path``."""
    monkeypatch.setenv("MEDGE_STATE_DIR", str(tmp_path / "state"))
    with store_location(request.param, request, tmp_path) as location:
        yield location


def worker(broker: Broker, db: Path | str, name: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "host.cli", "ingest", "--host", broker.host, "--port",
         str(broker.port), "--db", str(db), "--group", "ward", "--client-id", name],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), cwd=Path(__file__).parents[1])


def connected(db: Path | str, name: str) -> bool:
    try:
        return json.loads((stats_dir(db) / f"{name}.json").read_text())["connected"]
    except (OSError, ValueError, KeyError):
        return False



def test_three_group_workers_one_killed_and_restarted_lose_and_double_nothing(
        tmp_path: Path, store_db: Path | str) -> None:
    db = store_db
    Store(db).close()
    names = ("w1", "w2", "w3")
    with Broker("mosquitto", data_dir=tmp_path / "broker") as broker:
        procs = {n: worker(broker, db, n, tmp_path / f"{n}.log") for n in names}
        try:
            assert wait_for(lambda: all(connected(db, n) for n in names), 30), \
                [(tmp_path / f"{n}.log").read_text()[-2000:] for n in names]
            msgs = [(protocol.topic(d, "vitals"),
                     encode(protocol.vitals(d, seq, T0 + seq * 1000, 1000, 70, 1, "good")))
                    for seq in range(PER_DEVICE) for d in DEVICES]
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pub")
            pub.max_inflight_messages_set(500)
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            infos = []

            def publish() -> None:
                t0 = time.monotonic()
                for i, (topic, payload) in enumerate(msgs):
                    infos.append(pub.publish(topic, payload, qos=1))
                    pause = t0 + i / RATE_HZ - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)

            sender = threading.Thread(target=publish)
            sender.start()
            time.sleep(3)
            procs["w1"].send_signal(signal.SIGKILL)  # mid-stream: no clean anything
            procs["w1"].wait(10)
            time.sleep(1)
            procs["w1"] = worker(broker, db, "w1", tmp_path / "w1.log")
            sender.join(60)
            for info in infos:
                info.wait_for_publish(10)
            pub.loop_stop()
            pub.disconnect()

            def complete() -> bool:
                with Store(db, readonly=True) as store:
                    return store.db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] \
                        >= len(msgs)
            assert wait_for(complete, 60)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs.values():
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
    with Store(db, readonly=True) as store:
        for d in DEVICES:
            assert store.seqs(d) == list(range(PER_DEVICE)), d  # none lost, none twice
            assert store.vitals_count(d) == PER_DEVICE
        counters = store.counters()
    assert counters["stored"] == len(msgs)
    assert counters.get("conflict", 0) == 0
    shares = {n: json.loads((stats_dir(db) / f"{n}.json").read_text())["stored"]
              for n in ("w2", "w3")}
    assert all(v > 0 for v in shares.values()), shares  # the load was shared
    print("\nworkers:", shares, "duplicates after the kill:", counters.get("duplicate", 0))

"""The MicroPython link (firmware/net/mqtt_client.py core) driving the device loop against a
real mosquitto on CPython, through a broker outage: nothing lost, nothing twice."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from firmware.device import Device, DeviceConfig
from firmware.hw.sources import ArraySource
from firmware.hw.state import MemoryState
from firmware.net.links.umqtt import UmqttLink
from host.broker.launch import Broker
from host.services.ingest import Ingest
from host.services.store import Store
from sim.ecgsyn import EcgsynParams, ecgsyn
from sim.sources import mv_to_counts


class StepClock:
    def __init__(self) -> None:
        self.ms = 0

    def epoch_ms(self) -> int:
        return 1_764_000_000_000 + self.ms

    def ticks_ms(self) -> int:
        return self.ms


def test_umqtt_link_device_survives_broker_outage(tmp_path: Path) -> None:
    ecg = ecgsyn(20, EcgsynParams(sample_rate_hz=250, heart_rate_mean_bpm=70),
                 np.random.default_rng(11))
    samples = [int(v) for v in mv_to_counts(ecg.signal_mv)]
    db = tmp_path / "medge.db"
    clock = StepClock()
    broker = Broker("mosquitto", data_dir=tmp_path / "broker")
    broker.start()
    ingest = Ingest(db, broker.host, broker.port)
    try:
        ingest.start()
        assert ingest.wait_connected(10)
        link = UmqttLink(broker.host, broker.port, "umqtt-dev-1", keepalive_s=10)
        source = ArraySource(samples, sample_rate_hz=250, clock=clock)
        dev = Device(DeviceConfig("umqtt-dev-1", 250, backoff_max_ms=1000), source, link,
                     clock, MemoryState())
        while not source.exhausted():
            clock.ms += 50
            if clock.ms == 8000:
                broker.stop()
            elif clock.ms == 14000:
                broker.start()
            dev.step()
            time.sleep(0.002)
        dev.stop()
        deadline = time.monotonic() + 10
        while not dev.drained() and time.monotonic() < deadline:
            clock.ms += 50
            dev.service()
            time.sleep(0.01)
        assert dev.drained()
        link.disconnect()
        last = dev.seq.peek() - 1
        deadline = time.monotonic() + 10
        while ingest.stats()["stored"] < last + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ingest.stop()
        broker.stop()
    assert dev.connect_failures >= 1
    with Store(db, readonly=True) as store:
        assert store.seqs("umqtt-dev-1") == list(range(last + 1))
        assert store.vitals_count("umqtt-dev-1") == 20

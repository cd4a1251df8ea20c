"""The simulated fleet: determinism, the emulated sensor paths, ``medge sim``.

- Same seed, same parameters: every device publishes byte-identical vitals
  (and a different seed gives different ones).
- The ADS1292R path (emulated part on an emulated SPI bus, the real driver
  and source) hands the device exactly the patient's counts; so does the
  ADS1115 path inside its input range.
- ``medge sim`` against a broker it starts: exit 0, ground-truth files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from array import array
from pathlib import Path

import numpy as np
import pytest

from firmware.net.links.memory import MemoryLink
from host.broker.launch import find_mosquitto
from sim.clock import SimClock
from sim.devices import PatientEcgSource, make_sensor
from sim.fleet import Fleet, FleetParams
from sim.patient import VirtualPatient

MEDGE = str(Path(sys.executable).with_name("medge"))
T0 = 1_764_000_000_000


def run_fleet(tmp: Path, seed: int, sensor: str = "direct", n: int = 3, duration_s: float = 30,
              scenario: str | None = "stable", faults: str = "", vitals: str = "auto"
              ) -> tuple[Fleet, dict[str, MemoryLink]]:
    links: dict[str, MemoryLink] = {}

    def factory(device_id: str) -> MemoryLink:
        links[device_id] = MemoryLink()
        return links[device_id]

    fleet = Fleet(FleetParams(n_devices=n, sample_rate_hz=250, speed=1000.0, seed=seed,
                              scenario=scenario, sensor=sensor, start_epoch_ms=T0,
                              faults=faults, vitals=vitals),
                  "unused", 0, tmp, link_factory=factory)
    fleet.run(duration_s, threading.Event())
    return fleet, links


def vitals_payloads(links: dict[str, MemoryLink]) -> dict[str, list[bytes]]:
    return {d: [p for t, p, _ in link.published if t.endswith("/vitals")]
            for d, link in links.items()}


def test_same_seed_identical_vitals_different_seed_differs(tmp_path: Path) -> None:
    _, a = run_fleet(tmp_path / "a", seed=11)
    _, b = run_fleet(tmp_path / "b", seed=11)
    _, c = run_fleet(tmp_path / "c", seed=12)
    va, vb, vc = vitals_payloads(a), vitals_payloads(b), vitals_payloads(c)
    assert sorted(va) == ["sim-0001", "sim-0002", "sim-0003"]
    for device_id in va:
        assert len(va[device_id]) == 30
        assert va[device_id] == vb[device_id], device_id
        assert va[device_id] != vc[device_id], device_id
    # each patient is different: heart rates differ between the devices
    hrs = {d: [json.loads(p)["hr_bpm"] for p in v[5:]] for d, v in va.items()}
    means = sorted(np.mean([h for h in v if h is not None]) for v in hrs.values())
    assert means[-1] - means[0] > 1.0


def test_ads1292_path_same_messages_as_direct(tmp_path: Path) -> None:
    """The full driver path delivers the same samples, so the device says the same
    (the ECG alone: the PPG and temperature paths differ, tests/test_demo_vitals.py)."""
    _, direct = run_fleet(tmp_path / "d", seed=5, sensor="direct", n=2, duration_s=20,
                          vitals="none")
    _, spi = run_fleet(tmp_path / "s", seed=5, sensor="ads1292", n=2, duration_s=20,
                       vitals="none")
    assert vitals_payloads(direct) == vitals_payloads(spi)


def test_ecgsyn_patients_are_built_like_every_other_patient(tmp_path: Path) -> None:
    """medge demo's default (scenario=None) is the built-in scenario "ecgsyn": the same
    SimDevice stack, deterministic, and it can sit behind an emulated sensor too."""
    fleet, a = run_fleet(tmp_path / "a", seed=4, scenario=None, duration_s=12)
    _, b = run_fleet(tmp_path / "b", seed=4, scenario=None, duration_s=12)
    _, c = run_fleet(tmp_path / "c", seed=4, scenario="ecgsyn", sensor="ads1292", duration_s=12)
    va = vitals_payloads(a)
    assert all(len(v) == 12 for v in va.values())
    assert va == vitals_payloads(b) == vitals_payloads(c)
    for sim in fleet.sims:  # ground truth: every beat, at the patient's drawn rate
        hr = fleet.heart_rates_bpm[sim.device_id]
        assert 55 <= hr <= 105
        assert abs(len(sim.patient.truth.beat_samples()) - hr * 12 / 60) <= 2
    assert len({round(h) for h in fleet.heart_rates_bpm.values()}) == 3


def _read_all(source, clock: SimClock, seconds: int, step_ms: int = 200) -> np.ndarray:
    buf = array("h", bytes(2 * 64))
    out: list[int] = []
    for _ in range(seconds * 1000 // step_ms):
        clock.advance(step_ms)
        while True:
            n = source.read_samples(buf, 64)
            if not n:
                break
            out.extend(buf[:n])
    return np.array(out, dtype=np.int16)


@pytest.mark.parametrize("sensor", ["direct", "ads1292", "ads1115"])
def test_sensor_path_delivers_the_patients_counts(sensor: str) -> None:
    clock = SimClock(T0)
    patient = VirtualPatient("stable", 21, 250)
    source = make_sensor(sensor, patient, clock)
    got = _read_all(source, clock, seconds=12)
    want = VirtualPatient("stable", 21, 250).next_chunk(len(got)).ecg
    assert len(got) == 12 * 250
    if sensor == "ads1115":  # exact inside the ADS1115's +-2.048 V / gain 100 range
        inside = np.abs(want.astype(int)) < 4096
        assert inside.mean() > 0.99
        assert np.array_equal(got[inside], want[inside])
    else:
        assert np.array_equal(got, want)
    if sensor != "direct":
        assert source.source.dropped == 0
        assert source.sensor_errors == 0


class _RampPatient:
    """Looks like a VirtualPatient to the sensor path: every int16 value once."""

    fs = 250

    def __init__(self) -> None:
        self.values = np.concatenate([np.arange(-32768, 32768, 1, dtype=np.int16)])
        self.pos = 0

    def next_chunk(self, n: int):
        chunk = self.values[self.pos:self.pos + n]
        self.pos += n
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.int16)])
        return type("Chunk", (), {"ecg": chunk})


def test_ads1292_round_trip_is_exact_over_the_whole_int16_range() -> None:
    """count -> electrode volts -> 24-bit code (gain 6) -> driver -> RatioScaler -> count."""
    clock = SimClock(T0)
    ramp = _RampPatient()
    source = make_sensor("ads1292", ramp, clock)  # type: ignore[arg-type]
    got = _read_all(source, clock, seconds=65536 // 250 + 1, step_ms=500)
    assert np.array_equal(got[:65536], ramp.values)


def test_direct_source_faults() -> None:
    clock = SimClock(T0)
    src = PatientEcgSource(VirtualPatient("stable", 3, 250), clock)
    buf = array("h", bytes(128))
    clock.advance(100)
    assert src.read_samples(buf, 64) == 25
    src.set_lead_off(True)
    clock.advance(100)
    assert src.read_samples(buf, 64) == 25 and set(buf[:25]) == {32767}
    src.set_lead_off(False)
    src.set_disconnected(True)
    clock.advance(100)
    assert src.read_samples(buf, 64) == 0 and src.lost == 25
    src.set_disconnected(False)
    clock.advance(100)
    assert src.read_samples(buf, 64) == 25 and src.produced == 100


def test_fleet_params_validation() -> None:
    with pytest.raises(ValueError, match="sensor"):
        FleetParams(n_devices=1, sample_rate_hz=250, scenario="stable", sensor="spi")
    with pytest.raises(ValueError, match="scenario"):
        FleetParams(n_devices=1, sample_rate_hz=250, sensor="ads1292")
    with pytest.raises(ValueError, match="scenario"):
        FleetParams(n_devices=1, sample_rate_hz=250, faults="reboot:1@1s")


def _medge(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDGE_DB"}
    return subprocess.run([MEDGE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_cli_sim_with_its_own_broker_writes_ground_truth(tmp_path: Path) -> None:
    assert find_mosquitto(), "mosquitto is required (apt-get install mosquitto)"
    kind = "mosquitto"
    result = _medge("sim", "--devices", "2", "--duration", "10", "--speed", "5",
                    "--scenario", "new_onset_af", "--sensor", "ads1292", "--seed", "3",
                    "--broker", kind, "--truth-dir", "truth",
                    "--faults", "reboot:#1@4s,sensor:#2:leadoff@2s+2s", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"sim: {kind} broker on 127.0.0.1:" in result.stdout
    assert "sim-0001 reboot" in result.stdout
    truth = json.loads((tmp_path / "truth" / "sim-0001.truth.json").read_text())
    assert truth["scenario"] == "new_onset_af" and truth["fs_hz"] == 250
    assert truth["samples"] >= 10 * 250
    beats = (tmp_path / "truth" / "sim-0002.beats.csv").read_text().splitlines()
    assert beats[0] == "sample,time_s,aami,morphology,rhythm,pulse" and len(beats) > 8


def test_cli_sim_bad_fault_spec_is_a_clear_error(tmp_path: Path) -> None:
    result = _medge("sim", "--devices", "1", "--duration", "1", "--faults", "partition@3s",
                    cwd=tmp_path)
    assert result.returncode == 2
    assert "partition needs a device selection" in result.stderr
    result = _medge("sim", "--rate", "360", "--sensor", "ads1292", cwd=tmp_path)
    assert result.returncode == 2 and "250 Hz" in result.stderr

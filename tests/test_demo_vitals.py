"""Simulated devices show the whole system: vital signs beside the ECG, registered patients.

- Fleet devices of a scenario publish SpO2, pulse, respiratory rate and
  temperature through the firmware's ``VitalSigns``, close to the simulator's
  ground-truth patient, on both PPG paths (direct counts; emulated MAX30102
  and TMP117 on I2C behind the real drivers), and the cuff readings the
  scenario takes, as taken; ``FleetParams.vitals`` picks how many devices
  have them; ECGSYN patients are ECG only; a power loss and a reboot give a
  new ``VitalSigns`` that keeps publishing.
- ``medge demo``'s set-up registers every device's virtual patient with a
  profile from the scenario and assigns the device (idempotent; a device on
  another patient is left there and reported); ``medge sim`` does the same.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from test_sim_fleet import T0, run_fleet, vitals_payloads  # tests/ is on sys.path

from host.services.demo import Demo
from host.services.patients import add_patient, assign, get_patient, make_profile, unassign
from host.services.store import Store
from sim.fleet import VITALS_AUTO_MAX_DEVICES, Fleet, FleetParams


def run(tmp: Path, *, n: int = 1, duration_s: float = 60, scenario: str | None = "stable",
        sensor: str = "direct", vitals: str = "auto", seed: int = 3
        ) -> tuple[Fleet, dict[str, list[dict]]]:
    fleet, links = run_fleet(tmp, seed, sensor, n, duration_s, scenario, vitals=vitals)
    return fleet, {d: [json.loads(p) for p in v] for d, v in vitals_payloads(links).items()}


def check_against_truth(fleet: Fleet, msgs: list[dict], from_s: int = 40) -> None:
    vp = fleet.sims[0].patient
    late = [m for m in msgs if (m["ts_ms"] - T0) / 1000 >= from_s]
    assert len(late) >= 15
    for m in late:
        t = (m["ts_ms"] - T0) / 1000
        assert m["spo2_pct"] is not None and abs(m["spo2_pct"] - vp.spo2_percent(t)) <= 3, m
        assert m["pulse_bpm"] is not None and abs(m["pulse_bpm"] - vp.heart_rate_bpm(t)) <= 6, m
        assert abs(m["temp_centi_c"] / 100 - vp.temperature_c(t)) <= 0.2, m
    rates = [m["resp_rate_per_min"] for m in late if m["resp_rate_per_min"] is not None]
    assert rates, "no respiratory rate after 40 s"
    truth = vp.resp_rate_bpm(late[-1]["ts_ms"] / 1000 - T0 / 1000)
    assert abs(rates[-1] - truth) <= 3, (rates[-1], truth)


@pytest.mark.parametrize("sensor", ["direct", "ads1292"])
def test_fleet_devices_publish_the_patients_vitals(tmp_path: Path, sensor: str) -> None:
    """direct: light counts straight in; ads1292: emulated MAX30102 + TMP117 on I2C."""
    fleet, msgs = run(tmp_path, sensor=sensor)
    check_against_truth(fleet, msgs["sim-0001"])
    assert fleet.sims[0].feed.emulated == (sensor != "direct")
    assert all(v == 0 for v in msgs["sim-0001"][-1]["faults"].values())


def test_cuff_readings_reach_the_messages_as_taken(tmp_path: Path) -> None:
    """new_onset_af takes a cuff reading every 600 s, the first at 300 s."""
    fleet, msgs = run(tmp_path, scenario="new_onset_af", duration_s=320)
    truth = fleet.sims[0].patient.truth.nibp
    assert len(truth) == 1
    got = [m for m in msgs["sim-0001"] if m.get("nibp_systolic_mmhg") is not None]
    assert got and (got[0]["nibp_systolic_mmhg"], got[0]["nibp_diastolic_mmhg"]) == (
        truth[0].systolic_mmhg, truth[0].diastolic_mmhg)
    assert 0 <= (got[0]["ts_ms"] - T0) / 1000 - truth[0].time_s <= 2  # in the next report
    before = [m for m in msgs["sim-0001"] if m["ts_ms"] - T0 < truth[0].time_s * 1000]
    assert all(m["withheld"].get("nibp_systolic_mmhg") == "no_reading" for m in before)


def test_vitals_on_the_first_n_devices_and_not_for_ecgsyn(tmp_path: Path) -> None:
    _, msgs = run(tmp_path / "a", n=3, vitals="2", duration_s=12)
    assert ["spo2_pct" in msgs[d][-1] for d in sorted(msgs)] == [True, True, False]
    _, plain = run(tmp_path / "b", n=1, scenario=None, duration_s=4)  # ECGSYN: ECG only
    assert "spo2_pct" not in plain["sim-0001"][-1] and plain["sim-0001"][-1]["hr_bpm"]
    auto = FleetParams(n_devices=VITALS_AUTO_MAX_DEVICES + 50, sample_rate_hz=250,
                       scenario="stable")
    assert auto.vitals_devices() == VITALS_AUTO_MAX_DEVICES  # big fleets: the first 100
    assert dataclasses.replace(auto, vitals="all").vitals_devices() == auto.n_devices
    for bad in ("some", "-1", "2.5"):
        with pytest.raises(ValueError, match="vitals must be"):
            FleetParams(n_devices=1, sample_rate_hz=250, scenario="stable", vitals=bad)
    with pytest.raises(ValueError, match="ECG only"):
        FleetParams(n_devices=1, sample_rate_hz=250, scenario=None, vitals="all")


def test_vitals_survive_a_power_loss_and_a_reboot(tmp_path: Path) -> None:
    fleet, _ = run(tmp_path, duration_s=20)
    sim = fleet.sims[0]
    first, boot = sim.device.vitals, sim.device.boot_id
    sim.power_loss()
    fleet.step(5_000)
    sim.power_on()
    fleet.step(15_000)
    sim.reboot(drain_wall_s=0.1)
    fleet.step(40_000)
    link = sim.link
    msgs = [json.loads(p) for t, p, _ in link.published if t.endswith("/vitals")]
    assert sim.device.boot_id == boot + 2
    assert sim.device.vitals is not first and sim.device.vitals is not None  # RAM: new
    for m in msgs[-20:]:  # the last 20 s, all after the reboot
        assert m["spo2_pct"] is not None and m["pulse_bpm"] is not None, m
        assert all(v == 0 for v in m["faults"].values()), m["faults"]


def test_demo_registers_and_assigns_its_virtual_patients(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    demo = Demo(devices=3, duration_s=5, db_path=db, scenario="copd_oxygen")
    assert demo.patients == {"registered": 3, "assigned": 3, "busy": []}
    with Store(db, readonly=True) as store:
        profile = get_patient(store, "patient-0002")
        assert profile["scenario"] == "copd_oxygen" and profile["copd"] and profile["on_oxygen"]
        rows = store.db.execute("SELECT device_id, patient_id, until_ms FROM assignments "
                                "ORDER BY device_id").fetchall()
    assert [tuple(r) for r in rows] == [(f"sim-000{i}", f"patient-000{i}", None)
                                        for i in (1, 2, 3)]
    # A second run on the same store: the same patients, no second assignment.
    again = Demo(devices=3, duration_s=5, db_path=db, scenario="copd_oxygen")
    assert again.patients["assigned"] == 3
    # A device a clinician moved to another patient stays there.
    with Store(db) as store:
        now = int(time.time() * 1000)
        unassign(store, "sim-0003", actor="t", ts_ms=now)
        add_patient(store, "bed-7", make_profile(age=60, sex="female"), actor="t", ts_ms=now)
        assign(store, "bed-7", "sim-0003", actor="t", ts_ms=now + 1)
    third = Demo(devices=3, duration_s=5, db_path=db, scenario="copd_oxygen")
    assert third.patients == {"registered": 3, "assigned": 2, "busy": ["sim-0003"]}

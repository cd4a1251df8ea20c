"""Patients, assignments over time, manual observations and overrides: the
library against a real SQLite store and the CLI against a temporary one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from host.cli import main
from host.services import audit, patients
from host.services.advice.news2 import Inputs
from host.services.store import Store

T0 = 1_764_000_000_000


@pytest.fixture()
def store(tmp_path: Path):
    with Store(tmp_path / "s.db") as s:
        yield s


def add(store: Store, pid: str = "p-1", **kw) -> dict:
    profile = patients.make_profile(age=kw.pop("age", 78), sex=kw.pop("sex", "female"), **kw)
    return patients.add_patient(store, pid, profile, actor="nurse-a", ts_ms=T0)


def test_a_reading_belongs_to_the_patient_assigned_at_its_time(store: Store) -> None:
    add(store, "p-1")
    add(store, "p-2")
    patients.assign(store, "p-1", "bed-1", actor="n", ts_ms=T0)
    patients.unassign(store, "bed-1", actor="n", ts_ms=T0 + 1000)
    patients.assign(store, "p-2", "bed-1", actor="n", ts_ms=T0 + 2000)
    got = [patients.patient_at(store, "bed-1", t) for t in
           (T0 - 1, T0, T0 + 999, T0 + 1000, T0 + 1500, T0 + 2000, T0 + 10**9)]
    assert got == [None, "p-1", "p-1", None, None, "p-2", "p-2"]
    assert [a.as_dict() for a in patients.assignments(store, device_id="bed-1")] == [
        {"device_id": "bed-1", "patient_id": "p-1", "from_ms": T0, "until_ms": T0 + 1000},
        {"device_id": "bed-1", "patient_id": "p-2", "from_ms": T0 + 2000, "until_ms": None}]


def test_a_device_cannot_be_on_two_patients_at_once(store: Store) -> None:
    add(store, "p-1")
    add(store, "p-2")
    patients.assign(store, "p-1", "bed-1", actor="n", ts_ms=T0)
    with pytest.raises(patients.DeviceBusy, match=r"^device: bed-1 is assigned to patient p-1"):
        patients.assign(store, "p-2", "bed-1", actor="n", ts_ms=T0 + 5)
    patients.unassign(store, "bed-1", actor="n", ts_ms=T0 + 100)
    with pytest.raises(patients.DeviceBusy, match="cannot start before"):
        patients.assign(store, "p-2", "bed-1", actor="n", ts_ms=T0 + 50)
    assert patients.assign(store, "p-1", "bed-2", actor="n", ts_ms=T0).patient_id == "p-1"


def test_discharge_ends_assignments_and_is_audited(store: Store) -> None:
    add(store, "p-1")
    patients.assign(store, "p-1", "bed-1", actor="n", ts_ms=T0)
    doc = patients.discharge(store, "p-1", actor="dr-b", ts_ms=T0 + 60_000)
    assert doc["ended"][0]["until_ms"] == T0 + 60_000
    assert patients.patient_at(store, "bed-1", T0 + 60_000) is None
    with pytest.raises(patients.PatientError, match="discharged"):
        patients.assign(store, "p-1", "bed-3", actor="n", ts_ms=T0 + 70_000)
    actions = [(e.actor, e.action) for e in audit.entries(store, subject="p-1")]
    assert actions == [("nurse-a", "patient.add"), ("n", "patient.assign"),
                       ("dr-b", "patient.unassign"), ("dr-b", "patient.discharge")]
    assert audit.verify(store).ok


def test_hypercapnic_copd_defaults_to_the_88_92_target() -> None:
    p = patients.make_profile(age=70, sex="male", copd=True, hypercapnic=True)
    assert p["spo2_target"] == [88, 92]


@pytest.mark.parametrize("kw,field", [(dict(age=-1), "age"), (dict(sex="x"), "sex"),
                                      (dict(spo2_target=(95, 90)), "spo2_target"),
                                      (dict(gout=True), "gout")])
def test_bad_profile_names_the_field(kw: dict, field: str) -> None:
    base = dict(age=60, sex="male")
    base.update(kw)
    with pytest.raises(patients.PatientError, match=f"^{field}"):
        patients.make_profile(**base)


def test_observations_latest_per_kind_and_idempotent(store: Store) -> None:
    add(store)
    kinds = patients.add_observations(store, "p-1", Inputs(consciousness="C", oxygen=True,
                                                           systolic=110),
                                      ts_ms=T0, entered_by="n", entered_ms=T0, uid="u1")
    assert kinds == ["oxygen", "systolic", "consciousness"]
    patients.add_observations(store, "p-1", Inputs(consciousness="C", oxygen=True,
                                                   systolic=110),
                              ts_ms=T0, entered_by="n", entered_ms=T0, uid="u1")
    patients.add_observations(store, "p-1", Inputs(systolic=95), ts_ms=T0 + 10,
                              entered_by="n", entered_ms=T0 + 10)
    assert store.db.execute("SELECT COUNT(*) FROM observations").fetchone()[0] == 4
    assert patients.latest_observations(store, "p-1") == {
        "oxygen": (True, T0), "systolic": (95.0, T0 + 10), "consciousness": ("C", T0)}
    assert patients.latest_observations(store, "p-1", since_ms=T0 + 1) == {
        "systolic": (95.0, T0 + 10)}


def test_override_is_audited_with_who_when_and_why(store: Store) -> None:
    add(store)
    patients.set_target(store, "p-1", "heart_rate", (50, 125), actor="dr-lee",
                        reason="chronic AF", ts_ms=T0 + 5)
    assert patients.get_patient(store, "p-1")["targets"] == {"heart_rate": [50, 125]}
    [e] = audit.entries(store, action="patient.override")
    assert (e.actor, e.ts_ms, e.before, e.after) == (
        "dr-lee", T0 + 5, {"param": "heart_rate", "target": None},
        {"param": "heart_rate", "target": [50, 125], "reason": "chronic AF"})
    with pytest.raises(patients.PatientError, match=r"^range"):
        patients.set_target(store, "p-1", "spo2", (60, 101), actor="x", reason="r", ts_ms=T0)


# -- CLI ------------------------------------------------------------------------

def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, (json.loads(out) if "--json" in argv and code == 0 else out)


def test_cli_add_assign_obs_show_discharge(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "c.db")
    code, doc = cli(capsys, "patient", "add", "p-7", "--age", "70", "--sex", "male", "--copd",
                    "--hypercapnic", "--spo2-target", "88-92", "--actor", "nurse-a",
                    "--db", db, "--json")
    assert code == 0 and doc["profile"]["spo2_target"] == [88, 92]
    code, doc = cli(capsys, "patient", "assign", "p-7", "--device", "bed-3", "--at",
                    "2025-11-24T16:00Z", "--db", db, "--json")
    assert doc == {"device_id": "bed-3", "patient_id": "p-7", "from_ms": T0,
                   "until_ms": None}
    code, doc = cli(capsys, "obs", "add", "p-7", "--consciousness", "C", "--oxygen",
                    "--systolic", "110", "--at", "2025-11-24T16:00:10Z", "--by", "nurse-kim",
                    "--db", db, "--json")
    assert doc == {"patient_id": "p-7", "ts_ms": T0 + 10_000,
                   "stored": ["oxygen", "systolic", "consciousness"]}
    code, doc = cli(capsys, "patient", "show", "p-7", "--db", db, "--json")
    assert doc["observations"]["consciousness"] == {"value": "C", "ts_ms": T0 + 10_000}
    assert doc["assignments"][0]["device_id"] == "bed-3"
    code, doc = cli(capsys, "patient", "list", "--db", db, "--json")
    assert doc == ["p-7"]
    code, doc = cli(capsys, "patient", "override", "p-7", "--param", "spo2", "--range",
                    "86-92", "--reason", "chronic", "--actor", "dr-x", "--db", db, "--json")
    assert doc["profile"]["targets"] == {"spo2": [86, 92]}
    code, doc = cli(capsys, "patient", "discharge", "p-7", "--at", "2025-11-24T17:00Z",
                    "--db", db, "--json")
    assert doc["ended"][0]["until_ms"] == T0 + 3_600_000


@pytest.mark.parametrize("argv,needle", [
    (["obs", "add", "p-1", "--pulse", "abc"], "--pulse"),
    (["obs", "add", "p-1", "--spo2", "120"], "--spo2"),
    (["obs", "add", "p-1", "--consciousness", "Z"], "--consciousness"),
    (["obs", "add", "nobody", "--pulse", "80"], "patient: no patient 'nobody'"),
    (["obs", "add", "p-1"], "observation: give at least one value"),
    (["patient", "assign", "p-2", "--device", "bed-1"], "device: bed-1 is assigned"),
    (["patient", "add", "p-1", "--age", "70", "--sex", "male"], "already exists"),
    (["patient", "add", "Bob Smith", "--age", "70", "--sex", "male"], "pseudonymous"),
    (["patient", "show", "nobody"], "no patient"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path: Path, argv: list[str], needle: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from test_news2 import refused

    db = tmp_path / "b.db"
    with Store(db) as s:
        add(s, "p-1")
        add(s, "p-2")
        patients.assign(s, "p-1", "bed-1", actor="n", ts_ms=T0)
    code, lines = refused(capsys, [*argv, "--db", str(db)])
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("medge ") and needle in lines[0]


def test_virtual_patients_from_scenarios_are_registered_once(store: Store) -> None:
    from sim.scenario import load_scenario

    copd = load_scenario("copd_oxygen")
    a = patients.register_virtual(store, "sim-0001", "patient-0001", copd, 7, ts_ms=T0)
    again = patients.register_virtual(store, "sim-0001", "patient-0001", copd, 7,
                                      ts_ms=T0 + 1000)
    assert a is not None and again is not None and again.from_ms == T0
    p = patients.get_patient(store, "patient-0001")
    assert (p["copd"], p["hypercapnic"], p["spo2_target"], p["on_oxygen"]) == (
        True, True, [88, 92], True)
    assert patients.profile_from_scenario(copd, 7)["age"] == p["age"]
    assert patients.get_patient(store, "patient-0001")["scenario"] == "copd_oxygen"
    stable = patients.profile_from_scenario(load_scenario("stable"), 7)
    assert stable["copd"] is False and "spo2_target" not in stable

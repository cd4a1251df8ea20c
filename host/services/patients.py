"""Patients, their device assignments over time, and manual observations.

Tables (schema 4, :mod:`host.services.storage.migrations.v0004_clinical`):
``patients`` (patient_id, profile JSON), ``assignments`` (device_id, patient_id,
from_ms, until_ms: NULL while assigned), ``observations`` (one row per observed
parameter).  Every change is recorded in the audit log (:mod:`host.services.audit`)
in the same transaction as the change.

Patient ids are pseudonymous (the same pattern as device ids): no names, dates of
birth or hospital numbers travel on the wire or sit in the store.

Profile (JSON): ``age`` (years), ``sex`` (female|male), the conditions as booleans
(:data:`CONDITIONS`: ``copd``, ``hypercapnic`` respiratory failure, ``chf``,
``hypertension``, ``diabetes``, ``stroke`` (prior stroke/TIA/thromboembolism),
``vascular`` (prior MI, peripheral artery disease, aortic plaque), ``chronic_af``),
``spo2_target`` ([low, high] %, prescribed; default none = 94-98 % of scale 1),
``targets`` (clinician overrides per vital, [low, high]; :func:`set_target`) and
``discharged_ms``.

Assignments: a reading belongs to the patient assigned to its device at the
reading's time (:func:`patient_at`); a device is assigned to at most one patient at
a time (:class:`DeviceBusy`), and an assignment never starts before the device's
previous one ended, so the history has no overlaps.

Observations: a nurse enters what a device does not measure (``medge obs add``):
kinds :data:`OBS_KINDS`, each stored as a number with its unit (air/oxygen as 0/1,
consciousness as the index of its ACVPU letter, unit ``ACVPU``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from host.services import audit
from host.services.advice.news2 import CONSCIOUSNESS, Inputs
from host.services.store import transaction

__all__ = ["CONDITIONS", "OBS_KINDS", "TARGET_PARAMS", "Assignment", "DeviceBusy",
           "PatientError", "UnknownPatient", "add_observations", "add_patient",
           "assign", "assignments", "discharge", "get_patient", "latest_observations",
           "list_patients", "patient_at", "set_target", "transaction"]

ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
CONDITIONS = ("copd", "hypercapnic", "chf", "hypertension", "diabetes", "stroke",
              "vascular", "chronic_af")
#: Observation kinds and their units (the NEWS2 parameters a nurse can enter).
OBS_KINDS = {"resp_rate": "/min", "spo2": "%", "oxygen": "bool", "systolic": "mm[Hg]",
             "pulse": "/min", "consciousness": "ACVPU", "temperature": "Cel"}
#: Vitals whose personal target range a clinician may set (medge patient override).
TARGET_PARAMS = {"heart_rate": (20, 250), "resp_rate": (4, 60), "spo2": (70, 100),
                 "temperature": (30.0, 43.0)}


class PatientError(ValueError):
    """Bad patient input; the message names the field."""


class UnknownPatient(PatientError):
    pass


class DeviceBusy(PatientError):
    pass


@dataclass(frozen=True)
class Assignment:
    device_id: str
    patient_id: str
    from_ms: int
    until_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise PatientError(f"{what}: expected a pseudonymous id (lower-case letters, digits, "
                           f"- and _, at most 64), got {value!r}")
    return value


def make_profile(*, age: int, sex: str, spo2_target: tuple[int, int] | None = None,
                 **conditions: bool) -> dict[str, Any]:
    """A validated profile (PatientError names the field)."""
    if isinstance(age, bool) or not isinstance(age, int) or not 0 <= age <= 120:
        raise PatientError(f"age: expected a whole number of years from 0 to 120, got {age!r}")
    if sex not in ("female", "male"):
        raise PatientError(f"sex: expected female or male, got {sex!r}")
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise PatientError(f"{sorted(unknown)[0]}: unknown condition")
    profile: dict[str, Any] = {"age": age, "sex": sex}
    profile.update({c: bool(conditions.get(c, False)) for c in CONDITIONS})
    if spo2_target is not None:
        lo, hi = spo2_target
        if not 70 <= lo < hi <= 100:
            raise PatientError(f"spo2_target: expected low-high within 70-100 %, got "
                               f"{lo}-{hi}")
        profile["spo2_target"] = [lo, hi]
    if profile["hypercapnic"] and profile.get("spo2_target") is None:
        profile["spo2_target"] = [88, 92]
    profile["targets"] = {}
    profile["discharged_ms"] = None
    return profile


def add_patient(store: Any, patient_id: str, profile: Mapping[str, Any], *, actor: str,
                ts_ms: int) -> dict[str, Any]:
    check_id("patient", patient_id)
    with transaction(store) as db:
        if db.execute("SELECT 1 FROM patients WHERE patient_id = ?",
                      (patient_id,)).fetchone() is not None:
            raise PatientError(f"patient: {patient_id} already exists")
        db.execute("INSERT INTO patients (patient_id, profile, created_ms, updated_ms) "
                   "VALUES (?, ?, ?, ?)", (patient_id, json.dumps(dict(profile)), ts_ms, ts_ms))
        audit.record(store, actor, "patient.add", patient_id, None, dict(profile), ts_ms=ts_ms)
    return dict(profile)


def get_patient(store: Any, patient_id: str) -> dict[str, Any]:
    """The profile (UnknownPatient if there is none)."""
    row = store.db.execute("SELECT profile FROM patients WHERE patient_id = ?",
                           (patient_id,)).fetchone()
    if row is None:
        raise UnknownPatient(f"patient: no patient {patient_id!r} (medge patient add first)")
    return json.loads(row[0])


def list_patients(store: Any) -> list[str]:
    return [r[0] for r in store.db.execute(
        "SELECT patient_id FROM patients ORDER BY patient_id").fetchall()]


def _update_profile(store: Any, patient_id: str, profile: Mapping[str, Any],
                    ts_ms: int) -> None:
    store.db.execute("UPDATE patients SET profile = ?, updated_ms = ? WHERE patient_id = ?",
                     (json.dumps(dict(profile)), ts_ms, patient_id))


def assignments(store: Any, *, patient_id: str | None = None,
                device_id: str | None = None) -> list[Assignment]:
    """The assignment history, oldest first."""
    where, params = [], []
    if patient_id is not None:
        where.append("patient_id = ?")
        params.append(patient_id)
    if device_id is not None:
        where.append("device_id = ?")
        params.append(device_id)
    sql = "SELECT device_id, patient_id, from_ms, until_ms FROM assignments"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = store.db.execute(sql + " ORDER BY from_ms, id", params).fetchall()
    return [Assignment(*r) for r in rows]


def assign(store: Any, patient_id: str, device_id: str, *, actor: str,
           ts_ms: int) -> Assignment:
    """Assign ``device_id`` to ``patient_id`` from ``ts_ms``; DeviceBusy if the device
    is assigned to another patient then (discharge or unassign first)."""
    check_id("device", device_id)
    profile = get_patient(store, patient_id)
    if profile.get("discharged_ms") is not None:
        raise PatientError(f"patient: {patient_id} was discharged")
    with transaction(store) as db:
        last = db.execute(
            "SELECT patient_id, from_ms, until_ms FROM assignments WHERE device_id = ? "
            "ORDER BY from_ms DESC LIMIT 1", (device_id,)).fetchone()
        if last is not None:
            other, from_ms, until_ms = last
            if until_ms is None:
                if other == patient_id:
                    return Assignment(device_id, patient_id, from_ms, None)
                raise DeviceBusy(f"device: {device_id} is assigned to patient {other}; a "
                                 f"device cannot be assigned to two patients at once "
                                 f"(medge patient unassign {device_id} first)")
            if ts_ms < until_ms:
                raise DeviceBusy(f"device: {device_id} was assigned to patient {other} until "
                                 f"{until_ms} ms; an assignment cannot start before that")
        db.execute("INSERT INTO assignments (device_id, patient_id, from_ms, until_ms) "
                   "VALUES (?, ?, ?, NULL)", (device_id, patient_id, ts_ms))
        audit.record(store, actor, "patient.assign", patient_id, None,
                     {"device_id": device_id, "from_ms": ts_ms}, ts_ms=ts_ms)
    return Assignment(device_id, patient_id, ts_ms, None)


def _close(store: Any, where: str, params: tuple[Any, ...], actor: str, ts_ms: int
           ) -> list[Assignment]:
    db = store.db
    open_rows = db.execute("SELECT device_id, patient_id, from_ms FROM assignments "
                           f"WHERE until_ms IS NULL AND {where}", params).fetchall()
    closed = []
    for device_id, patient_id, from_ms in open_rows:
        until = max(ts_ms, from_ms + 1)
        db.execute("UPDATE assignments SET until_ms = ? WHERE device_id = ? AND from_ms = ?",
                   (until, device_id, from_ms))
        closed.append(Assignment(device_id, patient_id, from_ms, until))
        audit.record(store, actor, "patient.unassign", patient_id,
                     {"device_id": device_id, "from_ms": from_ms},
                     {"device_id": device_id, "from_ms": from_ms, "until_ms": until},
                     ts_ms=ts_ms)
    return closed


def unassign(store: Any, device_id: str, *, actor: str, ts_ms: int) -> list[Assignment]:
    """End the device's current assignment (if any)."""
    with transaction(store):
        return _close(store, "device_id = ?", (device_id,), actor, ts_ms)


def discharge(store: Any, patient_id: str, *, actor: str, ts_ms: int) -> dict[str, Any]:
    """End the patient's assignments and mark the profile discharged."""
    profile = get_patient(store, patient_id)
    if profile.get("discharged_ms") is not None:
        raise PatientError(f"patient: {patient_id} was already discharged")
    with transaction(store):
        closed = _close(store, "patient_id = ?", (patient_id,), actor, ts_ms)
        before = dict(profile)
        profile["discharged_ms"] = ts_ms
        _update_profile(store, patient_id, profile, ts_ms)
        audit.record(store, actor, "patient.discharge", patient_id, before, profile,
                     ts_ms=ts_ms)
    return {"patient_id": patient_id, "discharged_ms": ts_ms,
            "ended": [a.as_dict() for a in closed]}


def patient_at(store: Any, device_id: str, ts_ms: int) -> str | None:
    """The patient assigned to ``device_id`` at ``ts_ms`` (None: nobody)."""
    row = store.db.execute(
        "SELECT patient_id FROM assignments WHERE device_id = ? AND from_ms <= ? AND "
        "(until_ms IS NULL OR until_ms > ?) ORDER BY from_ms DESC LIMIT 1",
        (device_id, ts_ms, ts_ms)).fetchone()
    return None if row is None else row[0]


def set_target(store: Any, patient_id: str, param: str, target: tuple[float, float] | None,
               *, actor: str, reason: str, ts_ms: int) -> dict[str, Any]:
    """A clinician's override of ``param``'s target range for this patient (None
    clears it), audited as ``patient.override`` with who, when and why."""
    if param not in TARGET_PARAMS:
        raise PatientError(f"param: expected one of {', '.join(TARGET_PARAMS)}, got {param!r}")
    if target is not None:
        lo, hi = target
        low, high = TARGET_PARAMS[param]
        if not low <= lo < hi <= high:
            raise PatientError(f"range: expected low-high within {low}-{high} for {param}, "
                               f"got {lo:g}-{hi:g}")
    if not reason.strip():
        raise PatientError("reason: an override needs a reason")
    profile = get_patient(store, patient_id)
    with transaction(store):
        targets = dict(profile.get("targets") or {})
        before = targets.get(param)
        if target is None:
            targets.pop(param, None)
        else:
            targets[param] = [target[0], target[1]]
        profile["targets"] = targets
        _update_profile(store, patient_id, profile, ts_ms)
        audit.record(store, actor, "patient.override", patient_id,
                     {"param": param, "target": before},
                     {"param": param, "target": targets.get(param), "reason": reason},
                     ts_ms=ts_ms)
    return profile


def add_observations(store: Any, patient_id: str, inputs: Inputs, *, ts_ms: int,
                     entered_by: str, entered_ms: int, uid: str | None = None,
                     device_id: str | None = None) -> list[str]:
    """Store the parameters ``inputs`` holds (one row each); return their kinds.
    ``uid``: the client's idempotency key (a retry with the same uid stores nothing
    twice)."""
    get_patient(store, patient_id)
    try:
        inputs.checked()
    except ValueError as exc:
        raise PatientError(str(exc)) from None
    values = {"resp_rate": inputs.resp_rate, "spo2": inputs.spo2,
              "oxygen": None if inputs.oxygen is None else float(inputs.oxygen),
              "systolic": inputs.systolic, "pulse": inputs.pulse,
              "consciousness": (None if inputs.consciousness is None
                                else float(CONSCIOUSNESS.index(inputs.consciousness))),
              "temperature": inputs.temperature}
    kinds = [k for k, v in values.items() if v is not None]
    if not kinds:
        raise PatientError("observation: give at least one value (see medge obs add --help)")
    uid = uid or uuid.uuid4().hex
    with transaction(store) as db:
        for kind in kinds:
            db.execute(
                "INSERT INTO observations (obs_uid, patient_id, device_id, ts_ms, kind, value, "
                "unit, entered_by, entered_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (obs_uid) DO NOTHING",
                (f"{uid}:{kind}", patient_id, device_id, ts_ms, kind, float(values[kind]),
                 OBS_KINDS[kind], entered_by, entered_ms))
    return kinds


def latest_observations(store: Any, patient_id: str, *, since_ms: int | None = None,
                        until_ms: int | None = None) -> dict[str, tuple[Any, int]]:
    """kind -> (value, ts_ms) of the newest observation of each kind in
    [since, until]; oxygen as a bool, consciousness as its letter."""
    sql = ("SELECT kind, value, ts_ms FROM observations WHERE patient_id = ?")
    params: list[Any] = [patient_id]
    if since_ms is not None:
        sql += " AND ts_ms >= ?"
        params.append(since_ms)
    if until_ms is not None:
        sql += " AND ts_ms <= ?"
        params.append(until_ms)
    out: dict[str, tuple[Any, int]] = {}
    for kind, value, ts in store.db.execute(sql + " ORDER BY ts_ms, id", params).fetchall():
        if kind == "oxygen":
            value = bool(value)
        elif kind == "consciousness":
            value = CONSCIOUSNESS[int(value)]
        out[kind] = (value, int(ts))
    return out


def profile_from_scenario(scenario: Any, seed: int) -> dict[str, Any]:
    """A virtual patient's profile drawn from a simulator scenario
    (:class:`sim.scenario.Scenario`) and a seed: age 45-88 and sex drawn from the
    seed; a prescribed 88-92 % SpO2 target means COPD with hypercapnic failure; the
    scenario's supplemental oxygen is kept as ``on_oxygen``."""
    import random

    r = random.Random(seed)
    target = [int(v) for v in scenario.patient["spo2_target_percent"]]
    hypercapnic = target == [88, 92]
    profile = make_profile(age=r.randint(45, 88), sex=r.choice(["female", "male"]),
                           spo2_target=tuple(target) if hypercapnic else None,
                           copd=hypercapnic, hypercapnic=hypercapnic,
                           hypertension=r.random() < 0.4, diabetes=r.random() < 0.2,
                           vascular=r.random() < 0.15)
    profile["on_oxygen"] = bool(scenario.patient["on_oxygen"])
    profile["scenario"] = scenario.name
    return profile


def register_virtual(store: Any, device_id: str, patient_id: str, scenario: Any, seed: int,
                     *, ts_ms: int, actor: str = "medge-sim") -> Assignment | None:
    """``medge demo``/``medge sim``: register a simulated device's virtual patient
    (idempotent: a store kept between runs keeps its patients) and assign the device
    to it unless the device is on another patient (then None)."""
    try:
        get_patient(store, patient_id)
    except UnknownPatient:
        add_patient(store, patient_id, profile_from_scenario(scenario, seed), actor=actor,
                    ts_ms=ts_ms)
    try:
        return assign(store, patient_id, device_id, actor=actor, ts_ms=ts_ms)
    except DeviceBusy:
        return None

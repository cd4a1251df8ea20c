"""Advice on live data: the store's readings of a patient into the engine, and the
engine's alert events back into the store.

:func:`assess` rebuilds a patient's :class:`~host.services.advice.engine.PatientMonitor`
from the store at ``now``: the profile, every device assigned to the patient during
the last :data:`HISTORY_S` (only the readings taken while it was assigned: a reading
belongs to the patient assigned at its time), their vitals messages (replayed in time
order and evaluated every :data:`REPLAY_EVAL_S`, so the personal baselines, the NEWS2
trajectory and the alert episodes are what a continuously running engine would have),
the devices' ``event`` messages (rhythm episodes, onset then end; BURDEN reports),
blood-pressure readings, the rhythm_events and beat_counts tables where filled, and
the manual observations.  The
replay is deterministic, so the same data gives the same alert episodes: recording
them (:func:`record_events`) is idempotent (``alert_uid`` = patient, kind, opening
time), and acknowledgements kept in the store are applied to the replayed episodes.

Vitals fields (:data:`VITALS_FIELDS`): ``pulse_bpm`` (PPG) or else ``hr_bpm`` (ECG),
``resp_rate_per_min``, ``spo2_pct``, ``temp_centi_c``, each an integer or null; a null
(withheld: the reason is in the message's ``withheld``) is missing, never normal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from host.services import patients
from host.services.advice.alerts import AlertEvent, EventKind
from host.services.advice.arrhythmia import RhythmEvent
from host.services.advice.engine import Assessment, PatientMonitor

__all__ = ["HISTORY_S", "REPLAY_EVAL_S", "VITALS_FIELDS", "assess", "record_events",
           "vitals_from_payload"]

HISTORY_S = 4 * 3600
REPLAY_EVAL_S = 30
#: engine input -> ((vitals field, divisor), ...) tried in order (docs/protocol.md, the
#: v1 vitals schema): the PPG pulse rate is NEWS2's pulse, the ECG heart rate stands in
#: when the device has no PPG.
VITALS_FIELDS: dict[str, tuple[tuple[str, float], ...]] = {
    "pulse": (("pulse_bpm", 1), ("hr_bpm", 1)),
    "resp_rate": (("resp_rate_per_min", 1),),
    "spo2": (("spo2_pct", 1),),
    "temperature": (("temp_centi_c", 100),),
}


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def vitals_from_payload(doc: dict[str, Any]) -> dict[str, float | None]:
    """The engine's inputs from one vitals message (None: withheld or absent)."""
    out: dict[str, float | None] = {}
    for name, fields in VITALS_FIELDS.items():
        out[name] = None
        for field, divisor in fields:
            if field in doc:
                v = _number(doc[field])
                out[name] = None if v is None else v / divisor
                break
    if "pulse_bpm" not in doc and (doc.get("signal") == "lead_off"
                                   or doc.get("quality") != "good"):
        out["pulse"] = None  # the ECG rate only when the ECG is good
    return out


def event_from_payload(payload: str) -> tuple[str, Any] | None:
    """A stored ``event`` message (docs/protocol.md) as ("rhythm", RhythmEvent) or
    ("burden", (pvc percent, period ms)); None for what advice does not use
    (SIGNAL events, an unreadable payload)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        return None
    evidence = doc.get("evidence") if isinstance(doc.get("evidence"), dict) else {}
    kind = doc["kind"]
    if kind == "BURDEN":
        if not isinstance(evidence.get("pvc_permille"), int):
            return None
        return "burden", (evidence["pvc_permille"] / 10, int(evidence.get("period_ms") or 0))
    if kind == "SIGNAL" or not isinstance(doc.get("start_ms"), int):
        return None
    end = doc.get("end_ms")
    return "rhythm", RhythmEvent(kind, doc["start_ms"], end if isinstance(end, int) else None,
                                 evidence)


def _windows(store: Any, patient_id: str, since_ms: int, now_ms: int
             ) -> list[tuple[str, int, int]]:
    """(device, from, until) of the patient's assignments overlapping [since, now]."""
    out = []
    for a in patients.assignments(store, patient_id=patient_id):
        lo = max(a.from_ms, since_ms)
        hi = min(a.until_ms if a.until_ms is not None else now_ms, now_ms)
        if lo < hi or (lo == hi == now_ms):
            out.append((a.device_id, lo, hi))
    return out


def _rows(store: Any, sql: str, params: Iterable[Any]) -> list[tuple[Any, ...]]:
    return store.db.execute(sql, list(params)).fetchall()


def build_monitor(store: Any, patient_id: str, now_ms: int) -> tuple[PatientMonitor,
                                                                     list[AlertEvent]]:
    """The patient's engine replayed up to ``now_ms``, and every alert event of the
    replay."""
    profile = patients.get_patient(store, patient_id)
    mon = PatientMonitor(patient_id, profile)
    since = now_ms - HISTORY_S * 1000
    stream: list[tuple[int, int, Any]] = []  # (ts, order, item)
    for device, lo, hi in _windows(store, patient_id, since, now_ms):
        for ts, payload in _rows(store, "SELECT ts_ms, payload FROM messages WHERE "
                                 "device_id = ? AND type = 'vitals' AND ts_ms >= ? AND "
                                 "ts_ms <= ? ORDER BY ts_ms", (device, lo, hi)):
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            stream.append((int(ts), 1, ("vitals", vitals_from_payload(doc))))
        for ts, sys_mmhg, quality in _rows(
                store, "SELECT ts_ms, systolic_mmhg, quality FROM bp_readings WHERE "
                "device_id = ? AND ts_ms >= ? AND ts_ms <= ?", (device, lo, hi)):
            if sys_mmhg is not None and quality == "good":
                stream.append((int(ts), 0, ("bp", float(sys_mmhg))))
        events: dict[tuple[str, int], tuple[int, Any]] = {}
        for ts, payload in _rows(store, "SELECT ts_ms, payload FROM messages WHERE "
                                 "device_id = ? AND type = 'event' AND ts_ms >= ? AND "
                                 "ts_ms <= ? ORDER BY ts_ms", (device, lo, hi)):
            item = event_from_payload(payload)
            if item is None:
                continue
            if item[0] == "burden":
                stream.append((int(ts), 0, item))
            else:  # an end message replaces its onset message
                ev = item[1]
                events[(ev.rhythm, ev.onset_ms)] = (int(ts), item)
        stream.extend((ts, 0, item) for ts, item in events.values())
        for rhythm, onset, offset, evidence in _rows(
                store, "SELECT rhythm, onset_ms, offset_ms, evidence FROM rhythm_events "
                "WHERE device_id = ? AND onset_ms <= ? AND (offset_ms IS NULL OR "
                "offset_ms >= ?)", (device, hi, lo)):
            try:
                ev = json.loads(evidence)
            except ValueError:
                ev = {}
            stream.append((int(onset), 0, ("rhythm", RhythmEvent(
                rhythm, int(onset), None if offset is None else int(offset),
                ev if isinstance(ev, dict) else {}))))
        for minute, *counts in _rows(
                store, "SELECT minute_ms, n_beats, s_beats, v_beats, f_beats, q_beats FROM "
                "beat_counts WHERE device_id = ? AND minute_ms >= ? AND minute_ms <= ?",
                (device, lo, hi)):
            stream.append((int(minute), 0, ("beats", (sum(counts), counts[2]))))
    for kind, value, ts in _rows(
            store, "SELECT kind, value, ts_ms FROM observations WHERE patient_id = ? AND "
            "ts_ms >= ? AND ts_ms <= ? ORDER BY ts_ms, id",
            (patient_id, now_ms - 12 * 3600_000, now_ms)):
        if kind == "oxygen":
            value = bool(value)
        elif kind == "consciousness":
            value = "ACVPU"[int(value)]
        stream.append((int(ts), 0, ("obs", (kind, value))))
    stream.sort(key=lambda x: (x[0], x[1]))
    events: list[AlertEvent] = []
    next_eval = None
    for ts, _, (what, item) in stream:
        if next_eval is not None and ts >= next_eval:
            events += mon.evaluate(next_eval).events
            next_eval += REPLAY_EVAL_S * 1000
            while next_eval <= ts - REPLAY_EVAL_S * 1000:
                next_eval += REPLAY_EVAL_S * 1000
        if next_eval is None:
            next_eval = ts + REPLAY_EVAL_S * 1000
        if what == "vitals":
            mon.add_vitals(ts, **item)
        elif what == "bp":
            mon.add_bp(ts, item)
        elif what == "rhythm":
            mon.add_rhythm_event(item)
        elif what == "beats":
            mon.add_beats(ts, *item)
        elif what == "burden":
            mon.add_burden_report(ts, *item)
        else:
            mon.add_observation(item[0], item[1], ts)
    return mon, events


def _apply_acks(store: Any, mon: PatientMonitor) -> None:
    """Acknowledgements in the store hold for the replayed episodes (unless the
    episode has since escalated past the acknowledged severity)."""
    for kind, ep in mon.tracker.open.items():
        uid = _open_uid(store, mon.patient_id, kind)
        if uid is None:
            continue
        row = store.db.execute("SELECT acked_ms, acked_by, severity FROM alerts WHERE "
                               "alert_uid = ?", (uid,)).fetchone()
        if row is not None and row[0] is not None and row[2] == ep.severity:
            mon.tracker.ack(kind, int(row[0]), row[1])


def alert_uid(patient_id: str, kind: str, opened_ms: int) -> str:
    return f"{patient_id}:{kind}:{opened_ms}"


def assess(store: Any, patient_id: str, now_ms: int
           ) -> tuple[Assessment, list[AlertEvent], set[str]]:
    """The patient's assessment at ``now_ms``, all alert events (replay + now) and
    the kinds of the episodes open at ``now_ms``."""
    mon, events = build_monitor(store, patient_id, now_ms)
    _apply_acks(store, mon)
    a = mon.evaluate(now_ms)
    return a, events + a.events, set(mon.tracker.open)


def _device_at(store: Any, patient_id: str, ts_ms: int) -> str | None:
    for a in reversed(patients.assignments(store, patient_id=patient_id)):
        if a.from_ms <= ts_ms and (a.until_ms is None or a.until_ms > ts_ms):
            return a.device_id
    return None


def record_events(store: Any, patient_id: str, events: list[AlertEvent], *,
                  open_kinds: Iterable[str] | None = None, now_ms: int | None = None
                  ) -> list[str]:
    """Write alert events into ``alerts``; return the uids of alerts opened or
    escalated by this call (what is new to publish).  Idempotent, and one open alert
    per (patient, kind): an episode already open in the store is the same alert.
    With ``open_kinds`` (the engine's open episodes at ``now_ms``), a stored alert
    of another kind still open is resolved at ``now_ms``."""
    changed: list[str] = []
    opened: dict[int, str] = {}
    with patients.transaction(store) as db:
        for e in events:
            if e.event is EventKind.OPEN:
                existing = _open_uid(store, patient_id, e.kind)
                if existing is not None:  # the same episode, seen from another window
                    opened[e.episode] = existing
                    continue
                uid = alert_uid(patient_id, e.kind, e.ts_ms)
                opened[e.episode] = uid
                detail = json.dumps({"condition": e.condition.as_dict() if e.condition
                                     else None, "history": [{"ts_ms": e.ts_ms,
                                                             "event": "open",
                                                             "severity": e.severity}]})
                cur = db.execute(
                    "INSERT INTO alerts (alert_uid, device_id, patient_id, ts_ms, kind, "
                    "severity, source, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (alert_uid) DO NOTHING",
                    (uid, _device_at(store, patient_id, e.ts_ms), patient_id, e.ts_ms,
                     e.kind, e.severity, "advice", detail))
                if cur.rowcount:
                    changed.append(uid)
                continue
            uid = opened.get(e.episode) or _open_uid(store, patient_id, e.kind)
            if uid is None:
                continue
            row = db.execute("SELECT severity, detail, cleared_ms FROM alerts WHERE "
                             "alert_uid = ?", (uid,)).fetchone()
            if row is None:
                continue
            detail = json.loads(row[1])
            history = detail.setdefault("history", [])
            entry = {"ts_ms": e.ts_ms, "event": e.event.value, "severity": e.severity}
            if entry in history:
                continue
            history.append(entry)
            if e.event is EventKind.ESCALATE:
                detail["condition"] = e.condition.as_dict() if e.condition else None
                db.execute("UPDATE alerts SET severity = ?, detail = ?, acked_ms = NULL, "
                           "acked_by = NULL WHERE alert_uid = ?",
                           (e.severity, json.dumps(detail), uid))
                changed.append(uid)
            elif e.event is EventKind.RESOLVE:
                db.execute("UPDATE alerts SET detail = ?, cleared_ms = ? WHERE alert_uid = ?",
                           (json.dumps(detail), e.ts_ms, uid))
            else:
                db.execute("UPDATE alerts SET detail = ? WHERE alert_uid = ?",
                           (json.dumps(detail), uid))
        if open_kinds is not None and now_ms is not None:
            keep = set(open_kinds)
            for uid, kind in db.execute("SELECT alert_uid, kind FROM alerts WHERE "
                                        "patient_id = ? AND cleared_ms IS NULL",
                                        (patient_id,)).fetchall():
                if kind not in keep:
                    db.execute("UPDATE alerts SET cleared_ms = ? WHERE alert_uid = ?",
                               (now_ms, uid))
    return changed


def _open_uid(store: Any, patient_id: str, kind: str) -> str | None:
    row = store.db.execute("SELECT alert_uid FROM alerts WHERE patient_id = ? AND kind = ? "
                           "AND cleared_ms IS NULL ORDER BY ts_ms DESC LIMIT 1",
                           (patient_id, kind)).fetchone()
    return None if row is None else row[0]


def active_patients(store: Any, now_ms: int) -> list[str]:
    """Patients with a device assigned at ``now_ms`` (not discharged)."""
    rows = store.db.execute("SELECT DISTINCT patient_id FROM assignments WHERE from_ms <= ? "
                            "AND (until_ms IS NULL OR until_ms > ?) ORDER BY patient_id",
                            (now_ms, now_ms)).fetchall()
    return [r[0] for r in rows]


def run_round(store: Any, now_ms: int, publish: Any = None) -> dict[str, Any]:
    """One pass of the advice service: every active patient assessed, alert episodes
    recorded, and each alert opened, escalated or resolved by this pass handed to
    ``publish(device_id, alert)`` (the device on the patient now)."""
    from host.services.advice.records import list_alerts

    out: dict[str, Any] = {"ts_ms": now_ms, "patients": {}, "published": 0}
    for pid in active_patients(store, now_ms):
        before = {x["alert_uid"]: (x["state"], x["severity"])
                  for x in list_alerts(store, patient_id=pid, open_only=True)}
        a, events, open_kinds = assess(store, pid, now_ms)
        record_events(store, pid, events, open_kinds=open_kinds, now_ms=now_ms)
        after = list_alerts(store, patient_id=pid, limit=50)
        changed = [x for x in after if (x["state"], x["severity"]) != before.get(
            x["alert_uid"], ("resolved", x["severity"]))]
        device = _device_at(store, pid, now_ms)
        if publish is not None and device is not None:
            for x in changed:
                publish(device, x)
                out["published"] += 1
        out["patients"][pid] = {"news2": a.news2["score"], "risk": a.news2["risk"],
                                "lower_bound": a.news2["lower_bound"],
                                "open_alerts": sorted(open_kinds), "changed": len(changed)}
    return out

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
the manual observations, and the acknowledgements of the patient's alerts at their
times.  The replay is deterministic and evaluates on a grid of the clock (multiples
of :data:`REPLAY_EVAL_S`), so the same data gives the same alert episodes at the same
times: recording them (:func:`record_events`) is idempotent (``alert_uid`` =
patient, kind, opening time; an escalation or reminder seen by two passes is
recorded once).

Incremental (:class:`LiveMonitors`, what ``medge advice --watch`` uses): the engine
is kept between passes and fed only what arrived since, instead of replaying 4 h
per patient per pass (``make bench``: host/bench_advice.py); it is replayed again
when the profile or the assignments change or a reading lands late in the span it
has already been fed.

The advice service (:func:`run_round`) publishes each alert opened, escalated,
acknowledged or resolved, and each reminder of an open alert nobody has
acknowledged (host/services/advice/publish.py; the message's ``event``).

Vitals fields (:data:`VITALS_FIELDS`): ``pulse_bpm`` (PPG) or else ``hr_bpm`` (ECG),
``resp_rate_per_min``, ``spo2_pct``, ``temp_centi_c``, each an integer or null; a null
(withheld: the reason is in the message's ``withheld``) is missing, never normal.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from host.services import patients
from host.services.advice.alerts import AlertEvent, EventKind, rank
from host.services.advice.arrhythmia import RhythmEvent
from host.services.advice.engine import MANUAL_STALE_S, Assessment, PatientMonitor
from host.services.store import transaction

__all__ = ["HISTORY_S", "REBUILD_S", "REPLAY_EVAL_S", "SETTLE_S", "VITALS_FIELDS",
           "LiveMonitors", "assess", "record_events", "run_round", "vitals_from_payload"]

HISTORY_S = 4 * 3600
REPLAY_EVAL_S = 30
#: How far back a replay reads the manual observations (s): the longest a manual
#: value holds (consciousness and air/oxygen, 12 h).
OBSERVATIONS_S = max(MANUAL_STALE_S.values())
#: Seconds before a pass up to which the kept engine is fed (readings later than
#: that are often still on their way: ingest batches, device clocks).
SETTLE_S = 15
#: A kept engine is rebuilt from the store at least this often (s).
REBUILD_S = 3600
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


def _stream(store: Any, patient_id: str, lo_ms: int, hi_ms: int,
            obs_lo_ms: int | None = None) -> list[tuple[int, int, Any]]:
    """The patient's inputs with ``lo_ms < ts <= hi_ms`` in time order: (ts, order,
    (what, item)); the devices' readings only while assigned to the patient, the
    manual observations from ``obs_lo_ms`` (a replay looks back
    :data:`OBSERVATIONS_S`: consciousness and air/oxygen hold for 12 h)."""
    stream: list[tuple[int, int, Any]] = []  # (ts, order, item)
    for device, lo, hi in _windows(store, patient_id, lo_ms, hi_ms):
        for ts, payload in _rows(store, "SELECT ts_ms, payload FROM messages WHERE "
                                 "device_id = ? AND type = 'vitals' AND ts_ms > ? AND "
                                 "ts_ms <= ? ORDER BY ts_ms", (device, lo, hi)):
            try:
                doc = json.loads(payload)
            except ValueError:
                continue
            stream.append((int(ts), 1, ("vitals", vitals_from_payload(doc))))
        for ts, sys_mmhg, quality in _rows(
                store, "SELECT ts_ms, systolic_mmhg, quality FROM bp_readings WHERE "
                "device_id = ? AND ts_ms > ? AND ts_ms <= ?", (device, lo, hi)):
            if sys_mmhg is not None and quality == "good":
                stream.append((int(ts), 0, ("bp", float(sys_mmhg))))
        for ts, payload in _rows(store, "SELECT ts_ms, payload FROM messages WHERE "
                                 "device_id = ? AND type = 'event' AND ts_ms > ? AND "
                                 "ts_ms <= ? ORDER BY ts_ms", (device, lo, hi)):
            item = event_from_payload(payload)
            if item is not None:  # onset, then its end (which replaces it), as live
                stream.append((int(ts), 0, item))
        for rhythm, onset, offset, evidence in _rows(
                store, "SELECT rhythm, onset_ms, offset_ms, evidence FROM rhythm_events "
                "WHERE device_id = ? AND onset_ms <= ? AND (offset_ms IS NULL OR "
                "offset_ms > ?)", (device, hi, lo)):
            try:
                ev = json.loads(evidence)
            except ValueError:
                ev = {}
            stream.append((max(int(onset), lo + 1), 0, ("rhythm", RhythmEvent(
                rhythm, int(onset), None if offset is None else int(offset),
                ev if isinstance(ev, dict) else {}))))
        for minute, *counts in _rows(
                store, "SELECT minute_ms, n_beats, s_beats, v_beats, f_beats, q_beats FROM "
                "beat_counts WHERE device_id = ? AND minute_ms > ? AND minute_ms <= ?",
                (device, lo, hi)):
            stream.append((int(minute), 0, ("beats", (sum(counts), counts[2]))))
    for kind, value, ts in _rows(
            store, "SELECT kind, value, ts_ms FROM observations WHERE patient_id = ? AND "
            "ts_ms > ? AND ts_ms <= ? ORDER BY ts_ms, id",
            (patient_id, lo_ms if obs_lo_ms is None else obs_lo_ms, hi_ms)):
        if kind == "oxygen":
            value = bool(value)
        elif kind == "consciousness":
            value = "ACVPU"[int(value)]
        stream.append((int(ts), 0, ("obs", (kind, value))))
    for kind, acked_ms, acked_by in _rows(
            store, "SELECT kind, acked_ms, acked_by FROM alerts WHERE patient_id = ? AND "
            "acked_ms > ? AND acked_ms <= ?", (patient_id, lo_ms, hi_ms)):
        stream.append((int(acked_ms), 2, ("ack", (kind, acked_by))))
    stream.sort(key=lambda x: (x[0], x[1]))
    return stream


#: (SQL, per device or per patient) of :func:`_digest`: row counts and a sum of
#: integer columns (those an update may change), over the span.
_DIGEST = (
    ("SELECT COUNT(*), 0 FROM messages WHERE device_id = ? AND ts_ms > ? AND ts_ms <= ?",
     True),
    ("SELECT COUNT(*), SUM(ts_ms) FROM bp_readings WHERE device_id = ? AND ts_ms > ? AND "
     "ts_ms <= ?", True),
    ("SELECT COUNT(*), SUM(COALESCE(offset_ms, 0)) FROM rhythm_events WHERE device_id = ? "
     "AND onset_ms > ? AND onset_ms <= ?", True),
    ("SELECT COUNT(*), SUM(n_beats + s_beats + v_beats + f_beats + q_beats) FROM "
     "beat_counts WHERE device_id = ? AND minute_ms > ? AND minute_ms <= ?", True),
    ("SELECT COUNT(*), SUM(ts_ms) FROM observations WHERE patient_id = ? AND ts_ms > ? AND "
     "ts_ms <= ?", False),
    ("SELECT COUNT(*), SUM(acked_ms) FROM alerts WHERE patient_id = ? AND acked_ms > ? AND "
     "acked_ms <= ?", False),
)


def _digest(store: Any, patient_id: str, lo_ms: int, hi_ms: int,
            obs_lo_ms: int | None = None) -> dict[tuple[int, str], tuple[int, int]]:
    """What the store holds for the patient in ``(lo_ms, hi_ms]`` (observations from
    ``obs_lo_ms``), in a few indexed aggregates: unchanged means no reading arrived
    late there, none was updated.  Additive: the digest of two adjacent spans is
    the sum of theirs (:func:`_add`)."""
    out: dict[tuple[int, str], tuple[int, int]] = {}
    windows = _windows(store, patient_id, lo_ms, hi_ms)
    patient = [(patient_id, lo_ms if obs_lo_ms is None else obs_lo_ms, hi_ms)]
    for i, (sql, per_device) in enumerate(_DIGEST):
        for device, lo, hi in windows if per_device else patient:
            n, total = store.db.execute(sql, (device, lo, hi)).fetchone()
            if n:
                out[(i, device)] = (int(n), int(total or 0))
    return out


def _add(a: dict[tuple[int, str], tuple[int, int]], b: dict[tuple[int, str], tuple[int, int]]
         ) -> dict[tuple[int, str], tuple[int, int]]:
    out = dict(a)
    for k, (n, total) in b.items():
        n0, t0 = out.get(k, (0, 0))
        out[k] = (n0 + n, t0 + total)
    return out


def _grid(ts_ms: int) -> int:
    """The first replay evaluation after ``ts_ms``: evaluations fall on multiples of
    :data:`REPLAY_EVAL_S` of the clock, so every pass over the same readings
    evaluates at the same instants and raises its events at the same times."""
    step = REPLAY_EVAL_S * 1000
    return (ts_ms // step + 1) * step


def _feed(mon: PatientMonitor, stream: list[tuple[int, int, Any]], next_eval: int | None,
          until_ms: int) -> tuple[list[AlertEvent], int | None]:
    """Feed ``stream`` into ``mon``, evaluating on the grid up to ``until_ms``."""
    events: list[AlertEvent] = []
    step = REPLAY_EVAL_S * 1000
    for ts, _, (what, item) in stream:
        if next_eval is not None and ts >= next_eval:
            events += mon.evaluate(next_eval).events
            next_eval = _grid(max(next_eval, ts - step))
        if next_eval is None:
            next_eval = _grid(ts)
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
        elif what == "ack":
            ep = mon.tracker.open.get(item[0])
            if ep is not None and ep.acked_ms is None:
                mon.tracker.ack(item[0], ts, item[1])
        else:
            mon.add_observation(item[0], item[1], ts)
    while next_eval is not None and next_eval <= until_ms:
        events += mon.evaluate(next_eval).events
        next_eval += step
    return events, next_eval


def build_monitor(store: Any, patient_id: str, now_ms: int) -> tuple[PatientMonitor,
                                                                     list[AlertEvent]]:
    """The patient's engine replayed up to ``now_ms`` (readings of the last
    :data:`HISTORY_S`, evaluated on the :data:`REPLAY_EVAL_S` grid), and every alert
    event of the replay."""
    mon = PatientMonitor(patient_id, patients.get_patient(store, patient_id))
    stream = _stream(store, patient_id, now_ms - HISTORY_S * 1000 - 1, now_ms,
                     now_ms - OBSERVATIONS_S * 1000 - 1)
    events, _ = _feed(mon, stream, None, now_ms - 1)
    return mon, events


@dataclass
class _Kept:
    mon: PatientMonitor
    key: tuple[Any, ...]  # profile and assignments when built
    lo_ms: int  # readings after this were fed ...
    fed_ms: int  # ... up to this
    obs_lo_ms: int  # and the observations after this
    next_eval: int | None
    digest: dict[tuple[int, str], tuple[int, int]]  # of the readings in (lo_ms, fed_ms]


class LiveMonitors:
    """Each patient's engine kept between passes (``medge advice --watch``), so a
    pass feeds only the readings that arrived since the last one instead of
    replaying :data:`HISTORY_S` (:func:`assess` with ``cache=``).

    The kept engine is fed up to :data:`SETTLE_S` before the pass (readings may
    still be in flight); the newest seconds are fed into a copy for the pass's
    answer.  It is rebuilt by a full replay when the patient's profile or
    assignments change, when a reading lands late in the span already fed (a
    device's outbox after a reconnect; the store's digest of that span changes),
    when a pass goes back in time, and after :data:`REBUILD_S` (so what it answers
    stays what the replay would, within the episodes it tracks)."""

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}
        self.rebuilds = 0
        self.increments = 0

    def forget(self, patient_id: str) -> None:
        self._kept.pop(patient_id, None)


def _key(store: Any, patient_id: str) -> tuple[Any, ...]:
    return (json.dumps(patients.get_patient(store, patient_id), sort_keys=True),
            tuple(patients.assignments(store, patient_id=patient_id)))


def _assess_cached(store: Any, patient_id: str, now_ms: int, cache: LiveMonitors
                   ) -> tuple[PatientMonitor, list[AlertEvent]]:
    key = _key(store, patient_id)
    kept = cache._kept.get(patient_id)
    settle = now_ms - SETTLE_S * 1000
    if kept is not None and kept.key == key and kept.fed_ms <= settle \
            and now_ms - kept.lo_ms <= (HISTORY_S + REBUILD_S) * 1000 \
            and _digest(store, patient_id, kept.lo_ms, kept.fed_ms, kept.obs_lo_ms) \
            == kept.digest:
        cache.increments += 1
    else:
        cache.rebuilds += 1
        lo = now_ms - HISTORY_S * 1000 - 1
        kept = _Kept(PatientMonitor(patient_id, patients.get_patient(store, patient_id)),
                     key, lo, lo, now_ms - OBSERVATIONS_S * 1000 - 1, None, {})
        cache._kept[patient_id] = kept
    _apply_acks(store, kept.mon)
    events: list[AlertEvent] = []
    if settle > kept.fed_ms:
        # a rebuild reads the observations from the replay's look-back
        obs_lo = kept.obs_lo_ms if kept.fed_ms == kept.lo_ms else None
        stream = _stream(store, patient_id, kept.fed_ms, settle, obs_lo)
        new, kept.next_eval = _feed(kept.mon, stream, kept.next_eval, settle)
        events += new
        kept.digest = _add(kept.digest, _digest(store, patient_id, kept.fed_ms, settle, obs_lo))
        kept.fed_ms = settle
    # the newest seconds into a copy: the kept engine sees them once they settle
    mon = kept.mon.fork()
    tail = _stream(store, patient_id, kept.fed_ms, now_ms)
    new, _ = _feed(mon, tail, kept.next_eval, now_ms - 1)
    return mon, events + new


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


def assess(store: Any, patient_id: str, now_ms: int, cache: LiveMonitors | None = None
           ) -> tuple[Assessment, list[AlertEvent], set[str]]:
    """The patient's assessment at ``now_ms``, the alert events (of the replay, or
    with ``cache`` of what was fed since the last pass, and of now) and the kinds of
    the episodes open at ``now_ms``."""
    if cache is not None:
        mon, events = _assess_cached(store, patient_id, now_ms, cache)
    else:
        mon, events = build_monitor(store, patient_id, now_ms)
    _apply_acks(store, mon)
    a = mon.evaluate(now_ms)
    return a, events + a.events, set(mon.tracker.open)


def _device_at(store: Any, patient_id: str, ts_ms: int) -> str | None:
    for a in reversed(patients.assignments(store, patient_id=patient_id)):
        if a.from_ms <= ts_ms and (a.until_ms is None or a.until_ms > ts_ms):
            return a.device_id
    return None


#: A reminder within this of a notification already recorded for the alert is the
#: same reminder seen by another pass (ms; half the shortest reminder interval).
REMIND_SAME_MS = 5 * 60_000


def _seen(history: list[dict[str, Any]], e: AlertEvent) -> bool:
    """Whether ``e`` is already in the alert's ``history`` (passes evaluate at
    different instants, so the same escalation or reminder can come at another time)."""
    if e.event is EventKind.ESCALATE:
        return any(h["event"] == "escalate" and h["severity"] == e.severity for h in history)
    if e.event is EventKind.REMIND:
        return any(h["event"] in ("open", "escalate", "remind")
                   and abs(h["ts_ms"] - e.ts_ms) < REMIND_SAME_MS for h in history)
    return {"ts_ms": e.ts_ms, "event": e.event.value, "severity": e.severity} in history


def record_events(store: Any, patient_id: str, events: list[AlertEvent], *,
                  open_kinds: Iterable[str] | None = None, now_ms: int | None = None,
                  recorded: list[tuple[str, str, int]] | None = None) -> list[str]:
    """Write alert events into ``alerts``; return the uids of alerts opened or
    escalated by this call.  Idempotent, and one open alert per (patient, kind): an
    episode already open in the store is the same alert.  With ``open_kinds`` (the
    engine's open episodes at ``now_ms``), a stored alert of another kind still open
    is resolved at ``now_ms``.  ``recorded`` collects (uid, event, ts_ms) of every
    event this call added (a reminder only while the stored alert is open and not
    acknowledged)."""
    changed: list[str] = []
    opened: dict[int, str] = {}
    with transaction(store) as db:
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
                    if recorded is not None:
                        recorded.append((uid, "open", e.ts_ms))
                continue
            uid = opened.get(e.episode) or _open_uid(store, patient_id, e.kind)
            if uid is None:
                continue
            row = db.execute("SELECT severity, detail, cleared_ms, acked_ms FROM alerts "
                             "WHERE alert_uid = ?", (uid,)).fetchone()
            if row is None:
                continue
            detail = json.loads(row[1])
            history = detail.setdefault("history", [])
            if _seen(history, e) or (e.event is EventKind.REMIND
                                     and (row[2] is not None or row[3] is not None)):
                continue
            history.append({"ts_ms": e.ts_ms, "event": e.event.value, "severity": e.severity})
            if recorded is not None:
                recorded.append((uid, e.event.value, e.ts_ms))
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


def _new_acks(store: Any, patient_id: str) -> list[tuple[str, int]]:
    """(uid, acked_ms) of the patient's open alerts acknowledged (``medge alerts ack``)
    since a pass last looked; each is marked in the alert's history, so it is
    reported once."""
    out = []
    with transaction(store) as db:
        for uid, acked_ms, acked_by, detail in db.execute(
                "SELECT alert_uid, acked_ms, acked_by, detail FROM alerts WHERE patient_id = ? "
                "AND cleared_ms IS NULL AND acked_ms IS NOT NULL", (patient_id,)).fetchall():
            doc = json.loads(detail)
            history = doc.setdefault("history", [])
            if any(h["event"] == "ack" and h["ts_ms"] == acked_ms for h in history):
                continue
            history.append({"ts_ms": int(acked_ms), "event": "ack", "by": acked_by})
            db.execute("UPDATE alerts SET detail = ? WHERE alert_uid = ?",
                       (json.dumps(doc), uid))
            out.append((uid, int(acked_ms)))
    return out


def _change(old: tuple[str, str] | None, new: dict[str, Any]) -> str | None:
    """The ``event`` of a stored alert's change of (state, severity), None if none."""
    if old is None or old[0] == "resolved":
        return None if new["state"] == "resolved" else "open"
    if new["state"] == "resolved":
        return "resolve"
    if rank(new["severity"]) > rank(old[1]):
        return "escalate"
    if new["state"] == "acknowledged" and old[0] != "acknowledged":
        return "ack"
    return None


def run_round(store: Any, now_ms: int, publish: Any = None,
              cache: LiveMonitors | None = None) -> dict[str, Any]:
    """One pass of the advice service: every active patient assessed (with ``cache``,
    incrementally), alert episodes recorded, and each alert opened, escalated,
    acknowledged or resolved by this pass, and each reminder of an open alert not
    acknowledged (every ``Policy.remind_s``), handed to ``publish(device_id, alert)``
    (the device on the patient now; ``alert["event"]`` says which)."""
    from host.services.advice.records import list_alerts

    out: dict[str, Any] = {"ts_ms": now_ms, "patients": {}, "published": 0, "reminders": 0}
    active = active_patients(store, now_ms)
    if cache is not None:
        for pid in set(cache._kept) - set(active):  # discharged, or no device now
            cache.forget(pid)
    for pid in active:
        before = {x["alert_uid"]: (x["state"], x["severity"])
                  for x in list_alerts(store, patient_id=pid, open_only=True)}
        a, events, open_kinds = assess(store, pid, now_ms, cache)
        recorded: list[tuple[str, str, int]] = []
        record_events(store, pid, events, open_kinds=open_kinds, now_ms=now_ms,
                      recorded=recorded)
        after = list_alerts(store, patient_id=pid, limit=50)
        sent: list[dict[str, Any]] = []
        for x in after:
            event = _change(before.get(x["alert_uid"]), x)
            if event is not None:
                sent.append(dict(x, event=event, event_ms=now_ms))
        for uid, ts in _new_acks(store, pid):  # acknowledged since the last pass
            if all(y["alert_uid"] != uid for y in sent):
                x = next((y for y in after if y["alert_uid"] == uid), None)
                if x is not None and x["state"] == "acknowledged":
                    sent.append(dict(x, event="ack", event_ms=ts))
        reminded = {uid: ts for uid, ev, ts in recorded if ev == "remind"}
        for x in after:
            if x["alert_uid"] in reminded and x["state"] == "open" \
                    and all(y["alert_uid"] != x["alert_uid"] for y in sent):
                sent.append(dict(x, event="remind", event_ms=reminded[x["alert_uid"]]))
                out["reminders"] += 1
        device = _device_at(store, pid, now_ms)
        if publish is not None and device is not None:
            for x in sent:
                publish(device, x)
                out["published"] += 1
        out["patients"][pid] = {"news2": a.news2["score"], "risk": a.news2["risk"],
                                "lower_bound": a.news2["lower_bound"],
                                "open_alerts": sorted(open_kinds), "changed": len(sent)}
    return out

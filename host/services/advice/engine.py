"""The advice engine for one patient: live vitals and observations in, NEWS2,
trend, personal-baseline drift, arrhythmia advice and alert events out.

Inputs: device vitals (:meth:`PatientMonitor.add_vitals`: a None value is one the
device withheld as unreliable), blood-pressure readings, manual observations
(``medge obs add``), rhythm events and beat counts.  :meth:`PatientMonitor.evaluate`
at a time ``now`` gives an :class:`Assessment` and the alert events of that moment.

What a parameter's value is at ``now``:

- a device-measured vital: the median of its reliable readings in the last
  :data:`SMOOTH_S` (60 s; a single artefact or a noisy reading at a band edge does
  not change the score), provided there are at least :data:`MIN_READINGS` and the
  newest is at most :data:`DEVICE_STALE_S` old;
- a blood pressure: the newest reading at most :data:`BP_STALE_S` old (a cuff
  cycles every 15-30 min);
- a manual observation: the newest entry at most :data:`MANUAL_STALE_S` old;
- the fresher of a device value and a manual one.

Anything else is missing: NEWS2 lists it and is a lower bound (never scored as
normal).  Consciousness and air/oxygen come only from manual observations (or the
profile's ``on_oxygen`` when no observation says otherwise).

Alert kinds: ``news2`` (risk low-medium, medium, high: the RCP's trigger rows; held
open in a deadband just below the trigger, :data:`NEWS2_HOLD_SCORE`),
``news2_rising`` (:mod:`.trend`; an early warning, not raised while a medium or
high NEWS2 alert is open), ``baseline:<vital>`` (the smoothed value outside
the personal band for :data:`DRIFT_HOLD_S`; :mod:`.baseline`), and the arrhythmia
kinds of :mod:`.arrhythmia`.  Episodes, escalation, reminders: :mod:`.alerts`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from host.services.advice import news2 as n2
from host.services.advice.alerts import AlertEvent, AlertTracker, Condition, Policy
from host.services.advice.arrhythmia import RECENT_S, RhythmEvent, arrhythmia_conditions
from host.services.advice.baseline import UNITS, VITALS, Band, Baseline, median
from host.services.advice.trend import Trajectory

__all__ = ["BP_STALE_S", "DEVICE_STALE_S", "DRIFT_HOLD_S", "MANUAL_STALE_S", "SMOOTH_S",
           "Assessment", "PatientMonitor"]

SMOOTH_S = 60
#: Fewest readings in the smoothing window for a device value (fewer, e.g. the first
#: after a lead-off, could be one artefact: missing instead).
MIN_READINGS = 3
DEVICE_STALE_S = 120
BP_STALE_S = 3600
#: A manual observation's shelf life (s): consciousness and air/oxygen for 12 h (the
#: longest NEWS2 interval), a nurse's vitals for 1 h.
MANUAL_STALE_S = {"consciousness": 12 * 3600, "oxygen": 12 * 3600, "systolic": 3600,
                  "resp_rate": 3600, "spo2": 3600, "pulse": 3600, "temperature": 3600}
DRIFT_HOLD_S = 10 * 60
#: An open medium/high NEWS2 episode is held while the score is at least this (a
#: deadband below the trigger of 5: a patient hovering at 4-5 gets one alert, not one
#: every time a reading crosses the band edge).
NEWS2_HOLD_SCORE = 4
PVC_WINDOW_S = 5 * 60
PVC_MIN_BEATS = 300
#: Device vitals -> the NEWS2 parameter they supply.
_DEVICE_TO_NEWS2 = {"resp_rate": "resp_rate", "spo2": "spo2", "temperature": "temperature",
                    "pulse": "pulse"}
#: Personal-baseline vital -> the device reading it follows.
_BASELINE_SOURCE = {"heart_rate": "pulse", "resp_rate": "resp_rate", "spo2": "spo2",
                    "temperature": "temperature"}


@dataclass
class Assessment:
    patient_id: str
    ts_ms: int
    news2: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    trend: dict[str, Any]
    bands: dict[str, dict[str, Any] | None]
    conditions: list[Condition]
    advice: list[str]
    events: list[AlertEvent]

    def as_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "ts_ms": self.ts_ms, "news2": self.news2,
                "sources": self.sources, "trend": self.trend, "baselines": self.bands,
                "conditions": [c.as_dict() for c in self.conditions],
                "advice": list(self.advice), "events": [e.as_dict() for e in self.events]}


class PatientMonitor:
    def __init__(self, patient_id: str, profile: Mapping[str, Any],
                 policy: Policy | None = None) -> None:
        self.patient_id = patient_id
        self.profile = dict(profile)
        self.baseline = Baseline()
        self.trajectory = Trajectory()
        self.tracker = AlertTracker(policy or Policy())
        self._readings: dict[str, deque[tuple[int, float]]] = {
            k: deque() for k in ("pulse", "resp_rate", "spo2", "temperature")}
        self._bp: tuple[int, float] | None = None
        self._manual: dict[str, tuple[Any, int]] = {}
        self._events: dict[tuple[str, int], RhythmEvent] = {}
        self._beats: deque[tuple[int, int, int]] = deque()  # (ts_ms, all, V)
        self._drift_since: dict[str, int] = {}
        self._burden_report: tuple[int, float] | None = None  # (valid until, percent)

    def fork(self) -> PatientMonitor:
        """An independent copy of the engine and its state (what the advice service
        feeds the newest, unsettled seconds into: host.services.advice.live)."""
        new = PatientMonitor.__new__(PatientMonitor)
        new.__dict__.update(self.__dict__)
        new.profile = dict(self.profile)
        new.baseline, new.trajectory = self.baseline.fork(), self.trajectory.fork()
        new.tracker = self.tracker.fork()
        new._readings = {k: deque(q) for k, q in self._readings.items()}
        new._manual, new._events = dict(self._manual), dict(self._events)
        new._beats, new._drift_since = deque(self._beats), dict(self._drift_since)
        return new

    # -- inputs ----------------------------------------------------------------
    def add_vitals(self, ts_ms: int, *, pulse: float | None = None,
                   resp_rate: float | None = None, spo2: float | None = None,
                   temperature: float | None = None) -> None:
        """One published vitals window (None: withheld or not measured)."""
        for name, value in (("pulse", pulse), ("resp_rate", resp_rate), ("spo2", spo2),
                            ("temperature", temperature)):
            if value is None:
                continue
            q = self._readings[name]
            q.append((ts_ms, float(value)))
            while q and q[0][0] <= ts_ms - SMOOTH_S * 1000:
                q.popleft()
        for vital, source in _BASELINE_SOURCE.items():
            value = {"pulse": pulse, "resp_rate": resp_rate, "spo2": spo2,
                     "temperature": temperature}[source]
            if value is not None:
                self.baseline.add(vital, ts_ms, float(value))

    def add_bp(self, ts_ms: int, systolic: float) -> None:
        self._bp = (ts_ms, float(systolic))

    def add_observation(self, kind: str, value: Any, ts_ms: int) -> None:
        old = self._manual.get(kind)
        if old is None or ts_ms >= old[1]:
            self._manual[kind] = (value, ts_ms)

    def add_rhythm_event(self, ev: RhythmEvent) -> None:
        self._events[(ev.rhythm, ev.onset_ms)] = ev  # an update (offset) replaces it
        old = [k for k, e in self._events.items() if e.offset_ms is not None
               and e.offset_ms < ev.onset_ms - 2 * RECENT_S * 1000]
        for k in old:
            del self._events[k]

    def add_burden_report(self, ts_ms: int, pvc_percent: float, period_ms: int) -> None:
        """The device's own PVC burden over its last ``period_ms`` (a BURDEN event):
        used while no beat counts are at hand, until one more period has passed."""
        self._burden_report = (ts_ms + max(period_ms, 60_000), float(pvc_percent))

    def add_beats(self, ts_ms: int, total: int, ventricular: int) -> None:
        self._beats.append((ts_ms, total, ventricular))
        while self._beats and self._beats[0][0] <= ts_ms - PVC_WINDOW_S * 1000:
            self._beats.popleft()

    # -- evaluation --------------------------------------------------------------
    def _value(self, name: str, now_ms: int) -> tuple[float | None, dict[str, Any]]:
        device: tuple[float, int] | None = None
        if name == "systolic":
            if self._bp is not None and now_ms - self._bp[0] <= BP_STALE_S * 1000:
                device = (self._bp[1], self._bp[0])
        else:
            q = self._readings[name]
            recent = [v for t, v in q if now_ms - SMOOTH_S * 1000 < t <= now_ms]
            if len(recent) >= MIN_READINGS and now_ms - q[-1][0] <= DEVICE_STALE_S * 1000:
                device = (median(recent), q[-1][0])
        manual = self._manual.get(name)
        if manual is not None and now_ms - manual[1] > MANUAL_STALE_S[name] * 1000:
            manual = None
        if device is None and manual is None:
            return None, {"source": None}
        if manual is not None and (device is None or manual[1] >= device[1]):
            return float(manual[0]), {"source": "manual", "ts_ms": manual[1]}
        assert device is not None
        return device[0], {"source": "device", "ts_ms": device[1]}

    def current_inputs(self, now_ms: int) -> tuple[n2.Inputs, dict[str, dict[str, Any]]]:
        values: dict[str, Any] = {}
        sources: dict[str, dict[str, Any]] = {}
        for name in ("resp_rate", "spo2", "systolic", "pulse", "temperature"):
            values[name], sources[name] = self._value(name, now_ms)
        for kind in ("consciousness", "oxygen"):
            obs = self._manual.get(kind)
            if obs is not None and now_ms - obs[1] <= MANUAL_STALE_S[kind] * 1000:
                values[kind], sources[kind] = obs[0], {"source": "manual", "ts_ms": obs[1]}
            elif kind == "oxygen" and "on_oxygen" in self.profile:
                values[kind] = bool(self.profile["on_oxygen"])
                sources[kind] = {"source": "profile"}
            else:
                values[kind], sources[kind] = None, {"source": None}
        # readings outside the plausible range are artefacts: missing, not scored
        for name, (lo, hi, _) in n2.RANGES.items():
            v = values.get(name)
            if v is not None and not lo <= v <= hi:
                values[name] = None
                sources[name] = {"source": None, "refused": v}
        inputs = n2.Inputs(resp_rate=values["resp_rate"], spo2=values["spo2"],
                           oxygen=values["oxygen"], systolic=values["systolic"],
                           pulse=values["pulse"], consciousness=values["consciousness"],
                           temperature=values["temperature"],
                           scale=n2.scale_for_profile(self.profile))
        return inputs, sources

    def _targets(self) -> dict[str, Any]:
        targets = dict(self.profile.get("targets") or {})
        if "spo2" not in targets and n2.scale_for_profile(self.profile) == 2:
            targets["spo2"] = self.profile["spo2_target"]
        return targets

    def _drift(self, now_ms: int, inputs: n2.Inputs) -> tuple[list[Condition],
                                                              dict[str, Band | None]]:
        conditions = []
        bands: dict[str, Band | None] = {}
        targets = self._targets()
        for vital in VITALS:
            band = self.baseline.band(vital, targets)
            bands[vital] = band
            value = getattr(inputs, _BASELINE_SOURCE[vital])
            if band is None or value is None:
                self._drift_since.pop(vital, None)
                self.baseline.frozen.discard(vital)
                continue
            outside = not band.low <= value <= band.high
            if not outside:
                self._drift_since.pop(vital, None)
                self.baseline.frozen.discard(vital)
                continue
            since = self._drift_since.setdefault(vital, now_ms)
            self.baseline.frozen.add(vital)
            if now_ms - since >= DRIFT_HOLD_S * 1000:
                where = "above" if value > band.high else "below"
                what = "clinician target" if band.override else "personal baseline"
                conditions.append(Condition(
                    f"baseline:{vital}", "low",
                    f"{vital} {value:g} {UNITS[vital]} {where} this patient's {what} "
                    f"{band.low:.4g}-{band.high:.4g} for {(now_ms - since) // 60000} min: "
                    "assess the patient",
                    "smoothed value outside the band for >= 10 min",
                    {"value": value, **band.as_dict()},
                    "override by a clinician (medge patient override)" if band.override
                    else "rolling 4 h median +- max(4 x 1.4826 MAD, floor)"))
        return conditions, bands

    def _news2_condition(self, r: n2.News2) -> Condition | None:
        doc = r.as_dict()
        if r.risk is n2.Risk.LOW:
            held = self.tracker.open.get("news2")
            if held is None or not self._holds(held.severity, r):
                return None
            return Condition("news2", "low",
                             f"NEWS2 {r.score}: just below the trigger the alert was raised "
                             "at; the episode is held until it falls further "
                             "(hysteresis, not a new alert)",
                             f"hold: NEWS2 >= {NEWS2_HOLD_SCORE} or a parameter scoring >= 2",
                             {"score": r.score, "sub_scores": doc["sub_scores"],
                              "values": doc["values"], "missing": doc["missing"],
                              "scale": r.scale}, n2.REFERENCE)
        bound = " (lower bound: " + ", ".join(r.missing) + " missing)" if r.missing else ""
        reds = f"; 3 in {', '.join(r.red_parameters)}" if r.red_parameters else ""
        text = f"NEWS2 {r.score}{bound}: {r.risk.value} risk{reds}. {doc['response']}"
        return Condition("news2", r.risk.value, text,
                         f"NEWS2 trigger '{doc['trigger']}'; monitoring {doc['monitoring']}",
                         {"score": r.score, "sub_scores": doc["sub_scores"],
                          "values": doc["values"], "missing": doc["missing"],
                          "scale": r.scale}, n2.REFERENCE)

    @staticmethod
    def _holds(severity: str, r: n2.News2) -> bool:
        """Whether an open NEWS2 episode raised at ``severity`` stays open at a score
        now below its trigger: a medium or high one while NEWS2 >= :data:`NEWS2_HOLD_SCORE`,
        a low-medium one (a 3 in one parameter) while some parameter still scores >= 2."""
        if severity in ("medium", "high"):
            return r.score >= NEWS2_HOLD_SCORE
        return any(v is not None and v >= 2 for v in r.sub_scores.values())

    def evaluate(self, now_ms: int) -> Assessment:
        inputs, sources = self.current_inputs(now_ms)
        result = n2.news2(inputs)
        self.trajectory.add(now_ms, result.score)
        trend = self.trajectory.trend()
        conditions: list[Condition] = []
        advice: list[str] = []
        c = self._news2_condition(result)
        if c is not None:
            conditions.append(c)
        else:
            advice.append(f"NEWS2 {result.score}" + (" (lower bound)" if result.missing
                                                     else "") + ": low risk; "
                          + n2.RESPONSES[result.trigger][1])
        held = self.tracker.open.get("news2")
        if trend.rising and (held is None or held.severity in ("low", "low-medium")):
            # an early warning: once a medium/high NEWS2 alert is open it says no more
            conditions.append(Condition(
                "news2_rising", "low",
                f"NEWS2 rising {trend.slope_per_h:.1f} points/h over 2 h: early warning, "
                "assess the patient and consider more frequent observations",
                "least-squares slope of 10-min median NEWS2 >= 1/h and a rise >= 2",
                trend.as_dict(), "medge trend rule (host/services/advice/trend.py)"))
        drift, bands = self._drift(now_ms, inputs)
        conditions.extend(drift)
        total = sum(b[1] for b in self._beats)
        vent = sum(b[2] for b in self._beats)
        pvc = 100.0 * vent / total if total >= PVC_MIN_BEATS else None
        if pvc is None and self._burden_report is not None \
                and now_ms <= self._burden_report[0]:
            pvc = self._burden_report[1]
        arr, arr_advice = arrhythmia_conditions(
            self.profile, list(self._events.values()), now_ms, heart_rate=inputs.pulse,
            pvc_percent=pvc, beats=total)
        conditions.extend(arr)
        advice.extend(arr_advice)
        advice.extend(c.text for c in conditions)
        events = self.tracker.update(now_ms, conditions)
        return Assessment(self.patient_id, now_ms, result.as_dict(), sources, trend.as_dict(),
                          {k: (None if b is None else b.as_dict()) for k, b in bands.items()},
                          conditions, advice, events)

"""``make eval-alerts``: alarm burden and sensitivity on a simulated ward, medge's
advice engine against a plain threshold monitor, in the same run.

The ward.  ``--patients`` virtual patients (default 24) for ``--hours`` (24), a
mix of the simulator's scenarios (``sim/scenarios``: stable, sepsis, new_onset_af,
pvc_burden, copd_oxygen; :data:`MIX`), each seeded, each scenario starting at a
random hour so the ward is not in lock-step.  Time is simulated (accelerated:
a 24-patient day runs in well under a minute).

What is simulated, and what is not.  This evaluation works at the level of the
published numbers, not of waveforms: 20 x 24 h of 250 Hz ECG and PPG through the
device code would take days on this machine.  Each patient's true vitals come
from the scenario's trajectories with the simulator's individual variation;
every :data:`STEP_S` seconds the "device" publishes each vital with measurement
noise (:data:`NOISE_SD`, autocorrelated over :data:`NOISE_TAU_S`), withholds it
(null) during lead-off or probe-off episodes (:data:`LEAD_OFF_PER_H`), and now and
then publishes an artefact that passed the device's quality checks
(:data:`ARTEFACT_P`: a halved or doubled heart rate, a 10-point SpO2 drop, a
respiratory rate off by 8).  The cuff
reads every ``nibp.interval_s`` with the scenario's cuff noise; nurses enter
consciousness and air/oxygen every 4 h.  Rhythm events are the ground truth's
(AF onset reported :data:`AF_DETECT_S` late, issue 13's acceptance bound; VT
runs as they happen); beat counts per minute carry the true PVC burden (binomial).
The device's own detectors are measured separately (issues 12 and 13).

Ground-truth deterioration episodes.  ``news2``: the NEWS2 of the true values
(consciousness alert, the scenario's air/oxygen; the blood pressure the cuff last
read: between cycles it is unobservable) at >= 5, from its first second there to
recovery; ``af``: each new AF segment; ``pvc``: the true PVC burden at >= 10 %.
(Non-sustained VT runs are part of the PVC episode.)

The threshold monitor (:class:`ThresholdMonitor`): common adult default limits
(:data:`LIMITS`, those of widely used bedside monitors' factory settings): heart
rate 50-120/min, SpO2 < 90 %, respiratory rate 8-30/min, systolic 90-160 mmHg,
temperature 36.0-39.0 C, plus AF on an AF event, a VT alarm for every VT run and
PVCs > 10/min.  One alarm each time a value leaves its limits (re-armed when it
comes back); no delays, no de-duplication across parameters: what "plain" means.

Scores.  Alerts per patient-day (medge: alert episodes opened plus escalations;
reminders are reported apart; threshold monitor: alarms), and for every
ground-truth episode whether and when each system first alerted (medge: a
relevant alert (:data:`RELEVANT`; any alert for a NEWS2 episode) raised or still
open at or after the onset, until the episode's end; the threshold monitor: its
first relevant alarm (:data:`THRESHOLD_RELEVANT`) raised or still active in the
same span), the time from the onset, and for the ``news2`` episodes the delay to
medge's first alert of severity medium or higher.

The medium-alert delay is the alert's, as the nurse and the bedside see it: the
first time at or after the onset that a NEWS2 alert episode of severity medium or
higher (the highest so far: what the store, ``medge alerts`` and the alert message
carry) is open, whether it was raised then or earlier and is still open (a
deteriorating patient's score often touches 5 on noise before the true score gets
there; the episode is then held open at medium by the deadband, and that open
alert is the one the ward acts on).  The score's own delay is reported beside it
(``medge_medium_score_delay_s``: the first time the smoothed score itself is at
medium or higher); at a band edge it can lag by minutes however the readings are
smoothed, because a true value creeping across the edge at 1 %/h is within the
readings' noise of it for that long (seed 1's 394 s: SpO2 true 95.5-95.4 %, the
readings 0.56 % high on average over those 7.5 min, the alert raised 22 min before
and held).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from host.services import patients
from host.services.advice import news2 as n2
from host.services.advice.alerts import EventKind, rank
from host.services.advice.arrhythmia import RhythmEvent
from host.services.advice.engine import PatientMonitor
from sim.scenario import Scenario, load_scenario

__all__ = ["LIMITS", "MIX", "Episode", "PatientRun", "ThresholdMonitor", "VirtualWardPatient",
           "main", "run_patient", "run_ward"]

STEP_S = 5
EVAL_S = 5  # medge evaluates every published vitals window, as live
NOISE_SD = {"pulse": 2.0, "resp_rate": 1.2, "spo2": 0.8, "temperature": 0.05}
#: The noise is autocorrelated (first-order autoregressive, this time constant in s):
#: a monitor's numbers are averages over seconds, not independent draws.
NOISE_TAU_S = {"pulse": 20.0, "resp_rate": 30.0, "spo2": 20.0, "temperature": 300.0}
AF_NOISE_SD = 6.0  # an 8-beat mean rate in AF scatters more
ARTEFACT_P = 0.002
LEAD_OFF_PER_H = 2.0
LEAD_OFF_S = (5.0, 90.0)
AF_DETECT_S = 30
OBS_ROUND_S = 4 * 3600
#: Scenario mix of a ward, cycled over the patients.
MIX = ("stable", "sepsis", "stable", "new_onset_af", "copd_oxygen", "pvc_burden", "stable",
       "sepsis", "copd_oxygen", "stable", "new_onset_af", "sepsis")
#: (parameter, low limit or None, high limit or None): alarms outside.
LIMITS = (("pulse", 50, 120), ("spo2", 90, None), ("resp_rate", 8, 30),
          ("systolic", 90, 160), ("temperature", 36.0, 39.0))
PVC_PER_MIN_LIMIT = 10
ALARM_DELAY_READINGS = 2
#: A nurse acknowledges a medge alert this long after it is raised (reminders stop).
ACK_AFTER_S = 180
#: medge alert kinds that count for each kind of ground-truth episode ("" = any: a
#: general deterioration is caught by whatever brings the nurse to the bedside).
RELEVANT = {"news2": ("",), "af": ("af", "baseline:heart_rate", "news2"),
            "pvc": ("pvc_burden", "vt")}
#: Threshold-monitor alarms that count for each kind of episode (any alarm for news2,
#: as for medge).
THRESHOLD_RELEVANT = {"news2": (*(name for name, _, _ in LIMITS), "af", "vt", "pvc_per_min"),
                      "af": ("af", "pulse"), "pvc": ("pvc_per_min", "vt")}


def _relevant(episode_kind: str, alert_kind: str) -> bool:
    return any(alert_kind.startswith(k) for k in RELEVANT[episode_kind])


@dataclass
class Episode:
    kind: str
    onset_s: float
    end_s: float
    medge_s: float | None = None
    threshold_s: float | None = None
    medge_medium_s: float | None = None
    medge_medium_score_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - self.onset_s, 1)

        return {"kind": self.kind, "onset_s": self.onset_s, "end_s": self.end_s,
                "medge_delay_s": rel(self.medge_s), "threshold_delay_s": rel(self.threshold_s),
                "medge_medium_delay_s": rel(self.medge_medium_s),
                "medge_medium_score_delay_s": rel(self.medge_medium_score_s)}


class ThresholdMonitor:
    """A plain monitor: an alarm each time a published value has been outside its
    limits for :data:`ALARM_DELAY_READINGS` consecutive readings (10 s, the usual
    factory SpO2 alarm delay, here applied to every parameter)."""

    def __init__(self) -> None:
        self.outside: dict[str, int] = {}
        self.alarms: list[tuple[float, str]] = []

    def vitals(self, t_s: float, values: dict[str, float | None]) -> None:
        for name, lo, hi in LIMITS:
            v = values.get(name)
            if v is None:
                continue  # withheld: a technical condition, not a limit alarm
            out = (lo is not None and v < lo) or (hi is not None and v > hi)
            if not out:
                self.outside.pop(name, None)
                continue
            n = self.outside.get(name, 0) + 1
            self.outside[name] = n
            if n == ALARM_DELAY_READINGS or (name == "systolic" and n == 1):
                self.alarms.append((t_s, name))

    def active(self) -> set[str]:
        """Parameters in alarm now."""
        return {k for k, n in self.outside.items()
                if n >= ALARM_DELAY_READINGS or k == "systolic"}

    def event(self, t_s: float, name: str) -> None:
        self.alarms.append((t_s, name))


class VirtualWardPatient:
    """One patient's published numbers and ground truth over ``hours``."""

    def __init__(self, scenario: Scenario, seed: int, hours: float) -> None:
        self.sc = scenario
        self.rng = random.Random(seed)
        r, var = self.rng, scenario.variation
        self.duration_s = hours * 3600
        latest = max(0.0, self.duration_s - scenario.duration_s)
        self.offset_s = 0.0 if scenario.name in ("stable", "copd_oxygen") else \
            r.uniform(0.1, 0.6) * latest
        self.hr_f = 1 + var["heart_rate_percent"] / 100 * max(-2, min(2, r.gauss(0, 1)))
        self.rr_f = 1 + var["resp_rate_percent"] / 100 * max(-2, min(2, r.gauss(0, 1)))
        self.spo2_off = var["spo2_percent"] * max(-2, min(2, r.gauss(0, 1)))
        self.temp_off = var["temperature_c"] * max(-2, min(2, r.gauss(0, 1)))
        self.bp_f = 1 + var["blood_pressure_percent"] / 100 * max(-2, min(2, r.gauss(0, 1)))
        self.on_oxygen = bool(scenario.patient["on_oxygen"])
        self.profile = patients.profile_from_scenario(scenario, seed)
        self._noise = {name: r.gauss(0, 1) for name in NOISE_SD}
        self._cuff: list[float] = []
        self._cuff_rng = random.Random(seed + 7_919)
        self.lead_off: list[tuple[float, float]] = []
        t = 0.0
        while True:
            t += r.expovariate(LEAD_OFF_PER_H / 3600)
            if t >= self.duration_s:
                break
            d = r.uniform(*LEAD_OFF_S)
            self.lead_off.append((t, t + d))
            t += d

    def local(self, t_s: float) -> float:
        return t_s - self.offset_s

    def true_vitals(self, t_s: float) -> dict[str, float]:
        v, u = self.sc.vitals, self.local(t_s)
        return {"pulse": v["heart_rate_bpm"](u) * self.hr_f,
                "resp_rate": v["resp_rate_bpm"](u) * self.rr_f,
                "spo2": min(100.0, v["spo2_percent"](u) + self.spo2_off),
                "temperature": v["temperature_c"](u) + self.temp_off,
                "systolic": v["systolic_mmhg"](u) * self.bp_f}

    def cuff(self, t_s: float) -> tuple[int, float] | None:
        """The cuff's last reading at ``t_s``: (index, systolic mmHg); it reads at
        interval/2, then every interval, with the scenario's cuff noise."""
        interval = float(self.sc.nibp["interval_s"])
        if t_s < interval / 2:
            return None
        k = math.floor((t_s - interval / 2) / interval)
        while len(self._cuff) <= k:
            i = len(self._cuff)
            true = self.true_vitals(interval / 2 + i * interval)["systolic"]
            self._cuff.append(float(round(true + self._cuff_rng.gauss(
                0, self.sc.nibp["noise_mmhg"]))))
        return k, self._cuff[k]

    def true_news2(self, t_s: float) -> int:
        """NEWS2 of the true values at ``t_s``, with the blood pressure the cuff last
        read (between cycles a blood pressure is unobservable by any monitor; the
        reading is the clinical observation both monitors get)."""
        x = self.true_vitals(t_s)
        cuff = self.cuff(t_s)
        x["systolic"] = x["systolic"] if cuff is None else cuff[1]
        return n2.news2(n2.Inputs(resp_rate=x["resp_rate"], spo2=x["spo2"],
                                  oxygen=self.on_oxygen, systolic=x["systolic"],
                                  pulse=x["pulse"], consciousness="A",
                                  temperature=x["temperature"],
                                  scale=n2.scale_for_profile(self.profile))).score

    def in_af(self, t_s: float) -> bool:
        u = self.local(t_s)
        kind = "sinus"
        for start, k in self.sc.rhythm["segments"]:
            if u >= start:
                kind = k
        return kind == "af"

    def af_onsets(self) -> list[float]:
        out = []
        for start, k in self.sc.rhythm["segments"]:
            t = start + self.offset_s
            if k == "af" and start > 0 and 0 <= t < self.duration_s:
                out.append(t)
        return out

    def pvc_burden(self, t_s: float) -> float:
        return float(self.sc.rhythm["pvc_burden_percent"](self.local(t_s)))

    def lead_is_off(self, t_s: float) -> bool:
        return any(a <= t_s < b for a, b in self.lead_off)

    def published(self, t_s: float) -> dict[str, float | None]:
        x = self.true_vitals(t_s)
        r = self.rng
        out: dict[str, float | None] = {}
        for name, sd in NOISE_SD.items():
            if name == "pulse" and self.in_af(t_s):
                sd = AF_NOISE_SD
            a = math.exp(-STEP_S / NOISE_TAU_S[name])
            self._noise[name] = a * self._noise[name] + math.sqrt(1 - a * a) * r.gauss(0, 1)
            value = x[name] + sd * self._noise[name]
            if r.random() < ARTEFACT_P:
                value = {"pulse": value * r.choice([0.5, 2.0]), "spo2": value - 10,
                         "resp_rate": value + r.choice([-8, 8]),
                         "temperature": value - 1.5}[name]
            out[name] = round(value, 1) if name == "temperature" else float(round(value))
        if self.lead_is_off(t_s):
            out["pulse"] = out["resp_rate"] = None
            if r.random() < 0.5:
                out["spo2"] = None
        if out.get("spo2") is not None:
            out["spo2"] = min(100.0, out["spo2"])
        return out

    def vt_runs(self) -> list[tuple[float, int, float]]:
        """(time_s, beats, rate) of each VT run in the ward's clock."""
        rh, r = self.sc.rhythm, self.rng
        runs = [(e["time_s"] + self.offset_s, int(e["beats"]), float(e["rate_bpm"]))
                for e in rh["events"] if e["kind"] == "vt_run"]
        rate_h = rh["vt_runs_per_hour"]
        if rate_h > 0:
            t = self.offset_s
            end = min(self.duration_s, self.offset_s + self.sc.duration_s)
            while True:
                t += r.expovariate(rate_h / 3600)
                if t >= end:
                    break
                lo, hi = rh["vt_beats"]
                runs.append((t, r.randint(int(lo), int(hi)), r.uniform(*rh["vt_rate_bpm"])))
        return sorted(runs)


@dataclass
class PatientRun:
    scenario: str
    medge_alerts: int
    medge_reminders: int
    threshold_alarms: int
    episodes: list[Episode]
    medge_by_kind: dict[str, int] = field(default_factory=dict)
    threshold_by_kind: dict[str, int] = field(default_factory=dict)
    #: (time_s, event, kind, severity) of every medge alert event but reminders
    medge_events: list[tuple[float, str, str, str]] = field(default_factory=list)


def _spans(kind: str, duration_s: float, holds: Callable[[float], bool]) -> list[Episode]:
    """Episodes of ``kind``: the minutes during which ``holds(t)``."""
    eps: list[Episode] = []
    start = None
    for m in range(int(duration_s // 60) + 1):
        t = m * 60.0
        if holds(t) and start is None:
            start = t
        elif not holds(t) and start is not None:
            eps.append(Episode(kind, start, t))
            start = None
    if start is not None:
        eps.append(Episode(kind, start, duration_s))
    return eps


def _truth_episodes(p: VirtualWardPatient) -> list[Episode]:
    eps = _spans("news2", p.duration_s, lambda t: p.true_news2(t) >= 5)
    for t in p.af_onsets():
        end = t
        while end < p.duration_s and p.in_af(end):
            end += 60
        eps.append(Episode("af", t, end))
    eps += _spans("pvc", p.duration_s, lambda t: p.pvc_burden(t) >= 10)
    # a precise NEWS2 onset: the first second at >= 5
    for ep in eps:
        if ep.kind == "news2" and ep.onset_s > 0:
            t = ep.onset_s - 60
            while t < ep.onset_s and p.true_news2(t) < 5:
                t += 1
            ep.onset_s = t
    return eps


def _score(episodes: list[Episode], t: float, mon: PatientMonitor,
           thr: ThresholdMonitor) -> None:
    """Record, for each episode under way at ``t``, whether each system has a
    relevant alert raised or still open (the first such time is its detection)."""
    for ep in episodes:
        if not ep.onset_s <= t <= ep.end_s:
            continue
        if ep.medge_s is None and any(_relevant(ep.kind, k) for k in mon.tracker.open):
            ep.medge_s = t
        if ep.kind == "news2":
            held = mon.tracker.open.get("news2")
            if held is not None and ep.medge_medium_s is None \
                    and rank(held.severity) >= rank("medium"):
                ep.medge_medium_s = t  # the open alert, as stored and shown
            if held is not None and ep.medge_medium_score_s is None \
                    and rank(held.current) >= rank("medium"):
                ep.medge_medium_score_s = t  # the smoothed score itself
    _score_threshold(episodes, t, thr)


def _score_threshold(episodes: list[Episode], t: float, thr: ThresholdMonitor) -> None:
    active = thr.active()
    recent = {k for ts, k in thr.alarms[-8:] if ts == t}
    for ep in episodes:
        if ep.threshold_s is None and ep.onset_s <= t <= ep.end_s and (
                (active | recent) & set(THRESHOLD_RELEVANT[ep.kind])):
            ep.threshold_s = t


def run_patient(p: VirtualWardPatient, pid: str = "p") -> PatientRun:
    mon = PatientMonitor(pid, p.profile)
    thr = ThresholdMonitor()
    episodes = _truth_episodes(p)
    vt = p.vt_runs()
    vt_i = 0
    af_reported: set[float] = set()
    af_onsets = p.af_onsets()
    af_open: float | None = None
    last_cuff = -1
    next_obs = 0.0
    next_eval = 0.0
    beats_acc = [0, 0]
    to_ack: list[tuple[float, str]] = []
    events_log: list[tuple[float, str, str, str]] = []
    medge_alerts = reminders = 0
    by_kind: Counter[str] = Counter()
    t = 0.0
    while t < p.duration_s:
        ms = int(t * 1000)
        event_now = False
        if t >= next_obs:
            mon.add_observation("consciousness", "A", ms)
            mon.add_observation("oxygen", p.on_oxygen, ms)
            next_obs += OBS_ROUND_S
        values = p.published(t)
        mon.add_vitals(ms, pulse=values["pulse"], resp_rate=values["resp_rate"],
                       spo2=values["spo2"], temperature=values["temperature"])
        cuff = p.cuff(t)
        if cuff is not None and cuff[0] != last_cuff:
            last_cuff = cuff[0]
            mon.add_bp(ms, cuff[1])
            values["systolic"] = cuff[1]
        thr.vitals(t, values)
        # beats of this step and the PVC-per-minute alarm
        hr = p.true_vitals(t)["pulse"]
        n_beats = max(1, round(hr * STEP_S / 60))
        burden = p.pvc_burden(t) / 100
        v_beats = sum(1 for _ in range(n_beats) if p.rng.random() < burden)
        beats_acc[0] += n_beats
        beats_acc[1] += v_beats
        if int(t) % 60 == 0 and t > 0:
            mon.add_beats(ms, beats_acc[0], beats_acc[1])
            if beats_acc[1] > PVC_PER_MIN_LIMIT:
                thr.event(t, "pvc_per_min")
            beats_acc = [0, 0]
        while vt_i < len(vt) and vt[vt_i][0] <= t:
            vt_t, n, rate = vt[vt_i]
            dur_ms = int(n * 60_000 / rate)
            mon.add_rhythm_event(RhythmEvent("VT", int(vt_t * 1000), int(vt_t * 1000) + dur_ms,
                                             {"beats": n, "rate_bpm": round(rate)}))
            thr.event(vt_t, "vt")
            vt_i += 1
            event_now = True
        for onset in af_onsets:
            if onset not in af_reported and t >= onset + AF_DETECT_S:
                af_reported.add(onset)
                af_open = onset
                mon.add_rhythm_event(RhythmEvent("AFIB", int((onset) * 1000), None, {}))
                thr.event(t, "af")
                event_now = True
        if af_open is not None and not p.in_af(t):
            mon.add_rhythm_event(RhythmEvent("AFIB", int(af_open * 1000), ms, {}))
            af_open = None
        if t >= next_eval or event_now:
            a = mon.evaluate(ms)
            for e in a.events:
                if e.event in (EventKind.OPEN, EventKind.ESCALATE):
                    medge_alerts += 1
                    by_kind[e.kind] += 1
                    events_log.append((t, e.event.value, e.kind, e.severity))
                    to_ack.append((t + ACK_AFTER_S, e.kind))
                elif e.event is EventKind.REMIND:
                    reminders += 1
                else:
                    events_log.append((t, e.event.value, e.kind, e.severity))
            _score(episodes, t, mon, thr)
            while to_ack and to_ack[0][0] <= t:
                mon.tracker.ack(to_ack.pop(0)[1], ms, "nurse")
            if t >= next_eval:
                next_eval += EVAL_S
        else:
            _score_threshold(episodes, t, thr)
        t += STEP_S
    thr_kind: Counter[str] = Counter(k for _, k in thr.alarms)
    return PatientRun(p.sc.name, medge_alerts, reminders, len(thr.alarms), episodes,
                      dict(by_kind), dict(thr_kind), events_log)


def run_ward(n_patients: int, hours: float, seed: int) -> dict[str, Any]:
    scenarios = {name: load_scenario(name) for name in set(MIX)}
    runs = []
    for i in range(n_patients):
        name = MIX[i % len(MIX)]
        runs.append(run_patient(VirtualWardPatient(scenarios[name], seed * 1000 + i, hours),
                                f"p-{i:03d}"))
    days = n_patients * hours / 24
    episodes = [ep for r in runs for ep in r.episodes]
    medge_hit = [ep for ep in episodes if ep.medge_s is not None]
    thr_hit = [ep for ep in episodes if ep.threshold_s is not None]
    not_later = [ep for ep in episodes if ep.medge_s is not None and (
        ep.threshold_s is None or ep.medge_s <= ep.threshold_s)]
    def medium_delays(attr: str) -> dict[str, Any]:
        # episodes under way from the start (onset 0) have no rise to time
        d = sorted(getattr(ep, attr) - ep.onset_s for ep in episodes
                   if ep.kind == "news2" and ep.onset_s > 0 and getattr(ep, attr) is not None)
        n = sum(1 for ep in episodes if ep.kind == "news2" and ep.onset_s > 0)
        return {"max": max(d) if d else None, "median": d[len(d) // 2] if d else None,
                "episodes": n, "alerted": len(d),
                "within_120_s": sum(1 for x in d if x <= 120)}

    def per_kind(attr: str) -> dict[str, Any]:
        out = {}
        for kind in ("news2", "af", "pvc"):
            eps = [ep for ep in episodes if ep.kind == kind]
            delays = [getattr(ep, attr) - ep.onset_s for ep in eps
                      if getattr(ep, attr) is not None]
            out[kind] = {"episodes": len(eps), "alerted": len(delays),
                         "median_delay_s": (round(sorted(delays)[len(delays) // 2], 1)
                                            if delays else None),
                         "max_delay_s": round(max(delays), 1) if delays else None}
        return out

    medge_total = sum(r.medge_alerts for r in runs)
    thr_total = sum(r.threshold_alarms for r in runs)
    by_scenario: dict[str, dict[str, float]] = {}
    for r in runs:
        s = by_scenario.setdefault(r.scenario, {"patients": 0, "medge": 0, "threshold": 0})
        s["patients"] += 1
        s["medge"] += r.medge_alerts
        s["threshold"] += r.threshold_alarms
    for s in by_scenario.values():
        d = s["patients"] * hours / 24
        s["medge_per_patient_day"] = round(s.pop("medge") / d, 2)
        s["threshold_per_patient_day"] = round(s.pop("threshold") / d, 2)
    medge_kinds: Counter[str] = Counter()
    thr_kinds: Counter[str] = Counter()
    for r in runs:
        medge_kinds.update(r.medge_by_kind)
        thr_kinds.update(r.threshold_by_kind)
    return {
        "patients": n_patients, "hours": hours, "seed": seed, "patient_days": days,
        "medge": {"alerts_per_patient_day": round(medge_total / days, 2),
                  "reminders_per_patient_day": round(sum(r.medge_reminders for r in runs)
                                                     / days, 2),
                  "episodes_alerted": len(medge_hit), "by_kind": dict(medge_kinds),
                  "delays": per_kind("medge_s")},
        "threshold": {"alerts_per_patient_day": round(thr_total / days, 2),
                      "episodes_alerted": len(thr_hit), "by_kind": dict(thr_kinds),
                      "limits": [list(x) for x in LIMITS],
                      "delays": per_kind("threshold_s")},
        "episodes": len(episodes), "episodes_alerted_no_later": len(not_later),
        "reduction_percent": round(100 * (1 - medge_total / thr_total), 1)
        if thr_total else None,
        "news2_medium_delay_s": medium_delays("medge_medium_s"),
        "news2_medium_score_delay_s": medium_delays("medge_medium_score_s"),
        "by_scenario": by_scenario,
        "episode_list": [dict(ep.as_dict(), patient=i) for i, r in enumerate(runs)
                         for ep in r.episodes],
    }


def render(doc: dict[str, Any]) -> str:
    m, t = doc["medge"], doc["threshold"]
    lines = [
        f"simulated ward: {doc['patients']} patients x {doc['hours']:g} h "
        f"({doc['patient_days']:g} patient-days), seed {doc['seed']}",
        f"alerts per patient-day: medge {m['alerts_per_patient_day']} "
        f"(+ {m['reminders_per_patient_day']} reminders), threshold monitor "
        f"{t['alerts_per_patient_day']}  ->  {doc['reduction_percent']} % fewer",
        f"ground-truth episodes: {doc['episodes']}; alerted by medge {m['episodes_alerted']}, "
        f"by the threshold monitor {t['episodes_alerted']}; medge no later than the "
        f"threshold monitor: {doc['episodes_alerted_no_later']}/{doc['episodes']}",
    ]
    for key, what in (("news2_medium_delay_s", "medium alert open"),
                      ("news2_medium_score_delay_s", "smoothed score itself >= 5")):
        d = doc[key]
        lines.append(f"NEWS2 >= 5 -> medge {what}: median {d['median']} s, max {d['max']} s; "
                     f"within 120 s {d['within_120_s']}/{d['episodes']} episodes")
    for kind in ("news2", "af", "pvc"):
        md, td = m["delays"][kind], t["delays"][kind]
        lines.append(f"  {kind:<6} episodes {md['episodes']}: medge {md['alerted']} (median "
                     f"{md['median_delay_s']} s, max {md['max_delay_s']} s), threshold "
                     f"{td['alerted']} (median {td['median_delay_s']} s, max "
                     f"{td['max_delay_s']} s)")
    for name, s in sorted(doc["by_scenario"].items()):
        lines.append(f"  {name:<13} x{s['patients']}: medge {s['medge_per_patient_day']}/day, "
                     f"threshold {s['threshold_per_patient_day']}/day")
    lines.append("threshold limits: " + ", ".join(
        f"{n} {lo if lo is not None else '-'}..{hi if hi is not None else '-'}"
        for n, lo, hi in LIMITS) + "; AF event, each VT run, PVC > 10/min")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m host.eval_alerts",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--report", metavar="FILE.md",
                    help="also write the figures as Markdown (models/reports/alerts.md)")
    args = ap.parse_args(argv)
    if args.patients < 1 or not (0 < args.hours <= 240) or not math.isfinite(args.hours):
        print("eval-alerts: --patients >= 1 and 0 < --hours <= 240", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    doc = run_ward(args.patients, args.hours, args.seed)
    doc["runtime_s"] = round(time.monotonic() - t0, 1)
    text = render(doc)
    print(json.dumps(doc, indent=2) if args.json else text + f"\n(runtime {doc['runtime_s']} s)")
    if args.report:
        from pathlib import Path

        Path(args.report).write_text(
            "# Alarm burden on a simulated ward (make eval-alerts)\n\n"
            "Regenerated by `make eval-alerts` (host/eval_alerts.py; method and limits in its "
            "docstring).\n\n```\n" + text + "\n```\n\nPer episode (delays in s from the "
            "ground-truth onset; null: not alerted):\n\n```\n"
            + "\n".join(json.dumps(e) for e in doc["episode_list"]) + "\n```\n",
            encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The advice engine: alerts once per episode, NEWS2 on live data with stale =
missing, arrhythmia advice, personal baselines and overrides; the simulated
sepsis and stable patients of the acceptance (accelerated, host/eval_alerts.py)."""

from __future__ import annotations

import pytest

from host.eval_alerts import Episode, VirtualWardPatient, run_patient
from host.services.advice.alerts import AlertTracker, Condition, EventKind, Policy
from host.services.advice.arrhythmia import RhythmEvent, pvc_burden_band
from host.services.advice.engine import PatientMonitor
from sim.scenario import load_scenario

T0 = 1_764_000_000_000
MIN = 60_000


def cond(kind: str = "news2", severity: str = "medium") -> Condition:
    return Condition(kind, severity, "t", "r", {}, "ref")


def test_one_alert_per_episode_with_hysteresis_escalation_reminders_resolution() -> None:
    tr = AlertTracker(Policy(onset_evals=2, clear_s=600, remind_s=1800, remind_urgent_s=600))
    seen = []
    # flapping around a threshold: present, absent, present ... every minute for 1 h
    for m in range(60):
        present = [cond()] if m % 2 == 0 or m < 3 else []
        seen += tr.update(T0 + m * MIN, present)
    kinds = [e.event for e in seen]
    assert kinds.count(EventKind.OPEN) == 1
    assert kinds.count(EventKind.RESOLVE) == 0
    assert kinds.count(EventKind.REMIND) == 1  # at 30 min after opening, not acknowledged
    seen = tr.update(T0 + 61 * MIN, [cond(severity="high")])
    assert [e.event for e in seen] == [EventKind.ESCALATE]
    assert tr.ack("news2", T0 + 62 * MIN, "nurse-a")
    seen = [e for m in range(62, 120) for e in tr.update(T0 + m * MIN, [cond(severity="high")])]
    assert seen == []  # acknowledged: no reminders
    seen = [e for m in range(120, 135) for e in tr.update(T0 + m * MIN, [])]
    assert [(e.event, e.severity) for e in seen] == [(EventKind.RESOLVE, "high")]
    assert tr.open == {}


def test_a_single_evaluation_opens_nothing_but_an_emergency_opens_at_once() -> None:
    tr = AlertTracker()
    assert tr.update(T0, [cond()]) == []
    assert tr.update(T0 + MIN, []) == []
    assert tr.update(T0 + 2 * MIN, [cond()]) == []
    [e] = tr.update(T0 + 3 * MIN, [cond("vt", "emergency")])
    assert (e.event, e.kind) == (EventKind.OPEN, "vt")


def monitor(**profile) -> PatientMonitor:
    base = {"age": 78, "sex": "female", "hypertension": True, "targets": {}}
    base.update(profile)
    return PatientMonitor("p-1", base)


def feed(mon: PatientMonitor, t0: int, minutes: int, **vitals) -> None:
    for s in range(0, minutes * 60, 5):
        mon.add_vitals(t0 + s * 1000, **vitals)


def test_live_news2_stale_and_missing_are_never_normal() -> None:
    mon = monitor()
    feed(mon, T0, 2, pulse=72, resp_rate=16, spo2=97, temperature=36.8)
    mon.add_observation("consciousness", "A", T0)
    mon.add_observation("oxygen", False, T0)
    mon.add_bp(T0, 124)
    a = mon.evaluate(T0 + 119_000)
    assert (a.news2["score"], a.news2["missing"]) == (0, [])
    # the device stops: 3 minutes later its vitals are stale, hence missing
    a = mon.evaluate(T0 + 119_000 + 3 * MIN)
    assert a.news2["missing"] == ["resp_rate", "spo2", "pulse", "temperature"]
    assert a.news2["lower_bound"] is True
    assert a.sources["pulse"] == {"source": None}


def test_manual_observations_join_device_vitals() -> None:
    mon = monitor()
    feed(mon, T0, 2, pulse=95, resp_rate=22, spo2=95, temperature=38.5)
    mon.add_observation("consciousness", "C", T0 + 60_000)
    mon.add_observation("oxygen", True, T0 + 60_000)
    mon.add_observation("systolic", 110, T0 + 60_000)
    a = mon.evaluate(T0 + 119_000)
    assert a.news2["sub_scores"] == {"resp_rate": 2, "spo2": 1, "air_or_oxygen": 2,
                                     "systolic": 1, "pulse": 1, "consciousness": 3,
                                     "temperature": 1}
    assert a.news2["score"] == 11 and a.sources["consciousness"]["source"] == "manual"


def test_smoothing_ignores_a_lone_artefact() -> None:
    mon = monitor()
    feed(mon, T0, 2, pulse=72, resp_rate=16, spo2=97, temperature=36.8)
    mon.add_vitals(T0 + 120_000, pulse=180, resp_rate=40, spo2=80, temperature=36.8)
    a = mon.evaluate(T0 + 120_000)
    assert a.news2["sub_scores"]["pulse"] == 0 and a.news2["sub_scores"]["spo2"] == 0


def test_new_af_gives_stroke_risk_and_known_af_does_not_alarm() -> None:
    mon = monitor()
    feed(mon, T0, 2, pulse=128, resp_rate=16, spo2=97, temperature=36.8)
    mon.add_rhythm_event(RhythmEvent("AFIB", T0 + 30_000, None, {}))
    a = mon.evaluate(T0 + 119_000)
    [af] = [c for c in a.conditions if c.kind == "af"]
    assert af.numbers["cha2ds2_vasc"] == 4 and af.numbers["cha2ds2_va"] == 3
    assert "consider anticoagulation, for clinician review" in af.text
    assert "rate control" in af.text
    assert [e.kind for e in a.events if e.event is EventKind.OPEN] == ["af"]
    known = monitor(chronic_af=True)
    feed(known, T0, 2, pulse=100, resp_rate=16, spo2=97, temperature=36.8)
    known.add_rhythm_event(RhythmEvent("AFIB", T0, None, {}))
    a = known.evaluate(T0 + 119_000)
    assert not [c for c in a.conditions if c.kind == "af"]
    assert any(line.startswith("Known atrial fibrillation") for line in a.advice)


@pytest.mark.parametrize("duration_s,severity", [(8, "medium"), (45, "emergency")])
def test_vt(duration_s: int, severity: str) -> None:
    mon = monitor()
    mon.add_rhythm_event(RhythmEvent("VT", T0, T0 + duration_s * 1000,
                                     {"beats": 20, "rate_bpm": 170}))
    a = mon.evaluate(T0 + duration_s * 1000)
    [vt] = [c for c in a.conditions if c.kind == "vt"]
    assert vt.severity == severity and vt.reference
    assert [e.kind for e in a.events] == ["vt"]  # opens at once (a device-confirmed event)


@pytest.mark.parametrize("percent,band,severity", [
    (0.5, "occasional", None), (1.0, "frequent", None), (9.99, "frequent", None),
    (10.0, "high", "low"), (19.9, "high", "low"), (20.0, "very high", "medium")])
def test_pvc_burden_bands(percent: float, band: str, severity: str | None) -> None:
    assert pvc_burden_band(percent) == (band, severity)


def test_pauses_and_bradycardia() -> None:
    mon = monitor()
    mon.add_rhythm_event(RhythmEvent("PAUSE", T0, T0 + 3500, {"pause_s": 3.5}))
    mon.add_rhythm_event(RhythmEvent("BRADY", T0, None, {"rate_bpm": 36}))
    a = mon.evaluate(T0 + 5000)
    assert {c.kind: c.severity for c in a.conditions} == {"pause": "medium", "brady": "high"}


def _drifting(mon: PatientMonitor, hours: float, hr_after: float) -> list:
    """2 h at HR 72, then ``hr_after`` (within NEWS2's 0-1 points) for ``hours``."""
    events = []
    for s in range(0, int((2 + hours) * 3600), 5):
        t = T0 + s * 1000
        hr = 72 + (s % 3) if s < 7200 else hr_after
        mon.add_vitals(t, pulse=hr, resp_rate=15, spo2=97, temperature=36.8)
        if s % 30 == 0:
            events += [e for e in mon.evaluate(t).events]
    return events


def test_a_drift_from_the_personal_baseline_alerts_before_the_population_limits() -> None:
    mon = monitor()
    events = _drifting(mon, 0.5, 100)  # NEWS2 pulse 1 point: no NEWS2 alert
    opened = [e for e in events if e.event is EventKind.OPEN]
    assert [e.kind for e in opened] == ["baseline:heart_rate"]
    assert "personal baseline" in opened[0].condition.text


def test_an_override_changes_the_advice_and_is_audited(tmp_path) -> None:
    from host.services import audit, patients
    from host.services.store import Store

    with Store(tmp_path / "s.db") as store:
        profile = patients.make_profile(age=70, sex="male", chronic_af=True)
        patients.add_patient(store, "p-1", profile, actor="nurse", ts_ms=T0)
        before = PatientMonitor("p-1", patients.get_patient(store, "p-1"))
        assert any(e.kind == "baseline:heart_rate" for e in _drifting(before, 0.5, 100))
        patients.set_target(store, "p-1", "heart_rate", (50, 110), actor="dr-lee",
                            reason="chronic AF, rate-controlled", ts_ms=T0 + 1)
        after = PatientMonitor("p-1", patients.get_patient(store, "p-1"))
        assert not any(e.kind.startswith("baseline") for e in _drifting(after, 0.5, 100))
        a = after.evaluate(T0 + int(2.5 * 3600_000))
        assert a.bands["heart_rate"]["source"] == "override"
        [e] = audit.entries(store, action="patient.override")
        assert (e.actor, e.ts_ms, e.after["target"]) == ("dr-lee", T0 + 1, [50, 110])


def test_simulated_sepsis_first_medium_alert_within_2_minutes() -> None:
    sc = load_scenario("sepsis")
    p = VirtualWardPatient(sc, seed=5, hours=sc.duration_s / 3600 + 0.5)
    run = run_patient(p)
    [ep] = [e for e in run.episodes if e.kind == "news2"]
    assert ep.medge_medium_s is not None
    assert 0 <= ep.medge_medium_s - ep.onset_s <= 120
    assert run.medge_alerts <= 6  # rising, baseline drift, medium, high: no flapping
    # the trend's early warning comes before the ground truth reaches NEWS2 5
    rising = [t for t, ev, kind, _ in run.medge_events if kind == "news2_rising" and ev == "open"]
    assert rising and rising[0] < ep.onset_s
    opened = [kind for _, ev, kind, _ in run.medge_events if ev == "open"]
    assert len(opened) == len(set(opened))  # each kind once: one alert per episode


def test_stable_24_hours_with_noise_gives_no_alerts() -> None:
    p = VirtualWardPatient(load_scenario("stable"), seed=3, hours=24)
    run = run_patient(p)
    assert run.episodes == []
    assert (run.medge_alerts, run.medge_reminders) == (0, 0)
    assert run.threshold_alarms >= 0


def _hover(mon: PatientMonitor, minutes: int, rr_of_minute, oxygen: bool = True) -> list:
    mon.add_observation("consciousness", "A", T0)
    mon.add_observation("oxygen", oxygen, T0)
    mon.add_bp(T0, 130)
    events = []
    for s in range(0, minutes * 60, 5):
        t = T0 + s * 1000
        if s % 1800 == 0:
            mon.add_bp(t, 130)
        mon.add_vitals(t, pulse=80, resp_rate=rr_of_minute(s // 60), spo2=96,
                       temperature=36.8)
        events += mon.evaluate(t).events
    return events


def test_a_score_hovering_at_the_trigger_gives_one_alert() -> None:
    # oxygen 2 + SpO2 96 on scale 1 (0) + RR alternating 24 (2) and 25 (3) every 20 min:
    # NEWS2 4, 5, 4, 5 ... for 4 h
    mon = monitor()
    events = _hover(mon, 240, lambda m: 25 if (m // 20) % 2 else 24)
    opened = [e for e in events if e.event is EventKind.OPEN]
    assert [(e.kind, e.severity) for e in opened] == [("news2", "medium")]
    assert not [e for e in events if e.event is EventKind.RESOLVE]


def test_a_brief_single_parameter_excursion_opens_nothing() -> None:
    mon = monitor()
    # RR 7 (3 points) for 60 s, once: under the 2 min a low-medium alert needs
    events = _hover(mon, 30, lambda m: 7 if 10 <= m < 11 else 16, oxygen=False)
    assert [e for e in events if e.event is EventKind.OPEN] == []
    mon = monitor()
    events = _hover(mon, 30, lambda m: 7 if 10 <= m < 14 else 16, oxygen=False)
    assert [(e.kind, e.severity) for e in events if e.event is EventKind.OPEN] == [
        ("news2", "low-medium")]


def _crawl_across_a_band_edge(seed: int, minutes: int = 90) -> tuple[Episode, list]:
    """On oxygen (2 points) with RR 22 (2): NEWS2 4; the true SpO2 falls 96.8 -> 94.4 %
    over 90 min (1.6 %/h) and is charted 95 (1 point: NEWS2 5) from 48.8 min; the
    device reads whole percent with autocorrelated noise (sd 0.8 %, 20 s), every 5 s,
    as in make eval-alerts (whose episode scoring this uses)."""
    import math
    import random

    from host.eval_alerts import ACK_AFTER_S, ThresholdMonitor, _score
    from host.services.advice import news2 as n2

    r = random.Random(seed)
    mon = monitor()
    mon.add_observation("consciousness", "A", T0)
    mon.add_observation("oxygen", True, T0)
    ep, thr, events, acks = Episode("news2", 0.0, minutes * 60.0), ThresholdMonitor(), [], []
    noise, a = r.gauss(0, 1), math.exp(-5 / 20)
    for s in range(0, minutes * 60, 5):
        t = T0 + s * 1000
        if s % 900 == 0:
            mon.add_bp(t, 130)
        true = 96.8 - 2.4 * s / (minutes * 60)
        if ep.onset_s == 0.0 and n2.chart_value("spo2", true) <= 95:
            ep.onset_s = float(s)
        noise = a * noise + math.sqrt(1 - a * a) * r.gauss(0, 1)
        mon.add_vitals(t, pulse=80, resp_rate=22, spo2=float(round(true + 0.8 * noise)),
                       temperature=37.0)
        now = mon.evaluate(t).events
        events += now
        acks += [(s + ACK_AFTER_S, e.kind) for e in now if e.event is EventKind.OPEN]
        while acks and acks[0][0] <= s:
            mon.tracker.ack(acks.pop(0)[1], t, "nurse")
        if ep.onset_s > 0:
            _score([ep], float(s), mon, thr)
    return ep, events


def test_band_edge_noise_on_a_rising_news2_one_medium_alert_in_time() -> None:
    """The acceptance's 2 minutes, where it is hardest: the parameter that takes NEWS2
    to 5 creeps across its band edge inside the device's noise.  The score touches 5
    on noise before the truth does; the medium alert then opens and is held open
    (deadband): one alert, open when the truth reaches 5.  The smoothed score itself
    may lag by minutes (seed 9: 165 s); the eval times the alert (host/eval_alerts.py)."""
    lags = []
    for seed in range(10):
        ep, events = _crawl_across_a_band_edge(seed)
        opened = [e for e in events if e.kind == "news2" and e.event is EventKind.OPEN]
        assert [e.severity for e in opened] == ["medium"], seed  # one alert, no flapping
        assert not [e for e in events if e.kind == "news2" and e.event is EventKind.RESOLVE]
        assert ep.medge_medium_s is not None and ep.medge_medium_s - ep.onset_s <= 120, seed
        lags.append(ep.medge_medium_score_s - ep.onset_s)
    assert max(lags) > 120  # the score's own lag at the edge: why the alert is timed


def test_a_forked_engine_is_independent_and_answers_as_a_deep_copy() -> None:
    import copy

    mon = monitor()
    _drifting(mon, 0.0, 70)  # 2 h steady: baselines, trajectory
    fork, deep = mon.fork(), copy.deepcopy(mon)
    t_end = T0 + 2 * 3600_000
    for engine in (fork, deep):
        for s in range(0, 900, 5):
            engine.add_vitals(t_end + s * 1000, pulse=140, resp_rate=26, spo2=91,
                              temperature=39.4)
            engine.evaluate(t_end + s * 1000)
    a, b = fork.evaluate(t_end + 900_000), deep.evaluate(t_end + 900_000)
    assert a.as_dict() == b.as_dict() and "news2" in fork.tracker.open
    assert mon.tracker.open == {}  # the original saw none of it
    stale = set(mon.evaluate(t_end + 900_000).news2["missing"])
    assert {"pulse", "resp_rate", "spo2", "temperature"} <= stale

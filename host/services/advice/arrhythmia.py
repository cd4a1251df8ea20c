"""Arrhythmia advice from the device's rhythm events and beat counts.

Rules (each condition carries its rationale, the numbers used and its reference;
the decisions are the clinician's):

- **Atrial fibrillation**, new (not ``chronic_af`` in the profile): medium;
  CHA2DS2-VASc and CHA2DS2-VA from the profile (:mod:`.cha2ds2`) with what each
  guideline's threshold suggests ("consider anticoagulation, for clinician
  review"); ventricular rate > 110/min adds rate control (ESC 2024: lenient
  target < 110/min).  Known AF gives advice but no alert (a stable state does not
  alarm again and again).
- **Ventricular tachycardia**: sustained (>= 30 s, or haemodynamically
  significant by the clinician's judgement) is an emergency (check for a pulse,
  Resuscitation Council UK ALS algorithm 2021); non-sustained (>= 3 beats,
  < 30 s) medium for clinician review (electrolytes, ischaemia, drugs; ESC 2022
  ventricular arrhythmia guidelines), active for :data:`RECENT_S` after the run.
- **Pause** > 3 s medium, **asystole** emergency; **bradycardia** < 40/min high,
  40-49/min low (ACC/AHA/HRS 2018 bradycardia guideline: pauses > 3 s and rates
  < 40/min while awake warrant evaluation).
- **PVC burden** over the last 5 minutes (V / all classified beats; >= 300 beats): < 1 % occasional
  (nothing), 1-10 % frequent (advice), 10-20 % high (low: assess LV function),
  >= 20 % very high (medium: risk of PVC-induced cardiomyopathy) (ESC 2022 VA
  guidelines, Zeppenfeld et al. Eur Heart J 2022;43:3997-4126).

Rhythm names are those of the device's events (contract 7): AFIB, VT, PAUSE,
ASYSTOLE, BRADY, TACHY.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from host.services.advice.alerts import Condition
from host.services.advice.cha2ds2 import REFERENCES, stroke_risk

__all__ = ["PVC_BANDS", "RECENT_S", "RhythmEvent", "arrhythmia_conditions", "pvc_burden_band"]

#: How long after its end a short event (NSVT, pause) keeps its condition active.
RECENT_S = 30 * 60
SUSTAINED_VT_S = 30
PAUSE_S = 3.0
#: (lowest burden %, band, severity or None for advice only)
PVC_BANDS = ((20.0, "very high", "medium"), (10.0, "high", "low"), (1.0, "frequent", None),
             (0.0, "occasional", None))
ESC_AF_2024 = REFERENCES["cha2ds2_va"]
ESC_VA_2022 = ("Zeppenfeld K et al. 2022 ESC Guidelines for ventricular arrhythmias and the "
               "prevention of sudden cardiac death, Eur Heart J 2022;43:3997-4126")
RCUK_ALS = "Resuscitation Council UK. Adult advanced life support guidelines, 2021"
ACC_BRADY = ("Kusumoto FM et al. 2018 ACC/AHA/HRS Guideline on the evaluation and management "
             "of patients with bradycardia and cardiac conduction delay, Circulation "
             "2019;140:e382-e482")


@dataclass(frozen=True)
class RhythmEvent:
    rhythm: str
    onset_ms: int
    offset_ms: int | None  # None: still going
    evidence: Mapping[str, Any]

    def duration_s(self, now_ms: int) -> float:
        end = now_ms if self.offset_ms is None else self.offset_ms
        return max(0.0, (end - self.onset_ms) / 1000)

    def active(self, now_ms: int, linger_s: float = 0.0) -> bool:
        if self.onset_ms > now_ms:
            return False
        return self.offset_ms is None or now_ms - self.offset_ms <= linger_s * 1000


def pvc_burden_band(percent: float) -> tuple[str, str | None]:
    for lowest, band, severity in PVC_BANDS:
        if percent >= lowest:
            return band, severity
    return "occasional", None  # pragma: no cover


def _af(profile: Mapping[str, Any], ev: RhythmEvent, now_ms: int,
        rate: float | None) -> tuple[Condition | None, str]:
    numbers: dict[str, Any] = {"onset_ms": ev.onset_ms, "duration_s": ev.duration_s(now_ms)}
    if rate is not None:
        numbers["ventricular_rate_per_min"] = round(rate)
    parts = []
    if profile.get("age") is not None and profile.get("sex") in ("female", "male") \
            and profile["age"] >= 18:
        r = stroke_risk(age=int(profile["age"]), sex=profile["sex"],
                        chf=bool(profile.get("chf")),
                        hypertension=bool(profile.get("hypertension")),
                        diabetes=bool(profile.get("diabetes")),
                        stroke=bool(profile.get("stroke")),
                        vascular=bool(profile.get("vascular")))
        numbers.update(cha2ds2_vasc=r.cha2ds2_vasc, cha2ds2_va=r.cha2ds2_va,
                       breakdown=r.points)
        parts.append(f"CHA2DS2-VASc {r.cha2ds2_vasc} ({r.advice_vasc}); CHA2DS2-VA "
                     f"{r.cha2ds2_va} (ESC 2024: {r.advice_va})")
    else:
        parts.append("stroke risk needs the patient's age and sex (medge patient add)")
    if rate is not None and rate > 110:
        parts.append(f"ventricular rate {round(rate)}/min > 110: consider rate control "
                     "(ESC 2024 lenient target < 110/min), for clinician review")
    if profile.get("chronic_af"):
        return None, "Known atrial fibrillation (profile): no new alert. " + "; ".join(parts)
    text = "New atrial fibrillation. " + "; ".join(parts)
    return Condition("af", "medium", text,
                     "AF detected by the device's rhythm analysis; stroke risk from the "
                     "profile", numbers, ESC_AF_2024), text


def arrhythmia_conditions(profile: Mapping[str, Any], events: Sequence[RhythmEvent],
                          now_ms: int, *, heart_rate: float | None = None,
                          pvc_percent: float | None = None, beats: int = 0
                          ) -> tuple[list[Condition], list[str]]:
    """The conditions that hold now, and the advice lines (including advice that
    raises no alert, e.g. known AF or a frequent-PVC burden)."""
    conditions: list[Condition] = []
    advice: list[str] = []
    by_kind: dict[str, Condition] = {}

    def keep(c: Condition) -> None:
        from host.services.advice.alerts import rank

        old = by_kind.get(c.kind)
        if old is None or rank(c.severity) > rank(old.severity):
            by_kind[c.kind] = c

    for ev in events:
        r = ev.rhythm.upper()
        if r == "AFIB" and ev.active(now_ms, 60):
            cond, text = _af(profile, ev, now_ms, heart_rate)
            advice.append(text)
            if cond is not None:
                keep(cond)
        elif r == "VT" and ev.active(now_ms, RECENT_S):
            dur = ev.duration_s(now_ms)
            rate = ev.evidence.get("rate_bpm")
            nums = {"onset_ms": ev.onset_ms, "duration_s": round(dur, 1), "rate_bpm": rate,
                    "beats": ev.evidence.get("beats")}
            sustained = dur >= SUSTAINED_VT_S or bool(ev.evidence.get("sustained"))
            if sustained and ev.active(now_ms, 60):
                keep(Condition("vt", "emergency",
                               f"Sustained ventricular tachycardia ({dur:.0f} s): emergency "
                               "response; check for a pulse and follow the ALS algorithm",
                               "VT >= 30 s", nums, RCUK_ALS))
            else:
                keep(Condition("vt", "medium",
                               "Non-sustained ventricular tachycardia: for clinician review "
                               "(potassium, magnesium, ischaemia, QT-prolonging drugs)",
                               ">= 3 ventricular beats > 100/min, < 30 s", nums, ESC_VA_2022))
        elif r == "ASYSTOLE" and ev.active(now_ms, RECENT_S):
            keep(Condition("pause", "emergency", "Asystole: emergency response (check the "
                           "patient: lead-off also looks flat)", "no beats",
                           {"onset_ms": ev.onset_ms}, RCUK_ALS))
        elif r == "PAUSE" and ev.active(now_ms, RECENT_S):
            gap_ms = ev.evidence.get("gap_ms")
            dur = float(ev.evidence.get("pause_s") or (gap_ms / 1000 if gap_ms else 0)
                        or ev.duration_s(now_ms))
            if dur > PAUSE_S:
                keep(Condition("pause", "medium", f"Pause of {dur:.1f} s (> 3 s): for "
                               "clinician review (conduction disease, drugs)",
                               "RR gap > 3 s", {"pause_s": dur, "onset_ms": ev.onset_ms},
                               ACC_BRADY))
            else:
                advice.append(f"Pause of {dur:.1f} s (2-3 s): note, no alert")
        elif r == "BRADY" and ev.active(now_ms):
            rate = ev.evidence.get("rate_bpm") or heart_rate
            if rate is not None and rate < 40:
                keep(Condition("brady", "high", f"Bradycardia {rate:.0f}/min (< 40): urgent "
                               "review; assess for adverse features", "rate < 40/min",
                               {"rate_bpm": rate}, ACC_BRADY))
            elif rate is not None and rate < 50:
                keep(Condition("brady", "low", f"Bradycardia {rate:.0f}/min: review "
                               "medication (beta-blockers, rate control), for clinician "
                               "review", "rate 40-49/min", {"rate_bpm": rate}, ACC_BRADY))
    if pvc_percent is not None:
        band, severity = pvc_burden_band(pvc_percent)
        nums = {"pvc_burden_percent": round(pvc_percent, 2), "beats": beats, "band": band}
        if severity is not None:
            keep(Condition("pvc_burden", severity,
                           f"PVC burden {pvc_percent:.1f} % over the last 5 min ({band}): "
                           "assess left-ventricular function (echocardiogram), electrolytes; "
                           "for clinician review", "V beats / all beats, 5 min", nums,
                           ESC_VA_2022))
        elif band == "frequent":
            advice.append(f"PVC burden {pvc_percent:.1f} % (frequent, < 10 %): note")
    conditions.extend(by_kind.values())
    return conditions, advice

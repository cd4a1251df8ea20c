"""NEWS2, the National Early Warning Score 2, exactly as the Royal College of
Physicians published it (2017).

Reference: Royal College of Physicians. National Early Warning Score (NEWS) 2:
Standardising the assessment of acute-illness severity in the NHS. Updated
report of a working party. London: RCP, 2017.  Chart 1 (the scoring system),
chart 3 (clinical risk) and chart 4 (clinical response to the trigger thresholds).

Method.  Seven parameters, each scored 0-3 from chart 1's bands:

=================  ====  =======  =======  ========  =======  =======  =====
parameter           3      2        1         0        1        2       3
=================  ====  =======  =======  ========  =======  =======  =====
respiration /min   <=8            9-11     12-20              21-24    >=25
SpO2 scale 1 %     <=91  92-93    94-95    >=96
SpO2 scale 2 %     <=83  84-85    86-87    88-92,    93-94    95-96    >=97
                                           >=93 air  on O2    on O2    on O2
air or oxygen            oxygen            air
systolic mmHg      <=90  91-100   101-110  111-219                     >=220
pulse /min         <=40           41-50    51-90     91-110   111-130  >=131
consciousness                              alert                       CVPU
temperature C      <=35.0         35.1-36  36.1-38   38.1-39  >=39.1
=================  ====  =======  =======  ========  =======  =======  =====

The chart's values are whole numbers (temperature in tenths of a degree), so a
measured value is first rounded half up to that resolution (a monitor's
20.6 /min is charted as 21), then looked up.  Scale 2 is for patients with
hypercapnic respiratory failure and a prescribed SpO2 target of 88-92 %; the
caller decides (a clinician's prescription, :func:`scale_for_profile`).
Consciousness is ACVPU: new confusion (C), voice, pain, unresponsive all score 3.

Aggregate: the sum (0-20).  Clinical risk (chart 3): 0-4 low; a score of 3 in
any single parameter with an aggregate of 0-4 low-medium; 5-6 medium; >= 7
high.  Monitoring and response: chart 4 (:data:`RESPONSES`).

Incomplete data.  A parameter that is missing (not measured, stale or
unreliable) is never scored as normal: it is listed in ``missing``, scores
nothing, and the aggregate and risk are then only a lower bound
(``lower_bound``); ``score_max`` is what the score could be at most.  On scale
2 an unknown air/oxygen status makes an SpO2 >= 93 % ambiguous (0 on air, 1-3
on oxygen): scored as on air, the lower bound.

Known limits.  NEWS2 is for adults (>= 16 years), not for pregnancy or
children; the RCP says clinical judgement overrides the score.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = ["BANDS", "PARAMETERS", "RANGES", "REFERENCE", "RESPONSES", "Inputs", "News2",
           "Risk", "band_score", "chart_value", "news2", "risk_for", "scale_for_profile"]

REFERENCE = ("Royal College of Physicians. National Early Warning Score (NEWS) 2: "
             "Standardising the assessment of acute-illness severity in the NHS. "
             "London: RCP, 2017 (charts 1, 3 and 4)")

#: The parameters, in chart order; these names key ``sub_scores`` and ``values``.
PARAMETERS = ("resp_rate", "spo2", "air_or_oxygen", "systolic", "pulse", "consciousness",
              "temperature")

#: Chart units: each value is looked up as an integer count of this many units
#: (temperature in tenths of a degree).
_TENTHS = 10
#: Bands: (highest value of the band, inclusive, in chart units; its score), rising;
#: the last band has no upper end (None).
BANDS: dict[str, tuple[tuple[int | None, int], ...]] = {
    "resp_rate": ((8, 3), (11, 1), (20, 0), (24, 2), (None, 3)),
    "spo2_scale1": ((91, 3), (93, 2), (95, 1), (None, 0)),
    # Scale 2: below 93 % the same on air and on oxygen; from 93 % it depends.
    "spo2_scale2": ((83, 3), (85, 2), (87, 1), (92, 0), (None, 0)),
    "spo2_scale2_oxygen": ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (None, 3)),
    "systolic": ((90, 3), (100, 2), (110, 1), (219, 0), (None, 3)),
    "pulse": ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (None, 3)),
    "temperature": ((350, 3), (360, 1), (380, 0), (390, 1), (None, 2)),
}
#: Points for supplemental oxygen (chart 1: oxygen 2, air 0).
OXYGEN_POINTS = 2
#: ACVPU letters; only A (alert) scores 0.
CONSCIOUSNESS = ("A", "C", "V", "P", "U")
CONSCIOUSNESS_NAMES = {"A": "alert", "C": "new confusion", "V": "responds to voice",
                       "P": "responds to pain", "U": "unresponsive"}
#: The largest sub-score of each parameter (``score_max`` of incomplete data).
MAX_POINTS = {"resp_rate": 3, "spo2": 3, "air_or_oxygen": OXYGEN_POINTS, "systolic": 3,
              "pulse": 3, "consciousness": 3, "temperature": 3}

#: Plausible values accepted as input (outside: refused as a measurement error), and units.
RANGES: dict[str, tuple[float, float, str]] = {
    "resp_rate": (0, 80, "/min"),
    "spo2": (40, 100, "%"),
    "systolic": (30, 300, "mmHg"),
    "pulse": (0, 300, "/min"),
    "temperature": (25.0, 45.0, "C"),
}


class Risk(str, Enum):
    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


#: Chart 4: (minimum monitoring frequency, clinical response) per trigger.
RESPONSES: dict[str, tuple[str, str]] = {
    "0": ("minimum 12-hourly", "Continue routine NEWS monitoring."),
    "1-4": ("minimum 4-6-hourly",
            "Inform the registered nurse, who must assess the patient; the registered nurse "
            "decides whether increased frequency of monitoring and/or escalation of care is "
            "required."),
    "3 in single parameter": (
        "minimum 1-hourly",
        "Registered nurse to inform the medical team caring for the patient, who will review "
        "and decide whether escalation of care is necessary."),
    "5 or more": (
        "minimum 1-hourly",
        "Urgent response: registered nurse to immediately inform the medical team caring for "
        "the patient; registered nurse to request urgent assessment by a clinician or team "
        "with core competencies in the care of acutely ill patients; provide clinical care "
        "in an environment with monitoring facilities."),
    "7 or more": (
        "continuous monitoring of vital signs",
        "Emergency response: registered nurse to immediately inform the medical team caring "
        "for the patient (at least at specialist registrar level); emergency assessment by a "
        "team with critical care competencies, including practitioner(s) with advanced "
        "airway management skills; consider transfer of care to a level 2 or 3 clinical "
        "care facility (higher-dependency unit or ICU); clinical care in an environment "
        "with monitoring facilities."),
}


@dataclass(frozen=True)
class Inputs:
    """One set of observations; None: not available (missing, stale or unreliable).

    ``oxygen``: True on supplemental oxygen, False on air, None unknown.
    ``consciousness``: one ACVPU letter.  ``scale``: the SpO2 scale, 1 or 2."""

    resp_rate: float | None = None
    spo2: float | None = None
    oxygen: bool | None = None
    systolic: float | None = None
    pulse: float | None = None
    consciousness: str | None = None
    temperature: float | None = None
    scale: int = 1

    def checked(self) -> Inputs:
        """Raise ValueError naming the first field that is out of range or not a number."""
        for name, (lo, hi, unit) in RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            if not lo <= value <= hi:  # also refuses NaN
                raise ValueError(f"{name}: expected {lo:g} to {hi:g} {unit}, got {value!r}")
        if self.consciousness is not None and self.consciousness not in CONSCIOUSNESS:
            raise ValueError(f"consciousness: expected one of A, C, V, P, U (ACVPU), "
                             f"got {self.consciousness!r}")
        if self.scale not in (1, 2):
            raise ValueError(f"scale: expected 1 or 2, got {self.scale!r}")
        if self.oxygen is not None and not isinstance(self.oxygen, bool):
            raise ValueError(f"oxygen: expected true or false, got {self.oxygen!r}")
        return self


@dataclass(frozen=True)
class News2:
    score: int
    risk: Risk
    sub_scores: dict[str, int | None]
    values: dict[str, Any]
    scale: int
    missing: tuple[str, ...]
    red_parameters: tuple[str, ...]  # parameters that scored 3
    score_max: int

    @property
    def lower_bound(self) -> bool:
        return bool(self.missing)

    @property
    def trigger(self) -> str:
        return trigger_for(self.score, bool(self.red_parameters))

    def as_dict(self) -> dict[str, Any]:
        monitoring, response = RESPONSES[self.trigger]
        doc: dict[str, Any] = {
            "score": self.score, "risk": self.risk.value, "sub_scores": dict(self.sub_scores),
            "values": dict(self.values), "scale": self.scale,
            "single_parameter_3": list(self.red_parameters),
            "trigger": self.trigger, "monitoring": monitoring, "response": response,
            "missing": list(self.missing), "lower_bound": self.lower_bound,
            "score_max": self.score_max, "reference": REFERENCE,
        }
        if self.missing:
            doc["note"] = (f"incomplete: {', '.join(self.missing)} not available (not scored "
                           f"as normal); the score is a lower bound (at most {self.score_max})")
        return doc


def chart_value(name: str, value: float) -> int:
    """``value`` in the chart's units (whole numbers; temperature in tenths of a
    degree), rounded half up as a person reading the monitor would chart it.
    Decimal on the value's shortest repr: 36.05 C is 361 tenths (36.05 * 10 in
    binary floating point is 360.4999...)."""
    from decimal import ROUND_HALF_UP, Decimal

    scale = _TENTHS if name == "temperature" else 1
    if scale == 1 and float(value).is_integer():
        return int(value)  # the common case, exact without Decimal
    return int((Decimal(repr(float(value))) * scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def band_score(table: str, chart: int) -> int:
    """The score of the band of ``BANDS[table]`` that holds ``chart`` (chart units)."""
    for top, points in BANDS[table]:
        if top is None or chart <= top:
            return points
    raise AssertionError("the last band is open")  # pragma: no cover


def risk_for(score: int, single_3: bool) -> Risk:
    """Chart 3: the clinical risk of an aggregate score."""
    if score >= 7:
        return Risk.HIGH
    if score >= 5:
        return Risk.MEDIUM
    return Risk.LOW_MEDIUM if single_3 else Risk.LOW


def trigger_for(score: int, single_3: bool) -> str:
    """The row of chart 4 that applies."""
    if score >= 7:
        return "7 or more"
    if score >= 5:
        return "5 or more"
    if single_3:
        return "3 in single parameter"
    return "0" if score == 0 else "1-4"


def scale_for_profile(profile: Mapping[str, Any]) -> int:
    """SpO2 scale 2 only for a patient whose profile records hypercapnic
    respiratory failure with a prescribed SpO2 target of 88-92 %; else scale 1."""
    target = profile.get("spo2_target")
    if profile.get("hypercapnic") and target is not None and list(target) == [88, 92]:
        return 2
    return 1


def news2(inputs: Inputs) -> News2:
    """Score one set of observations (raises ValueError on out-of-range input)."""
    x = inputs.checked()
    sub: dict[str, int | None] = {}
    values: dict[str, Any] = {}
    for name in ("resp_rate", "systolic", "pulse", "temperature"):
        v = getattr(x, name)
        values[name] = v
        sub[name] = None if v is None else band_score(name, chart_value(name, v))
    values["spo2"] = x.spo2
    values["air_or_oxygen"] = None if x.oxygen is None else ("oxygen" if x.oxygen else "air")
    values["consciousness"] = x.consciousness
    if x.spo2 is None:
        sub["spo2"] = None
    else:
        table = "spo2_scale1" if x.scale == 1 else (
            "spo2_scale2_oxygen" if x.oxygen else "spo2_scale2")
        sub["spo2"] = band_score(table, chart_value("spo2", x.spo2))
    sub["air_or_oxygen"] = None if x.oxygen is None else (OXYGEN_POINTS if x.oxygen else 0)
    sub["consciousness"] = (None if x.consciousness is None
                            else (0 if x.consciousness == "A" else 3))
    ordered = {name: sub[name] for name in PARAMETERS}
    missing = tuple(name for name in PARAMETERS if ordered[name] is None)
    score = sum(v for v in ordered.values() if v is not None)
    score_max = score + sum(MAX_POINTS[m] for m in missing)
    if x.scale == 2 and x.oxygen is None and x.spo2 is not None \
            and chart_value("spo2", x.spo2) >= 93:
        score_max += 3  # on oxygen it could score up to 3 instead of 0
    red = tuple(name for name, v in ordered.items() if v == 3)
    return News2(score=score, risk=risk_for(score, bool(red)), sub_scores=ordered,
                 values={name: values[name] for name in PARAMETERS}, scale=x.scale,
                 missing=missing, red_parameters=red, score_max=min(score_max, 20))

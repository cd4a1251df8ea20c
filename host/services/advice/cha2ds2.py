"""Stroke risk in atrial fibrillation: CHA2DS2-VASc and the ESC 2024 CHA2DS2-VA.

CHA2DS2-VASc (Lip GYH et al. Chest 2010;137:263-272): congestive heart failure 1,
hypertension 1, age >= 75 years 2, diabetes 1, prior stroke/TIA/thromboembolism 2,
vascular disease (prior myocardial infarction, peripheral artery disease, aortic
plaque) 1, age 65-74 years 1, sex category female 1 (0-9).

CHA2DS2-VA (Van Gelder IC et al. 2024 ESC Guidelines for the management of atrial
fibrillation. Eur Heart J 2024;45:3314-3414): the same items without the sex
category (0-8), because female sex is a risk modifier rather than a risk factor.

What each guideline's thresholds suggest (for clinician review: the decision
weighs bleeding risk, preferences and contraindications this score does not see):

- ESC 2024, CHA2DS2-VA: >= 2 oral anticoagulation recommended (class I); 1 should
  be considered (class IIa); 0 not indicated for stroke prevention.
- CHA2DS2-VASc (ESC 2020 / ACC/AHA/ACCP/HRS 2023): >= 2 in men or >= 3 in women
  recommended; 1 in men or 2 in women should be considered; 0 (men) or 1
  (women) not indicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AGE_RANGE", "REFERENCES", "StrokeRisk", "stroke_risk"]

#: Ages accepted (years): the scores are validated in adults.
AGE_RANGE = (18, 120)
SEXES = ("female", "male")
REFERENCES = {
    "cha2ds2_vasc": "Lip GYH et al. Chest 2010;137:263-272; thresholds: Hindricks G et al. "
                    "2020 ESC AF guidelines, Eur Heart J 2021;42:373-498",
    "cha2ds2_va": "Van Gelder IC et al. 2024 ESC Guidelines for the management of atrial "
                  "fibrillation, Eur Heart J 2024;45:3314-3414",
}
_REVIEW = "for clinician review (weigh bleeding risk and contraindications)"


@dataclass(frozen=True)
class StrokeRisk:
    cha2ds2_vasc: int
    cha2ds2_va: int
    points: dict[str, int]  # item -> points (CHA2DS2-VASc items; sex_female only in VASc)
    inputs: dict[str, Any]
    advice_vasc: str
    advice_va: str

    def as_dict(self) -> dict[str, Any]:
        va_points = {k: v for k, v in self.points.items() if k != "sex_female"}
        return {
            "cha2ds2_vasc": self.cha2ds2_vasc, "cha2ds2_va": self.cha2ds2_va,
            "points": dict(self.points),
            "breakdown": {"cha2ds2_vasc": dict(self.points), "cha2ds2_va": va_points},
            "inputs": dict(self.inputs),
            "advice": {"cha2ds2_vasc": self.advice_vasc, "cha2ds2_va": self.advice_va},
            "references": dict(REFERENCES),
        }


def _suggest(score: int, recommend_at: int) -> str:
    if score >= recommend_at:
        return f"oral anticoagulation recommended: consider anticoagulation, {_REVIEW}"
    if score == recommend_at - 1:
        return f"oral anticoagulation should be considered: {_REVIEW}"
    return "oral anticoagulation not indicated for stroke prevention by this score"


def stroke_risk(*, age: int, sex: str, chf: bool = False, hypertension: bool = False,
                diabetes: bool = False, stroke: bool = False, vascular: bool = False
                ) -> StrokeRisk:
    """Both scores with their breakdown; ValueError names a bad ``age`` or ``sex``."""
    if isinstance(age, bool) or not isinstance(age, int) \
            or not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
        raise ValueError(f"age: expected a whole number of years from {AGE_RANGE[0]} to "
                         f"{AGE_RANGE[1]}, got {age!r}")
    if sex not in SEXES:
        raise ValueError(f"sex: expected female or male, got {sex!r}")
    points = {
        "chf": int(bool(chf)),
        "hypertension": int(bool(hypertension)),
        "age_75_or_over": 2 if age >= 75 else 0,
        "diabetes": int(bool(diabetes)),
        "stroke_tia_thromboembolism": 2 if stroke else 0,
        "vascular_disease": int(bool(vascular)),
        "age_65_to_74": 1 if 65 <= age <= 74 else 0,
        "sex_female": 1 if sex == "female" else 0,
    }
    vasc = sum(points.values())
    va = vasc - points["sex_female"]
    inputs = {"age": age, "sex": sex, "chf": bool(chf), "hypertension": bool(hypertension),
              "diabetes": bool(diabetes), "stroke": bool(stroke), "vascular": bool(vascular)}
    return StrokeRisk(vasc, va, points, inputs,
                      advice_vasc=_suggest(vasc, 3 if sex == "female" else 2),
                      advice_va=_suggest(va, 2))

"""CHA2DS2-VASc and the ESC 2024 CHA2DS2-VA (contract 10)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.cli import main
from host.services.advice.cha2ds2 import stroke_risk


def test_78_year_old_woman_with_hypertension(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "cha2ds2-vasc", "--age", "78", "--sex", "female", "--hypertension",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["cha2ds2_vasc"], doc["cha2ds2_va"]) == (4, 3)
    assert doc["points"] == {"chf": 0, "hypertension": 1, "age_75_or_over": 2, "diabetes": 0,
                             "stroke_tia_thromboembolism": 0, "vascular_disease": 0,
                             "age_65_to_74": 0, "sex_female": 1}
    assert "sex_female" not in doc["breakdown"]["cha2ds2_va"]
    assert sum(doc["breakdown"]["cha2ds2_va"].values()) == 3
    assert doc["advice"]["cha2ds2_va"].startswith("oral anticoagulation recommended")
    assert "for clinician review" in doc["advice"]["cha2ds2_va"]


@pytest.mark.parametrize("age,sex,flags,vasc,va", [
    (40, "male", {}, 0, 0), (40, "female", {}, 1, 0), (64, "male", {}, 0, 0),
    (65, "male", {}, 1, 1), (74, "female", {}, 2, 1), (75, "male", {}, 2, 2),
    (90, "female", dict(chf=True, hypertension=True, diabetes=True, stroke=True,
                        vascular=True), 9, 8),
    (50, "male", dict(stroke=True), 2, 2), (50, "male", dict(vascular=True), 1, 1),
])
def test_each_item(age: int, sex: str, flags: dict, vasc: int, va: int) -> None:
    r = stroke_risk(age=age, sex=sex, **flags)
    assert (r.cha2ds2_vasc, r.cha2ds2_va) == (vasc, va)


@pytest.mark.parametrize("sex,score,advice", [
    ("male", 1, "should be considered"), ("male", 2, "recommended"),
    ("female", 2, "should be considered"), ("female", 3, "recommended"),
    ("female", 1, "not indicated"), ("male", 0, "not indicated")])
def test_vasc_thresholds_differ_by_sex(sex: str, score: int, advice: str) -> None:
    flags = [dict(), dict(hypertension=True), dict(hypertension=True, diabetes=True)]
    base = 1 if sex == "female" else 0
    r = stroke_risk(age=50, sex=sex, **flags[score - base])
    assert r.cha2ds2_vasc == score
    assert advice in r.advice_vasc


@given(age=st.integers(18, 120), sex=st.sampled_from(["female", "male"]),
       items=st.lists(st.booleans(), min_size=5, max_size=5))
def test_va_is_vasc_without_the_sex_point(age: int, sex: str, items: list[bool]) -> None:
    chf, htn, dm, stroke, vasc = items
    r = stroke_risk(age=age, sex=sex, chf=chf, hypertension=htn, diabetes=dm, stroke=stroke,
                    vascular=vasc)
    assert r.cha2ds2_vasc - r.cha2ds2_va == (sex == "female")
    assert r.cha2ds2_vasc == sum(r.points.values())
    assert 0 <= r.cha2ds2_va <= 8 and 0 <= r.cha2ds2_vasc <= 9


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["score", "cha2ds2-vasc", "--age", "70", "--sex", "male"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("CHA2DS2-VASc 1: ")


@pytest.mark.parametrize("argv,field", [
    (["--age", "abc", "--sex", "male"], "--age"), (["--age", "12", "--sex", "male"], "--age"),
    (["--age", "70", "--sex", "x"], "--sex"), (["--sex", "male"], "--age")])
def test_bad_input_exits_2(argv: list[str], field: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    from test_news2 import refused

    code, lines = refused(capsys, ["score", "cha2ds2-vasc", *argv])
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("medge score cha2ds2-vasc: ") \
        and field in lines[0]

"""NEWS2 (contract 4) against the Royal College of Physicians' chart 1 (2017).

The chart is transcribed below as its printed text ("<=8", "9-11", ">=25"), read
by this test's own parser, independent of host.services.advice.news2's band
tables: every band edge of every parameter on both SpO2 scales is checked at,
below and above the boundary, and hypothesis checks every value in the
plausible range against the transcription.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.cli import main
from host.services.advice.news2 import RANGES, Inputs, Risk, news2, scale_for_profile

MEDGE = str(Path(sys.executable).with_name("medge"))

# Chart 1 as printed: parameter -> [(score, band text)], temperature in degrees C.
CHART = {
    "resp_rate": [(3, "<=8"), (1, "9-11"), (0, "12-20"), (2, "21-24"), (3, ">=25")],
    "spo2_scale1": [(3, "<=91"), (2, "92-93"), (1, "94-95"), (0, ">=96")],
    "spo2_scale2_air": [(3, "<=83"), (2, "84-85"), (1, "86-87"), (0, "88-92"), (0, ">=93")],
    "spo2_scale2_oxygen": [(3, "<=83"), (2, "84-85"), (1, "86-87"), (0, "88-92"),
                           (1, "93-94"), (2, "95-96"), (3, ">=97")],
    "systolic": [(3, "<=90"), (2, "91-100"), (1, "101-110"), (0, "111-219"), (3, ">=220")],
    "pulse": [(3, "<=40"), (1, "41-50"), (0, "51-90"), (1, "91-110"), (2, "111-130"),
              (3, ">=131")],
    "temperature": [(3, "<=35.0"), (1, "35.1-36.0"), (0, "36.1-38.0"), (1, "38.1-39.0"),
                    (2, ">=39.1")],
}
#: Chart resolution of each parameter (temperature: 0.1 C).
STEP = {"temperature": 0.1}


def chart_score(table: str, value: float) -> int:
    """Look ``value`` (already at chart resolution) up in the printed bands."""
    for points, text in CHART[table]:
        m = re.fullmatch(r"(<=|>=)?([\d.]+)(?:-([\d.]+))?", text)
        assert m is not None
        op, a, b = m.group(1), float(m.group(2)), m.group(3)
        if (op == "<=" and value <= a + 1e-9) or (op == ">=" and value >= a - 1e-9) or (
                op is None and a - 1e-9 <= value <= float(b) + 1e-9):
            return points
    raise AssertionError(f"{value} in no band of {table}")


def edges(table: str) -> list[float]:
    """Each band boundary of the printed chart: its values and the steps either side."""
    step = STEP.get(table, 1)
    out = set()
    for _, text in CHART[table]:
        for number in re.findall(r"[\d.]+", text):
            v = float(number)
            out.update({round(v - step, 1), v, round(v + step, 1)})
    return sorted(out)


def scored(table: str, value: float) -> int:
    """The sub-score the implementation gives ``value`` for ``table``."""
    full = dict(resp_rate=16, spo2=97, oxygen=False, systolic=120, pulse=70,
                consciousness="A", temperature=37.0, scale=1)
    if table.startswith("spo2"):
        full["spo2"] = value
        full["scale"] = 1 if table == "spo2_scale1" else 2
        full["oxygen"] = table.endswith("oxygen")
        return news2(Inputs(**full)).sub_scores["spo2"]
    full[table] = value
    return news2(Inputs(**full)).sub_scores[table]


def _in_range(table: str, v: float) -> bool:
    name = "spo2" if table.startswith("spo2") else table
    lo, hi, _ = RANGES[name]
    return lo <= v <= hi


@pytest.mark.parametrize("table", sorted(CHART))
def test_every_band_edge_at_below_and_above(table: str) -> None:
    checked = [(v, scored(table, v), chart_score(table, v))
               for v in edges(table) if _in_range(table, v)]
    printed = {float(n) for _, text in CHART[table] for n in re.findall(r"[\d.]+", text)}
    assert printed <= {v for v, _, _ in checked}
    assert [(v, got) for v, got, _ in checked] == [(v, want) for v, _, want in checked]


@pytest.mark.parametrize("table", sorted(set(CHART) - {"temperature"}))
@given(data=st.data())
def test_every_whole_value_matches_the_chart(table: str, data: st.DataObject) -> None:
    name = "spo2" if table.startswith("spo2") else table
    lo, hi, _ = RANGES[name]
    v = data.draw(st.integers(int(lo), int(hi)))
    assert scored(table, v) == chart_score(table, v)


@given(tenths=st.integers(250, 450))
def test_every_temperature_tenth_matches_the_chart(tenths: int) -> None:
    v = tenths / 10
    assert scored("temperature", v) == chart_score("temperature", v)


@given(v=st.floats(0, 80, allow_nan=False))
def test_a_measured_value_is_charted_rounded_half_up(v: float) -> None:
    from decimal import ROUND_HALF_UP, Decimal

    charted = int(Decimal(repr(v)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert scored("resp_rate", v) == chart_score("resp_rate", charted)


@pytest.mark.parametrize("table,v", [("temperature", 36.05), ("temperature", 38.04),
                                     ("resp_rate", 20.5), ("pulse", 90.49)])
def test_rounding_at_the_edges(table: str, v: float) -> None:
    want = {("temperature", 36.05): 0, ("temperature", 38.04): 0, ("resp_rate", 20.5): 2,
            ("pulse", 90.49): 0}[(table, v)]
    assert scored(table, v) == want


def full(**kw) -> Inputs:
    base = dict(resp_rate=16, spo2=97, oxygen=False, systolic=120, pulse=70,
                consciousness="A", temperature=37.0)
    base.update(kw)
    return Inputs(**base)


@pytest.mark.parametrize("letter,points", [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])
def test_acvpu_new_confusion_is_not_alert(letter: str, points: int) -> None:
    r = news2(full(consciousness=letter))
    assert r.sub_scores["consciousness"] == points
    assert r.risk is (Risk.LOW if points == 0 else Risk.LOW_MEDIUM)


def test_oxygen_scores_two() -> None:
    assert news2(full(oxygen=True)).sub_scores["air_or_oxygen"] == 2
    assert news2(full(oxygen=False)).sub_scores["air_or_oxygen"] == 0


@pytest.mark.parametrize("inputs,score,risk,trigger,monitoring", [
    (full(), 0, "low", "0", "minimum 12-hourly"),
    (full(pulse=95, temperature=38.5, resp_rate=22), 4, "low", "1-4", "minimum 4-6-hourly"),
    (full(systolic=90), 3, "low-medium", "3 in single parameter", "minimum 1-hourly"),
    (full(systolic=90, pulse=95), 4, "low-medium", "3 in single parameter",
     "minimum 1-hourly"),
    (full(resp_rate=22, spo2=95, systolic=105, pulse=95), 5, "medium", "5 or more",
     "minimum 1-hourly"),
    (full(systolic=90, pulse=115, temperature=38.5), 6, "medium", "5 or more",
     "minimum 1-hourly"),
    (full(resp_rate=25, spo2=93, pulse=115), 7, "high", "7 or more",
     "continuous monitoring of vital signs"),
    (Inputs(resp_rate=30, spo2=80, oxygen=True, systolic=80, pulse=150, consciousness="U",
            temperature=34.0), 20, "high", "7 or more", "continuous monitoring of vital signs"),
])
def test_total_risk_and_response(inputs: Inputs, score: int, risk: str, trigger: str,
                                 monitoring: str) -> None:
    doc = news2(inputs).as_dict()
    assert (doc["score"], doc["risk"], doc["trigger"], doc["monitoring"]) == (
        score, risk, trigger, monitoring)
    assert doc["score"] == sum(doc["sub_scores"].values())
    assert doc["lower_bound"] is False and doc["missing"] == []


def test_the_three_in_one_parameter_rule_lists_the_parameter() -> None:
    doc = news2(full(consciousness="C")).as_dict()
    assert doc["single_parameter_3"] == ["consciousness"]
    assert "medical team" in doc["response"]


def test_missing_parameters_are_never_scored_as_normal() -> None:
    r = news2(Inputs(resp_rate=22, pulse=95))
    doc = r.as_dict()
    assert doc["missing"] == ["spo2", "air_or_oxygen", "systolic", "consciousness",
                              "temperature"]
    assert doc["sub_scores"]["spo2"] is None and doc["sub_scores"]["consciousness"] is None
    assert (doc["score"], doc["lower_bound"], doc["score_max"]) == (3, True, 3 + 3 + 2 + 3 + 3 + 3)
    assert "lower bound" in doc["note"]


def test_scale2_without_air_or_oxygen_is_a_lower_bound() -> None:
    doc = news2(Inputs(resp_rate=16, spo2=95, systolic=120, pulse=70, consciousness="A",
                       temperature=37.0, scale=2)).as_dict()
    assert (doc["score"], doc["missing"], doc["score_max"]) == (0, ["air_or_oxygen"], 5)


def test_scale2_only_for_a_prescribed_88_92_target() -> None:
    assert scale_for_profile({"hypercapnic": True, "spo2_target": [88, 92]}) == 2
    assert scale_for_profile({"hypercapnic": False, "spo2_target": [88, 92]}) == 1
    assert scale_for_profile({"copd": True}) == 1
    assert scale_for_profile({}) == 1


@pytest.mark.parametrize("kw,field", [
    (dict(resp_rate=-1), "resp_rate"), (dict(spo2=101), "spo2"), (dict(pulse=float("nan")),
                                                                  "pulse"),
    (dict(temperature="hot"), "temperature"), (dict(consciousness="X"), "consciousness"),
    (dict(scale=3), "scale")])
def test_bad_values_are_refused_naming_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        news2(full(**kw))


# -- the CLI (contract 4) ---------------------------------------------------------

ARGS = ["news2", "--resp-rate", "22", "--spo2", "95", "--air", "--systolic", "105",
        "--pulse", "95", "--consciousness", "A", "--temp", "38.5", "--json"]


def test_cli_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(ARGS) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["score"] == 6 and doc["risk"] == "medium"
    assert doc["sub_scores"] == {"resp_rate": 2, "spo2": 1, "air_or_oxygen": 0, "systolic": 1,
                                 "pulse": 1, "consciousness": 0, "temperature": 1}


def test_cli_scale2_on_oxygen(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["news2", "--resp-rate", "16", "--spo2", "97", "--scale", "2", "--oxygen",
                 "--systolic", "120", "--pulse", "70", "--consciousness", "a", "--temp",
                 "37", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["score"], doc["sub_scores"]["spo2"], doc["risk"]) == (5, 3, "medium")


def test_cli_text_names_the_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["news2", "--pulse", "120"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("NEWS2 2 (lower bound): risk low")
    assert "resp_rate      missing" in out


@pytest.mark.parametrize("argv,field", [
    (["--spo2", "abc"], "--spo2"), (["--spo2", "101"], "--spo2"),
    (["--resp-rate", "12.5"], "--resp-rate"), (["--temp", "nan"], "--temp"),
    (["--consciousness", "X"], "--consciousness"), (["--air", "--oxygen"], "--oxygen"),
    (["--scale", "3"], "--scale")])
def test_cli_bad_input_is_one_line_exit_2(argv: list[str], field: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = refused(capsys, ["news2", *argv])
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("medge news2: ") and field in lines[0]


def test_the_installed_command_refuses_in_one_line() -> None:
    proc = subprocess.run([MEDGE, "news2", "--spo2", "abc"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("medge news2: --spo2: expected a whole number from 40 to "
                                  "100 %, got 'abc'") and proc.stderr.count("\n") == 1


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, list[str]]:
    """Exit code and stderr lines of ``medge ARGV`` run in-process."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err.strip().splitlines()

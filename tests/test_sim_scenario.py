"""sim.scenario: bundled files load; bad files name the field and the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import tomllib

from sim.scenario import (
    SCENARIO_DIR,
    PiecewiseLinear,
    ScenarioError,
    list_scenarios,
    load_scenario,
    parse_scenario,
)

BASE = tomllib.loads((SCENARIO_DIR / "sepsis.toml").read_text())


def test_bundled_scenarios_load() -> None:
    names = list_scenarios()
    assert {"stable", "sepsis", "new_onset_af", "pvc_burden", "copd_oxygen"} <= set(names)
    for name in names:
        sc = load_scenario(name)
        assert sc.duration_s > 0 and sc.name
    sepsis = load_scenario("sepsis")
    hr, spo2 = sepsis.vitals["heart_rate_bpm"], sepsis.vitals["spo2_percent"]
    assert hr(21600) > hr(0) + 30 and spo2(21600) < spo2(0)
    assert sepsis.vitals["temperature_c"](21600) > 39
    copd = load_scenario("copd_oxygen")
    assert copd.patient["on_oxygen"] and copd.patient["spo2_target_percent"] == (88.0, 92.0)
    af = load_scenario("new_onset_af")
    assert af.rhythm["segments"] == [(0.0, "sinus"), (1200.0, "af")]


def test_piecewise_linear() -> None:
    f = PiecewiseLinear([(0, 10), (10, 20), (20, 0)])
    assert [f(-5), f(0), f(5), f(10), f(15), f(30)] == [10, 10, 15, 20, 10, 0]


def bad(path: list[str | int], value: object) -> dict:
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(("path", "value", "message"), [
    (["vitals", "heart_rate_bpm"], [[0, 80], [3600, 90], [1800, 100]],
     "scenario sepsis.toml: vitals.heart_rate_bpm[2]: time_s must increase"),
    (["vitals", "heart_rate_bpm"], [[0, 80], [3600, 900]],
     "vitals.heart_rate_bpm[1]: value: must be in [20, 300], got 900"),
    (["vitals", "heart_rate_bpm"], [[0, 80, 1]], "vitals.heart_rate_bpm[0]: must be a [time_s"),
    (["vitals", "spo2_percent"], "97", "vitals.spo2_percent: must be a number"),
    (["vitals", "heart_rate"], 80, "vitals.heart_rate: unknown key"),
    (["vitals", "temperature_c"], KeyError, "vitals.temperature_c: is required"),
    (["vitals", "diastolic_mmhg"], 130, "vitals.diastolic_mmhg: must stay at least 5 mmHg"),
    (["colour"], "blue", "colour: unknown key"),
    (["duration_s"], -1, "duration_s: must be in"),
    (["name"], KeyError, "name: is required"),
    (["rhythm", "segments"], [[0, "sinus"], [100, "flutter"]],
     "rhythm.segments[1]: rhythm: must be one of"),
    (["rhythm", "segments"], [[10, "af"]], "rhythm.segments[0]: the first segment must start"),
    (["rhythm", "vt_rate_bpm"], [200, 150], "rhythm.vt_rate_bpm: low (200) must not exceed"),
    (["rhythm", "events"], [{"time_s": 10, "kind": "explode"}], "rhythm.events[0].kind"),
    (["rhythm", "events"], [{"time_s": 10, "kind": "vt_run", "beets": 5}],
     "rhythm.events[0].beets: unknown key"),
    (["rhythm", "events"], [{"time_s": 1e6, "kind": "pause"}],
     "rhythm.events[0].time_s: is after the end"),
    (["noise", "weights"], {"bw": 1, "hum": 1}, "noise.weights.hum: unknown noise kind"),
    (["noise", "mains_hz"], 55, "noise.mains_hz: must be one of [50, 60]"),
    (["noise", "lead_off"], [{"time_s": 5}], "noise.lead_off[0].duration_s: is required"),
    (["patient", "on_oxygen"], 1, "patient.on_oxygen: must be true or false"),
    (["patient", "qrs_amplitude_mv"], True, "patient.qrs_amplitude_mv: must be a number"),
])
def test_errors_name_the_field(path: list, value: object, message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(bad(path, value), "sepsis.toml")
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("name = \n")
    with pytest.raises(ScenarioError, match=r"scenario broken\.toml: not valid TOML"):
        load_scenario(p)
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    p.write_text('name = "x"\nduration_s = 60\n[vitals]\nheart_rate_bpm = 70\n')
    with pytest.raises(ScenarioError, match=r"scenario broken.toml: vitals.resp_rate_bpm: is"):
        load_scenario(p)

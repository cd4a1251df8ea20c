"""Scenario files: what happens to a virtual patient, as TOML data.

A scenario (``sim/scenarios/*.toml``) gives the vital-sign trajectories, the
rhythm, ectopy and events, blood-pressure cuff interval, noise and the sizes of
the individual variation each seeded patient gets.  :func:`load_scenario` reads
and validates one; every problem raises :class:`ScenarioError` (a ValueError)
whose message names the file, the field path and the problem, e.g.
``scenario sepsis.toml: vitals.heart_rate_bpm[2]: time_s must increase``.
Unknown keys are rejected; units are in the field names.

A trajectory is a number (constant) or a list of ``[time_s, value]`` points,
``time_s`` strictly increasing: linear in between, constant before the first
and after the last point (:class:`PiecewiseLinear`).

Sections and fields (defaults in :data:`SCHEMA`): top level ``name``,
``description``, ``duration_s``; ``[patient]``, ``[variation]``, ``[vitals]``,
``[rhythm]`` with ``[[rhythm.events]]``, ``[nibp]``, ``[noise]`` with
``[[noise.lead_off]]``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ImportError:  # Python 3.10: the same parser from PyPI (the host extra pulls it in)
    import tomli as tomllib  # type: ignore[no-redef]

from firmware.params import SUPPORTED_MAINS_HZ

__all__ = ["SCENARIO_DIR", "SCHEMA", "PiecewiseLinear", "Scenario", "ScenarioError",
           "list_scenarios", "load_scenario", "parse_scenario"]

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the field."""


class PiecewiseLinear:
    """Piecewise-linear function of time through ``points`` [(time_s, value), ...]."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        self.points = [(float(t), float(v)) for t, v in points]
        self._t = [t for t, _ in self.points]
        self._v = [v for _, v in self.points]

    def __call__(self, t_s: float) -> float:
        i = bisect_right(self._t, t_s)
        if i == 0:
            return self._v[0]
        if i == len(self._t):
            return self._v[-1]
        t0, t1, v0, v1 = self._t[i - 1], self._t[i], self._v[i - 1], self._v[i]
        return v0 + (v1 - v0) * (t_s - t0) / (t1 - t0)

    def scaled(self, factor: float, offset: float = 0.0) -> PiecewiseLinear:
        return PiecewiseLinear([(t, v * factor + offset) for t, v in self.points])

    def __repr__(self) -> str:
        return f"PiecewiseLinear({self.points!r})"


# ------------------------------------------------------------------- the schema

# Field kinds: ("num", lo, hi), ("int", lo, hi), ("bool",), ("str",),
# ("choice", options), ("traj", lo, hi), ("range", lo, hi): [lo, hi] pair,
# ("segments",), ("weights",).  Each entry: name -> (kind, default); default
# None means required.
_VITALS = {
    "heart_rate_bpm": (("traj", 20.0, 300.0), None),
    "resp_rate_bpm": (("traj", 2.0, 60.0), None),
    "spo2_percent": (("traj", 50.0, 100.0), None),
    "temperature_c": (("traj", 30.0, 43.0), None),
    "systolic_mmhg": (("traj", 40.0, 260.0), None),
    "diastolic_mmhg": (("traj", 20.0, 160.0), None),
}
_PATIENT = {
    "qrs_amplitude_mv": (("num", 0.3, 5.0), 1.6),
    "hrv_std_bpm": (("num", 0.0, 10.0), 2.5),
    "on_oxygen": (("bool",), False),
    "spo2_target_percent": (("range", 70.0, 100.0), [94.0, 98.0]),
    "perfusion_index_percent": (("num", 0.05, 20.0), 2.0),
    "pulse_arrival_ms": (("num", 80.0, 500.0), 220.0),
    "pvc_multiform": (("bool",), False),
}
_VARIATION = {
    "heart_rate_percent": (("num", 0.0, 30.0), 5.0),
    "resp_rate_percent": (("num", 0.0, 30.0), 8.0),
    "spo2_percent": (("num", 0.0, 5.0), 0.7),
    "temperature_c": (("num", 0.0, 2.0), 0.2),
    "blood_pressure_percent": (("num", 0.0, 30.0), 6.0),
    "qrs_amplitude_percent": (("num", 0.0, 50.0), 15.0),
}
_RHYTHM = {
    "segments": (("segments",), [[0, "sinus"]]),
    "af_rr_cv": (("num", 0.1, 0.4), 0.21),
    "pvc_burden_percent": (("traj", 0.0, 50.0), 0.0),
    "pac_burden_percent": (("traj", 0.0, 50.0), 0.0),
    "pvc_couplet_percent": (("num", 0.0, 100.0), 10.0),
    "pvc_bigeminy_percent": (("num", 0.0, 100.0), 5.0),
    "pvc_fusion_percent": (("num", 0.0, 100.0), 3.0),
    "vt_runs_per_hour": (("num", 0.0, 120.0), 0.0),
    "vt_rate_bpm": (("range", 100.0, 300.0), [140.0, 190.0]),
    "vt_beats": (("range", 3.0, 100.0), [3, 12]),
    "pauses_per_hour": (("num", 0.0, 120.0), 0.0),
    "pause_s": (("range", 1.5, 20.0), [2.2, 3.5]),
    "events": (("events",), []),
}
_EVENT = {
    "time_s": (("num", 0.0, 1e7), None),
    "kind": (("choice", ("vt_run", "pause", "asystole", "pvc", "couplet", "pac")), None),
    "beats": (("int", 3, 1000), 8),
    "rate_bpm": (("num", 100.0, 300.0), 170.0),
    "duration_s": (("num", 1.0, 600.0), 3.0),
}
_NIBP = {
    "interval_s": (("num", 60.0, 86400.0), 900.0),
    "noise_mmhg": (("num", 0.0, 20.0), 3.0),
}
_NOISE = {
    "enabled": (("bool",), True),
    "snr_db": (("num", -10.0, 60.0), 18.0),
    "weights": (("weights",), {"bw": 1.0, "ma": 1.0, "em": 1.0}),
    "mains_hz": (("choice", SUPPORTED_MAINS_HZ), 50),
    "mains_uv": (("num", 0.0, 2000.0), 15.0),
    "resp_wander_mv": (("num", 0.0, 2.0), 0.05),
    "lead_off_per_hour": (("num", 0.0, 60.0), 0.0),
    "lead_off_s": (("range", 0.5, 600.0), [2.0, 10.0]),
    "lead_off_level": (("choice", ("rail", "zero")), "rail"),
    "lead_off": (("lead_off",), []),
}
_LEAD_OFF = {
    "time_s": (("num", 0.0, 1e7), None),
    "duration_s": (("num", 0.1, 3600.0), None),
}
_TOP = {
    "name": (("str",), None),
    "description": (("str",), ""),
    "duration_s": (("num", 1.0, 30 * 86400.0), None),
}
#: section -> field table (the top-level fields under "").
SCHEMA: dict[str, dict[str, tuple[tuple[Any, ...], Any]]] = {
    "": _TOP, "patient": _PATIENT, "variation": _VARIATION, "vitals": _VITALS,
    "rhythm": _RHYTHM, "nibp": _NIBP, "noise": _NOISE,
}
_SUB_TABLES = {"events": _EVENT, "lead_off": _LEAD_OFF}


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    source: str  # file name (for messages)
    patient: Mapping[str, Any]
    variation: Mapping[str, float]
    vitals: Mapping[str, PiecewiseLinear]
    rhythm: Mapping[str, Any]
    nibp: Mapping[str, float]
    noise: Mapping[str, Any]


class _Checker:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> ScenarioError:
        return ScenarioError(f"scenario {self.source}: {path}: {problem}")

    def number(self, path: str, value: Any, lo: float, hi: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(path, f"must be a number, got {value!r}")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise self.fail(path, f"must be in [{lo:g}, {hi:g}], got {value!r}")
        return float(value)

    def field(self, path: str, kind: tuple[Any, ...], value: Any) -> Any:
        tag = kind[0]
        if tag == "num":
            return self.number(path, value, kind[1], kind[2])
        if tag == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(path, f"must be an integer, got {value!r}")
            return int(self.number(path, value, kind[1], kind[2]))
        if tag == "bool":
            if not isinstance(value, bool):
                raise self.fail(path, f"must be true or false, got {value!r}")
            return value
        if tag == "str":
            if not isinstance(value, str):
                raise self.fail(path, f"must be a string, got {value!r}")
            return value
        if tag == "choice":
            if isinstance(value, bool) or value not in kind[1]:
                raise self.fail(path, f"must be one of {list(kind[1])}, got {value!r}")
            return value
        if tag == "range":
            if not isinstance(value, list) or len(value) != 2:
                raise self.fail(path, f"must be a [low, high] pair, got {value!r}")
            lo = self.number(f"{path}[0]", value[0], kind[1], kind[2])
            hi = self.number(f"{path}[1]", value[1], kind[1], kind[2])
            if lo > hi:
                raise self.fail(path, f"low ({lo:g}) must not exceed high ({hi:g})")
            return (lo, hi)
        if tag == "traj":
            return self.trajectory(path, value, kind[1], kind[2])
        if tag == "segments":
            return self.segments(path, value)
        if tag == "weights":
            return self.weights(path, value)
        if tag in ("events", "lead_off"):
            if not isinstance(value, list):
                raise self.fail(path, f"must be an array of tables, got {value!r}")
            return [self.table(f"{path}[{i}]", _SUB_TABLES[tag], item)
                    for i, item in enumerate(value)]
        raise self.fail(path, f"schema bug: unknown kind {tag!r}")  # pragma: no cover

    def trajectory(self, path: str, value: Any, lo: float, hi: float) -> PiecewiseLinear:
        if not isinstance(value, list):
            return PiecewiseLinear([(0.0, self.number(path, value, lo, hi))])
        if not value:
            raise self.fail(path, "needs at least one [time_s, value] point")
        points: list[tuple[float, float]] = []
        for i, point in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(point, list) or len(point) != 2:
                raise self.fail(p, f"must be a [time_s, value] pair, got {point!r}")
            t = self.number(f"{p}: time_s", point[0], 0.0, 1e7)
            if points and t <= points[-1][0]:
                raise self.fail(p, "time_s must increase")
            v = self.number(f"{p}: value", point[1], lo, hi)
            points.append((t, v))
        return PiecewiseLinear(points)

    def segments(self, path: str, value: Any) -> list[tuple[float, str]]:
        if not isinstance(value, list) or not value:
            raise self.fail(path, "must be a non-empty list of [start_s, rhythm] pairs")
        out: list[tuple[float, str]] = []
        for i, seg in enumerate(value):
            p = f"{path}[{i}]"
            if not isinstance(seg, list) or len(seg) != 2:
                raise self.fail(p, f"must be a [start_s, rhythm] pair, got {seg!r}")
            t = self.number(f"{p}: start_s", seg[0], 0.0, 1e7)
            if i == 0 and t != 0.0:
                raise self.fail(p, "the first segment must start at 0")
            if out and t <= out[-1][0]:
                raise self.fail(p, "start_s must increase")
            kind = self.field(f"{p}: rhythm", ("choice", ("sinus", "af")), seg[1])
            out.append((t, kind))
        return out

    def weights(self, path: str, value: Any) -> dict[str, float]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table of noise weights, got {value!r}")
        out = {}
        for k, v in value.items():
            if k not in ("bw", "ma", "em"):
                raise self.fail(f"{path}.{k}", "unknown noise kind (bw, ma, em)")
            out[k] = self.number(f"{path}.{k}", v, 0.0, 100.0)
        if sum(out.values()) <= 0:
            raise self.fail(path, "at least one weight must be positive")
        return out

    def table(self, path: str, spec: Mapping[str, tuple[tuple[Any, ...], Any]],
              data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(path or "(top level)", f"must be a table, got {data!r}")
        prefix = f"{path}." if path else ""
        for key in data:
            if key not in spec and not (path == "" and key in SCHEMA):
                raise self.fail(f"{prefix}{key}", "unknown key")
        out: dict[str, Any] = {}
        for key, (kind, default) in spec.items():
            if key in data:
                out[key] = self.field(f"{prefix}{key}", kind, data[key])
            elif default is None:
                raise self.fail(f"{prefix}{key}", "is required")
            else:
                out[key] = self.field(f"{prefix}{key}", kind, default)
        return out


def parse_scenario(data: Mapping[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate an already-parsed TOML document."""
    c = _Checker(source)
    top = c.table("", _TOP, dict(data))
    sections: dict[str, dict[str, Any]] = {}
    for section in ("patient", "variation", "vitals", "rhythm", "nibp", "noise"):
        if section == "vitals" and section not in data:
            raise c.fail("vitals", "is required")
        sections[section] = c.table(section, SCHEMA[section], data.get(section, {}))
    v = sections["vitals"]
    sys_t, dia_t = v["systolic_mmhg"], v["diastolic_mmhg"]
    for t in sorted({p[0] for p in sys_t.points} | {p[0] for p in dia_t.points}):
        if dia_t(t) >= sys_t(t) - 5.0:
            raise c.fail("vitals.diastolic_mmhg",
                         f"must stay at least 5 mmHg below systolic (t = {t:g} s)")
    for i, ev in enumerate(sections["rhythm"]["events"]):
        if ev["time_s"] > top["duration_s"]:
            raise c.fail(f"rhythm.events[{i}].time_s", "is after the end (duration_s)")
    return Scenario(
        name=top["name"], description=top["description"], duration_s=top["duration_s"],
        source=source, patient=sections["patient"], variation=sections["variation"],
        vitals=v, rhythm=sections["rhythm"], nibp=sections["nibp"], noise=sections["noise"],
    )


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario file, or a bundled one by name (``"sepsis"``)."""
    path = Path(path_or_name)
    if not path.suffix and not path.exists():
        path = SCENARIO_DIR / f"{path}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {path.name}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ScenarioError(f"scenario {path.name}: cannot read: {exc}") from exc
    return parse_scenario(data, path.name)


def list_scenarios() -> list[str]:
    """Names of the bundled scenarios."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


Trajectory = Callable[[float], float]

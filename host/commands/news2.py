"""``medge news2``: the NEWS2 score of one set of observations (contract 4;
host.services.advice.news2)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

from host.commands.common import add_command, add_json

NAME = "news2"


def measurement(name: str, integer: bool = False) -> Callable[[str], float]:
    """An argparse type: a number in ``news2.RANGES[name]`` (a whole number when
    ``integer``), refused with the field's range and unit."""
    from host.services.advice.news2 import RANGES  # stdlib only

    lo, hi, unit = RANGES[name]
    kind = "a whole number" if integer else "a number"
    expected = f"expected {kind} from {lo:g} to {hi:g} {unit}"

    def parse(text: str) -> float:
        try:
            value: float = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value

    parse.__name__ = name.replace("_", " ")
    return parse


def consciousness(text: str) -> str:
    """An argparse type: one ACVPU letter (case-insensitive)."""
    letter = text.strip().upper()
    if letter not in ("A", "C", "V", "P", "U"):
        raise argparse.ArgumentTypeError(
            f"expected one of A, C, V, P, U (alert, new confusion, voice, pain, "
            f"unresponsive), got {text!r}")
    return letter


consciousness.__name__ = "consciousness"


def add_observation_options(p: argparse.ArgumentParser, *, integers: bool) -> None:
    """The NEWS2 parameters as options (``news2`` and ``obs add``); each optional."""
    p.add_argument("--resp-rate", type=measurement("resp_rate", integers), metavar="N",
                   help="respiration rate, breaths/min")
    p.add_argument("--spo2", type=measurement("spo2", integers), metavar="N", help="SpO2, %%")
    air = p.add_mutually_exclusive_group()
    air.add_argument("--air", dest="oxygen", action="store_false", default=None,
                     help="breathing air")
    air.add_argument("--oxygen", dest="oxygen", action="store_true",
                     help="on supplemental oxygen")
    p.add_argument("--systolic", type=measurement("systolic", integers), metavar="N",
                   help="systolic blood pressure, mmHg")
    p.add_argument("--pulse", type=measurement("pulse", integers), metavar="N",
                   help="pulse, beats/min")
    p.add_argument("--consciousness", type=consciousness, metavar="A|C|V|P|U",
                   help="ACVPU: alert, new confusion, voice, pain, unresponsive")
    p.add_argument("--temp", type=measurement("temperature"), metavar="X",
                   help="temperature, degrees C")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="NEWS2 score of one set of observations",
        description="The National Early Warning Score 2 (Royal College of Physicians 2017) of "
        "one set of\nobservations: the sub-score of each parameter, the total, the \"3 in one "
        "parameter\" rule,\nthe clinical risk (low, low-medium, medium, high), the minimum "
        "monitoring frequency and\nthe clinical response.",
        notes="A parameter left out is listed as missing and never scored as normal: the score "
        "is then\nonly a lower bound. --scale 2 only for hypercapnic respiratory failure with "
        "a prescribed\nSpO2 target of 88-92 %. Values are charted rounded half up (temperature "
        "to 0.1 C).",
        example=["medge news2 --resp-rate 22 --spo2 95 --air --systolic 105 --pulse 95 "
                 "--consciousness A --temp 38.5 --json",
                 "medge news2 --resp-rate 24 --spo2 90 --scale 2 --oxygen --systolic 130 "
                 "--pulse 88 --consciousness A --temp 36.7"])
    add_observation_options(p, integers=True)
    p.add_argument("--scale", type=int, choices=(1, 2), default=1,
                   help="SpO2 scale (1; 2: hypercapnic respiratory failure, target 88-92 %%)")
    add_json(p, "the score, risk, sub-scores and response")
    p.set_defaults(func=run, prog=p.prog)


def render(doc: dict) -> str:
    """The human form of a NEWS2 result (``news2`` and ``advice``)."""
    bound = " (lower bound)" if doc["lower_bound"] else ""
    lines = [f"NEWS2 {doc['score']}{bound}: risk {doc['risk']}, scale {doc['scale']}"]
    for name, points in doc["sub_scores"].items():
        value = doc["values"][name]
        shown = "missing" if points is None else f"{value} -> {points}"
        lines.append(f"  {name:<14} {shown}")
    if doc["single_parameter_3"]:
        lines.append(f"  3 in one parameter: {', '.join(doc['single_parameter_3'])}")
    if doc["missing"]:
        lines.append(f"  {doc['note']}")
    lines.append(f"monitoring: {doc['monitoring']}")
    lines.append(f"response: {doc['response']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from host.services.advice.news2 import Inputs, news2

    result = news2(Inputs(resp_rate=args.resp_rate, spo2=args.spo2, oxygen=args.oxygen,
                          systolic=args.systolic, pulse=args.pulse,
                          consciousness=args.consciousness, temperature=args.temp,
                          scale=args.scale)).as_dict()
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0

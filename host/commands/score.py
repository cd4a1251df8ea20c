"""``medge score``: published clinical scores (contract 10; host.services.advice)."""

from __future__ import annotations

import argparse
import json

from host.commands.common import add_command, add_json, whole_number

NAME = "score"
AGE = whole_number(18, 120)


def add_stroke_items(p: argparse.ArgumentParser) -> None:
    """The CHA2DS2-VASc history items as flags (``score`` and ``patient add``)."""
    p.add_argument("--chf", action="store_true", help="congestive heart failure")
    p.add_argument("--hypertension", action="store_true", help="hypertension")
    p.add_argument("--diabetes", action="store_true", help="diabetes mellitus")
    p.add_argument("--stroke", action="store_true",
                   help="prior stroke, TIA or thromboembolism")
    p.add_argument("--vascular", action="store_true",
                   help="prior myocardial infarction, peripheral artery disease or aortic plaque")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="published clinical scores",
                    description="Published clinical scores, with their breakdown and references.",
                    example=["medge score cha2ds2-vasc --age 78 --sex female --hypertension "
                             "--json"])
    score_sub = p.add_subparsers(dest="score_command", required=True, metavar="SCORE")
    q = add_command(
        score_sub, "cha2ds2-vasc", help="stroke risk in atrial fibrillation",
        description="CHA2DS2-VASc (Lip 2010) and the ESC 2024 CHA2DS2-VA (the same without the "
        "sex point),\nwith the points per item and what each guideline's thresholds suggest "
        "(for clinician review).",
        example=["medge score cha2ds2-vasc --age 78 --sex female --hypertension --json",
                 "medge score cha2ds2-vasc --age 66 --sex male --diabetes --vascular"])
    q.add_argument("--age", type=AGE, required=True, help="age, years (18-120)")
    q.add_argument("--sex", required=True, choices=("female", "male"), help="female or male")
    add_stroke_items(q)
    add_json(q, "both scores, the points per item and the advice")
    q.set_defaults(func=run_cha2ds2, prog=q.prog)


def render_stroke_risk(doc: dict) -> str:
    lines = [f"CHA2DS2-VASc {doc['cha2ds2_vasc']}: {doc['advice']['cha2ds2_vasc']}",
             f"CHA2DS2-VA   {doc['cha2ds2_va']}: {doc['advice']['cha2ds2_va']} (ESC 2024)"]
    lines += [f"  {item:<28} {points}" for item, points in doc["points"].items()]
    return "\n".join(lines)


def run_cha2ds2(args: argparse.Namespace) -> int:
    from host.services.advice.cha2ds2 import stroke_risk

    doc = stroke_risk(age=args.age, sex=args.sex, chf=args.chf, hypertension=args.hypertension,
                      diabetes=args.diabetes, stroke=args.stroke,
                      vascular=args.vascular).as_dict()
    print(json.dumps(doc, indent=2) if args.json else render_stroke_risk(doc))
    return 0

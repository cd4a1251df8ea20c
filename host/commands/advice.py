"""``medge advice``: a patient's current NEWS2, trend and advice with rationale
(host.services.advice.live)."""

from __future__ import annotations

import argparse
from typing import Any

from host.commands.common import add_command, add_db, add_json
from host.commands.patient import add_at, at_of, emit, open_store

NAME = "advice"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="a patient's NEWS2, trend and advice",
        description="A patient's current NEWS2 (device vitals plus manual observations; "
        "stale = missing),\nthe NEWS2 trend over 2 h, personal-baseline drift, arrhythmia "
        "advice, each with its\nrationale, the numbers used and the reference; and the "
        "patient's open alerts.\nDecision support for clinician review, not a diagnosis.",
        notes="--record writes the alert episodes into the store (once per episode: "
        "medge alerts list).",
        example=["medge advice p-0001", "medge advice p-0001 --json --record"])
    p.add_argument("patient_id", metavar="PATIENT")
    add_at(p, "assess as of this time")
    p.add_argument("--record", action="store_true", help="record alert episodes in the store")
    add_json(p, "the assessment")
    add_db(p)
    p.set_defaults(func=run, prog=p.prog)


def render(doc: dict[str, Any]) -> str:
    from host.commands.news2 import render as render_news2

    lines = [f"patient {doc['patient_id']}", render_news2(doc["news2"])]
    t = doc["trend"]
    if t["slope_per_h"] is not None:
        lines.append(f"trend: {t['slope_per_h']:+.1f} NEWS2 points/h over 2 h"
                     + (" (rising: early warning)" if t["rising"] else ""))
    for line in doc["advice"]:
        lines.append(f"- {line}")
    for c in doc["conditions"]:
        lines.append(f"  [{c['severity']}] {c['kind']}: {c['rationale']} ({c['reference']})")
    for a in doc["open_alerts"]:
        acked = f", acknowledged by {a['acked_by']}" if a["acked_by"] else ""
        lines.append(f"open alert {a['alert_uid']}: {a['kind']} {a['severity']}{acked}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from host.services.advice import live
    from host.services.advice.records import list_alerts

    now = at_of(args)
    with open_store(args, readonly=not args.record) as store:
        assessment, events, open_kinds = live.assess(store, args.patient_id, now)
        if args.record:
            live.record_events(store, args.patient_id, events, open_kinds=open_kinds,
                               now_ms=now)
        alerts = list_alerts(store, patient_id=args.patient_id, open_only=True)
    doc = assessment.as_dict()
    doc.pop("events")
    doc["open_alerts"] = alerts
    return emit(args, doc, render(doc))

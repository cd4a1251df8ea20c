"""``medge advice``: a patient's current NEWS2, trend and advice with rationale
(host.services.advice.live)."""

from __future__ import annotations

import argparse
from typing import Any

from host.commands.common import (
    CliError,
    add_broker_account,
    add_broker_addr,
    add_command,
    add_db,
    add_json,
    broker_password,
    positive_number,
    stop_on_signals,
)
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
        example=["medge advice p-0001", "medge advice p-0001 --json --record",
                 "medge advice --watch --interval 10 --host 127.0.0.1 --port 1883"])
    p.add_argument("patient_id", metavar="PATIENT", nargs="?",
                   help="the patient (not with --watch)")
    p.add_argument("--watch", action="store_true",
                   help="the advice service: every --interval s assess every patient with "
                   "a device, record alert episodes and publish each change (and each "
                   "reminder of an unacknowledged alert) to medge/v1/dev/{device}/alert")
    p.add_argument("--interval", type=positive_number, default=10.0, metavar="SECONDS",
                   help="--watch: seconds between passes (10)")
    p.add_argument("--duration", type=positive_number, metavar="SECONDS",
                   help="--watch: stop after this long (default: until SIGTERM)")
    add_broker_addr(p)
    p.add_argument("--no-publish", action="store_true",
                   help="--watch: record alerts in the store only (no broker)")
    add_broker_account(p, "--watch: ")
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
    if args.watch:
        return run_watch(args)
    if args.patient_id is None:
        raise CliError("PATIENT: give a patient id (or --watch for every patient)")
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


def run_watch(args: argparse.Namespace) -> int:
    import json
    import time

    from host.services.advice import live
    from host.services.store import now_ms

    if args.patient_id is not None:
        raise CliError("--watch: assesses every patient with a device; leave PATIENT out")
    publisher = None
    if not args.no_publish:
        from host.services.advice.publish import AlertPublisher

        try:
            publisher = AlertPublisher(args.host, args.port, username=args.username,
                                       password=broker_password(args))
        except OSError as exc:
            raise CliError(f"--host/--port: {exc}", exit_code=1) from None
    stop = stop_on_signals()
    end = None if args.duration is None else time.monotonic() + args.duration
    cache = live.LiveMonitors()  # each pass feeds only what is new
    try:
        with open_store(args) as store:
            while not stop.is_set():
                doc = live.run_round(store, now_ms(), publisher.publish if publisher else None,
                                     cache)
                if args.json:
                    print(json.dumps(doc), flush=True)
                else:
                    for pid, p in doc["patients"].items():
                        print(f"{pid}: NEWS2 {p['news2']}{'+' if p['lower_bound'] else ''} "
                              f"{p['risk']}; open {', '.join(p['open_alerts']) or '-'}",
                              flush=True)
                if end is not None and time.monotonic() >= end:
                    break
                stop.wait(args.interval if end is None
                          else max(0.0, min(args.interval, end - time.monotonic())))
    finally:
        if publisher is not None:
            publisher.close()
    return 0

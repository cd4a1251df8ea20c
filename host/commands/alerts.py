"""``medge alerts``: the alert episodes in the store, and acknowledging them
(host.services.advice.records)."""

from __future__ import annotations

import argparse
from typing import Any

from host.commands.common import add_command, add_db, add_json
from host.commands.patient import actor_of, add_actor, at_of, emit, open_store

NAME = "alerts"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="alert episodes: list, acknowledge",
                    description="Alert episodes raised by the advice engine (one per "
                    "episode; escalations and\nreminders are part of it).",
                    example=["medge alerts list --json", "medge alerts ack ALERT_UID"])
    asub = p.add_subparsers(dest="alerts_command", required=True, metavar="ALERTS_COMMAND")
    q = add_command(asub, "list", help="alerts, newest first",
                    description="Alerts, newest first: open ones by default.",
                    example=["medge alerts list", "medge alerts list --patient p-0001 --all "
                             "--json"])
    q.add_argument("--patient", metavar="PATIENT", help="only this patient")
    q.add_argument("--all", action="store_true", help="resolved ones too")
    add_json(q, "a JSON array of alerts")
    add_db(q)
    q.set_defaults(func=run_list, prog=q.prog)
    q = add_command(asub, "ack", help="acknowledge an alert (audited)",
                    description="Acknowledge an alert: reminders stop until it escalates.",
                    example=["medge alerts ack p-0001:news2:1764000000000 --actor nurse-kim"])
    q.add_argument("alert_uid", metavar="ALERT")
    add_actor(q)
    add_json(q, "the alert")
    add_db(q)
    q.set_defaults(func=run_ack, prog=q.prog)


def _line(a: dict[str, Any]) -> str:
    cond = (a["detail"] or {}).get("condition") or {}
    return (f"{a['alert_uid']}  {a['severity']:<10} {a['state']:<12} "
            f"{cond.get('text', a['kind'])}")


def run_list(args: argparse.Namespace) -> int:
    from host.services import patients
    from host.services.advice.records import list_alerts

    with open_store(args, readonly=True) as store:
        if args.patient is not None:
            patients.get_patient(store, args.patient)
        rows = list_alerts(store, patient_id=args.patient, open_only=not args.all)
    return emit(args, rows, "\n".join(_line(a) for a in rows) or "no alerts")


def run_ack(args: argparse.Namespace) -> int:
    from host.commands.common import CliError
    from host.services.advice.records import AlertError, ack

    with open_store(args) as store:
        try:
            doc = ack(store, args.alert_uid, by=actor_of(args), ts_ms=at_of(args))
        except AlertError as exc:
            raise CliError(str(exc)) from None
    return emit(args, doc, _line(doc))

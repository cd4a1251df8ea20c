"""``medge obs``: manual observations a nurse enters (host.services.patients)."""

from __future__ import annotations

import argparse

from host.commands.common import add_command, add_db, add_json
from host.commands.news2 import add_observation_options
from host.commands.patient import actor_of, add_at, emit, open_store

NAME = "obs"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="manual observations",
                    description="Observations a nurse enters: what a device does not "
                    "measure (consciousness,\nair or oxygen, a manual blood pressure ...).",
                    example=["medge obs add p-0001 --consciousness C --oxygen --systolic 110"])
    osub = p.add_subparsers(dest="obs_command", required=True, metavar="OBS_COMMAND")
    q = add_command(osub, "add", help="enter observations for a patient",
                    description="Enter one set of observations for a patient (any of the "
                    "NEWS2 parameters).",
                    notes="--uid makes a retry idempotent: the same uid is stored once.",
                    example=["medge obs add p-0001 --consciousness C --oxygen --systolic 110",
                             "medge obs add p-0001 --resp-rate 22 --temp 38.4 --by nurse-kim "
                             "--json"])
    q.add_argument("patient_id", metavar="PATIENT")
    add_observation_options(q, integers=True)
    add_at(q, "when observed")
    q.add_argument("--by", dest="actor", metavar="NAME",
                   help="who observed (default: the OS user)")
    q.add_argument("--uid", help="the client's idempotency key")
    add_json(q, "what was stored")
    add_db(q)
    q.set_defaults(func=run_add, prog=q.prog)


def run_add(args: argparse.Namespace) -> int:
    from host.services import patients
    from host.services.advice.news2 import Inputs
    from host.services.store import now_ms

    inputs = Inputs(resp_rate=args.resp_rate, spo2=args.spo2, oxygen=args.oxygen,
                    systolic=args.systolic, pulse=args.pulse,
                    consciousness=args.consciousness, temperature=args.temp)
    entered = now_ms()
    ts = args.at if args.at is not None else entered
    with open_store(args) as store:
        kinds = patients.add_observations(store, args.patient_id, inputs, ts_ms=ts,
                                          entered_by=actor_of(args), entered_ms=entered,
                                          uid=args.uid)
    doc = {"patient_id": args.patient_id, "ts_ms": ts, "stored": kinds}
    return emit(args, doc, f"{args.patient_id}: stored {', '.join(kinds)}")

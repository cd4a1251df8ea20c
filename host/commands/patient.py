"""``medge patient``: pseudonymous patients, their profiles and device assignments
(host.services.patients); also the store helpers the clinical commands share."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from host.commands.common import CliError, add_command, add_db, add_json, whole_number
from host.commands.export import iso8601
from host.commands.score import add_stroke_items

NAME = "patient"
AGE = whole_number(0, 120)
TARGET_PARAMS = ("heart_rate", "resp_rate", "spo2", "temperature")


def number_range(text: str) -> tuple[float, float]:
    """An argparse type: ``LOW-HIGH`` (two numbers, low < high)."""
    parts = text.split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH such as 88-92, got {text!r}"
                                         ) from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"expected LOW below HIGH, got {text!r}")
    return (int(lo) if lo.is_integer() else lo, int(hi) if hi.is_integer() else hi)


number_range.__name__ = "range"


def add_actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", metavar="NAME",
                   help="who makes the change, for the audit log (default: the OS user)")


def add_at(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--at", type=iso8601, metavar="ISO8601", help=f"{what} (default: now)")


def actor_of(args: argparse.Namespace) -> str:
    from host.services.audit import default_actor

    return args.actor or default_actor()


def at_of(args: argparse.Namespace) -> int:
    from host.services.store import now_ms

    return args.at if getattr(args, "at", None) is not None else now_ms()


@contextmanager
def open_store(args: argparse.Namespace, *, readonly: bool = False) -> Iterator[Any]:
    """The store of ``--db``; its problems and bad clinical input as one-line CliErrors."""
    from host.services.patients import PatientError
    from host.services.store import StorageUnavailable, Store, StoreError

    try:
        store = Store(args.db, readonly=readonly)
    except FileNotFoundError as exc:
        raise CliError(f"{exc} (add a patient first: medge patient add)") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    try:
        yield store
    except PatientError as exc:
        raise CliError(str(exc)) from None
    except StorageUnavailable as exc:
        raise CliError(f"the store cannot be written: {exc}", exit_code=1) from None
    finally:
        store.close()


def emit(args: argparse.Namespace, doc: Any, text: str) -> int:
    print(json.dumps(doc, indent=2) if args.json else text)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="patients, profiles and device assignments",
                    description="Pseudonymous patients: profile (age, sex, conditions, "
                    "prescribed SpO2 target,\nclinician target overrides) and which device "
                    "is on which patient, over time.",
                    example=["medge patient add p-0001 --age 78 --sex female --hypertension",
                             "medge patient assign p-0001 --device bed-12"])
    psub = p.add_subparsers(dest="patient_command", required=True, metavar="PATIENT_COMMAND")

    q = add_command(psub, "add", help="register a patient with a profile",
                    description="Register a pseudonymous patient (never a name or hospital "
                    "number) with a profile.",
                    notes="--hypercapnic (hypercapnic respiratory failure) with --spo2-target "
                    "88-92 puts the\npatient on NEWS2 SpO2 scale 2 (88-92 is the default "
                    "target with --hypercapnic).",
                    example=["medge patient add p-0001 --age 78 --sex female --hypertension",
                             "medge patient add p-0002 --age 70 --sex male --copd "
                             "--hypercapnic --spo2-target 88-92 --json"])
    q.add_argument("patient_id", metavar="PATIENT")
    q.add_argument("--age", type=AGE, required=True, help="age, years")
    q.add_argument("--sex", required=True, choices=("female", "male"))
    q.add_argument("--copd", action="store_true", help="chronic obstructive pulmonary disease")
    q.add_argument("--hypercapnic", action="store_true",
                   help="hypercapnic (type 2) respiratory failure")
    q.add_argument("--spo2-target", type=number_range, metavar="LOW-HIGH",
                   help="prescribed SpO2 target, %% (e.g. 88-92)")
    add_stroke_items(q)
    q.add_argument("--chronic-af", action="store_true",
                   help="known (permanent/persistent) atrial fibrillation")
    add_actor(q)
    add_json(q, "the profile")
    add_db(q)
    q.set_defaults(func=run_add, prog=q.prog)

    q = add_command(psub, "show", help="a patient's profile, assignments, observations",
                    description="A patient's profile, device assignment history and latest "
                    "manual observations.", example=["medge patient show p-0001 --json"])
    q.add_argument("patient_id", metavar="PATIENT")
    add_json(q, "the patient")
    add_db(q)
    q.set_defaults(func=run_show, prog=q.prog)

    q = add_command(psub, "list", help="every patient", description="Every patient id.",
                    example=["medge patient list --json"])
    add_json(q, "a JSON array of patient ids")
    add_db(q)
    q.set_defaults(func=run_list, prog=q.prog)

    q = add_command(psub, "assign", help="put a device on a patient",
                    description="Assign a device to a patient from a time on: its readings "
                    "from then belong to\nthe patient. A device is on one patient at a time.",
                    example=["medge patient assign p-0001 --device bed-12",
                             "medge patient assign p-0001 --device bed-12 --at "
                             "2026-12-01T08:00Z --json"])
    q.add_argument("patient_id", metavar="PATIENT")
    q.add_argument("--device", required=True, metavar="ID")
    add_at(q, "from when")
    add_actor(q)
    add_json(q, "the assignment")
    add_db(q)
    q.set_defaults(func=run_assign, prog=q.prog)

    q = add_command(psub, "unassign", help="take a device off its patient",
                    description="End a device's current assignment.",
                    example=["medge patient unassign bed-12"])
    q.add_argument("device_id", metavar="DEVICE")
    add_at(q, "from when")
    add_actor(q)
    add_json(q, "the ended assignments")
    add_db(q)
    q.set_defaults(func=run_unassign, prog=q.prog)

    q = add_command(psub, "discharge", help="discharge a patient",
                    description="Discharge a patient: their device assignments end.",
                    example=["medge patient discharge p-0001 --json"])
    q.add_argument("patient_id", metavar="PATIENT")
    add_at(q, "when")
    add_actor(q)
    add_json(q, "the discharge")
    add_db(q)
    q.set_defaults(func=run_discharge, prog=q.prog)

    q = add_command(psub, "override", help="set a patient's own target range (audited)",
                    description="A clinician's target range for one vital of this patient "
                    "(e.g. chronic AF\nrunning at 100-120/min, a COPD SpO2 target): advice "
                    "uses it instead of the\npersonal baseline's and the population "
                    "limits. Recorded in the audit log.",
                    example=["medge patient override p-0001 --param heart_rate --range 50-125 "
                             "--reason 'chronic AF, rate-controlled' --actor dr-lee"])
    q.add_argument("patient_id", metavar="PATIENT")
    q.add_argument("--param", required=True, choices=TARGET_PARAMS)
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--range", type=number_range, metavar="LOW-HIGH")
    g.add_argument("--clear", action="store_true", help="remove the override")
    q.add_argument("--reason", required=True, help="why (kept in the audit log)")
    add_actor(q)
    add_json(q, "the profile")
    add_db(q)
    q.set_defaults(func=run_override, prog=q.prog)


def render_profile(pid: str, profile: dict[str, Any]) -> str:
    conditions = [c for c in ("copd", "hypercapnic", "chf", "hypertension", "diabetes",
                              "stroke", "vascular", "chronic_af") if profile.get(c)]
    line = f"{pid}: {profile['age']} y {profile['sex']}, " + (
        ", ".join(conditions) if conditions else "no conditions recorded")
    if profile.get("spo2_target"):
        lo, hi = profile["spo2_target"]
        line += f"; SpO2 target {lo}-{hi} %"
    for param, (lo, hi) in (profile.get("targets") or {}).items():
        line += f"; {param} target {lo}-{hi} (override)"
    if profile.get("discharged_ms") is not None:
        line += "; discharged"
    return line


def run_add(args: argparse.Namespace) -> int:
    from host.services import patients

    conditions = {c: getattr(args, c) for c in patients.CONDITIONS}
    with open_store(args) as store:
        profile = patients.make_profile(age=args.age, sex=args.sex,
                                        spo2_target=args.spo2_target, **conditions)
        patients.add_patient(store, args.patient_id, profile, actor=actor_of(args),
                             ts_ms=at_of(args))
    return emit(args, {"patient_id": args.patient_id, "profile": profile},
                render_profile(args.patient_id, profile))


def run_show(args: argparse.Namespace) -> int:
    from host.services import patients

    with open_store(args, readonly=True) as store:
        profile = patients.get_patient(store, args.patient_id)
        history = [a.as_dict() for a in patients.assignments(store, patient_id=args.patient_id)]
        obs = patients.latest_observations(store, args.patient_id)
    doc = {"patient_id": args.patient_id, "profile": profile, "assignments": history,
           "observations": {k: {"value": v, "ts_ms": ts} for k, (v, ts) in obs.items()}}
    lines = [render_profile(args.patient_id, profile)]
    lines += [f"  device {a['device_id']} from {a['from_ms']} until "
              f"{a['until_ms'] if a['until_ms'] is not None else 'now'}" for a in history]
    lines += [f"  {k} {v} at {ts}" for k, (v, ts) in obs.items()]
    return emit(args, doc, "\n".join(lines))


def run_list(args: argparse.Namespace) -> int:
    from host.services import patients

    with open_store(args, readonly=True) as store:
        ids = patients.list_patients(store)
    return emit(args, ids, "\n".join(ids))


def run_assign(args: argparse.Namespace) -> int:
    from host.services import patients

    with open_store(args) as store:
        a = patients.assign(store, args.patient_id, args.device, actor=actor_of(args),
                            ts_ms=at_of(args))
    return emit(args, a.as_dict(), f"{a.device_id} -> {a.patient_id} from {a.from_ms}")


def run_unassign(args: argparse.Namespace) -> int:
    from host.services import patients

    with open_store(args) as store:
        ended = patients.unassign(store, args.device_id, actor=actor_of(args),
                                  ts_ms=at_of(args))
    return emit(args, [a.as_dict() for a in ended],
                "\n".join(f"{a.device_id} off {a.patient_id} at {a.until_ms}" for a in ended)
                or f"{args.device_id} was not assigned")


def run_discharge(args: argparse.Namespace) -> int:
    from host.services import patients

    with open_store(args) as store:
        doc = patients.discharge(store, args.patient_id, actor=actor_of(args),
                                 ts_ms=at_of(args))
    return emit(args, doc, f"{args.patient_id} discharged; {len(doc['ended'])} device(s) "
                "unassigned")


def run_override(args: argparse.Namespace) -> int:
    from host.services import patients

    with open_store(args) as store:
        profile = patients.set_target(store, args.patient_id, args.param,
                                      None if args.clear else args.range,
                                      actor=actor_of(args), reason=args.reason,
                                      ts_ms=at_of(args))
    return emit(args, {"patient_id": args.patient_id, "profile": profile},
                render_profile(args.patient_id, profile))

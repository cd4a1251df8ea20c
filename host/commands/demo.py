"""``medge demo``: the whole system on one machine (host.services.demo)."""

from __future__ import annotations

import argparse
import sys

from host.commands.common import (
    SENSORS,
    CliError,
    add_command,
    add_db,
    add_fleet_options,
    add_json,
)

NAME = "demo"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="broker + ingest + simulated devices + live monitor",
        description="Start a broker, the ingest service and N simulated devices running the "
        "real firmware code,\nshow the live monitor, and with --duration stop by itself and "
        "check that every message\nof every device was stored.  Exit 0 only if every check "
        "passed; else 1 and\n'demo: FAILED: <reasons>'.  The broker's data and the devices' "
        "state live next to the\nstore, in <db>.d/broker and <db>.d/devices "
        "(var/medge.db -> var/medge.db.d/).",
        example=["medge demo --devices 5 --duration 30",
                 "medge demo --devices 3 --duration 60 --scenario pvc_burden "
                 "--faults partition:#1@10s+8s"])
    add_fleet_options(p)
    p.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto")
    p.add_argument("--scenario", default="stable",
                   help="patient scenario (sim/scenarios name or .toml path; stable); "
                        "ecgsyn: ECGSYN patients, ECG only")
    p.add_argument("--sensor", choices=SENSORS, default="direct",
                   help="how devices read the ECG (direct)")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="faults to inject, as for medge sim (see medge sim --help); "
                        "on scenario patients")
    p.add_argument("--vitals", default="auto", metavar="auto|all|none|N",
                   help="devices with SpO2, pulse, respiration, temperature and NIBP "
                   "(scenario patients only): auto (the first 100), all, none, or the first N")
    add_json(p, "the summary (no live monitor)")
    add_db(p)
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.services.demo import Demo
    from host.services.store import StoreError

    try:
        demo = Demo(
            devices=args.devices, duration_s=args.duration, db_path=args.db, speed=args.speed,
            seed=args.seed, broker_kind=args.broker, sample_rate_hz=args.rate,
            scenario=args.scenario,
            sensor=args.sensor, faults=args.faults, vitals=args.vitals,
        )
    except (ValueError, RuntimeError, OSError, StoreError) as exc:
        raise CliError(str(exc)) from None  # nothing has started yet
    return demo.run(sys.stdout, as_json=args.json)

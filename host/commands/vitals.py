"""``medge vitals``: WFDB records through the device's vital-sign code (host.services.vitals)."""

from __future__ import annotations

import argparse

from host.commands.common import add_command

NAME = "vitals"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="vital signs of WFDB records through the device's code",
                    description="WFDB records with ECG and/or PPG channels through exactly the "
                    "vital-sign code the device runs.",
                    example=["medge vitals analyze ../shared/data/bidmc/bidmc01 > 01.vitals.csv"])
    v_sub = p.add_subparsers(dest="vitals_command", required=True, metavar="VITALS_COMMAND")
    q = add_command(
        v_sub, "analyze", help="heart, pulse and respiratory rate per 32-s window as CSV",
        description="One row per 32-second window, stepped by 8 s (time_s: the window's end):\n"
        "CSV header time_s,heart_rate,pulse_rate,resp_rate (bpm, bpm, breaths/min);\n"
        "a value the device would withhold as unreliable is empty.  --json prints a list\n"
        "of objects with the same keys (null for withheld) and the per-modulation rates.",
        example=["medge vitals analyze ../shared/data/bidmc/bidmc01",
                 "medge vitals analyze ../shared/data/bidmc/bidmc01 --json"])
    q.add_argument("record", help="WFDB record path without extension, e.g. data/bidmc/bidmc01")
    q.add_argument("--json", action="store_true", help="JSON instead of CSV")
    q.set_defaults(func=run_analyze, prog=q.prog)


def run_analyze(args: argparse.Namespace) -> int:
    from host.services.vitals import run_analyze as analyze

    return analyze(args.record, as_json=args.json)

"""``medge ecg``: ECG records through the device's code (host.services.ecg)."""

from __future__ import annotations

import argparse

from host.commands.common import add_command, whole_number

NAME = "ecg"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="ECG records through the device's code",
                    description="WFDB records through exactly the code the device runs.",
                    example=["medge ecg analyze data/mitdb/101 > 101.beats.csv"])
    ecg_sub = p.add_subparsers(dest="ecg_command", required=True, metavar="ECG_COMMAND")
    q = add_command(
        ecg_sub, "analyze", help="beats of a WFDB record as CSV: sample,label",
        description="Every beat of one channel of a WFDB record, as the device detects and "
        "classifies it:\nCSV on stdout, header sample,label (the record's own sample numbers; "
        "AAMI classes\nN S V F Q).",
        example=["medge ecg analyze data/mitdb/101",
                 "medge ecg analyze data/mitdb/208 --channel 1 --runtime python"])
    q.add_argument("record", help="WFDB record path without extension, e.g. data/mitdb/101")
    # Any whole number: host.services.ecg says which channels the record has.
    q.add_argument("--channel", type=whole_number(), default=0,
                   help="signal number, from 0 (0)")
    q.add_argument("--model", default=None,
                   help="beat model path without extension (default: the shipped models/beatnet)")
    q.add_argument("--runtime", default="auto", choices=["auto", "litert", "litert-ref", "python"],
                   help="int8 runtime (auto: LiteRT's reference kernels if installed, else the "
                        "pure-Python engine; both bit-exact)")
    q.set_defaults(func=run_analyze, prog=q.prog)


def run_analyze(args: argparse.Namespace) -> int:
    from host.services.ecg import run_analyze as analyze

    return analyze(args.record, args.channel, model=args.model, runtime=args.runtime)

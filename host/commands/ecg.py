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
    q.add_argument("--no-rhythm", action="store_true",
                   help="the classifier's own classes (default: rhythm-aware, as the device "
                        "reports them: no S beat in atrial fibrillation)")
    q.set_defaults(func=run_analyze, prog=q.prog)
    r = add_command(
        ecg_sub, "rhythm", help="rhythm episodes of a WFDB record as CSV",
        description="Rhythm episodes of one channel of a WFDB record, from the device's own "
        "rhythm code\n(firmware.rhythm): CSV on stdout, header start_sample,end_sample,rhythm "
        "(the record's\nown sample numbers; AFIB VT PAUSE ASYSTOLE BRADY TACHY BIGEMINY "
        "TRIGEMINY).\nStretches of bad signal and the PVC/PAC burden go to stderr, or into "
        "--json.",
        example=["medge ecg rhythm data/mitdb/201",
                 "medge ecg rhythm data/mitdb/203 --json"])
    r.add_argument("record", help="WFDB record path without extension, e.g. data/mitdb/201")
    r.add_argument("--channel", type=whole_number(), default=0,
                   help="signal number, from 0 (0)")
    r.add_argument("--model", default=None,
                   help="beat model path without extension (default: the shipped models/beatnet)")
    r.add_argument("--runtime", default="auto", choices=["auto", "litert", "litert-ref", "python"],
                   help="int8 runtime (as for analyze)")
    r.add_argument("--plain", action="store_true",
                   help="the plain RR-irregularity peer: no beat classes (for comparison)")
    r.add_argument("--json", action="store_true",
                   help="one JSON object: episodes with evidence, signal stretches, burden")
    r.set_defaults(func=run_rhythm, prog=r.prog)


def run_analyze(args: argparse.Namespace) -> int:
    from host.services.ecg import run_analyze as analyze

    return analyze(args.record, args.channel, model=args.model, runtime=args.runtime,
                   rhythm=not args.no_rhythm)


def run_rhythm(args: argparse.Namespace) -> int:
    from host.services.ecg import run_rhythm as rhythm

    return rhythm(args.record, args.channel, model=args.model, runtime=args.runtime,
                  as_json=args.json, plain=args.plain)

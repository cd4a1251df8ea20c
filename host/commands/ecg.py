"""``medge ecg``: ECG records through the device's code (host.services.ecg)."""

from __future__ import annotations

import argparse
import math

from host.commands.common import add_command, positive_number, whole_number


def non_negative_number(text: str) -> float:
    """An argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value

NAME = "ecg"


def _record_args(p: argparse.ArgumentParser) -> None:
    """The arguments every ``medge ecg`` subcommand takes: record, channel, model, runtime."""
    p.add_argument("record", help="WFDB record path without extension, e.g. data/mitdb/101")
    # Any whole number: host.services.ecg says which channels the record has.
    p.add_argument("--channel", type=whole_number(), default=0,
                   help="signal number, from 0 (0)")
    p.add_argument("--model", default=None,
                   help="beat model path without extension (default: the shipped models/beatnet)")
    p.add_argument("--runtime", default="auto", choices=["auto", "litert", "litert-ref", "python"],
                   help="int8 runtime (auto: LiteRT's reference kernels if installed, else the "
                        "pure-Python engine; both bit-exact)")


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
    _record_args(q)
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
    _record_args(r)
    r.add_argument("--plain", action="store_true",
                   help="the plain RR-irregularity peer: no beat classes (for comparison)")
    r.add_argument("--json", action="store_true",
                   help="one JSON object: episodes with evidence, signal stretches, burden")
    r.set_defaults(func=run_rhythm, prog=r.prog)
    g = add_command(
        ecg_sub, "plot", help="a Holter-style strip of a WFDB record as PNG",
        description="The filtered ECG of one channel, each beat's class and the rhythm "
        "episodes as bands,\non ECG-paper grid (one row per 10 s), from the device's own "
        "code (the record runs\nfrom its start, so the rhythm monitor has its history).",
        example=["medge ecg plot data/mitdb/201 --start 300 --seconds 20 --out strip.png",
                 "medge ecg plot data/mitdb/203 --start 60 --seconds 10 --out s.png --json"])
    _record_args(g)
    g.add_argument("--start", type=non_negative_number, default=0.0,
                   help="strip start, seconds from the record's start (0)")
    g.add_argument("--seconds", type=positive_number, default=10.0,
                   help="strip length, seconds (10; at most 300)")
    g.add_argument("--out", required=True, help="image file: .png, .svg or .pdf")
    g.add_argument("--json", action="store_true",
                   help="print what the strip shows (beats, episodes, signal) as JSON")
    g.set_defaults(func=run_plot, prog=g.prog)


def run_analyze(args: argparse.Namespace) -> int:
    from host.services.ecg import run_analyze as analyze

    return analyze(args.record, args.channel, model=args.model, runtime=args.runtime,
                   rhythm=not args.no_rhythm)


def run_rhythm(args: argparse.Namespace) -> int:
    from host.services.ecg import run_rhythm as rhythm

    return rhythm(args.record, args.channel, model=args.model, runtime=args.runtime,
                  as_json=args.json, plain=args.plain)


def run_plot(args: argparse.Namespace) -> int:
    from host.services.ecgplot import run_plot as plot

    return plot(args.record, args.channel, args.start, args.seconds, args.out,
                model=args.model, runtime=args.runtime, as_json=args.json)

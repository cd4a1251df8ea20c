"""Regenerate the MIT-BIH excerpts in this folder (tests/data/mitdb/) from ../shared/data/mitdb.

Not run by the tests (a fresh clone has no ../shared/data): run it by hand,
from the repo root, after changing EXCERPTS::

    .venv/bin/python tests/data/mitdb/make_excerpts.py [--source ../shared/data/mitdb]

Each excerpt keeps both leads, the original storage format (212), gain,
baseline, ADC resolution and zero, and every annotation of the range (beats,
rhythm changes, noise marks) with sample numbers counted from the excerpt's
start.  A rhythm annotation ``+`` giving the rhythm in force at the start is
added at sample 0 when the range does not begin with one.  Only records of the
training set DS1 may be used (never DS2 or the paced records 102 104 107 217).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE
DEFAULT_SOURCE = HERE.parents[3] / "shared" / "data" / "mitdb"

DS1 = frozenset(
    "101 106 108 109 112 114 115 116 118 119 122 124 "
    "201 203 205 207 208 209 215 220 223 230".split()
)

#: record -> (start_s, end_s, what it shows)
EXCERPTS: dict[str, tuple[int, int, str]] = {
    "101": (60, 80, "normal sinus rhythm"),
    "119": (20, 40, "ventricular bigeminy: uniform PVCs every other beat"),
    "208": (60, 80, "PVCs, couplets and fusion beats, ventricular trigeminy"),
    "203": (50, 70, "atrial fibrillation with multiform PVCs, noisy"),
}


def rhythm_at(ann: wfdb.Annotation, sample: int) -> str | None:
    """The rhythm (aux_note of the last ``+`` annotation) in force at ``sample``."""
    rhythm = None
    for s, sym, aux in zip(ann.sample, ann.symbol, ann.aux_note):
        if s > sample:
            break
        if sym == "+" and aux:
            rhythm = aux
    return rhythm


def make_excerpt(source: Path, record: str, start_s: int, end_s: int, note: str) -> None:
    if record not in DS1:
        raise SystemExit(f"{record} is not a DS1 record: only DS1 may be used")
    src = str(source / record)
    full = wfdb.rdheader(src)
    fs = int(full.fs)
    a, b = start_s * fs, end_s * fs
    rec = wfdb.rdrecord(src, sampfrom=a, sampto=b, physical=False)
    rec.record_name = record
    rec.file_name = [f"{record}.dat"] * rec.n_sig
    rec.sig_len = b - a
    rec.init_value = [int(v) for v in rec.d_signal[0]]
    rec.checksum = rec.calc_checksum()
    rec.comments = [
        f"Excerpt of MIT-BIH Arrhythmia Database record {record}: samples {a}-{b}"
        f" (t = {start_s}-{end_s} s); {note}.",
        "Source: PhysioNet mitdb 1.0.0, ODC-By 1.0 (see tests/data/README.md).",
        *full.comments,
    ]
    rec.wrsamp(write_dir=str(OUT_DIR))

    ann = wfdb.rdann(src, "atr")
    keep = (ann.sample >= a) & (ann.sample < b)
    sample = ann.sample[keep] - a
    symbol = [s for s, k in zip(ann.symbol, keep) if k]
    aux = [x for x, k in zip(ann.aux_note, keep) if k]
    subtype = ann.subtype[keep]
    chan = ann.chan[keep]
    num = ann.num[keep]
    first = rhythm_at(ann, a)
    if first and (len(sample) == 0 or sample[0] != 0 or symbol[0] != "+"):
        sample = np.concatenate([[0], sample])
        symbol = ["+", *symbol]
        aux = [first, *aux]
        subtype = np.concatenate([[0], subtype])
        chan = np.concatenate([[0], chan])
        num = np.concatenate([[0], num])
    wfdb.wrann(
        record, "atr", np.asarray(sample, dtype=np.int64), symbol=symbol,
        subtype=np.asarray(subtype), chan=np.asarray(chan), num=np.asarray(num),
        aux_note=aux, fs=fs, write_dir=str(OUT_DIR),
    )
    print(f"{record}: {start_s}-{end_s} s, {len(sample)} annotations")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args(argv)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for record, (start_s, end_s, note) in EXCERPTS.items():
        make_excerpt(args.source, record, start_s, end_s, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())

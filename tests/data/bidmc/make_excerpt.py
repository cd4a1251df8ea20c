"""Cut the BIDMC excerpt in tests/data/bidmc/ from ../shared/data/bidmc.

Not run by the tests (a fresh clone has no ../shared/data): run it by hand,
from the repo root::

    .venv/bin/python tests/data/bidmc/make_excerpt.py [--source ../shared/data/bidmc]

It keeps the PPG (PLETH, channel 0 here) and the ECG lead II (channel 1) of
the waveform record and every numeric (HR, PULSE, RESP, SpO2) of the 1 Hz
numerics record over the same range, with the original storage format (16), gains and baselines; the
digital samples are the original ones, unchanged.  Only records 01-26 may be
used (27-53 are held out for evaluation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import wfdb

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[3] / "shared" / "data" / "bidmc"
RECORD = "bidmc01"
START_S, END_S = 60, 120
#: PLETH (1) and II (4).  The header names carry a trailing comma ("II,") in
#: this release of the dataset, so channels are picked by number.
CHANNELS = [1, 4]


def cut(source: Path, name: str, start: int, end: int, channels: list[int] | None,
        note: str) -> None:
    rec = wfdb.rdrecord(str(source / name), sampfrom=start, sampto=end,
                        channels=channels, physical=False)
    comments = [*(rec.comments or []), f"excerpt: samples {start}-{end} of {name} ({note}); "
                "made by tests/data/bidmc/make_excerpt.py"]
    wfdb.wrsamp(name, fs=rec.fs, units=rec.units, sig_name=rec.sig_name,
                d_signal=rec.d_signal, fmt=rec.fmt, adc_gain=rec.adc_gain,
                baseline=rec.baseline, comments=comments, write_dir=str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = ap.parse_args()
    if int(RECORD[-2:]) > 26:
        raise SystemExit("records 27-53 are held out: use 01-26")
    cut(args.source, RECORD, START_S * 125, END_S * 125, CHANNELS, "ECG II and PPG, 125 Hz")
    cut(args.source, RECORD + "n", START_S, END_S, None, "numerics, 1 Hz")


if __name__ == "__main__":
    main()

"""Cut the noise excerpts in tests/data/nstdb/ from ../shared/data/nstdb.

Not run by the tests (a fresh clone has no ../shared/data): run it by hand,
from the repo root::

    .venv/bin/python tests/data/nstdb/make_nstdb_excerpts.py [--source ../shared/data/nstdb]

Each excerpt is ``EXCERPT_S`` seconds of both channels at the database's 360 Hz,
stored as a ``.npy`` array of int16, shape (samples, 2), in ADC counts at
200 counts/mV (the nstdb gain, and the simulator's front-end gain):

* ``bw.npy``, ``ma.npy``: the unmodified digital samples of the records ``bw``
  (baseline wander) and ``ma`` (muscle artefact), from ``START_S``.
* ``em.npy``: electrode-motion noise.  The original ``em`` record is not in
  ../shared/data/nstdb; ``em_derived_0dB_mV_360hz.npy`` there is 118e00 minus
  mitdb 118 (float32 mV, from t = 300 s of the record, the first 120 s are the
  first noisy block).  Its values are rounded to counts (x200); the rounding
  (at most 2.5 uV) is the only change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import wfdb

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parents[3] / "shared" / "data" / "nstdb"
FS_HZ = 360
COUNTS_PER_MV = 200
EXCERPT_S = 40
#: record -> start (s) in the source signal
START_S = {"bw": 60, "ma": 60, "em": 20}


def cut(source: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    n = EXCERPT_S * FS_HZ
    for name in ("bw", "ma"):
        rec = wfdb.rdrecord(str(source / name), physical=False)
        if int(rec.fs) != FS_HZ or list(rec.adc_gain) != [200.0, 200.0]:
            raise SystemExit(f"{name}: unexpected fs {rec.fs} or gain {rec.adc_gain}")
        a = START_S[name] * FS_HZ
        out[name] = rec.d_signal[a : a + n].astype(np.int16)
    em_mv = np.load(source / "em_derived_0dB_mV_360hz.npy")
    a = START_S["em"] * FS_HZ
    em = np.rint(em_mv[a : a + n].astype(np.float64) * COUNTS_PER_MV)
    out["em"] = np.clip(em, -32768, 32767).astype(np.int16)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    for name, x in cut(args.source).items():
        np.save(HERE / f"{name}.npy", x)
        print(f"{name}.npy: {x.shape[0]} samples x {x.shape[1]} channels, "
              f"std {x.std(axis=0).round(1)} counts")


if __name__ == "__main__":
    main()

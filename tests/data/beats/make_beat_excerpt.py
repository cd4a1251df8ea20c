"""Cut the beat-feature excerpt tests/data/beats/ds1_beats.npz from the DS1 records.

Not run by the tests (a fresh clone has no ../shared/data): run it by hand,
from the repo root::

    .venv/bin/python tests/data/beats/make_beat_excerpt.py [--data ../shared/data/mitdb]

Every DS1 record goes through the device's beat pipeline (``models.dataset``,
clean and one real-noise variant, using the ``var/beats/<key>`` cache when present);
from each, a fixed-seed sample of at most 12 beats per class is kept (all of
a class when fewer), so the excerpt has every class the records have.  The
file holds, per beat: ``record`` (str), ``variant``, ``r`` (R sample),
``beat`` (int8 x 180), ``rr`` (int8 x ``RR_FEATURES``) and ``label`` (AAMI class index,
-1 for a detection with no reference beat).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from models.dataset import DS1_RECORDS, build, feature_cache

OUT = Path(__file__).resolve().parent / "ds1_beats.npz"
PER_CLASS = 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/mitdb")
    ap.add_argument("--nstdb", default="../shared/data/nstdb")
    args = ap.parse_args()
    variants = ["clean", "noise1"]
    data = build(args.data, list(DS1_RECORDS), variants, feature_cache(), args.nstdb)
    rng = np.random.default_rng(2004)
    rows: dict[str, list] = {k: [] for k in ("record", "variant", "r", "beat", "rr", "label")}
    for (rec, var), b in sorted(data.items()):
        for c in range(-1, 5):
            idx = np.flatnonzero(b.label == c)
            if len(idx) > PER_CLASS:
                idx = np.sort(rng.choice(idx, PER_CLASS, replace=False))
            for i in idx:
                rows["record"].append(rec)
                rows["variant"].append(var)
                rows["r"].append(b.r[i])
                rows["beat"].append(b.beat[i])
                rows["rr"].append(b.rr[i])
                rows["label"].append(b.label[i])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, record=np.array(rows["record"]), variant=np.array(rows["variant"]),
        r=np.array(rows["r"], dtype=np.int64), beat=np.array(rows["beat"], dtype=np.int8),
        rr=np.array(rows["rr"], dtype=np.int8), label=np.array(rows["label"], dtype=np.int8))
    print(f"{OUT}: {len(rows['r'])} beats, {OUT.stat().st_size} bytes, classes "
          f"{np.bincount(np.array(rows['label']) + 1, minlength=6).tolist()} (-1 N S V F Q)")


if __name__ == "__main__":
    main()

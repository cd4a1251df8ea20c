"""Evaluate the device QRS detector on MIT-BIH records, beside xqrs and neurokit2.

Run::

    python -m models.eval_qrs ../shared/data/mitdb [--records 101 106] [--fs 360 250]
        [--nstdb ../shared/data/nstdb] [--report models/reports/qrs_eval.md] [--jobs 2]

Every record's channel 0 (MLII in the DS1 records) goes through three detectors,
in the same run, on the same samples:

* ``medge``: ``firmware.signal.qrs.QrsDetector``, the device code, fed the
  record as the device's front end delivers it (the record reader
  ``sim.records``, as ``medge ecg analyze``: ``ECG_COUNTS_PER_MV`` counts per mV
  around the record's baseline, int16) as ``array('h')`` blocks of one second,
  then ``flush()``;
* ``xqrs``: ``wfdb.processing.xqrs_detect`` on those counts in mV,
  default settings;
* ``neurokit2``: ``nk.ecg_clean`` then ``nk.ecg_peaks``, both with their default
  method ("neurokit"), on those counts in mV -- the pairing ``nk.ecg_process``
  uses (``ecg_peaks`` expects a cleaned signal).

At ``--fs 250`` the record is resampled in mV (``scipy.signal.resample_poly``,
up 25, down 36) before it is rounded to counts; the reference annotation
sample numbers are scaled by 250/360 and rounded; all three detectors see
that 250 Hz signal.

Scoring follows the beat-by-beat rules of ANSI/AAMI EC57 as implemented by
WFDB's ``bxb``: reference beats are the annotations with a beat symbol
(``N L R e j A a J S V E F / f Q``; rhythm, noise and other non-beat
annotations are not beats); a detection and a reference beat pair when they
are at most 150 ms apart (bxb's pairing: each goes with the nearer of the two
candidates); reference beats inside ventricular flutter/fibrillation episodes
(between ``[`` and ``]``) are not scored and unpaired detections inside them are
not false positives.  The whole record is scored, the detectors' learning
periods included (``--skip-s`` starts later for all detectors alike; EC57
itself excludes the first 5 minutes only from some statistics).
Se = TP / (TP + FN), +P = TP / (TP + FP); gross figures pool TP, FN and FP
over the records.

Noise-stress records (nstdb 118e24, 118e12, 118e00: record 118 with
electrode-motion noise at 24, 12 and 0 dB SNR, from minute 5 on, in 2-minute
blocks) are scored over the whole record and over the noise blocks alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from array import array
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware.params import SUPPORTED_RATES_HZ

log = logging.getLogger(__name__)

DS1_RECORDS = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
    "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)
NSTDB_RECORDS = ("118e24", "118e12", "118e00")
BEAT_SYMBOLS = frozenset("NLRejAaJSVEF/fQ")
MATCH_WINDOW_MS = 150
SOURCE_FS_HZ = 360  # MIT-BIH's rate
DETECTORS = ("medge", "xqrs", "neurokit2")
#: nstdb: noise on from minute 5 for 2 minutes, off 2 minutes, and so on.
NSTDB_NOISE_START_S = 300
NSTDB_BLOCK_S = 120
DEFAULT_REPORT = "models/reports/qrs_eval.md"


@dataclass
class Score:
    tp: int = 0
    fn: int = 0
    fp: int = 0

    def add(self, other: Score) -> None:
        self.tp += other.tp
        self.fn += other.fn
        self.fp += other.fp

    @property
    def se(self) -> float:
        return 100.0 * self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def ppv(self) -> float:
        return 100.0 * self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")


@dataclass
class RecordResult:
    record: str
    database: str
    fs_hz: int
    n_samples: int
    scores: dict[str, Score] = field(default_factory=dict)
    noisy_scores: dict[str, Score] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ scoring


def vf_intervals(samples: np.ndarray, symbols: list[str]) -> list[tuple[int, int]]:
    """(start, end) sample pairs of reference-marked ventricular flutter/fibrillation."""
    out: list[tuple[int, int]] = []
    start = None
    for s, sym in zip(samples, symbols):
        if sym == "[" and start is None:
            start = int(s)
        elif sym == "]" and start is not None:
            out.append((start, int(s)))
            start = None
    if start is not None:  # unterminated: to the end of the record
        out.append((start, int(samples[-1]) + 1))
    return out


def in_intervals(x: np.ndarray, intervals: list[tuple[int, int]]) -> np.ndarray:
    x = np.asarray(x)
    mask = np.zeros(len(x), dtype=bool)
    for a, b in intervals:
        mask |= (x >= a) & (x <= b)
    return mask


def match_beats(ref: np.ndarray, test: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair reference and test beats as bxb does; return the two 'paired' masks.

    Both sorted lists are walked in time order.  The earlier of the current
    reference beat T and test beat t pairs with the other if they are at most
    ``window`` apart and it is nearer to it than the other list's next beat;
    otherwise it is unpaired and the walk moves on."""
    ref = np.asarray(ref, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    ref_ok = np.zeros(len(ref), dtype=bool)
    test_ok = np.zeros(len(test), dtype=bool)
    far = np.iinfo(np.int64).max // 4
    i = j = 0
    while i < len(ref) and j < len(test):
        big_t, t = ref[i], test[j]
        big_t_next = ref[i + 1] if i + 1 < len(ref) else far
        t_next = test[j + 1] if j + 1 < len(test) else far
        if t < big_t:
            if big_t - t <= window and big_t - t < abs(big_t - t_next):
                ref_ok[i] = test_ok[j] = True
                i += 1
            j += 1
        else:
            if t - big_t <= window and t - big_t < abs(t - big_t_next):
                ref_ok[i] = test_ok[j] = True
                j += 1
            i += 1
    return ref_ok, test_ok


def score(ref: np.ndarray, test: np.ndarray, window: int, vf: list[tuple[int, int]],
          lo: int, hi: int) -> Score:
    """Score detections ``test`` against reference beats ``ref`` on samples [lo, hi)."""
    ref = np.asarray(ref, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    ref_ok, test_ok = match_beats(ref, test, window)
    r_in = (ref >= lo) & (ref < hi) & ~in_intervals(ref, vf)
    t_in = (test >= lo) & (test < hi) & ~in_intervals(test, vf)
    return Score(tp=int(np.sum(ref_ok & r_in)), fn=int(np.sum(~ref_ok & r_in)),
                 fp=int(np.sum(~test_ok & t_in)))


# ---------------------------------------------------------------- detectors


def run_medge(counts: np.ndarray, fs: int, block: int | None = None) -> np.ndarray:
    """The device detector over int16 ``counts`` in blocks of ``block`` samples (1 s)."""
    from firmware.signal.qrs import QrsDetector

    det = QrsDetector(fs)
    block = block or fs
    samples = array("h", np.asarray(counts, dtype="<i2").tobytes())
    if sys.byteorder != "little":
        samples.byteswap()
    out: list[int] = []
    for i in range(0, len(samples), block):
        out.extend(det.process(samples[i:i + block]))
    out.extend(det.flush())
    return np.asarray(out, dtype=np.int64)


def run_xqrs(mv: np.ndarray, fs: int) -> np.ndarray:
    from wfdb import processing

    return np.asarray(processing.xqrs_detect(sig=mv, fs=fs, verbose=False), dtype=np.int64)


def run_neurokit(mv: np.ndarray, fs: int) -> np.ndarray:
    import neurokit2 as nk

    cleaned = nk.ecg_clean(mv, sampling_rate=fs)
    _, info = nk.ecg_peaks(cleaned, sampling_rate=fs)
    return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)


RUNNERS = {"medge": lambda counts, mv, fs: run_medge(counts, fs),
           "xqrs": lambda counts, mv, fs: run_xqrs(mv, fs),
           "neurokit2": lambda counts, mv, fs: run_neurokit(mv, fs)}


# ------------------------------------------------------------------ records


def load_record(path: str, fs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Channel 0 at ``fs`` as device counts and the same in mV, and the
    annotations (sample numbers at ``fs``, symbols)."""
    from firmware.params import ECG_COUNTS_PER_MV
    from sim.records import read_annotations, read_channel, to_device_signal

    ch = read_channel(path, 0)
    if ch.fs_hz != SOURCE_FS_HZ:
        raise ValueError(f"{path}: expected {SOURCE_FS_HZ} Hz, the header says {ch.fs_hz:g}")
    sig = to_device_signal(ch.millivolts(), ch.fs_hz, fs)
    ann = read_annotations(path)
    counts = sig.counts.astype(np.int64)
    return counts, counts / ECG_COUNTS_PER_MV, sig.to_device_samples(ann.samples), ann.symbols


def noise_blocks(n_samples: int, fs: int) -> list[tuple[int, int]]:
    out = []
    t = NSTDB_NOISE_START_S
    while t * fs < n_samples:
        out.append((t * fs, min(n_samples, (t + NSTDB_BLOCK_S) * fs)))
        t += 2 * NSTDB_BLOCK_S
    return out


def evaluate_record(job: tuple[str, str, int, float, tuple[str, ...]]) -> RecordResult:
    path, database, fs, skip_s, detectors = job
    counts, mv, ann_samples, symbols = load_record(path, fs)
    beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    ref = ann_samples[beat]
    vf = vf_intervals(ann_samples, symbols)
    window = (MATCH_WINDOW_MS * fs + 500) // 1000
    lo, hi = round(skip_s * fs), len(counts)
    res = RecordResult(Path(path).name, database, fs, len(counts))
    for name in detectors:
        t0 = time.process_time()
        try:
            det = RUNNERS[name](counts, mv, fs)
        except Exception:  # a reference detector failing on a record is a result too
            log.exception("%s failed on %s at %d Hz", name, path, fs)
            det = np.zeros(0, dtype=np.int64)
            res.failed.append(name)
        res.cpu_s[name] = time.process_time() - t0
        res.scores[name] = score(ref, det, window, vf, lo, hi)
        if database == "nstdb":
            noisy = Score()
            for a, b in noise_blocks(len(counts), fs):
                noisy.add(score(ref, det, window, vf, max(a, lo), b))
            res.noisy_scores[name] = noisy
    return res


# ------------------------------------------------------------------- report


def gross(results: list[RecordResult], name: str, noisy: bool = False) -> Score:
    g = Score()
    for r in results:
        g.add((r.noisy_scores if noisy else r.scores)[name])
    return g


def table_lines(results: list[RecordResult], detectors: tuple[str, ...],
                noisy: bool = False) -> list[str]:
    head = "| record | beats | " + " | ".join(f"{d} Se % | +P % | FN | FP" for d in detectors)
    lines = [head + " |", "|---|---:|" + "---:|---:|---:|---:|" * len(detectors)]
    for r in results:
        sc = r.noisy_scores if noisy else r.scores
        first = sc[detectors[0]]
        cells = [f"{sc[d].se:.2f} | {sc[d].ppv:.2f} | {sc[d].fn} | {sc[d].fp}" for d in detectors]
        lines.append(f"| {r.record} | {first.tp + first.fn} | " + " | ".join(cells) + " |")
    g = {d: gross(results, d, noisy) for d in detectors}
    first = g[detectors[0]]
    cells = [f"**{g[d].se:.3f}** | **{g[d].ppv:.3f}** | {g[d].fn} | {g[d].fp}" for d in detectors]
    lines.append(f"| **gross** | {first.tp + first.fn} | " + " | ".join(cells) + " |")
    return lines


def _versions() -> str:
    parts = [f"python {sys.version.split()[0]}", f"numpy {np.__version__}"]
    for mod in ("scipy", "wfdb", "neurokit2"):
        try:
            parts.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            parts.append(f"{mod} (not installed)")
    return ", ".join(parts)


def build_report(results: list[RecordResult], rates: list[int], detectors: tuple[str, ...],
                 wall_s: float, jobs: int, skip_s: float) -> tuple[str, list[str]]:
    out = ["# QRS detection on MIT-BIH: medge vs xqrs vs neurokit2", "",
           "Generated by `python -m models.eval_qrs` (method in its docstring): channel 0, "
           "EC57/bxb beat-by-beat matching within 150 ms, ventricular flutter episodes "
           f"excluded, scored from {skip_s:g} s to the end of each record, all detectors "
           "on the same samples in the same run.", ""]
    summary = []
    for fs in rates:
        for db, noisy in (("mitdb", False), ("nstdb", False), ("nstdb", True)):
            rs = [r for r in results if r.fs_hz == fs and r.database == db]
            if not rs:
                continue
            title = f"{db} at {fs} Hz" + (", noise blocks only" if noisy else "")
            out += [f"## {title}", "", *table_lines(rs, detectors, noisy), ""]
            summary.append(f"{title:32s}" + "".join(
                f"  {d} Se {gross(rs, d, noisy).se:7.3f} +P {gross(rs, d, noisy).ppv:7.3f}"
                for d in detectors))
    cpu = {d: sum(r.cpu_s.get(d, 0.0) for r in results) for d in detectors}
    samples = sum(r.n_samples for r in results)
    out += ["## Run", "",
            f"- wall time {wall_s:.1f} s, {jobs} worker processes, {len(results)} record runs",
            "- CPU time over all records: " + ", ".join(f"{d} {cpu[d]:.1f} s" for d in detectors)]
    if "medge" in cpu and cpu["medge"] > 0:
        out.append(f"- medge (pure Python, band-pass included): {samples / cpu['medge']:,.0f} "
                   "samples/s of CPU time")
    out += [f"- {_versions()}", ""]
    for r in results:
        for name in r.failed:
            out.append(f"- {name} raised on {r.record} at {r.fs_hz} Hz (scored as no detections)")
    return "\n".join(out) + "\n", summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m models.eval_qrs",
                                 description="QRS detector evaluation on MIT-BIH records")
    ap.add_argument("data_dir", help="folder with the mitdb records (e.g. ../shared/data/mitdb)")
    ap.add_argument("--records", nargs="+", default=None, help="mitdb records (default: DS1)")
    ap.add_argument("--fs", type=int, nargs="+", default=[SOURCE_FS_HZ],
                    choices=list(SUPPORTED_RATES_HZ),
                    help=f"device sample rate(s) to evaluate at (default: {SOURCE_FS_HZ})")
    ap.add_argument("--nstdb", default=None,
                    help="nstdb folder (default: ../nstdb beside DATA_DIR if it exists; "
                         "'' to skip)")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=DETECTORS)
    ap.add_argument("--skip-s", type=float, default=0.0,
                    help="score from this many seconds on (default 0: the whole record)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--report", default=DEFAULT_REPORT,
                    help=f"markdown report to write (default {DEFAULT_REPORT}; '' for none)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    data = Path(args.data_dir)
    if not data.is_dir():
        print(f"eval_qrs: {data} is not a folder", file=sys.stderr)
        return 2
    records = args.records or list(DS1_RECORDS)
    nst_dir = None
    if args.nstdb != "":
        candidate = Path(args.nstdb) if args.nstdb else data.parent / "nstdb"
        nst_dir = candidate if candidate.is_dir() else None
    detectors = tuple(args.detectors)
    jobs = []
    for fs in args.fs:
        jobs += [(str(data / r), "mitdb", fs, args.skip_s, detectors) for r in records]
        if nst_dir is not None:
            jobs += [(str(nst_dir / r), "nstdb", fs, args.skip_s, detectors)
                     for r in NSTDB_RECORDS]
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(evaluate_record, jobs))
    wall = time.monotonic() - t0

    report, summary = build_report(results, args.fs, detectors, wall, args.jobs, args.skip_s)
    print("\n".join(summary))
    print(f"wall time {wall:.1f} s")
    if args.report:
        path = Path(args.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report, encoding="utf-8")
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

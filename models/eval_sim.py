"""Score the device QRS detector on virtual patients against their ground truth.

Run::

    python -m models.eval_sim [--minutes 30] [--snr 24 12 6] [--fs 250 360]
        [--rhythms sinus af ...] [--scenarios stable sepsis ...] [--seed 1] [--jobs 2]

For every rhythm (a one-rhythm scenario, :func:`rhythm_scenario`) and every
bundled scenario file, at every sample rate and SNR, a virtual patient
(``sim.patient.VirtualPatient``, real nstdb noise bw+ma+em at that SNR, no mains
hum, no lead-off) streams ``--minutes`` of ECG in ADC counts into
``firmware.signal.qrs.QrsDetector`` in one-second blocks; its beats are matched to the
simulator's R peaks with the bxb rule of ``models.eval_qrs`` (150 ms window).
Prints a table of Se and +P per rhythm, rate and SNR, the AF irregularity
(nRMSSD over 64-beat windows: median and range) per rhythm, and the cost of
the simulator in microseconds per sample per patient.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware.params import SUPPORTED_RATES_HZ
from firmware.signal.qrs import QrsDetector
from models.eval_qrs import MATCH_WINDOW_MS, match_beats
from sim.patient import VirtualPatient
from sim.rhythm import IRREGULARITY_WINDOW_BEATS, rr_irregularity
from sim.scenario import Scenario, list_scenarios, load_scenario, parse_scenario

_BASE_VITALS = {"resp_rate_bpm": 15, "spo2_percent": 97, "temperature_c": 37.0,
                "systolic_mmhg": 122, "diastolic_mmhg": 76}

#: rhythm -> (heart rate, [rhythm] table)
RHYTHMS: dict[str, tuple[float, dict[str, Any]]] = {
    "sinus": (72.0, {}),
    "brady": (45.0, {}),
    "tachy": (130.0, {}),
    "af": (95.0, {"segments": [[0, "af"]]}),
    "pvc": (78.0, {"pvc_burden_percent": 15, "pvc_couplet_percent": 20,
                   "pvc_bigeminy_percent": 10}),
    "pac": (80.0, {"pac_burden_percent": 12}),
    "vt": (80.0, {"vt_runs_per_hour": 60, "vt_beats": [3, 20], "pvc_burden_percent": 3}),
    "pause": (66.0, {"pauses_per_hour": 40}),
}


def rhythm_scenario(rhythm: str, minutes: float) -> Scenario:
    """A scenario with one rhythm, default variation and noise settings."""
    hr, table = RHYTHMS[rhythm]
    data = {"name": f"rhythm-{rhythm}", "duration_s": minutes * 60.0,
            "vitals": {"heart_rate_bpm": hr, **_BASE_VITALS}, "rhythm": table}
    return parse_scenario(data, f"rhythm-{rhythm}")


@dataclass
class Result:
    name: str
    fs: int
    snr_db: float
    tp: int
    fn: int
    fp: int
    beats: dict[str, int]
    missed: dict[str, int]
    nrmssd: list[float]
    us_per_sample: float

    @property
    def se(self) -> float:
        return self.tp / max(1, self.tp + self.fn)

    @property
    def ppv(self) -> float:
        return self.tp / max(1, self.tp + self.fp)


def detect(counts: np.ndarray, fs: int) -> np.ndarray:
    det = QrsDetector(fs)
    out: list[int] = []
    for i in range(0, counts.size, fs):
        out += det.process(counts[i : i + fs].tolist())
    out += det.flush()
    return np.asarray(out, dtype=np.int64)


def evaluate(scenario: Scenario, name: str, fs: int, snr_db: float, seconds: float,
             seed: int) -> Result:
    patient = VirtualPatient(scenario, seed, fs, snr_db=snr_db, mains_uv=0.0, lead_off=False)
    t0 = time.perf_counter()
    ecg = np.concatenate([patient.next_chunk(fs).ecg for _ in range(round(seconds))])
    us = (time.perf_counter() - t0) / ecg.size * 1e6
    ref = patient.truth.beat_samples()
    classes = patient.truth.beat_classes()
    ref_ok, test_ok = match_beats(ref, detect(ecg, fs), round(MATCH_WINDOW_MS * fs / 1000))
    beats = {c: classes.count(c) for c in "NSVFQ" if c in classes}
    missed = {c: int(sum(1 for k, ok in zip(classes, ref_ok) if k == c and not ok))
              for c in beats}
    nr = []
    if name in ("af", "new_onset_af"):
        rr = np.diff(ref) / fs
        rhythm = [b.rhythm for b in patient.truth.beats[: ref.size]]
        w = IRREGULARITY_WINDOW_BEATS
        for i in range(1, rr.size - w, w):
            if all(r == "AFIB" for r in rhythm[i : i + w + 1]):
                nr.append(rr_irregularity(rr[i : i + w]))
    return Result(name, fs, snr_db, int(ref_ok.sum()), int((~ref_ok).sum()),
                  int((~test_ok).sum()), beats, missed, nr, us)


def _job(args: tuple[str, bool, int, float, float, int, float]) -> Result:
    name, is_rhythm, fs, snr, seconds, seed, minutes = args
    sc = rhythm_scenario(name, minutes) if is_rhythm else load_scenario(name)
    return evaluate(sc, name, fs, snr, seconds, seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--snr", type=float, nargs="+", default=[24.0, 12.0, 6.0])
    ap.add_argument("--fs", type=int, nargs="+", default=list(SUPPORTED_RATES_HZ))
    ap.add_argument("--rhythms", nargs="*", default=list(RHYTHMS))
    ap.add_argument("--scenarios", nargs="*", default=list_scenarios())
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    seconds = a.minutes * 60.0
    jobs = [(n, True, fs, snr, seconds, a.seed, a.minutes)
            for n in a.rhythms for fs in a.fs for snr in a.snr]
    jobs += [(n, False, fs, snr, seconds, a.seed, a.minutes)
             for n in a.scenarios for fs in a.fs for snr in a.snr]
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(_job, jobs))
    print(f"QRS detector vs simulator ground truth: {a.minutes:g} min per row, "
          f"nstdb bw+ma+em noise, {MATCH_WINDOW_MS} ms window, seed {a.seed}")
    print(f"{'rhythm/scenario':<16}{'fs':>5}{'SNR':>5}{'beats':>7}{'Se %':>9}{'+P %':>9}"
          f"{'FN':>6}{'FP':>6}  missed by class")
    for r in results:
        missed = " ".join(f"{c}:{n}/{r.beats[c]}" for c, n in r.missed.items() if n)
        print(f"{r.name:<16}{r.fs:>5}{r.snr_db:>5g}{r.tp + r.fn:>7}{100 * r.se:>9.2f}"
              f"{100 * r.ppv:>9.2f}{r.fn:>6}{r.fp:>6}  {missed}")
    for r in results:
        if r.nrmssd:
            v = np.array(r.nrmssd)
            print(f"AF nRMSSD {r.name} fs {r.fs} SNR {r.snr_db:g}: median {np.median(v):.3f}, "
                  f"range {v.min():.3f}-{v.max():.3f} over {v.size} windows")
    us = np.array([r.us_per_sample for r in results])
    print(f"simulator cost: {us.mean():.2f} us per sample per patient "
          f"(range {us.min():.2f}-{us.max():.2f}, ECG+PPG+resp+truth)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

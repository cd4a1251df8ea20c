"""The rhythm-event report: ``make eval-rhythm DATA=../shared/data/mitdb``.

Runs every DS1 record (channel 0) through the device's rhythm code exactly as
``medge ecg rhythm`` does (:func:`host.services.ecg.rhythm_record`: filter
chain, QRS detector, the shipped beat model, signal quality,
:class:`firmware.rhythm.monitor.RhythmMonitor`), and in the same run through
the plain peer (``use_classes=False``: the same monitor without beat classes,
Dash et al.'s own percentile trim in place of the classes), and writes
``models/reports/rhythm.md``:

* AF, EC57-style duration statistics: Se = time detected as AF inside the
  reference ``(AFIB`` episodes / reference AF time; +P = detected AF time that
  lies inside reference AF / all detected AF time, pooled over every record
  (so false AF on the 20 records without AF counts against +P); per record
  too.  Atrial flutter (``(AFL``, in 203) is not AF in the reference; the
  detected time inside it is reported separately.
* VT episodes: the reference episodes are the runs of >= 3 consecutive
  reference V beats (``V``, ``E``) faster than 100 bpm (the device's rule on
  the reference beats); a detected episode matches when it overlaps one.
  Se = matched reference episodes / reference episodes, +P = matched detected /
  detected.
* Pauses: reference pauses are the gaps between consecutive reference beats
  longer than 2.0 s; matching as for VT.

Honesty notes (printed in the report): the shipped beat model was trained on
all of DS1, so the classes the monitor sees here are better than on a new
patient; DS1 has only two AF patients; the thresholds of the AF method are
Dash et al.'s, not fitted here.

Run::

    python -m models.eval_rhythm ../shared/data/mitdb [--jobs 2] [--records 201 203]
        [--sim-hours 24] [--sim-seeds 6]

It also runs the simulator hard cases (issue 13 acceptance, with ground truth):
the ``rhythm_events`` scenario for ``--sim-seeds`` seeds (onset error of every
AF, VT, pause and asystole episode) and the ``stable`` patient for
``--sim-hours`` hours at 12 dB noise (AF and VT events: should be none).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from firmware.params import RHYTHM_PAUSE_MS, RHYTHM_VT_MIN_BEATS, RHYTHM_VT_MIN_BPM
from models.eval_qrs import DS1_RECORDS

REPORT = Path("models/reports/rhythm.md")
MODEL = Path(__file__).resolve().parent / "beatnet"
BEAT_SYMBOLS = frozenset("NLRejAaJSVEF/fQ")
V_SYMBOLS = frozenset("VE")

Interval = tuple[int, int]


def reference(record: str) -> dict[str, list[Interval]]:
    """Reference AF, AFL, VT and pause intervals of a record (its own samples)."""
    import wfdb

    ann = wfdb.rdann(record, "atr")
    hdr = wfdb.rdheader(record)
    fs = float(hdr.fs)
    n = int(hdr.sig_len)
    out: dict[str, list[Interval]] = {"AFIB": [], "AFL": [], "VT": [], "PAUSE": []}
    # Rhythm episodes from the aux notes.
    cur, since = None, 0
    for s, sym, aux in zip(ann.sample, ann.symbol, ann.aux_note):
        note = aux.strip("\x00").strip()
        if sym == "+" and note.startswith("("):
            if cur in ("(AFIB", "(AFL"):
                out[cur[1:]].append((since, int(s)))
            cur, since = note, int(s)
    if cur in ("(AFIB", "(AFL"):
        out[cur[1:]].append((since, n))
    beats = [(int(s), sym) for s, sym in zip(ann.sample, ann.symbol) if sym in BEAT_SYMBOLS]
    # VT: >= 3 consecutive V beats faster than the VT rate.
    run: list[int] = []
    for s, sym in [*beats, (n, "N")]:
        if sym in V_SYMBOLS:
            run.append(s)
            continue
        if len(run) >= RHYTHM_VT_MIN_BEATS:
            rate = 60.0 * fs * (len(run) - 1) / (run[-1] - run[0])
            if rate > RHYTHM_VT_MIN_BPM:
                out["VT"].append((run[0], run[-1]))
        run = []
    gap = RHYTHM_PAUSE_MS * fs / 1000.0
    for (a, _), (b, _) in zip(beats, beats[1:]):
        if b - a > gap:
            out["PAUSE"].append((a, b))
    return out


def _overlap(a: list[Interval], b: list[Interval]) -> int:
    tot = 0
    for s0, e0 in a:
        for s1, e1 in b:
            lo, hi = max(s0, s1), min(e0, e1)
            if hi > lo:
                tot += hi - lo
    return tot


def _length(a: list[Interval]) -> int:
    return sum(e - s for s, e in a)


def _matches(ref: list[Interval], det: list[Interval]) -> tuple[int, int]:
    """(reference episodes overlapped by a detection, detections overlapping a
    reference episode); touching (a zero-length detection inside) counts."""
    def hit(x: Interval, ys: list[Interval]) -> bool:
        return any(x[0] <= y[1] and y[0] <= x[1] for y in ys)
    return sum(hit(r, det) for r in ref), sum(hit(d, ref) for d in det)


def _classifier():
    from firmware.ml.infer import ModelSlot

    slot = ModelSlot("auto")
    base = MODEL
    if not slot.install_files(str(base.with_suffix(".tflite")), str(base.with_suffix(".json"))):
        raise SystemExit(f"eval_rhythm: the shipped model cannot be used: {slot.last_error}")
    return slot.classifier


#: Run modes: the device, the device without the atrial evidence, the plain peer.
MODES = {"device": (True, True), "rr": (True, False), "peer": (False, False)}


def run_record(args: tuple[str, str]) -> dict:
    from sim.records import device_signal
    from sim.rhythm_replay import episodes, rhythm_counts

    record, mode = args
    use_classes, atrial = MODES[mode]
    t0 = time.perf_counter()
    sig = device_signal(record, 0)
    clf = _RecordingClassifier(_classifier()) if use_classes else None
    res = rhythm_counts(sig.counts, sig.device_fs_hz, clf, use_classes=use_classes,
                        atrial=atrial)
    secs = time.perf_counter() - t0
    det: dict[str, list[Interval]] = {"AFIB": [], "VT": [], "PAUSE": []}
    for a, b, kind in episodes(res):
        if kind in ("PAUSE", "ASYSTOLE"):
            kind = "PAUSE"
        if kind in det:
            ra, rb = sig.to_record_samples([a])[0], sig.to_record_samples([b])[0]
            det[kind].append((ra, rb))
    beats = []
    if clf is not None:  # (record sample, rhythm-aware label, the classifier's own label)
        for (s, lab), raw in zip(res.beats, clf.outputs):
            beats.append((sig.to_record_samples([s])[0], lab, CLASSES[raw]))
    return {"record": Path(record).name, "mode": mode, "det": det,
            "seconds": secs, "duration_s": sig.record_len / sig.record_fs_hz, "beats": beats}


class _RecordingClassifier:
    """The classifier, remembering each of its outputs (the raw class of each beat)."""

    def __init__(self, clf) -> None:
        self.clf = clf
        self.outputs: list[int] = []

    def classify(self, beat, rr) -> int:
        c = self.clf.classify(beat, rr)
        self.outputs.append(c)
        return c


# ---------------------------------------------------- beat classes by group

CLASSES = "NSVFQ"
AAMI = {**dict.fromkeys("NLRej", "N"), **dict.fromkeys("AaJS", "S"), **dict.fromkeys("VE", "V"),
        "F": "F", **dict.fromkeys("/fQ", "Q")}
AGE_GROUPS = ((0, 50, "< 50"), (50, 70, "50-69"), (70, 200, ">= 70"))
MATCH_S = 0.15


def demographics(record: str) -> tuple[int, str]:
    """(age, sex) from the first comment line of a MIT-BIH header ("# 69 M ...")."""
    for line in Path(record + ".hea").read_text().splitlines():
        if line.startswith("#"):
            parts = line[1:].split()
            return int(parts[0]), parts[1]
    raise ValueError(f"{record}: no age/sex comment in the header")


def confusion(record: str, beats: list[tuple[int, str, str]], which: int) -> np.ndarray:
    """5x5 (true x predicted) of the reference beats matched within 150 ms;
    ``which`` 1: rhythm-aware labels, 2: the classifier's own."""
    import wfdb

    ann = wfdb.rdann(record, "atr")
    fs = float(wfdb.rdheader(record).fs)
    det = np.array([b[0] for b in beats], dtype=np.int64)
    out = np.zeros((5, 5), dtype=np.int64)
    win = MATCH_S * fs
    for s, sym in zip(ann.sample, ann.symbol):
        if sym not in AAMI or not len(det):
            continue
        i = int(np.searchsorted(det, s))
        cand = [j for j in (i - 1, i) if 0 <= j < len(det) and abs(det[j] - s) <= win]
        if cand:
            j = min(cand, key=lambda k: abs(det[k] - s))
            out[CLASSES.index(AAMI[sym]), CLASSES.index(beats[j][which])] += 1
    return out


def _sepp(c: np.ndarray, k: int) -> str:
    se = f"{100 * c[k, k] / c[k].sum():.1f}" if c[k].sum() else "-"
    pp = f"{100 * c[k, k] / c[:, k].sum():.1f}" if c[:, k].sum() else "-"
    return f"{se} / {pp}"


def bias_report(results: list[dict], data: str) -> list[str]:
    groups: dict[str, list[str]] = {"all": [], "female": [], "male": []}
    for _lo, _hi, name in AGE_GROUPS:
        groups[f"age {name}"] = []
    conf: dict[str, dict[int, np.ndarray]] = {}
    s_by: dict[str, list[tuple[int, str]]] = {}
    for r in results:
        if r["mode"] != "device":
            continue
        rec = str(Path(data) / r["record"])
        age, sex = demographics(rec)
        keys = ["all", "female" if sex == "F" else "male"]
        keys += [f"age {n}" for lo, hi, n in AGE_GROUPS if lo <= age < hi]
        for which in (1, 2):
            c = confusion(rec, r["beats"], which)
            if which == 1:
                for k in keys:
                    s_by.setdefault(k, []).append((int(c[1].sum()), r["record"]))
            for k in keys:
                conf.setdefault(k, {}).setdefault(which, np.zeros((5, 5), dtype=np.int64))
                conf[k][which] += c
        for k in keys:
            groups[k].append(r["record"])
    L = ["", "## Beat classes by sex and age (DS1, shipped model)", "",
         "Se / +P in %, beats of each group's records pooled; rhythm-aware = the labels "
         "`medge ecg analyze` prints (no S in AF), raw = the classifier's own "
         "(`--no-rhythm`). Ages and sexes from the MIT-BIH headers.", "",
         "| group | records | beats | S beats (largest record) | S rhythm-aware | S raw | "
         "V rhythm-aware | V raw |",
         "|---|---|---|---|---|---|---|---|"]
    for k, recs in groups.items():
        if k not in conf:
            continue
        a, b = conf[k][1], conf[k][2]
        n_s, top = max(s_by[k])
        tot = sum(n for n, _ in s_by[k])
        share = f"{tot} ({top}: {100 * n_s / tot:.0f} %)" if tot else "0"
        L.append(f"| {k} | {len(recs)} | {int(a.sum())} | {share} | {_sepp(a, 1)} | "
                 f"{_sepp(b, 1)} | {_sepp(a, 2)} | {_sepp(b, 2)} |")
    L += ["", "What these figures can and cannot show: the shipped model was trained on all "
          "of these records, so they are resubstitution figures (an upper bound), not what a "
          "new patient of the group gets; the leave-records-out figures per group need the "
          "fold models (`make eval-model`). Each group is 5-13 patients, and S beats gather "
          "in a few of them (the column above: one record holds a large share of each "
          "group's S beats), so a group's S figure is largely one or two patients' figure: "
          "differences between groups cannot be told from differences between patients. "
          "Sex and age are confounded with the arrhythmias the records were chosen for "
          "(the two AF patients are men of 68 and 43). Other attributes that matter for "
          "ECG morphology (ancestry, body habitus, medication, pacing) are not in the "
          "headers."]
    return L



def score(results: list[dict], refs: dict[str, dict]) -> dict:
    af_ref = af_det = af_tp = afl_det = 0
    vt = [0, 0, 0, 0]  # ref, ref matched, det, det matched
    af_ep = [0, 0, 0, 0]  # the same for AF episodes
    pa = [0, 0, 0, 0]
    per: list[tuple[str, float, float, int, int]] = []
    for r in results:
        ref = refs[r["record"]]
        det = r["det"]
        tp = _overlap(ref["AFIB"], det["AFIB"])
        af_tp += tp
        af_ref += _length(ref["AFIB"])
        af_det += _length(det["AFIB"])
        afl_det += _overlap(ref["AFL"], det["AFIB"])
        for acc, kind in ((vt, "VT"), (pa, "PAUSE"), (af_ep, "AFIB")):
            m_ref, m_det = _matches(ref[kind], det[kind])
            acc[0] += len(ref[kind])
            acc[1] += m_ref
            acc[2] += len(det[kind])
            acc[3] += m_det
        per.append((r["record"], _length(ref["AFIB"]), _length(det["AFIB"]), tp,
                    len(det["VT"])))
    def pct(a: int, b: int) -> str:
        return f"{100.0 * a / b:.1f}" if b else "n/a"
    return {"af_se": pct(af_tp, af_ref), "af_pp": pct(af_tp, af_det),
            "af_ref_s": af_ref / 360.0, "af_det_s": af_det / 360.0,
            "afl_det_s": afl_det / 360.0,
            "af_pp_no_afl": pct(af_tp, af_det - afl_det),
            "af_ep": af_ep, "af_ep_se": pct(af_ep[1], af_ep[0]),
            "af_ep_pp": pct(af_ep[3], af_ep[2]),
            "vt": vt, "vt_se": pct(vt[1], vt[0]), "vt_pp": pct(vt[3], vt[2]),
            "pause": pa, "pause_se": pct(pa[1], pa[0]), "pause_pp": pct(pa[3], pa[2]),
            "per": per}


def write_report(ours: dict, rr: dict, peer: dict, results: list[dict], data: str) -> str:
    secs = sum(r["seconds"] for r in results if r["mode"] == "device")
    dur = sum(r["duration_s"] for r in results if r["mode"] == "device")
    cols = (ours, rr, peer)

    def row(name: str, cell) -> str:
        return f"| {name} | " + " | ".join(cell(c) for c in cols) + " |"

    def frac(key: str, rate: str, i: int, j: int):
        return lambda c: f"{c[rate]} ({c[key][i]}/{c[key][j]})"

    L = ["# Rhythm events on MIT-BIH DS1",
         "",
         "Generated by `make eval-rhythm DATA=...` (`python -m models.eval_rhythm`); do not edit.",
         f"Data: `{data}` (22 DS1 records, channel 0). Python {platform.python_version()}.",
         "",
         "Device: `firmware.rhythm` (AF: Dash et al. 2009 nRMSSD + Shannon entropy + "
         "turning points on NN intervals chosen by the beat classes, entered and left "
         "with hysteresis on a 16-interval window of lag-1 and lag-2 steps, and gated "
         "by the atrial activity: the P-wave coherence of the last 16 on-time N beats' "
         "P regions, channel 0 of the classifier input, after Babaeizadeh et al. 2009; "
         "`firmware/rhythm/af.py`, `firmware/rhythm/atrial.py`). RR only: the same "
         "device without the atrial evidence (the AF decision before session 6), same "
         "run. Peer: the same monitor with no beat classes (every interval, Dash's "
         "percentile trim).",
         "",
         "AF episodes: a reference episode is one `(AFIB` rhythm note to the next note "
         "(203's AF is cut into 21 pieces by its VT notes); an episode matches when "
         "it overlaps one of the other side.",
         "",
         "| figure | device (classes + atrial) | device, RR only | plain RR peer |",
         "|---|---|---|---|",
         row("AF duration Se %", lambda c: c["af_se"]),
         row("AF duration +P %", lambda c: c["af_pp"]),
         row("AF detected / reference, s", lambda c: f"{c['af_det_s']:.0f} / {c['af_ref_s']:.0f}"),
         row("AF detected inside atrial flutter (203), s", lambda c: f"{c['afl_det_s']:.0f}"),
         row("AF duration +P % with the flutter time left out", lambda c: c["af_pp_no_afl"]),
         row("AF episode Se % (matched / reference)", frac("af_ep", "af_ep_se", 1, 0)),
         row("AF episode +P % (matched / detected)", frac("af_ep", "af_ep_pp", 3, 2)),
         row("VT episode Se % (matched / reference)", frac("vt", "vt_se", 1, 0)),
         row("VT episode +P % (matched / detected)", frac("vt", "vt_pp", 3, 2)),
         row("pause Se %", frac("pause", "pause_se", 1, 0)),
         row("pause +P %", frac("pause", "pause_pp", 3, 2)),
         "",
         "The peer has no beat classes, so it cannot detect VT (it reports none).",
         "",
         "## AF per record (seconds)",
         "",
         "| record | reference AF | device AF | device AF inside ref | RR only AF | "
         "RR only inside ref | peer AF | peer inside ref |",
         "|---|---|---|---|---|---|---|---|"]
    rr_per = {p[0]: p for p in rr["per"]}
    peer_per = {p[0]: p for p in peer["per"]}
    for rec, ref, det, tp, _ in ours["per"]:
        q, p = rr_per[rec], peer_per[rec]
        if ref or det or p[2] or q[2]:
            L.append(f"| {rec} | {ref / 360:.0f} | {det / 360:.0f} | {tp / 360:.0f} | "
                     f"{q[2] / 360:.0f} | {q[3] / 360:.0f} | "
                     f"{p[2] / 360:.0f} | {p[3] / 360:.0f} |")
    L += ["",
          "Records not listed: no AF in the reference and none detected by either.",
          "",
          "## What these figures can and cannot say",
          "",
          "- The shipped beat model was trained on all 22 DS1 records, so the classes the "
          "monitor uses here are better than it will get on a new patient; the peer needs "
          "no classes and has no such advantage. The held-out (DS2) AF figures are expected "
          "lower for the device by however much the classes degrade (the issue's held-out S "
          "figures: 29.5 Se / 18.2 +P), chiefly through PACs called N in sinus rhythm "
          "(false AF) and AF beats called S or V (starved NN window).",
          "- DS1 has two AF patients (201, 203): the AF Se is an estimate from two people.",
          "- Dash et al.'s three thresholds were not fitted here; the short window's "
          "four numbers (step 1/16, enter at 10 of 16 steps, leave at 6, onset walk-back "
          "bounded by 6 steady intervals) were chosen looking at DS1's step "
          "distributions and the simulator's AF, so the DS1 AF figures are partly "
          "resubstitution. Atrial flutter counts as false AF; 203's flutter has RR "
          "intervals as irregular as AF (variable block), which no RR method separates "
          "(the row without the flutter time shows what the rest gives).",
          "- The atrial gate's two levels (AF may start below a P-wave coherence of 350 "
          "per mille, ends above 500) and its on-time rule (only beats at least 7/8 of "
          "the mean RR enter the window) were chosen looking at DS1's coherence "
          "distributions and at 201's false AF (its aberrant and blocked PACs): "
          "resubstitution too, though a scan of 250-400 / 400-600 moved DS1 AF +P by "
          "less than a point. The gate only holds AF back or ends it where P regions "
          "repeat (it adds no AF of its own), so it can cost Se where AF's P regions "
          "look coherent, and where P waves are too small to see it makes no objection "
          "(low coherence): the RR decision then stands alone. It does not see flutter: "
          "203's flutter waves are as incoherent "
          "in the P region as its f waves (median coherence 72 per mille, AF 135, "
          "other rhythms 812).",
          "- AF methods tried: (1) Dash et al. 2009 on the NN intervals the classes "
          "choose (session 4: +P 69.4); (2) plus the 16-interval lag-1/lag-2 step "
          "hysteresis (session 5: +P 75.5, the RR-only column); (3) plus the atrial "
          "activity (session 6, shipped: the device column). Not done: telling "
          "flutter from AF (needs the flutter waves' regularity over more TQ segment "
          "than the classifier window's 183 ms before the QRS holds), and cutting AF "
          "at VT runs (203's VT notes inside AF count as false AF time).",
          "- Reference VT here is the device's own rule applied to the reference beats "
          "(EC57 counts runs the same way); the `(VT` rhythm notes agree with most of them.",
          "",
          f"Speed: {secs:.0f} s of CPU for {dur / 3600:.1f} h of ECG with classes "
          f"({dur / secs:.0f}x real time, one core, CPython; whole chain incl. the beat model).",
          ""]
    return "\n".join(L)


# ---------------------------------------------------------------- simulator

SIM_FS_HZ = 250
#: Seeds of the report's virtual patients: 1-6 were looked at while the code
#: was written (seed 4 led to the 12-interval AF episode bound), so the
#: report uses others.
SIM_SEED0 = 101
#: Onset tolerance per episode kind (issue 13 acceptance), seconds.
ONSET_S = {"AFIB": 30.0, "VT": 10.0, "PAUSE": 10.0, "ASYSTOLE": 10.0}


def sim_stable(args: tuple[float, int, float]) -> dict:
    """The ``stable`` patient for ``hours`` at ``snr_db`` through the chain, an
    hour at a time: the AF and VT events it reports (there should be none)."""
    from sim.patient import VirtualPatient
    from sim.rhythm_replay import episodes, rhythm_stream

    hours, seed, snr_db = args
    p = VirtualPatient("stable", seed, SIM_FS_HZ, snr_db=snr_db)
    t0 = time.perf_counter()
    n = round(hours)
    res = rhythm_stream((p.run(3600.0).ecg for _ in range(n)), SIM_FS_HZ, _classifier(),
                        mains_hz=p.scenario.noise["mains_hz"], keep_beats=False)
    eps = episodes(res)
    return {"hours": n, "seed": seed, "snr_db": snr_db, "seconds": time.perf_counter() - t0,
            "af": sum(k == "AFIB" for _, _, k in eps), "vt": sum(k == "VT" for _, _, k in eps),
            "beats": len(p.truth.beats), "kinds": sorted({k for _, _, k in eps})}


def sim_events(seed: int) -> dict:
    """The ``rhythm_events`` scenario: each truth AF/VT/pause/asystole episode
    found or not, with its onset error; AF/VT reported outside the truth."""
    from sim.patient import VirtualPatient
    from sim.rhythm_replay import episodes, rhythm_counts

    p = VirtualPatient("rhythm_events", seed, SIM_FS_HZ)
    ecg = p.run(p.scenario.duration_s).ecg
    res = rhythm_counts(ecg, SIM_FS_HZ, _classifier(), mains_hz=p.scenario.noise["mains_hz"])
    det = episodes(res)
    fs = SIM_FS_HZ
    rows = []
    truth = [e for e in p.truth.rhythm_episodes() if e.rhythm in ONSET_S]
    for t in truth:
        hits = [a for a, b, k in det if k == t.rhythm
                and a <= t.end_sample + fs and b >= t.start_sample - fs]
        err = min(abs(a - t.start_sample) for a in hits) / fs if hits else None
        rows.append((t.rhythm, t.start_sample / fs, err))
    extra = [(k, a / fs) for a, b, k in det if k in ("AFIB", "VT") and not any(
        t.rhythm == k and a <= t.end_sample + fs and b >= t.start_sample - fs for t in truth)]
    return {"seed": seed, "rows": rows, "extra": extra}


#: Hard case for AF +P (ectopy-heavy sinus): sinus at 80 bpm with PAC burden
#: 30 % (~40 % of the beats; inverted P waves, not compensatory), 10 min at 18 dB.
FREQUENT_PACS = {
    "name": "frequent_pacs", "description": "sinus with 30 % PACs", "duration_s": 600,
    "vitals": {"heart_rate_bpm": 80, "resp_rate_bpm": 14, "spo2_percent": 97,
               "temperature_c": 36.8, "systolic_mmhg": 124, "diastolic_mmhg": 78},
    "rhythm": {"pac_burden_percent": 30.0, "pvc_burden_percent": 1.0},
    "noise": {"snr_db": 18.0}}


def sim_pacs(seed: int, classifier=None) -> dict:
    """The :data:`FREQUENT_PACS` patient through the chain with and without the
    atrial evidence: seconds of AF reported (the truth has none), S beats."""
    from sim.patient import VirtualPatient
    from sim.rhythm_replay import episodes, rhythm_counts
    from sim.scenario import parse_scenario

    sc = parse_scenario(FREQUENT_PACS)
    p = VirtualPatient(sc, seed, SIM_FS_HZ)
    ecg = p.run(sc.duration_s).ecg
    clf = classifier if classifier is not None else _classifier()
    out: dict = {"seed": seed, "pacs": sum(b.aami == "S" for b in p.truth.beats),
                 "beats": len(p.truth.beats)}
    for key, atrial in (("atrial", True), ("rr", False)):
        res = rhythm_counts(ecg, SIM_FS_HZ, clf, mains_hz=sc.noise["mains_hz"], atrial=atrial)
        out[key] = sum(b - a for a, b, k in episodes(res) if k == "AFIB") / SIM_FS_HZ
    return out


def sim_report(stable: list[dict], events: list[dict], pacs: list[dict]) -> list[str]:
    L = ["", "## Simulator hard cases (ground truth)", "",
         f"Seeds from {SIM_SEED0} on: seeds 1-6 of this scenario were looked at while the "
         "code was written (seed 4, an AF whose first intervals were regular by chance, "
         "led to bounding AF episodes by 12 regular intervals instead of 8; seed 3's AF, "
         "found 33 s late by a 4-interval onset bound, led to the 6-interval bound of "
         "the short window; in session 6 seed 3's AF, found 31 s late once the atrial gate "
         "held the decision back, led to dating the onset when the intervals first say "
         "AF); these seeds chose nothing (101-106 were run once after the short window's "
         "numbers were fixed, and again after the atrial gate's, as a check). The tests "
         "use seed 3.", "",
         "`rhythm_events` (15 min, 18 dB real noise: sinus with 3 % PVCs and 1 % PACs, 5 min "
         "of AF, VT runs of 10 and 5 beats, a 3 s pause, 6 s asystole, a 20 s lead-off), "
         "whole chain at 250 Hz, one row per seed: onset error in seconds per truth episode "
         "(tolerance: AF 30 s, the others 10 s; `miss` = not reported).", "",
         "| seed | " + " | ".join(r[0] for r in events[0]["rows"]) + " | AF/VT outside truth |",
         "|---|" + "---|" * (len(events[0]["rows"]) + 1)]
    ok = 0
    total = 0
    for e in events:
        cells = []
        for kind, _, err in e["rows"]:
            total += 1
            if err is not None and err <= ONSET_S[kind]:
                ok += 1
            cells.append("miss" if err is None else f"{err:.1f}")
        extra = ", ".join(f"{k} at {t:.0f} s" for k, t in e["extra"]) or "0"
        L.append(f"| {e['seed']} | " + " | ".join(cells) + f" | {extra} |")
    L += ["", f"Episodes found within tolerance: {ok} / {total}.", "",
          "`stable` (sinus 72 bpm, occasional PVCs/PACs) with real noise at the stated SNR, "
          "whole chain, streamed an hour at a time:", "",
          "| hours | seed | SNR dB | beats | AF events | VT events | episode kinds | CPU s |",
          "|---|---|---|---|---|---|---|---|"]
    for s in stable:
        L.append(f"| {s['hours']} | {s['seed']} | {s['snr_db']:g} | {s['beats']} | {s['af']} | "
                 f"{s['vt']} | {', '.join(s['kinds']) or '-'} | {s['seconds']:.0f} |")
    L += ["", "`frequent_pacs` (sinus 80 bpm, PAC burden 30 %: inverted P waves, not "
          "compensatory; 1 % PVCs; 10 min at 18 dB; the truth has no AF): AF reported, "
          "seconds, by the device and by the device without the atrial evidence (RR only). "
          "Looked at while the gate was written: seeds 1 and 2 at burden 30 % and 45 % "
          "(at 45 % the PACs come in runs of changing coupling, an ectopic atrial "
          "rhythm whose P regions are as incoherent as AF's: AF for most of the 10 "
          "minutes either way); the test uses seed 1; these seeds were not.", "",
          "| seed | beats | PACs (truth) | AF s, device | AF s, RR only |",
          "|---|---|---|---|---|"]
    for q in pacs:
        L.append(f"| {q['seed']} | {q['beats']} | {q['pacs']} | {q['atrial']:.0f} | "
                 f"{q['rr']:.0f} |")
    return L


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="folder with the MIT-BIH DS1 records")
    ap.add_argument("--records", nargs="*", default=list(DS1_RECORDS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=str(REPORT))
    ap.add_argument("--sim-hours", type=float, default=24.0,
                    help="hours of the stable patient at 12 dB (0: skip the simulator)")
    ap.add_argument("--sim-seeds", type=int, default=6,
                    help="seeds of the rhythm_events scenario")
    args = ap.parse_args(argv)
    recs = [str(Path(args.data) / r) for r in args.records]
    missing = [r for r in recs if not Path(r + ".hea").is_file()]
    if missing:
        print(f"eval_rhythm: missing records: {', '.join(missing)}", file=sys.stderr)
        return 2
    refs = {Path(r).name: reference(r) for r in recs}
    jobs = [(r, m) for r in recs for m in MODES]
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        stable_f = (ex.submit(sim_stable, (args.sim_hours, 1, 12.0))
                    if args.sim_hours > 0 else None)
        results = list(ex.map(run_record, jobs))
        events = (list(ex.map(sim_events, range(SIM_SEED0, SIM_SEED0 + args.sim_seeds)))
                  if args.sim_hours > 0 else [])
        pacs = (list(ex.map(sim_pacs, range(SIM_SEED0, SIM_SEED0 + args.sim_seeds)))
                if args.sim_hours > 0 else [])
        stable = [stable_f.result()] if stable_f is not None else []
    ours, rr, peer = (score([r for r in results if r["mode"] == m], refs) for m in MODES)
    text = write_report(ours, rr, peer, results, args.data)
    text += "\n".join(bias_report(results, args.data)) + "\n"
    if events:
        text += "\n".join(sim_report(stable, events, pacs)) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make eval-vitals DATA=../shared/data/bidmc``: the device's vital signs against references.

BIDMC PPG and Respiration Dataset, records 01-26 (27-53 are held out), 8 min
each: every 32-s window stepped by 8 s (:mod:`host.services.vitals`, the
code of ``medge vitals analyze``), against

- respiratory rate: the breaths marked by the two annotators (``.breath``,
  ``ann1`` / ``ann2``): per annotator 60 x (breaths - 1) / (last - first
  breath) in the window, averaged over the two;
- pulse rate and heart rate: the monitor's 1 Hz numerics (``PULSE``, ``HR``)
  averaged over the window.

and, on the same windows, neurokit2 (``ecg_peaks`` -> ``ecg_rate`` ->
``ecg_rsp`` -> ``rsp_process`` for its ECG-derived respiration, and
``ppg_process`` for its PPG pulse rate; each rate is the mean of its
per-sample rate over the window).  Figures: MAE, RMSE, % of windows within
+-2 /min, share of windows reported (the device withholds; neurokit2 always
answers), Bland-Altman bias and 95 % limits; one Bland-Altman PNG per vital.

Simulator (:func:`sim_rows`): every bundled scenario through the device's
vital-sign code at 24, 12 and 6 dB real ECG noise, against the simulator's
ground truth.

Writes ``models/reports/vitals.md`` and the PNGs beside it.  Nothing is tuned
per record: the device's constants are the same for every record.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.vitals_replay import STEP_S, WINDOW_S, analyze_arrays, analyze_record

REPORT = Path(__file__).resolve().parent / "reports" / "vitals.md"
RECORDS = [f"bidmc{i:02d}" for i in range(1, 27)]
SCENARIOS = ("stable", "sepsis", "copd_oxygen", "new_onset_af", "pvc_burden")


@dataclass
class Pairs:
    """Paired (estimate, reference) values of one vital for one method."""

    est: list[float] = field(default_factory=list)
    ref: list[float] = field(default_factory=list)
    windows: int = 0

    def add(self, est: float | None, ref: float) -> None:
        if not math.isfinite(ref):
            return
        self.windows += 1
        if est is None or not math.isfinite(est):
            return
        self.est.append(float(est))
        self.ref.append(float(ref))

    def stats(self) -> dict[str, float]:
        e, r = np.asarray(self.est), np.asarray(self.ref)
        d = e - r
        out = {"windows": self.windows, "reported": len(e),
               "reported_pct": 100.0 * len(e) / self.windows if self.windows else 0.0}
        if len(e):
            out.update(mae=float(np.mean(np.abs(d))), rmse=float(np.sqrt(np.mean(d * d))),
                       within2_pct=float(100.0 * np.mean(np.abs(d) <= 2.0)),
                       bias=float(np.mean(d)), loa=float(1.96 * np.std(d)))
        return out


def _rate_from_marks(t: np.ndarray, lo: float, hi: float) -> float:
    m = t[(t > lo) & (t <= hi)]
    if len(m) < 2 or m[-1] == m[0]:
        return float("nan")
    return 60.0 * (len(m) - 1) / (m[-1] - m[0])


def bidmc_references(record: str) -> tuple[dict[str, np.ndarray], list[np.ndarray], float]:
    import wfdb

    num = wfdb.rdrecord(record + "n")
    names = [n.strip().rstrip(",") for n in num.sig_name]
    numerics = {n: num.p_signal[:, i] for i, n in enumerate(names)}
    ann = wfdb.rdann(record, "breath")
    fs = wfdb.rdheader(record).fs
    marks = []
    for who in ("ann1", "ann2"):
        s = np.asarray([a for a, note in zip(ann.sample, ann.aux_note) if note == who])
        marks.append(np.sort(s) / fs)
    return numerics, marks, fs


def _window_mean(series: np.ndarray, fs: float, lo: float, hi: float) -> float:
    a, b = math.ceil(lo * fs), math.floor(hi * fs)
    seg = series[max(0, a):max(0, b)]
    seg = seg[np.isfinite(seg)]
    return float(np.mean(seg)) if len(seg) else float("nan")


def neurokit_rates(record: str) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """neurokit2's per-sample EDR respiratory rate and PPG rate (or None on failure)."""
    import warnings

    import neurokit2 as nk
    import wfdb

    rec = wfdb.rdrecord(record)
    names = [n.strip().rstrip(",") for n in rec.sig_name]
    fs = float(rec.fs)
    rsp_rate = ppg_rate = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ecg = rec.p_signal[:, names.index("II")]
            clean = nk.ecg_clean(ecg, sampling_rate=fs)
            _, info = nk.ecg_peaks(clean, sampling_rate=fs)
            rate = nk.ecg_rate(info["ECG_R_Peaks"], sampling_rate=fs, desired_length=len(ecg))
            edr = nk.ecg_rsp(rate, sampling_rate=fs)
            sig, _ = nk.rsp_process(edr, sampling_rate=fs)
            rsp_rate = np.asarray(sig["RSP_Rate"], dtype=float)
        except Exception as exc:  # a peer failing on a record is a result, not a crash
            print(f"  neurokit2 EDR failed on {record}: {exc}", file=sys.stderr)
        try:
            ppg = rec.p_signal[:, names.index("PLETH")]
            sig, _ = nk.ppg_process(ppg, sampling_rate=fs)
            ppg_rate = np.asarray(sig["PPG_Rate"], dtype=float)
        except Exception as exc:
            print(f"  neurokit2 PPG failed on {record}: {exc}", file=sys.stderr)
    return rsp_rate, ppg_rate, fs


def evaluate_bidmc(data: Path, records: list[str]) -> dict[str, Pairs]:
    res = {k: Pairs() for k in ("rr_medge", "rr_nk", "pr_medge", "pr_nk", "hr_medge")}
    res.update({f"rr_mod_{i}": Pairs() for i in range(6)})
    for name in records:
        rec = str(data / name)
        t0 = time.monotonic()
        rows = analyze_record(rec)
        numerics, marks, _ = bidmc_references(rec)
        nk_rsp, nk_ppg, fs = neurokit_rates(rec)
        for row in rows:
            lo, hi = row.time_s - WINDOW_S, row.time_s
            rr_ref = float(np.nanmean([_rate_from_marks(m, lo, hi) for m in marks]))
            pr_ref = _window_mean(numerics["PULSE"], 1.0, lo, hi)
            hr_ref = _window_mean(numerics["HR"], 1.0, lo, hi)
            rr = None if row.resp_rate_x10 is None else row.resp_rate_x10 / 10.0
            res["rr_medge"].add(rr, rr_ref)
            for i, v in enumerate(row.resp_estimates_x10):
                res[f"rr_mod_{i}"].add(v / 10.0 if v else None, rr_ref)
            res["pr_medge"].add(row.pulse_rate, pr_ref)
            res["hr_medge"].add(row.heart_rate, hr_ref)
            res["rr_nk"].add(None if nk_rsp is None else _window_mean(nk_rsp, fs, lo, hi),
                             rr_ref)
            res["pr_nk"].add(None if nk_ppg is None else _window_mean(nk_ppg, fs, lo, hi),
                             pr_ref)
        print(f"  {name}: {len(rows)} windows ({time.monotonic() - t0:.1f} s)", file=sys.stderr)
    return res


def sim_rows(scenario: str, snr_db: float, duration_s: int, seed: int = 1):
    """(device rows, truth) for one virtual patient through the same vital-sign code."""
    from sim.patient import VirtualPatient

    vp = VirtualPatient(scenario, seed, 250, snr_db=snr_db)
    chunk = vp.run(duration_s)
    rows = analyze_arrays(chunk.ecg, 250, chunk.ppg_ir.astype(np.int64), 250, duration_s)
    return rows, vp.truth


def evaluate_sim(duration_s: int, snrs: tuple[float, ...]) -> dict[tuple[str, float], dict]:
    out = {}
    for sc in SCENARIOS:
        for snr in snrs:
            rows, truth = sim_rows(sc, snr, duration_s)
            vit = np.asarray(truth.vitals)
            breaths = np.asarray(truth.breaths_s)
            beats = truth.beat_samples() / truth.fs_hz
            p = {k: Pairs() for k in ("hr", "pr", "rr")}
            for row in rows:
                lo, hi = row.time_s - WINDOW_S, row.time_s
                rr_ref = _rate_from_marks(breaths, lo, hi)
                hr_ref = _rate_from_marks(beats, lo, hi)
                p["rr"].add(None if row.resp_rate_x10 is None else row.resp_rate_x10 / 10, rr_ref)
                p["hr"].add(row.heart_rate, hr_ref)
                p["pr"].add(row.pulse_rate, hr_ref)
            del vit
            out[(sc, snr)] = {k: v.stats() for k, v in p.items()}
            print(f"  sim {sc} {snr} dB done", file=sys.stderr)
    return out


def bland_altman(pairs: dict[str, Pairs], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4), squeeze=False)
    for ax, (label, pr) in zip(axes[0], pairs.items()):
        e, r = np.asarray(pr.est), np.asarray(pr.ref)
        if len(e):
            m, d = (e + r) / 2, e - r
            ax.scatter(m, d, s=6, alpha=0.5)
            bias, loa = float(np.mean(d)), float(1.96 * np.std(d))
            for y, style in ((bias, "-"), (bias + loa, "--"), (bias - loa, "--")):
                ax.axhline(y, color="k", linestyle=style, linewidth=0.8)
        ax.set_title(f"{title}: {label}")
        ax.set_xlabel("mean of method and reference")
        ax.set_ylabel("method - reference")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(s: dict, key: str, digits: int = 2) -> str:
    v = s.get(key)
    return "-" if v is None else f"{v:.{digits}f}"


def _line(label: str, s: dict) -> str:
    return (f"| {label} | {s['windows']} | {s['reported_pct']:.1f} | {_fmt(s, 'mae')} | "
            f"{_fmt(s, 'rmse')} | {_fmt(s, 'within2_pct', 1)} | {_fmt(s, 'bias')} | "
            f"{_fmt(s, 'loa')} |")


_HEAD = ("| method | windows | reported % | MAE | RMSE | within +-2 % | bias | 95 % LoA +- |\n"
         "|---|---|---|---|---|---|---|---|")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="folder with the BIDMC records (bidmcNN.*)")
    ap.add_argument("--records", nargs="*", default=RECORDS)
    ap.add_argument("--sim-duration", type=int, default=300, help="s per virtual patient")
    ap.add_argument("--no-sim", action="store_true")
    ap.add_argument("--report", type=Path, default=REPORT)
    args = ap.parse_args(argv)
    if not (args.data / f"{args.records[0]}.hea").is_file():
        print(f"eval-vitals: no BIDMC records in {args.data}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    res = evaluate_bidmc(args.data, args.records)
    st = {k: v.stats() for k, v in res.items()}
    from firmware.vitals.resp import MODULATION_NAMES

    lines = ["# Vital signs: the device against references", "",
             "Made by `make eval-vitals DATA=../shared/data/bidmc` (models/eval_vitals.py); "
             "do not edit by hand.", "",
             f"## BIDMC 01-26 ({len(args.records)} records, {WINDOW_S}-s windows stepped by "
             f"{STEP_S} s)", "",
             "Respiratory rate (breaths/min) against the two annotators' breaths (mean of "
             "the two):", "", _HEAD,
             _line("medge (ECG+PPG modulations, count-orig, smart fusion)", st["rr_medge"]),
             _line("neurokit2 ECG-derived respiration", st["rr_nk"])]
    for i, name in enumerate(MODULATION_NAMES):
        lines.append(_line(f"medge, {name} alone (not published)", st[f"rr_mod_{i}"]))
    lines += ["", "Pulse rate (bpm) against the monitor's PULSE numerics; heart rate against "
              "its HR:", "", _HEAD,
              _line("medge pulse rate (PPG)", st["pr_medge"]),
              _line("neurokit2 PPG rate", st["pr_nk"]),
              _line("medge heart rate (ECG)", st["hr_medge"]), ""]
    base = args.report.with_suffix("")
    png_rr = base.with_name(base.name + "_rr.png")
    png_pr = base.with_name(base.name + "_pulse.png")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    bland_altman({"medge": res["rr_medge"], "neurokit2": res["rr_nk"]},
                 "BIDMC respiratory rate", png_rr)
    bland_altman({"medge": res["pr_medge"], "neurokit2": res["pr_nk"],
                  "medge HR": res["hr_medge"]}, "BIDMC pulse rate", png_pr)
    lines += [f"Bland-Altman: ![respiratory rate]({png_rr.name}) ![pulse rate]({png_pr.name})",
              ""]
    if not args.no_sim:
        sim = evaluate_sim(args.sim_duration, (24.0, 12.0, 6.0))
        lines += [f"## Simulator ({args.sim_duration} s per scenario, seed 1, ECG 250 Hz, "
                  "PPG at 250 Hz from the virtual patient)", "",
                  "Against the ground truth: breaths and beats of each window.", "",
                  "| scenario | SNR dB | vital | windows | reported % | MAE | RMSE | "
                  "within +-2 % | bias | 95 % LoA +- |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for (sc, snr), d in sim.items():
            for k, s in d.items():
                lines.append(f"| {sc} | {snr:g} | {k} " + _line("", s)[3:])
        lines.append("")
    lines.append(f"Run time {time.monotonic() - t0:.0f} s.")
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

from sim.vitals_replay import STEP_S, WINDOW_S, analyze_record

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
                       max_abs=float(np.max(np.abs(d))),
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


#: A beat counts in the pulse reference when its stroke volume is at least half a
#: normal beat's: a premature beat's weak pulse (~0.3, bigeminy) is a pulse deficit the
#: device reports as hr_pulse_delta_bpm, not a pulse it must count.
PULSE_MIN_STROKE = 0.5
LIMITS = {"hr": 2.0, "pulse": 2.0, "spo2": 2.0, "resp": 2.0, "temp": 0.1}


def _beat_rate(beats: np.ndarray, t: float, span: float = 8.0) -> float:
    b = beats[(beats > t - span) & (beats <= t)]
    return 60.0 * (len(b) - 1) / (b[-1] - b[0]) if len(b) >= 2 else float("nan")


def _pulse_ref(pulses: np.ndarray, t: float, span: float = 8.0) -> float:
    """The device's pulse-rate definition (firmware/vitals/rate.py) applied to the true
    pulses: intervals of the last ``span`` s within 0.55..1.35x their median, averaged."""
    p = pulses[(pulses > t - span) & (pulses <= t)]
    iv = np.diff(p)
    if len(iv) < 3:
        return float("nan")
    med = float(np.median(iv))
    kept = iv[(iv >= 0.55 * med) & (iv <= 1.35 * med)]
    return 60.0 / float(np.mean(kept)) if len(kept) else float("nan")


def device_pairs(msgs: list[dict], truth, skip_s: int = 12,
                 episodes: list[tuple[float, float]] = ()) -> dict[str, Pairs]:
    """Published vitals of the device loop against the ground truth (one per second)."""
    tv = np.asarray(truth.vitals)
    fs = truth.fs_hz
    beats = truth.beat_samples() / fs
    perfused = np.asarray([b.sample / fs for b in truth.beats
                           if b.sample < truth.samples and b.pulse >= PULSE_MIN_STROKE])
    breaths = np.asarray(truth.breaths_s)
    out = {k: Pairs() for k in LIMITS}
    for m in msgs[skip_s:]:
        t = float(m["seq"])
        if any(a <= t <= b + 8 for a, b in episodes) != bool(episodes):
            continue  # with episodes: only the seconds inside them (+ the 8-s window)
        row = tv[min(int(t), len(tv) - 1)]
        # HR: the device's definition, the mean of the last 8 RR (beats decided by t);
        # pulse: the beats of the last 8 s with a pulse of >= PULSE_MIN_STROKE, through
        # the device's interval rule (a lone dropped pulse is not a slower pulse).
        last = beats[beats <= t - 0.3][-9:]
        hr_ref = 60.0 / float(np.mean(np.diff(last))) if len(last) >= 3 else float("nan")
        out["hr"].add(m["hr_bpm"], hr_ref)
        out["pulse"].add(m.get("pulse_bpm"), _pulse_ref(perfused, t))
        out["spo2"].add(m.get("spo2_pct"), row[4])
        out["resp"].add(m.get("resp_rate_per_min"), _rate_from_marks(breaths, t - 32, t))
        t_c = m.get("temp_centi_c")
        out["temp"].add(None if t_c is None else t_c / 100, row[5])
    return out


def evaluate_sim(duration_s: int, snrs: tuple[float, ...]) -> dict[tuple[str, str], dict]:
    """Every scenario through the multi-sensor device loop (sim/vitals_device.py)."""
    from sim.vitals_device import run_device_vitals

    out = {}
    for sc in SCENARIOS:
        for snr in snrs:
            msgs, truth, _ = run_device_vitals(sc, 1, duration_s, snr_db=snr, lead_off=True)
            out[(sc, f"{snr:g} dB")] = {k: v.stats() for k, v in device_pairs(msgs, truth).items()}
        ep_motion, ep_off = [(60.0, 80.0), (150.0, 170.0)], [(110.0, 125.0)]
        msgs, truth, _ = run_device_vitals(sc, 1, min(duration_s, 200), snr_db=12.0,
                                           motion=ep_motion, electrodes_off=ep_off)
        out[(sc, "12 dB, motion + lead-off")] = {
            k: v.stats() for k, v in device_pairs(msgs, truth,
                                                  episodes=ep_motion + ep_off).items()}
        print(f"  sim {sc} done", file=sys.stderr)
    return out


def spo2_sweep(seeds: int = 3) -> dict[str, float]:
    """SpO2 70..100 % (1 % steps) on the simulator's PPG model at 100 Hz through
    the device's pulse oximeter: ARMS (ISO 80601-2-61: <= 4 %)."""
    from firmware.vitals.pulseox import PulseOximeter
    from sim.adc import PPG_ADC
    from sim.ppg import PpgModel

    err = []
    withheld = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for spo2 in range(70, 101):
            hr = float(rng.uniform(50, 130))
            model = PpgModel(100, perfusion_index_percent=float(rng.uniform(0.5, 5.0)))
            n, t, rr = 2000, 0.0, 60.0 / hr
            while t < 22:
                model.add_beat(round(t * 100), 1.0, rr, spo2, 0.0)
                t += rr
            resp = 0.5 * np.sin(2 * np.pi * rng.uniform(0.15, 0.5) * np.arange(n) / 100)
            red, ir = model.take(n, resp)
            pox = PulseOximeter(100, (1 << 18) - 1)
            pox.process(PPG_ADC.to_counts(red, rng).tolist(), PPG_ADC.to_counts(ir, rng).tolist(),
                        n)
            pox.assess(8000)
            v = pox.spo2()
            if v is None:
                withheld += 1
            else:
                err.append(v / 10 - spo2)
    e = np.asarray(err)
    return {"cases": seeds * 31, "withheld": withheld, "arms": float(np.sqrt(np.mean(e * e))),
            "max_abs": float(np.max(np.abs(e)))}


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
        sweep = spo2_sweep()
        lines += [f"## Simulator: the multi-sensor device loop ({args.sim_duration} s per "
                  "scenario, seed 1)", "",
                  "`sim/vitals_device.py`: ECG 250 Hz into the device loop, PPG through an "
                  "emulated MAX30102 at 100 SPS and the real driver, temperature through an "
                  "emulated TMP117; the scenario's own lead-off episodes on.  Published "
                  "values (one message per second, from 12 s) against the ground truth: "
                  "heart rate: the mean of the last 8 true RR intervals (the device's "
                  "definition); pulse: the beats of the last 8 s with at least half a normal "
                  "stroke volume, through the device's interval rule (0.55-1.35x the "
                  "median: a lone weak pulse is not a slower pulse; a premature beat's weak "
                  "pulse, ~0.3 in bigeminy, is a pulse deficit the device publishes as "
                  "hr_pulse_delta_bpm); the scenario's SpO2 and temperature; the breaths of "
                  "the last 32 s.  Limits: HR/pulse 2 bpm, "
                  "SpO2 2 % (ARMS), resp 2 /min, "
                  "temperature 0.1 degC; 'max' is the largest error of a published value "
                  "(acceptance: <= 3x the limit).  The motion + lead-off rows count only the "
                  "seconds inside the episodes (motion 60-80 and 150-170 s on the PPG, "
                  "electrodes off 110-125 s) and the 8 s after each.", "",
                  "| scenario | condition | vital | seconds | reported % | MAE | RMSE | max | "
                  "bias |", "|---|---|---|---|---|---|---|---|---|"]
        for (sc, cond), d in sim.items():
            for k, st_ in d.items():
                lines.append(f"| {sc} | {cond} | {k} | {st_['windows']} | "
                             f"{st_['reported_pct']:.1f} | {_fmt(st_, 'mae')} | "
                             f"{_fmt(st_, 'rmse')} | {_fmt(st_, 'max_abs')} | "
                             f"{_fmt(st_, 'bias')} |")
        lines += ["", f"SpO2 sweep 70-100 % (1 % steps x 3 seeds, heart rate 50-130, "
                  f"perfusion index 0.5-5 %, breathing 9-30 /min; PPG model at 100 Hz "
                  f"through the pulse oximeter): ARMS {sweep['arms']:.2f} %, largest error "
                  f"{sweep['max_abs']:.1f} %, {sweep['withheld']} of {sweep['cases']} "
                  "withheld.", ""]
    lines.append(f"Run time {time.monotonic() - t0:.0f} s.")
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``medge ecg plot``: a Holter-style strip of a WFDB record, from the device's code.

The record runs through the device's whole chain from its start
(:func:`sim.rhythm_replay.rhythm_counts`: the rhythm monitor needs the history
before the strip, an AF window is a minute of beats) and the strip shows, for
``--seconds`` from ``--start``:

* the ECG as the device filters it (:class:`firmware.signal.ecgfilter.EcgFilterChain`,
  baseline and mains removed), in millivolts;
* each beat's class (the rhythm-aware label the device reports) above its R
  peak, coloured by class (N grey, S blue, V red, F orange, Q purple);
* the rhythm episodes (AFIB, VT, PAUSE, ...) as coloured bands with their
  name, and stretches of bad signal (SIGNAL: noisy, lead off, saturated) hatched;
* the ECG-paper grid: minor lines every 40 ms and 0.1 mV, major every 200 ms
  and 0.5 mV (25 mm/s, 10 mm/mV paper); one row per 10 s.

matplotlib (a dependency of wfdb, listed in the ``host`` extra) is imported
only here, with the Agg backend: no display needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from firmware.params import ECG_COUNTS_PER_MV, ECG_INPUT_SHIFT_BITS

ROW_S = 10.0
MAX_SECONDS = 300.0
CLASS_COLOURS = {"N": "#555555", "S": "#1f5fbf", "V": "#d62728", "F": "#ff7f0e", "Q": "#7b3fa0"}
EPISODE_COLOURS = {"AFIB": "#9ecae1", "VT": "#fc9272", "PAUSE": "#fdd0a2", "ASYSTOLE": "#fb6a4a",
                   "BRADY": "#c7e9c0", "TACHY": "#fdae6b", "BIGEMINY": "#dadaeb",
                   "TRIGEMINY": "#dadaeb"}
#: Q15 LSB per millivolt after the filter chain's input shift.
_Q15_PER_MV = ECG_COUNTS_PER_MV << ECG_INPUT_SHIFT_BITS


class PlotError(Exception):
    """Bad input for the strip (one line)."""


PICTURE_SUFFIXES = (".png", ".svg", ".pdf")


def picture_error(path: Path) -> str | None:
    """Why ``path`` cannot be a strip picture (``--out``), or None."""
    if path.suffix.lower() not in PICTURE_SUFFIXES:
        return f"--out must end in .png, .svg or .pdf, got {str(path)!r}"
    return None


def filtered_mv(counts, fs_hz: int, mains_hz: int) -> np.ndarray:
    """The device's filter chain over raw counts, in millivolts."""
    from array import array

    from firmware.signal.ecgfilter import EcgFilterChain

    chain = EcgFilterChain(fs_hz, mains_hz, 0)
    buf = array("h", bytes(2 * fs_hz))
    out = np.empty(len(counts), dtype=np.float64)
    data = counts.tolist()
    for a in range(0, len(data), fs_hz):
        m = min(fs_hz, len(data) - a)
        for j in range(m):
            buf[j] = data[a + j]
        chain.process_inplace(buf, m)
        out[a : a + m] = np.frombuffer(buf, dtype=np.int16, count=m)
    return out / _Q15_PER_MV


def draw_strip(mv: np.ndarray, fs_hz: int, t0_s: float, beats, episodes, signal, out: Path,
               title: str) -> None:
    """Draw ``mv`` (from ``t0_s``) with beats ``(sample, label)``, episodes and
    signal stretches ``(start, end, kind)`` (samples of the same signal) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dur = len(mv) / fs_hz
    rows = max(1, int(np.ceil(dur / ROW_S - 1e-9)))
    fig, axes = plt.subplots(rows, 1, figsize=(16, 2.6 * rows), squeeze=False)
    lo = min(-1.0, float(np.floor(np.min(mv) * 2) / 2)) if len(mv) else -1.0
    # headroom above the tallest R wave for the class labels
    hi = max(1.5, float(np.ceil((np.max(mv) + 0.45) * 2) / 2)) if len(mv) else 1.5
    t = t0_s + np.arange(len(mv)) / fs_hz
    for k in range(rows):
        ax = axes[k][0]
        a, b = t0_s + k * ROW_S, t0_s + min(dur, (k + 1) * ROW_S)
        for x in np.arange(np.floor(a / 0.04) * 0.04, b + 1e-9, 0.04):
            major = abs(x / 0.2 - round(x / 0.2)) < 1e-6
            ax.axvline(x, color="#f4a6a6" if major else "#fbdcdc", lw=0.8 if major else 0.4,
                       zorder=0)
        for y in np.arange(lo, hi + 1e-9, 0.1):
            major = abs(y / 0.5 - round(y / 0.5)) < 1e-6
            ax.axhline(y, color="#f4a6a6" if major else "#fbdcdc", lw=0.8 if major else 0.4,
                       zorder=0)
        for s, e, kind in episodes:
            xs, xe = s / fs_hz, max(e, s + 1) / fs_hz
            if xe < a or xs > b:
                continue
            ax.axvspan(max(xs, a), min(xe, b), color=EPISODE_COLOURS.get(kind, "#dddddd"),
                       alpha=0.45, zorder=1, lw=0)
            ax.text(max(xs, a) + 0.05, hi - 0.05, kind, va="top", fontsize=8, zorder=4)
        for s, e, reason in signal:
            xs, xe = s / fs_hz, e / fs_hz
            if xe < a or xs > b:
                continue
            ax.axvspan(max(xs, a), min(xe, b), facecolor="none", edgecolor="#888888",
                       hatch="///", zorder=2, lw=0)
            ax.text(max(xs, a) + 0.05, lo + 0.05, f"signal: {reason}", fontsize=8, zorder=4)
        sel = (t >= a) & (t <= b)
        ax.plot(t[sel], mv[sel], color="black", lw=0.8, zorder=3)
        for s, label in beats:
            x = s / fs_hz
            if a <= x <= b and label in CLASS_COLOURS:  # "?": a beat with no class
                ax.text(x, hi - 0.35, label, ha="center", fontsize=9, weight="bold",
                        color=CLASS_COLOURS.get(label, "black"), zorder=4)
        ax.set_xlim(a, a + ROW_S)
        ax.set_ylim(lo, hi)
        ax.set_ylabel("mV")
        ax.tick_params(labelsize=8)
    axes[0][0].set_title(title, fontsize=10)
    axes[-1][0].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_record(record: str, channel: int, start_s: float, seconds: float, out: Path,
                model: str | None = None, runtime: str = "auto") -> dict:
    """Draw the strip; return what it shows (beats, episodes, signal stretches)."""
    from host.services.ecg import load_classifier
    from sim.records import MITDB_MAINS_HZ, device_signal
    from sim.rhythm_replay import rhythm_counts

    if not 0 < seconds <= MAX_SECONDS:
        raise PlotError(f"--seconds must be in (0, {MAX_SECONDS:g}], got {seconds:g}")
    if start_s < 0:
        raise PlotError(f"--start must be >= 0, got {start_s:g}")
    sig = device_signal(record, channel)
    fs = sig.device_fs_hz
    n = len(sig.counts)
    a = round(start_s * fs)
    if a >= n:
        raise PlotError(f"--start {start_s:g} s is past the record's end ({n / fs:.1f} s)")
    b = min(n, a + round(seconds * fs))
    res = rhythm_counts(sig.counts[:b], fs, load_classifier(model, runtime))
    mv = filtered_mv(sig.counts[:b], fs, MITDB_MAINS_HZ)[a:b]
    beats = [(s, lab) for s, lab in res.beats if a <= s < b]
    eps = [(e.start, e.end, e.kind) for e in res.events
           if e.phase == "end" and e.kind not in ("SIGNAL", "BURDEN")
           and e.end >= a and e.start < b]
    bad = [(e.start, e.end, e.evidence["reason"]) for e in res.events
           if e.kind == "SIGNAL" and e.end >= a and e.start < b]
    title = f"{Path(record).name} channel {channel}: {start_s:g}-{b / fs:g} s, " \
            f"device chain at {fs} Hz"
    draw_strip(mv, fs, a / fs, beats, eps, bad, out, title)

    def rec(s: int) -> int:
        return sig.to_record_samples([max(0, s)])[0]
    return {"out": str(out), "record": str(record), "channel": channel,
            "start_s": a / fs, "end_s": b / fs, "beats": [[rec(s), lab] for s, lab in beats],
            "episodes": [{"start_sample": rec(s), "end_sample": rec(e), "rhythm": k}
                         for s, e, k in eps],
            "signal": [{"start_sample": rec(s), "end_sample": rec(e), "reason": r}
                       for s, e, r in bad]}


def run_plot(record: str, channel: int, start_s: float, seconds: float, out_path: str,
             model: str | None = None, runtime: str = "auto", as_json: bool = False,
             out: TextIO | None = None) -> int:
    """The ``medge ecg plot`` command: 0 on success, 2 on bad input."""
    from host.services.ecg import ModelRefused
    from sim.records import RecordError

    out = out or sys.stdout
    target = Path(out_path)
    bad = picture_error(target)
    if bad:
        print(f"medge ecg plot: {bad}", file=sys.stderr)
        return 2
    if not target.parent.is_dir():
        print(f"medge ecg plot: folder {str(target.parent)!r} does not exist", file=sys.stderr)
        return 2
    try:
        doc = plot_record(record, channel, start_s, seconds, target, model, runtime)
    except (RecordError, ModelRefused, PlotError) as exc:
        print(f"medge ecg plot: {exc}", file=sys.stderr)
        return 2
    if as_json:
        out.write(json.dumps(doc, sort_keys=True) + "\n")
    else:
        out.write(f"{target}: {len(doc['beats'])} beats, {len(doc['episodes'])} episodes\n")
    return 0


def device_strip(data: dict, device_id: str, out: Path) -> dict:
    """Draw the ``data`` of a device's ``ecg_strip`` answer (firmware/device.py) with the
    device's filter chain and its beat classes; return what the strip shows."""
    import base64
    import time

    raw = np.frombuffer(base64.b64decode(data["samples_b64"]), dtype="<i2")
    fs = int(data["fs_hz"])
    mains = data.get("mains_hz") or 50
    mv = filtered_mv(raw, fs, int(mains))
    beats = [(int(s), str(label)) for s, label in data.get("beats", [])]
    end_ms = int(data["end_ms"])
    start_ms = end_ms - round(len(raw) * 1000 / fs)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start_ms / 1000))
    title = (f"{device_id}: {len(raw) / fs:g} s from {when} UTC, {fs} Hz, signal "
             f"{data.get('signal', '?')} (the device's raw ECG through its filter chain)")
    draw_strip(mv, fs, 0.0, beats, [], [], out, title)
    return {"out": str(out), "device_id": device_id, "start_ms": start_ms, "end_ms": end_ms,
            "fs_hz": fs, "seconds": len(raw) / fs, "beats": [[s, lab] for s, lab in beats],
            "signal": data.get("signal")}

"""Ground truth of a virtual patient run, and writing it next to the signal.

:class:`GroundTruth` collects, as the patient streams: every beat (R sample,
time, AAMI class, morphology, rhythm, pulse), the breath onsets, the true
vital signs once a second, the blood-pressure cuff readings and the lead-off
episodes.  :meth:`GroundTruth.write` stores them as CSV files plus one JSON
file that describes the run and names the CSV files:

========================  ====================================================
``<stem>.truth.json``     scenario, seed, sample rate, the patient's drawn
                          parameters, noise settings, lead-off episodes, files
``<stem>.beats.csv``      ``sample,time_s,aami,morphology,rhythm,pulse``
``<stem>.rhythm.csv``     ``start_sample,end_sample,start_s,end_s,rhythm``
``<stem>.vitals.csv``     ``time_s,heart_rate_bpm,heart_rate_beats_bpm,
                          resp_rate_bpm,spo2_percent,temperature_c,
                          systolic_mmhg,diastolic_mmhg,map_mmhg``
``<stem>.nibp.csv``       ``time_s,systolic_mmhg,diastolic_mmhg,map_mmhg``
                          (the cuff readings, with measurement noise)
``<stem>.breaths.csv``    ``time_s`` of each breath onset
========================  ====================================================

Rhythm episodes: consecutive beats with the same rhythm form an episode from
the first to the last beat's sample; a PAUSE or ASYSTOLE episode runs from the
beat before the gap to the beat that ends it.  ``heart_rate_bpm`` in the vitals
is the scenario's (individualised) rate; ``heart_rate_beats_bpm`` is 60 over
the mean RR of the beats in the preceding 10 s (what a monitor should show).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sim.rhythm import Beat

__all__ = ["VITALS_COLUMNS", "GroundTruth", "NibpReading", "RhythmEpisode"]

VITALS_COLUMNS = ("time_s", "heart_rate_bpm", "heart_rate_beats_bpm", "resp_rate_bpm",
                  "spo2_percent", "temperature_c", "systolic_mmhg", "diastolic_mmhg",
                  "map_mmhg")


@dataclass(frozen=True)
class NibpReading:
    time_s: float
    systolic_mmhg: int
    diastolic_mmhg: int
    map_mmhg: int


@dataclass(frozen=True)
class RhythmEpisode:
    start_sample: int
    end_sample: int
    rhythm: str


@dataclass
class GroundTruth:
    fs_hz: int
    scenario: str
    seed: int
    patient: dict[str, Any] = field(default_factory=dict)
    beats: list[Beat] = field(default_factory=list)
    breaths_s: list[float] = field(default_factory=list)
    vitals: list[tuple[float, ...]] = field(default_factory=list)
    nibp: list[NibpReading] = field(default_factory=list)
    lead_off: list[tuple[int, int]] = field(default_factory=list)  # [start, end) samples
    samples: int = 0  # signal samples produced so far

    # ------------------------------------------------------------ accessors

    def beat_samples(self) -> npt.NDArray[np.int64]:
        return np.array([b.sample for b in self.beats if b.sample < self.samples],
                        dtype=np.int64)

    def beat_classes(self) -> list[str]:
        return [b.aami for b in self.beats if b.sample < self.samples]

    def rhythm_episodes(self) -> list[RhythmEpisode]:
        out: list[RhythmEpisode] = []
        beats = [b for b in self.beats if b.sample < self.samples]
        prev: Beat | None = None
        for b in beats:
            if b.rhythm in ("PAUSE", "ASYSTOLE"):
                start = prev.sample if prev is not None else 0
                out.append(RhythmEpisode(start, b.sample, b.rhythm))
            elif out and out[-1].rhythm == b.rhythm and prev is not None \
                    and prev.rhythm == b.rhythm:
                out[-1] = RhythmEpisode(out[-1].start_sample, b.sample, b.rhythm)
            else:
                out.append(RhythmEpisode(b.sample, b.sample, b.rhythm))
            prev = b
        return out

    def heart_rate_from_beats(self, t_s: float, window_s: float = 10.0) -> float:
        """60 / mean RR of the beats in (t - window, t]; NaN with fewer than 2."""
        lo, hi = (t_s - window_s) * self.fs_hz, t_s * self.fs_hz
        s = [b.sample for b in self.beats[-64:] if lo < b.sample <= hi]
        if len(s) < 2:
            return float("nan")
        return 60.0 * self.fs_hz * (len(s) - 1) / (s[-1] - s[0])

    # ---------------------------------------------------------------- write

    def write(self, stem: str | Path) -> list[Path]:
        """Write the files described in the module docstring; return their paths."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        fs = self.fs_hz
        files: dict[str, Path] = {k: stem.with_name(f"{stem.name}.{k}.csv")
                                  for k in ("beats", "rhythm", "vitals", "nibp", "breaths")}
        with files["beats"].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["sample", "time_s", "aami", "morphology", "rhythm", "pulse"])
            for b in self.beats:
                if b.sample < self.samples:
                    w.writerow([b.sample, f"{b.sample / fs:.4f}", b.aami, b.morphology,
                                b.rhythm, f"{b.pulse:.3f}"])
        with files["rhythm"].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["start_sample", "end_sample", "start_s", "end_s", "rhythm"])
            for e in self.rhythm_episodes():
                w.writerow([e.start_sample, e.end_sample, f"{e.start_sample / fs:.4f}",
                            f"{e.end_sample / fs:.4f}", e.rhythm])
        with files["vitals"].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(VITALS_COLUMNS)
            for row in self.vitals:
                w.writerow([f"{row[0]:g}"] + [f"{v:.2f}" for v in row[1:]])
        with files["nibp"].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time_s", "systolic_mmhg", "diastolic_mmhg", "map_mmhg"])
            for r in self.nibp:
                w.writerow([f"{r.time_s:g}", r.systolic_mmhg, r.diastolic_mmhg, r.map_mmhg])
        with files["breaths"].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time_s"])
            for t in self.breaths_s:
                w.writerow([f"{t:.3f}"])
        meta = {
            "format": "medge-sim-truth/1",
            "scenario": self.scenario,
            "seed": self.seed,
            "fs_hz": fs,
            "samples": self.samples,
            "duration_s": self.samples / fs,
            "patient": self.patient,
            "beats": len(self.beat_samples()),
            "beat_classes": {c: self.beat_classes().count(c) for c in "NSVFQ"},
            "lead_off": [{"start_sample": a, "end_sample": b} for a, b in self.lead_off],
            "nibp": [asdict(r) for r in self.nibp],
            "files": {k: p.name for k, p in files.items()},
        }
        meta_path = stem.with_name(f"{stem.name}.truth.json")
        meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return [meta_path, *files.values()]

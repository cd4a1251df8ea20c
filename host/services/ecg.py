"""``medge ecg analyze``: a WFDB record through exactly the device's beat code.

One channel of the record becomes the raw counts the device's ECG front end
delivers (:func:`sim.records.device_signal`: counts at
``firmware.params.ECG_COUNTS_PER_MV`` around the record's baseline, int16; a
record whose rate the device does not support is resampled to the nearest
supported rate), fed in blocks of one second, as the device loop does, to
:class:`firmware.signal.beatpipe.BeatPipeline` (filter chain, QRS detector, beat
features), and each beat to :class:`firmware.ml.infer.BeatClassifier` with the
shipped int8 model (``models/beatnet.tflite`` and its ``.json``; ``--model``
picks another), on LiteRT's reference kernels when LiteRT is installed, else
on the pure-Python int8 engine: the two give the same classes bit for bit.
Detected sample numbers are mapped back to the record's numbering
(:meth:`sim.records.DeviceSignal.to_record_samples`).

Rhythm-aware classes (the default): the beats also go through the device's
rhythm monitor (:class:`firmware.rhythm.chain.RhythmChain`), and a beat the
monitor counts differently is printed as it counts it: while atrial
fibrillation is on, no beat is S ("premature" has no meaning there).
``--no-rhythm`` prints the classifier's own classes.  On DS1 with the shipped
model (trained on DS1, so optimistic): S Se/+P 91.9/33.3 raw, 86.2/49.1
rhythm-aware (S false positives 1722 -> 834, nearly all of the removed ones in
the AF records 201 and 203); V unchanged.

``medge ecg rhythm`` prints the monitor's episodes (contract 7, below).

Output: CSV on stdout, header ``sample,label``, one row per beat, ``label``
one of the AAMI classes N S V F Q.  Exit 2 with a one-line message for a bad
record or channel (:class:`sim.records.RecordError`) and for a ``--model`` that
does not exist or that the device refuses.  Without the shipped model (files
missing or refused) every beat is labelled ``N`` and a warning says why.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from sim.records import MITDB_MAINS_HZ, RecordError, device_signal
from sim.rhythm_replay import BLOCK_MS, RhythmResult, episodes, rhythm_counts

log = logging.getLogger(__name__)

#: Label of every beat when no model can be used.
DEFAULT_LABEL = "N"
#: Mains frequency for the notch (MIT-BIH was recorded in the USA).
DEFAULT_MAINS_HZ = MITDB_MAINS_HZ
#: The shipped model, without extension (``.tflite`` + ``.json``).
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "beatnet"

__all__ = ["ModelRefused", "RecordError", "RhythmResult", "analyze_record", "classify_beats",
           "episodes", "load_classifier", "rhythm_counts", "rhythm_record", "run_analyze",
           "run_rhythm"]


class ModelRefused(Exception):
    """A model named by the user cannot be used; the message is one line."""


def load_classifier(model: str | Path | None = None, runtime: str = "auto"):
    """The beat classifier for ``model`` (path without extension).

    ``None``: the shipped model, or None with a warning when it cannot be
    used.  A named model that is missing or refused by the device's checks
    raises :class:`ModelRefused`."""
    from firmware.ml.infer import ModelSlot

    base = Path(model) if model else DEFAULT_MODEL
    slot = ModelSlot(runtime)
    if slot.install_files(str(base.with_suffix(".tflite")), str(base.with_suffix(".json"))):
        return slot.classifier
    why = " ".join(str(slot.last_error).split())
    if model:
        raise ModelRefused(f"model {str(model)!r}: {why}")
    log.warning("no beat classifier (%s): every beat is labelled %s", why, DEFAULT_LABEL)
    return None


def classify_beats(counts: np.ndarray, fs_hz: int, classifier,
                   mains_hz: int = DEFAULT_MAINS_HZ, rhythm: bool = True
                   ) -> list[tuple[int, str]]:
    """The device's beat pipeline (and classifier) over ``counts``: (sample, label).

    ``rhythm`` (the default): the labels the device's rhythm monitor gives
    (:class:`firmware.rhythm.chain.RhythmChain`: a beat in atrial
    fibrillation is not called S); False: the classifier's own labels."""
    if rhythm:
        return rhythm_counts(counts, fs_hz, classifier, mains_hz).beats
    from firmware.ml.infer import AAMI_LABELS
    from firmware.signal.beatpipe import BeatPipeline

    pipe = BeatPipeline(fs_hz, mains_hz, 0)
    feats = pipe.features
    block = max(1, fs_hz * BLOCK_MS // 1000)
    data = counts.tolist()
    out: list[tuple[int, str]] = []

    def drain(n: int) -> None:
        for _ in range(n):
            r = pipe.next_beat()
            label = (AAMI_LABELS[classifier.classify(feats.beat, feats.rr)]
                     if classifier is not None else DEFAULT_LABEL)
            out.append((int(r), label))

    for start in range(0, len(data), block):
        drain(pipe.process(data[start : start + block]))
    drain(pipe.flush())
    return out


def analyze_record(record: str, channel: int = 0, model: str | Path | None = None,
                   runtime: str = "auto", rhythm: bool = True) -> list[tuple[int, str]]:
    """Beats of ``record`` as ``(sample, label)`` in the record's numbering."""
    sig = device_signal(record, channel)
    if sig.resampled:
        log.warning("record rate %g Hz is not a device rate: resampled to %d Hz",
                    sig.record_fs_hz, sig.device_fs_hz)
    beats = classify_beats(sig.counts, sig.device_fs_hz, load_classifier(model, runtime),
                           rhythm=rhythm)
    # Device sample numbers -> the record's; two beats rounded onto one record
    # sample keep the first label.
    keep: dict[int, str] = {}
    for s, label in beats:
        for rs in sig.to_record_samples([s]):
            keep.setdefault(rs, label)
    return sorted(keep.items())


def run_analyze(record: str, channel: int, out: TextIO | None = None,
                model: str | None = None, runtime: str = "auto", rhythm: bool = True) -> int:
    """The ``medge ecg analyze`` command: 0 on success, 2 on a bad record,
    channel or ``--model``."""
    out = out or sys.stdout
    try:
        beats = analyze_record(record, channel, model, runtime, rhythm)
    except (RecordError, ModelRefused) as exc:
        print(f"medge: {exc}", file=sys.stderr)
        return 2
    lines = ["sample,label"]
    lines.extend(f"{s},{label}" for s, label in beats)
    out.write("\n".join(lines) + "\n")
    return 0


# --------------------------------------------------------------- rhythm
# The chain itself (sim.rhythm_replay) is shared with models/eval_rhythm.py.


def rhythm_record(record: str, channel: int = 0, model: str | Path | None = None,
                  runtime: str = "auto", use_classes: bool = True):
    """``(RhythmResult, DeviceSignal)`` for one channel of a WFDB record."""
    sig = device_signal(record, channel)
    if sig.resampled:
        log.warning("record rate %g Hz is not a device rate: resampled to %d Hz",
                    sig.record_fs_hz, sig.device_fs_hz)
    clf = load_classifier(model, runtime) if use_classes else None
    return rhythm_counts(sig.counts, sig.device_fs_hz, clf, use_classes=use_classes), sig


#: Kinds printed as episodes by ``medge ecg rhythm`` (SIGNAL and BURDEN are
#: reported on stderr / in --json).
EPISODE_KINDS = ("AFIB", "VT", "PAUSE", "ASYSTOLE", "BRADY", "TACHY", "BIGEMINY",
                 "TRIGEMINY")


def _to_record(sig, s: int) -> int:
    return sig.to_record_samples([max(0, s)])[0]


def run_rhythm(record: str, channel: int, out: TextIO | None = None,
               model: str | None = None, runtime: str = "auto", as_json: bool = False,
               plain: bool = False) -> int:
    """The ``medge ecg rhythm`` command: 0 on success, 2 on a bad record,
    channel or ``--model``.  CSV ``start_sample,end_sample,rhythm`` (contract
    7); the signal-quality stretches and the burden go to stderr (CSV) or
    into the JSON."""
    import json

    out = out or sys.stdout
    try:
        res, sig = rhythm_record(record, channel, model, runtime, use_classes=not plain)
    except (RecordError, ModelRefused) as exc:
        print(f"medge ecg rhythm: {exc}", file=sys.stderr)
        return 2
    rows = [(_to_record(sig, a), _to_record(sig, b), k) for a, b, k in episodes(res)
            if k in EPISODE_KINDS]
    signal = [{"start_sample": _to_record(sig, e.start), "end_sample": _to_record(sig, e.end),
               "reason": e.evidence["reason"]}
              for e in res.events if e.kind == "SIGNAL"]
    burden = [dict(e.evidence, start_sample=_to_record(sig, e.start),
                   end_sample=_to_record(sig, e.end))
              for e in res.events if e.kind == "BURDEN"]
    if as_json:
        doc = {"record": str(record), "channel": channel, "beats": len(res.beats),
               "episodes": [{"start_sample": a, "end_sample": b, "rhythm": k,
                             "evidence": next((e.evidence for e in res.events
                                               if e.phase == "end" and e.kind == k
                                               and _to_record(sig, e.start) == a), {})}
                            for a, b, k in rows],
               "signal": signal, "burden": burden, "quality_hops": res.quality_hops}
        out.write(json.dumps(doc, sort_keys=True) + "\n")
    else:
        lines = ["start_sample,end_sample,rhythm"]
        lines.extend(f"{a},{b},{k}" for a, b, k in rows)
        out.write("\n".join(lines) + "\n")
    fs = sig.record_fs_hz
    for s in signal:
        print(f"medge ecg rhythm: signal {s['reason']} from {s['start_sample'] / fs:.1f} s "
              f"to {s['end_sample'] / fs:.1f} s: no rhythm judged there", file=sys.stderr)
    if not res.beats:
        worst = max((k for k in res.quality_hops if k != "good"),
                    key=lambda k: res.quality_hops[k], default=None)
        why = (f"signal {worst}" if worst and res.quality_hops[worst] else "no QRS found")
        print(f"medge ecg rhythm: no beats detected ({why}): no rhythm episodes",
              file=sys.stderr)
    return 0

"""Device counts through the device's whole ECG chain, collected for the host.

:func:`rhythm_counts` feeds raw counts (a WFDB record via
:func:`sim.records.device_signal`, or simulator ECG) in blocks of one second,
as the device loop does, to :class:`firmware.rhythm.chain.RhythmChain` (signal
quality, beat pipeline, classifier, rhythm monitor) and returns everything it
said as a :class:`RhythmResult`.  ``medge ecg rhythm`` (host.services.ecg),
``make eval-rhythm`` (models/eval_rhythm.py) and the tests use it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sim.records import MITDB_MAINS_HZ

__all__ = ["BLOCK_MS", "RhythmResult", "episodes", "rhythm_counts", "rhythm_stream"]

#: The chain is fed this much signal per call, as the device loop does.
BLOCK_MS = 1000


class RhythmResult:
    """What the device's rhythm code made of one signal: ``events`` (every
    :class:`firmware.rhythm.monitor.RhythmEvent`, in order), ``beats`` as
    ``(sample, label)`` with the rhythm-aware label, ``quality_hops`` (hops
    per quality flag), ``fs_hz`` and ``samples``."""

    def __init__(self, events, beats, quality_hops, fs_hz, samples):
        self.events = events
        self.beats = beats
        self.quality_hops = quality_hops
        self.fs_hz = fs_hz
        self.samples = samples


def rhythm_counts(counts, fs_hz: int, classifier, mains_hz: int = MITDB_MAINS_HZ,
                  use_classes: bool = True, atrial: bool = True) -> RhythmResult:
    """Raw device counts through the device's chain
    (:class:`firmware.rhythm.chain.RhythmChain`), fed in blocks of one second
    as the device loop does (``atrial`` False: AF from the RR intervals alone)."""
    return rhythm_stream([counts], fs_hz, classifier, mains_hz, use_classes, atrial=atrial)


def rhythm_stream(chunks: Iterable, fs_hz: int, classifier,
                  mains_hz: int = MITDB_MAINS_HZ, use_classes: bool = True,
                  keep_beats: bool = True, atrial: bool = True) -> RhythmResult:
    """As :func:`rhythm_counts` for a signal that comes in ``chunks`` (arrays
    of counts, e.g. a virtual patient's hours; each cut into blocks of one
    second); ``keep_beats`` False keeps no per-beat list (long runs)."""
    from firmware.ml.infer import AAMI_LABELS
    from firmware.rhythm.chain import RhythmChain
    from firmware.signal.quality import FLAGS

    chain = RhythmChain(fs_hz, mains_hz, classifier, use_classes, atrial=atrial)
    beats: list[tuple[int, str]] = []
    if keep_beats:
        chain.on_beat = lambda r, c: beats.append((int(r), AAMI_LABELS[c] if c >= 0
                                                   else "N"))
    block = max(1, fs_hz * BLOCK_MS // 1000)
    events = []
    for counts in chunks:
        data = counts.tolist() if hasattr(counts, "tolist") else list(counts)
        for start in range(0, len(data), block):
            chunk = data[start : start + block]
            chain.process(chunk, len(chunk))
            events.extend(chain.monitor.take_events())
    chain.flush()
    events.extend(chain.monitor.take_events())
    q = chain.quality
    hops = {FLAGS[i]: int(q.counts[i]) for i in range(len(FLAGS))}
    return RhythmResult(events, beats, hops, fs_hz, chain.samples)


def episodes(result: RhythmResult) -> list[tuple[int, int, str]]:
    """The closed episodes (``end`` events) as ``(start, end, kind)`` in
    device samples, ordered by start."""
    out = [(e.start, e.end, e.kind) for e in result.events if e.phase == "end"]
    return sorted(out)

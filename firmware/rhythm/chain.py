"""Raw ECG counts in, classified beats and rhythm events out: the device's
whole ECG chain as one object, for replaying records and simulator signals.

:class:`RhythmChain` runs, per block, exactly what the device loop
(:class:`firmware.device.Device`) runs: the signal-quality check on the raw
counts (:class:`firmware.signal.quality.SignalQuality`), the beat pipeline
(:class:`firmware.signal.beatpipe.BeatPipeline`: filters, QRS detector, beat
features), each ready beat through the classifier (optional) and the rhythm
monitor (:class:`firmware.rhythm.monitor.RhythmMonitor`), then the monitor's
tick with the quality flag and the detector's newest R peak.  ``medge ecg
rhythm``, ``make eval-rhythm`` and the simulator tests use it.

Usage::

    chain = RhythmChain(fs_hz=360, mains_hz=60, classifier=clf)
    for block in blocks:            # raw ADC counts, one second each
        chain.process(block, len(block))
        for ev in chain.monitor.take_events(): ...
    chain.flush()

``on_beat`` (None or a callable ``(r, cls)``) is told of every beat with the
class the monitor counts it as (-1 without a classifier).  Each beat's
classifier input vector goes to the monitor too (the AF decision's atrial
activity); ``atrial`` False withholds it (AF from the RR intervals alone: the
before/after column of ``make eval-rhythm``).
"""

from firmware.params import ECG_ADC_MAX_COUNT, ECG_ADC_MIN_COUNT, ECG_COUNTS_PER_MV
from firmware.rhythm.monitor import RhythmMonitor
from firmware.signal.beatpipe import BeatPipeline
from firmware.signal.quality import SignalQuality


class RhythmChain:
    """Quality + beat pipeline + classifier + rhythm monitor (module docstring)."""

    def __init__(self, fs_hz=None, mains_hz=None, classifier=None, use_classes=True,
                 adc_zero=0, atrial=True):
        self.pipeline = BeatPipeline(fs_hz, mains_hz, adc_zero)
        fs = self.pipeline.fs_hz
        self.fs_hz = fs
        self.quality = SignalQuality(fs, ECG_ADC_MIN_COUNT, ECG_ADC_MAX_COUNT,
                                     ECG_COUNTS_PER_MV)
        self.monitor = RhythmMonitor(fs, use_classes)
        self.classifier = classifier if use_classes else None
        self.on_beat = None
        self.atrial = atrial
        self.samples = 0  # samples consumed
        self.last_peak = -1  # the detector's newest R peak

    def process(self, samples, count):
        """Consume raw counts ``samples[0:count]``."""
        self.quality.process(samples, count)
        pipe = self.pipeline
        self._drain(pipe.process(samples, count))
        peaks = pipe.new_peaks
        if peaks:
            self.last_peak = peaks[-1]
        self.samples += count
        self.monitor.tick(self.samples, self.quality.flag_code, self.last_peak)

    def flush(self):
        """End of the signal: the last beats, then every open episode closed."""
        self._drain(self.pipeline.flush())
        self.monitor.flush(self.samples)

    def _drain(self, ready):
        pipe = self.pipeline
        feats = pipe.features
        clf = self.classifier
        mon = self.monitor
        vec = feats.beat if self.atrial else None
        for _ in range(ready):
            r = pipe.next_beat()
            cls = clf.classify(feats.beat, feats.rr) if clf is not None else -1
            eff = mon.beat(r, cls, vec)
            if self.on_beat is not None:
                self.on_beat(r, eff)

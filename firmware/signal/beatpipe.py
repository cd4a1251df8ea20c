"""Raw ECG samples in, beats with their model inputs out: the device's chain.

:class:`BeatPipeline` wires the parts the device runs per sample, in order:
the filter chain (:class:`firmware.signal.ecgfilter.EcgFilterChain`: baseline and
mains removal) into the beat-feature ring (:class:`firmware.signal.beats.BeatFeatures`),
and the QRS detector (:class:`firmware.signal.qrs.QrsDetector`) on the raw samples.
Training (``models/dataset.py``), ``medge ecg analyze`` and the device all
use this one class, so the model sees exactly the features the device makes.

Usage::

    pipe = BeatPipeline(fs_hz=360, mains_hz=60, adc_zero=0)
    for block in blocks:                 # raw ADC counts (ints)
        n = pipe.process(block)          # n beats are ready
        for _ in range(n):
            r = pipe.next_beat()         # features in pipe.features.beat / .rr
    pipe.flush()
    while (r := pipe.next_beat()) is not None: ...

Nothing is allocated per sample: the filtered copy of each block goes into a
buffer made at init (blocks longer than it are processed in pieces).
"""

from array import array

from firmware.hw.compat import const
from firmware.signal.beats import BeatFeatures
from firmware.signal.ecgfilter import EcgFilterChain
from firmware.signal.qrs import QrsDetector

_BLOCK = const(256)  # samples filtered per inner step


class BeatPipeline:
    """Filter chain + QRS detector + beat features on one stream of raw samples."""

    def __init__(self, fs_hz=None, mains_hz=None, adc_zero=0):
        self.chain = EcgFilterChain(fs_hz, mains_hz, adc_zero)
        self.detector = QrsDetector(fs_hz)
        self.features = BeatFeatures(fs_hz)
        self.fs_hz = self.chain.fs_hz
        self._buf = array("h", bytes(2 * _BLOCK))
        #: The R peaks the detector decided on during the last ``process`` call
        #: (for the heart rate, which needs no post-RR wait).
        self.new_peaks = []

    def process(self, samples, count=None):
        """Consume raw samples ``samples[0:count]`` (all if None); return how
        many beats are ready for :meth:`next_beat`."""
        n = len(samples) if count is None else count
        buf = self._buf
        feats = self.features
        self.new_peaks = []
        i = 0
        while i < n:
            m = n - i
            if m > _BLOCK:
                m = _BLOCK
            for j in range(m):
                buf[j] = samples[i + j]
            peaks = self.detector.process(buf if m == _BLOCK else buf[:m])
            self.chain.process_inplace(buf, m)
            feats.push(buf, m)
            for r in peaks:
                feats.add_peak(r)
            if peaks:
                self.new_peaks.extend(peaks)
            i += m
        return self._count_ready()

    def flush(self):
        """End of the stream: the detector's last beats, then every pending beat."""
        self.new_peaks = self.detector.flush()
        for r in self.new_peaks:
            self.features.add_peak(r)
        self.features.flush()
        return self._count_ready()

    def next_beat(self):
        """R index of the next ready beat (features in ``self.features``), or None."""
        return self.features.next_beat()

    def _count_ready(self):
        return self.features.ready()

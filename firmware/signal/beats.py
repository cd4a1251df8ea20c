"""Beat features for the on-device classifier: a beat window and RR features.

Each R peak from :class:`firmware.signal.qrs.QrsDetector` becomes two int8 vectors,
the model's two inputs (the layout is the named constants below, shared by
training in ``models/`` and by the device, and recorded in the model's
metadata):

``beat``  ``BEAT_WINDOW_POINTS x BEAT_CHANNELS`` = 90 x 2, point-major
          (``beat[2 * k + c]``).  The filtered ECG (``EcgFilterChain``
          output) from 250 ms before to 500 ms after the R peak, averaged into
          90 bins of 8.33 ms (3 samples at 360 Hz, 2-3 at 250 Hz: the same
          layout at every supported rate).  Channel 0 is the beat, channel 1
          the beat minus the patient's running average beat.  Both are
          expressed relative to the patient's own QRS amplitude: 32 = the
          largest magnitude of the running average beat.
``rr``    ``RR_FEATURES`` = 13 context features: 8 RR-interval features, each
          relative to the patient's own rhythm (ratios as ``64 * r - 64``, so
          0 = "as usual"): 0 pre-RR / local mean RR, 1 post-RR / local mean,
          2 pre-RR / long-term mean, 3 post-RR / long-term mean, 4 local mean /
          long-term mean, 5 pre-RR / post-RR, 6 (pre-RR - previous pre-RR) /
          local mean, 7 rhythm irregularity: the mean absolute difference of
          successive RR intervals among the local 8, as 64ths of the local mean
          (high in atrial fibrillation, where "premature" is the rule); and 4
          summaries of the beat's shape against the patient's average beat:
          8 and 9 the sum of ``|beat - average|`` over the QRS (-50..+100 ms)
          and over the ST-T segment (+100..+500 ms), each as 32ths of the
          average beat's sum of ``|average|`` over the QRS, 10 the beat's
          largest magnitude / the average's (``64 * r - 64``), 11 QRS width:
          the bins from -100 to +150 ms whose magnitude exceeds a quarter of
          the beat's largest, times 4; and 12 the irregularity at lag 2: the
          mean ``|RR[i] - RR[i-2]|`` among the local 8, as 64ths of the local
          mean (high in atrial fibrillation, low in atrial or ventricular
          bigeminy, whose alternation makes feature 7 high).

The model sees inputs as floats ``q / 32``; the exported int8 model has input
scale 1/32 and zero point 0 on both inputs, so ``q`` *is* the int8 input.

Patient adaptation (on-device personalisation): the local mean is the mean of
the 8 RR intervals before the beat's own pre-RR; the long-term mean follows
every RR within 60-160 % of it with weight 1/32; the running average beat
follows, with weight 1/8, every beat that is not premature (pre-RR at least
7/8 of the local mean).  The features of
a beat use the averages as they were before that beat.

Because of the post-RR interval, a beat is ready when the next R peak is
known (or at :meth:`BeatFeatures.flush`, which uses the beat's pre-RR) and
the window's last sample has been pushed.

Scaling and overflow: filtered input is Q15 (1 mV = 3200 LSB at the default
scaling); bin sums of at most 4 samples fit 17 bits; the normalisation
``32 * x // amp`` uses ``amp >= 16`` and saturates to int8; RR arithmetic is
on sample counts below 2**20.  Per sample, :meth:`BeatFeatures.push` only
copies into a ring buffer made at init; per beat, the work is ~300 integer
operations into buffers made at init.
"""

from array import array

from firmware.hw.compat import const

# The model input layout (window, channels, features, input scaling) is the
# one parameter set's (firmware/params.py).
from firmware.params import (
    BEAT_AMPLITUDE_Q,
    BEAT_CHANNELS,
    BEAT_WINDOW_AFTER_MS,
    BEAT_WINDOW_BEFORE_MS,
    BEAT_WINDOW_POINTS,
    RR_FEATURES,
    check_sample_rate_hz,
)

_LOCAL_RR = const(8)  # RR intervals in the local mean
_PENDING = const(16)  # R peaks waiting for their post-RR / window end
_LONG_SHIFT = const(5)  # long-term mean RR weight 1/32
_TEMPLATE_SHIFT = const(3)  # running average beat weight 1/8
_MIN_AMP = const(16)  # Q15 LSB: floor of the amplitude normaliser (5 uV)
_RING_SECONDS = const(8)  # ring of filtered samples: detector latency + window
_QRS_FROM = const(24)  # bins of the QRS (-50..+100 ms) and ST-T (+100..+500 ms)
_QRS_TO = const(42)
_WIDE_FROM = const(18)  # bins searched for the QRS width (-100..+150 ms)
_WIDE_TO = const(48)


def _sat8(v):
    if v > 127:
        return 127
    if v < -128:
        return -128
    return v


def _ratio_q(num, den):
    """``64 * num / den - 64`` rounded, saturated to int8 (den > 0)."""
    return _sat8((128 * num + den) // (2 * den) - 64)


class BeatFeatures:
    """Streaming beat-feature extractor; see the module docstring.

    ``push(samples, count)`` the filtered ECG block by block, ``add_peak(r)``
    each R peak the detector returns (increasing sample indices, counted like
    the pushed samples from the first one), then call ``next_beat()`` until it
    returns None: each call returns the R index of a ready beat and fills
    :attr:`beat` (``array('b')`` of 180) and :attr:`rr` (``array('b')`` of 8).
    ``fs_hz`` is required (250 or 360).
    """

    def __init__(self, fs_hz=None):
        if fs_hz is None:
            raise ValueError("fs_hz is required (no default sample rate)")
        fs = check_sample_rate_hz(fs_hz)
        self.fs_hz = fs
        win_ms = BEAT_WINDOW_BEFORE_MS + BEAT_WINDOW_AFTER_MS
        # Bin k covers samples [R + start[k], R + start[k + 1]), floor of the
        # bin edge times; converted once.
        edges = array("i", [0] * (BEAT_WINDOW_POINTS + 1))
        for k in range(BEAT_WINDOW_POINTS + 1):
            t_num = k * win_ms * fs - BEAT_WINDOW_BEFORE_MS * fs * BEAT_WINDOW_POINTS
            edges[k] = t_num // (1000 * BEAT_WINDOW_POINTS)
        self._edges = edges
        self._before = -edges[0]
        self._after = edges[BEAT_WINDOW_POINTS]  # first sample past the window
        size = 64
        while size < fs * _RING_SECONDS:
            size *= 2
        self._ring = array("h", bytes(2 * size))
        self._mask = size - 1
        self._rr_min = (fs * 200) // 1000  # 300 bpm
        self._rr_max = fs * 3
        self._bins = array("i", [0] * BEAT_WINDOW_POINTS)
        self._template = array("i", [0] * BEAT_WINDOW_POINTS)
        self._peaks = [0] * _PENDING
        self._local = array("i", [0] * _LOCAL_RR)
        self.beat = array("b", bytes(BEAT_WINDOW_POINTS * BEAT_CHANNELS))
        self.rr = array("b", bytes(RR_FEATURES))
        self.reset()

    def reset(self):
        """Forget everything: state as after construction."""
        self._written = 0  # samples pushed so far
        self._wpos = 0  # ring position of the next sample
        self._p_head = 0  # index of the oldest pending peak
        self._p_count = 0
        self._prev_r = -1  # R of the last beat emitted
        self._prev_pre = 0  # its pre-RR (samples), 0 if none
        self._l_pos = 0
        self._l_count = 0
        self._long = 0  # long-term mean RR, samples << 4 (0: none yet)
        self._t_amp = 0  # largest |template|, 0: no template yet
        self._ended = False
        #: Peaks dropped because more than ``_PENDING`` were waiting.
        self.dropped = 0
        #: Beats whose window had already left the ring (zeros used).
        self.overruns = 0
        #: Beats emitted.
        self.beats = 0

    # ------------------------------------------------------------ input
    def push(self, samples, count):
        """Append ``samples[0:count]`` (filtered Q15 ints) to the ring buffer."""
        ring = self._ring
        mask = self._mask
        pos = self._wpos  # == _written & mask, kept small (no long ints per sample)
        for i in range(count):
            ring[pos] = samples[i]
            pos = (pos + 1) & mask
        self._wpos = pos
        self._written += count

    def add_peak(self, r):
        """Queue the R peak at sample index ``r`` (after every earlier one)."""
        if self._p_count == _PENDING:
            self._p_head = (self._p_head + 1) % _PENDING
            self._p_count -= 1
            self.dropped += 1
        self._peaks[(self._p_head + self._p_count) % _PENDING] = r
        self._p_count += 1

    def flush(self):
        """No more samples: the last pending beats become ready (post-RR = pre-RR,
        window end padded with the last sample)."""
        self._ended = True

    # ----------------------------------------------------------- output
    def ready(self):
        """How many beats :meth:`next_beat` would return now, one after another."""
        n = self._p_count
        if self._ended:
            return n
        ready = 0
        for i in range(n - 1):  # the newest peak has no post-RR yet
            r = self._peaks[(self._p_head + i) % _PENDING]
            if r + self._after > self._written:
                break
            ready += 1
        return ready

    def next_beat(self):
        """The R index of the next ready beat, its features in :attr:`beat` and
        :attr:`rr`; None when no beat is ready."""
        if not self._p_count:
            return None
        r = self._peaks[self._p_head]
        if self._p_count > 1:
            post = self._peaks[(self._p_head + 1) % _PENDING] - r
        elif self._ended:
            post = 0
        else:
            return None
        if r + self._after > self._written and not self._ended:
            return None
        self._p_head = (self._p_head + 1) % _PENDING
        self._p_count -= 1
        pre = r - self._prev_r if self._prev_r >= 0 else 0
        if pre <= 0:
            pre = post
        if post <= 0:
            post = pre
        if pre <= 0:  # a lone beat: no rhythm at all, call it 1 s
            pre = post = self.fs_hz
        self._window(r)
        self._rr_features(pre, post)
        self._shape_features()
        self._learn(pre)
        self._prev_r = r
        self._prev_pre = pre
        self.beats += 1
        return r

    # --------------------------------------------------------- internals
    def _window(self, r):
        ring = self._ring
        mask = self._mask
        edges = self._edges
        bins = self._bins
        # Samples outside what the ring holds (before the stream's start, past
        # its end at flush, or overwritten) repeat the nearest one held.
        lo = self._written - len(ring)
        if lo < 0:
            lo = 0
        elif r - self._before < lo:
            self.overruns += 1
        last_ok = self._written - 1
        for k in range(BEAT_WINDOW_POINTS):
            a = r + edges[k]
            b = r + edges[k + 1]
            s = 0
            for j in range(a, b):
                s += ring[(lo if j < lo else (j if j <= last_ok else last_ok)) & mask]
            bins[k] = s // (b - a)
        tmpl = self._template
        if not self._t_amp:  # the first beat is the first average
            for k in range(BEAT_WINDOW_POINTS):
                tmpl[k] = bins[k]
            self._t_amp = self._amplitude(tmpl)
        amp = self._t_amp
        out = self.beat
        for k in range(BEAT_WINDOW_POINTS):
            x = bins[k]
            out[2 * k] = _sat8((BEAT_AMPLITUDE_Q * x) // amp)
            out[2 * k + 1] = _sat8((BEAT_AMPLITUDE_Q * (x - tmpl[k])) // amp)

    @staticmethod
    def _amplitude(t):
        m = _MIN_AMP
        for v in t:
            if v > m:
                m = v
            elif -v > m:
                m = -v
        return m

    def _local_mean(self, fallback):
        n = self._l_count
        if not n:
            return fallback
        s = 0
        for i in range(n):
            s += self._local[i]
        return (s + n // 2) // n

    def _irregularity(self, lag):
        """Mean |RR[i] - RR[i-lag]| over the local RR intervals (samples), 0 if
        there are not more than ``lag`` of them."""
        n = self._l_count
        if n <= lag:
            return 0
        loc = self._local
        # Oldest to newest: the ring starts at _l_pos once it is full.
        start = self._l_pos if n == _LOCAL_RR else 0
        s = 0
        for i in range(lag, n):
            d = loc[(start + i) % _LOCAL_RR] - loc[(start + i - lag) % _LOCAL_RR]
            s += d if d > 0 else -d
        return s // (n - lag)

    def _rr_features(self, pre, post):
        local = self._local_mean(pre)
        long_ = (self._long + 8) >> 4 if self._long else local
        prev = self._prev_pre if self._prev_pre else pre
        rr = self.rr
        rr[0] = _ratio_q(pre, local)
        rr[1] = _ratio_q(post, local)
        rr[2] = _ratio_q(pre, long_)
        rr[3] = _ratio_q(post, long_)
        rr[4] = _ratio_q(local, long_)
        rr[5] = _ratio_q(pre, post)
        rr[6] = _sat8((64 * (pre - prev)) // local)
        rr[7] = _sat8((64 * self._irregularity(1)) // local)
        rr[12] = _sat8((64 * self._irregularity(2)) // local)

    def _shape_features(self):
        bins = self._bins
        tmpl = self._template
        d_qrs = 0
        d_st = 0
        t_qrs = 0
        for k in range(_QRS_FROM, _QRS_TO):
            d = bins[k] - tmpl[k]
            d_qrs += d if d > 0 else -d
            t = tmpl[k]
            t_qrs += t if t > 0 else -t
        for k in range(_QRS_TO, BEAT_WINDOW_POINTS):
            d = bins[k] - tmpl[k]
            d_st += d if d > 0 else -d
        if t_qrs < _MIN_AMP:
            t_qrs = _MIN_AMP
        peak = _MIN_AMP
        for k in range(BEAT_WINDOW_POINTS):
            v = bins[k]
            if v < 0:
                v = -v
            if v > peak:
                peak = v
        wide = 0
        for k in range(_WIDE_FROM, _WIDE_TO):
            v = bins[k]
            if 4 * (v if v > 0 else -v) > peak:
                wide += 1
        rr = self.rr
        rr[8] = _sat8((32 * d_qrs) // t_qrs)
        rr[9] = _sat8((32 * d_st) // t_qrs)
        rr[10] = _ratio_q(peak, self._t_amp)
        rr[11] = _sat8(4 * wide)

    def _learn(self, pre):
        """Update the patient's averages with this beat (after its features)."""
        local = self._local_mean(pre)
        in_range = self._rr_min <= pre <= self._rr_max
        if in_range:
            self._local[self._l_pos] = pre
            self._l_pos = (self._l_pos + 1) % _LOCAL_RR
            if self._l_count < _LOCAL_RR:
                self._l_count += 1
            lq = pre << 4
            if not self._long:
                self._long = lq
            elif 10 * lq >= 6 * self._long and 10 * lq <= 16 * self._long:
                self._long += (lq - self._long) >> _LONG_SHIFT
        # The running average beat follows the beats that come on time (the
        # premature ones are the ectopic suspects).
        if 8 * pre >= 7 * local:
            tmpl = self._template
            bins = self._bins
            for k in range(BEAT_WINDOW_POINTS):
                tmpl[k] += (bins[k] - tmpl[k]) >> _TEMPLATE_SHIFT
            self._t_amp = self._amplitude(tmpl)

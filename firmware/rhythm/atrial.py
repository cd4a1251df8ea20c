"""Atrial activity before the QRS: are there P waves, and are they the same each beat?

AF is "irregular RR *and* no distinct repeating P waves" (the clinical
definition); RR intervals alone cannot tell AF from sinus rhythm with frequent
ectopy the classes miss, or from a noisy sinus trace.  This module gives the
rhythm monitor the second half: a P-wave consistency statistic over the last
``_BEATS`` = 16 beats the monitor counts as N.

Method (after Babaeizadeh, Gregg, Helfenbein, Lindauer, Zhou, "Improvements in
atrial fibrillation detection for real-time monitoring", J. Electrocardiol.
42(6):522-526, 2009, who add a P-wave morphology-similarity measure and the
PR-interval variability to an RR Markov score; what is implemented here is
the morphology similarity only, as an ensemble coherence, not their exact
feature or their RR score): in sinus rhythm each QRS is preceded by a P wave
of the patient's usual shape at a steady PR interval, so the P regions of
successive beats add up coherently; in AF the f waves are not locked to the
QRS and the sum of the regions cancels.  With ``x_i`` beat ``i``'s P region
(mean removed) and ``s`` their sum over the window,

    coherence = |s|^2 / (n * sum_i |x_i|^2)

is 1 when every region is the same and about ``1 / n`` (62 per mille at
n = 16) when they are unrelated.  A missed P-wave detection step or a PR
interval measurement is not needed: varying PR intervals (Babaeizadeh's
second feature) lower the coherence the same way.  Noise lowers it too, but
a P wave that is there keeps it well above the AF level.  Only beats on
time enter the window (the monitor's rule: pre-RR at least 7/8 of the mean
of the last 8 intervals): a premature beat's P region holds the T wave before
it and an ectopic P wave (201's aberrant and blocked PACs drove the
coherence of its sinus stretches into the AF range before this rule).  DS1,
every beat that entered a full window, coherence 5th / 50th / 95th
percentile, per mille: AF (201, 203) 46 / 135 / 291; atrial flutter (203)
34 / 72 / 183 (its flutter waves are no more locked to the QRS at this
resolution than AF's f waves: flutter is not told apart); every other rhythm
of the 22 records except 203's VT 436 / 812 / 935 (sinus, ectopy,
bundle-branch block, paced, the noisy 108, junctional escape).

The samples: channel 0 of the beat classifier's input
(:mod:`firmware.signal.beats`: 90 bins of 8.33 ms from -250 to +500 ms around
R, amplitude-normalised int8, 32 = the patient's QRS), bins 0 up to
``_P_END_MS`` = 70 ms before R (the QRS onset of a narrow beat is ~40 ms
before its peak): 22 bins, -250 to -67 ms.  A PR interval above ~210 ms puts
part of the P wave before the window; the rest of it is still consistent.

Integers only; per beat ~150 operations into buffers made at init (a ring of
16 x 22 int8 regions, their running sum, their energies).  Scaling: a region
bin is int8, the sum of 16 stays below 2**11, ``|s|^2`` below 2**27; the
mean-removed energies are ``sum x^2 - (sum x)^2 // n`` with ``(sum s)^2``
below 2**31 only for a window of saturated bins (then a long int on
MicroPython, once per beat); the ratio in per mille is computed without a
product above 2**30 (:meth:`AtrialActivity._ratio`).
"""

from array import array

from firmware.hw.compat import const
from firmware.params import (
    BEAT_CHANNELS,
    BEAT_WINDOW_AFTER_MS,
    BEAT_WINDOW_BEFORE_MS,
    BEAT_WINDOW_POINTS,
)

_BEATS = const(16)  # beats in the coherence window
_P_END_MS = const(70)  # the P region ends this long before R
#: Bins of the P region: from the window's start to _P_END_MS before R.
P_BINS = ((BEAT_WINDOW_BEFORE_MS - _P_END_MS) * BEAT_WINDOW_POINTS
          + BEAT_WINDOW_BEFORE_MS + BEAT_WINDOW_AFTER_MS - 1) // (BEAT_WINDOW_BEFORE_MS
                                                                 + BEAT_WINDOW_AFTER_MS)


class AtrialActivity:
    """P-wave coherence over the last ``_BEATS`` beats (module docstring).

    :meth:`beat` with each beat's classifier input vector (channel 0 read
    from ``beat[BEAT_CHANNELS * k]``); :attr:`coherence` is the statistic in
    per mille once the window is full, else -1.
    """

    def __init__(self):
        self._ring = array("b", bytes(_BEATS * P_BINS))
        self._sum = array("i", [0] * P_BINS)
        self._energy = array("i", [0] * _BEATS)
        self._r = array("i", [0] * _BEATS)
        self.reset()

    def reset(self):
        for k in range(P_BINS):
            self._sum[k] = 0
        for i in range(_BEATS):
            self._energy[i] = 0
        self._pos = 0
        self._n = 0
        self._energy_sum = 0
        #: P-wave coherence in per mille (-1: fewer than _BEATS beats yet).
        self.coherence = -1
        #: R sample of the oldest beat in the window (-1: none yet).
        self.start = -1

    def beat(self, r, vec):
        """Add the beat at sample ``r`` with classifier input ``vec`` (int8,
        point-major)."""
        ring = self._ring
        acc = self._sum
        base = self._pos * P_BINS
        full = self._n == _BEATS
        t = 0
        sq = 0
        for k in range(P_BINS):
            x = vec[BEAT_CHANNELS * k]
            j = base + k
            if full:
                acc[k] += x - ring[j]
            else:
                acc[k] += x
            ring[j] = x
            t += x
            sq += x * x
        e = sq - (t * t) // P_BINS
        self._energy_sum += e - self._energy[self._pos]
        self._energy[self._pos] = e
        self._r[self._pos] = r
        self._pos = (self._pos + 1) % _BEATS
        self.start = self._r[self._pos] if full else self._r[0]
        if not full:
            self._n += 1
            if self._n < _BEATS:
                return
        t = 0
        sq = 0
        for k in range(P_BINS):
            v = acc[k]
            t += v
            sq += v * v
        self.coherence = self._ratio(sq - (t * t) // P_BINS, _BEATS * self._energy_sum)

    def last_incoherent(self):
        """R sample of the newest beat in the window whose P region does not
        match the window's sum (correlation below 1/2 or negative), walking
        back over the run of matching ones; -1 if every beat matches.  Once per
        AF offset, not per beat (products of long ints on MicroPython)."""
        if self._n < _BEATS:
            return -1
        acc = self._sum
        ring = self._ring
        ts = 0
        for k in range(P_BINS):
            ts += acc[k]
        ss = 0
        for k in range(P_BINS):
            v = P_BINS * acc[k] - ts
            ss += v * v
        pos = self._pos
        for back in range(1, _BEATS + 1):
            i = (pos - back) % _BEATS
            base = i * P_BINS
            tx = 0
            for k in range(P_BINS):
                tx += ring[base + k]
            dot = 0
            xx = 0
            for k in range(P_BINS):
                x = P_BINS * ring[base + k] - tx
                dot += x * (P_BINS * acc[k] - ts)
                xx += x * x
            # correlation > 1/2  <=>  dot > 0 and 4 dot^2 > |x|^2 |s|^2
            if dot <= 0 or 4 * dot * dot <= xx * ss:
                return self._r[i]
        return -1

    @staticmethod
    def _ratio(num, den):
        """1000 * num // den for 0 <= num <= den-ish, no product above 2**30."""
        if den <= 0:
            return 0
        if num < (1 << 20):
            return (num * 1000) // den
        return num // (den // 1000 + 1)

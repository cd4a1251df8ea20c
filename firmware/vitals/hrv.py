"""Heart-rate variability: SDNN and RMSSD over the last 5 minutes of NN intervals.

Task Force of the ESC and NASPE, "Heart rate variability: standards of
measurement, physiological interpretation and clinical use", Circulation
93:1043-1065 (1996): short-term recordings of 5 minutes, SDNN (standard
deviation of the NN intervals) and RMSSD (root mean square of successive
differences).

Normal-to-normal without beat labels: an RR interval (ms) counts as NN when
it lies in 300..2000 ms and within 20 % of the previous RR interval (the
common "20 % filter", which drops the short-long pair around an ectopic
beat).  A successive difference counts only between two consecutive NN
intervals.  :meth:`Hrv.values` (SDNN, RMSSD in whole ms) is withheld (None,
``reason``) until NN intervals span ``HRV_MIN_SPAN_MS`` (4.5 of the 5
minutes: ``too_short``), or when fewer than half the intervals of the window
are NN (``ectopy``: AF or frequent ectopy make SDNN meaningless).

Integers only; a ring of ``_RING`` intervals made at init; the sums of
squares stay below 2**30 per term (differences < 2000 ms) but their total is
a long int on MicroPython, computed once per call, not per beat.
"""

from array import array

from firmware.hw.compat import const

_RING = const(1280)  # > 5 min at 250 bpm
HRV_WINDOW_MS = const(300000)
HRV_MIN_SPAN_MS = const(270000)
_NN_MIN_MS = const(300)
_NN_MAX_MS = const(2000)

REASON_TOO_SHORT = "too_short"
REASON_ECTOPY = "ectopy"


def isqrt(v):
    """floor(sqrt(v)) for an int v >= 0 (Newton's method)."""
    if v <= 0:
        return 0
    x = v
    y = (x + 1) >> 1
    while y < x:
        x = y
        y = (x + v // x) >> 1
    return x


class Hrv:
    """SDNN and RMSSD of the last 5 minutes (module docstring)."""

    def __init__(self, fs_hz):
        self.fs_hz = fs_hz
        self._t = array("l", [0] * _RING)  # ms of the interval's end
        self._rr = array("h", bytes(2 * _RING))  # ms; negative: not NN
        self._succ = bytearray(_RING)  # 1: the previous interval was NN too
        self._pos = 0
        self._count = 0
        self._last_at = -1
        self._last_rr = 0
        self._last_nn = False
        self.reason = REASON_TOO_SHORT

    def beat(self, at):
        """An R peak at ECG sample ``at``."""
        last = self._last_at
        self._last_at = at
        if last < 0:
            return
        rr = ((at - last) * 1000) // self.fs_hz
        prev = self._last_rr
        self._last_rr = rr
        nn = _NN_MIN_MS <= rr <= _NN_MAX_MS and prev > 0 and 5 * abs(rr - prev) <= prev
        p = self._pos
        self._t[p] = (at * 1000) // self.fs_hz
        self._rr[p] = rr if nn and rr < 32767 else -1
        self._succ[p] = 1 if nn and self._last_nn else 0
        self._last_nn = nn
        self._pos = (p + 1) % _RING
        if self._count < _RING:
            self._count += 1

    def values(self):
        """(SDNN, RMSSD) in ms over the last 5 minutes, or (None, None)."""
        if not self._count:
            self.reason = REASON_TOO_SHORT
            return None, None
        k = (self._pos - 1) % _RING
        now = self._t[k]
        lo = now - HRV_WINDOW_MS
        n = nn = 0
        first_nn = now
        s = ss = 0
        d_n = d_ss = 0
        prev_rr = -1
        for _ in range(self._count):
            if self._t[k] <= lo:
                break
            n += 1
            rr = self._rr[k]
            if rr > 0:
                nn += 1
                first_nn = self._t[k] - rr
                s += rr
                ss += rr * rr
                if prev_rr > 0 and self._succ[(k + 1) % _RING]:
                    d = prev_rr - rr
                    d_ss += d * d
                    d_n += 1
            prev_rr = rr
            k = (k - 1) % _RING
        if nn < 2 or now - first_nn < HRV_MIN_SPAN_MS:
            self.reason = REASON_TOO_SHORT
            return None, None
        if 2 * nn < n:
            self.reason = REASON_ECTOPY
            return None, None
        self.reason = None
        var = (ss * nn - s * s) // (nn * nn)
        rmssd = isqrt(d_ss // d_n) if d_n else None
        return isqrt(var), rmssd

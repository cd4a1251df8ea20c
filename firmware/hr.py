"""A simple streaming integer heart-rate detector (first device loop).

This is the placeholder detector of the end-to-end path: small, integer-only
and allocation-free per sample, good enough for clean simulator ECG.  The
fixed-point Pan-Tompkins chain (``firmware/qrs.py``, its own issue) replaces
it.

Signal path per sample ``x`` (int, raw ADC counts):

1. slope ``d = x[n] - x[n-2]`` (kills baseline wander and most of P/T),
   clamped to +/-2047 so the square stays a MicroPython small int;
2. energy ``e = d*d >> 4`` (< 2**18);
3. moving-window integral of ``e`` over ~120 ms (< 2**25 for up to 128
   samples in the window);
4. adaptive threshold ``thr = npk + (spk - npk) // 4`` with integer
   exponential averages of signal peaks (``spk``) and noise peaks (``npk``),
   a 2 s learning phase and a 250 ms refractory period.

Scaling and overflow: every intermediate is bounded as listed above, below
2**30, so no value ever becomes a heap-allocated long int on MicroPython.
"""

from firmware.compat import const

_SLOPE_CLAMP = const(2047)
_RR_HISTORY = const(8)


class HeartRateDetector:
    """Stream ECG samples in, get beat times and heart rate out.

    ``fs_hz`` is required (no default: a wrong rate must fail loudly).
    """

    def __init__(self, fs_hz):
        if not isinstance(fs_hz, int) or not 50 <= fs_hz <= 2000:
            raise ValueError("fs_hz must be an int in 50..2000, got %r" % (fs_hz,))
        self.fs_hz = fs_hz
        # Conversions done once (seconds -> samples).
        self._win_len = max(1, (fs_hz * 120) // 1000)
        self._refractory = (fs_hz * 250) // 1000
        self._learn = fs_hz * 2
        self._rr_max = fs_hz * 3  # RR above 3 s (HR < 20) is not used for HR
        self._win = [0] * self._win_len
        self._rr = [0] * _RR_HISTORY
        self.reset()

    def reset(self):
        for i in range(self._win_len):
            self._win[i] = 0
        for i in range(_RR_HISTORY):
            self._rr[i] = 0
        self._x1 = 0
        self._x2 = 0
        self._wpos = 0
        self._wsum = 0
        self.n = 0  # samples seen
        self._spk = 0
        self._npk = 0
        self._in_peak = False
        self._peak = 0
        self._peak_n = 0
        self.last_beat = -1  # sample index of the last beat, -1 = none yet
        self.beats = 0  # beats found since start
        self._rr_count = 0
        self._rr_pos = 0

    def process(self, buf, count):
        """Consume ``buf[0:count]`` (ints); return the number of new beats."""
        found = 0
        win = self._win
        wlen = self._win_len
        x1 = self._x1
        x2 = self._x2
        wpos = self._wpos
        wsum = self._wsum
        n = self.n
        for i in range(count):
            x = buf[i]
            d = x - x2
            x2 = x1
            x1 = x
            if d > _SLOPE_CLAMP:
                d = _SLOPE_CLAMP
            elif d < -_SLOPE_CLAMP:
                d = -_SLOPE_CLAMP
            e = (d * d) >> 4
            wsum += e - win[wpos]
            win[wpos] = e
            wpos += 1
            if wpos == wlen:
                wpos = 0
            if self._step(wsum, n):
                found += 1
            n += 1
        self._x1 = x1
        self._x2 = x2
        self._wpos = wpos
        self._wsum = wsum
        self.n = n
        return found

    def _step(self, v, n):
        """Threshold logic for one integrated sample; True when a beat is decided."""
        if n < self._learn:
            if v > self._spk:
                self._spk = v
            self._npk = self._spk >> 3
            return False
        thr = self._npk + ((self._spk - self._npk) >> 2)
        if self._in_peak:
            if v > self._peak:
                self._peak = v
                self._peak_n = n
            if v < (thr >> 1):
                self._in_peak = False
                self._spk = (7 * self._spk + self._peak) >> 3
                return self._beat(self._peak_n)
            return False
        if v > thr and (self.last_beat < 0 or n - self.last_beat > self._refractory):
            self._in_peak = True
            self._peak = v
            self._peak_n = n
        elif v > self._npk:
            # Slowly follow the noise floor upward; decay it otherwise.
            self._npk += (v - self._npk) >> 6
        else:
            self._npk -= self._npk >> 8
        return False

    def _beat(self, at):
        if self.last_beat >= 0:
            rr = at - self.last_beat
            if rr <= self._rr_max:
                self._rr[self._rr_pos] = rr
                self._rr_pos = (self._rr_pos + 1) % _RR_HISTORY
                if self._rr_count < _RR_HISTORY:
                    self._rr_count += 1
        self.last_beat = at
        self.beats += 1
        return True

    def heart_rate_bpm(self, max_age_samples):
        """Mean heart rate over the recent RR intervals, rounded to an int bpm.

        None when fewer than 2 RR intervals are known or when the last beat
        is older than ``max_age_samples`` (no reliable rate to publish).
        """
        if self._rr_count < 2 or self.last_beat < 0 or self.n - self.last_beat > max_age_samples:
            return None
        total = 0
        for i in range(self._rr_count):
            total += self._rr[i]
        # bpm = 60 * fs / mean_rr = 60 * fs * count / total, rounded half up.
        num = 60 * self.fs_hz * self._rr_count
        return (2 * num + total) // (2 * total)

"""A rate (per minute) from event times: beats of the ECG, pulses of the PPG.

:class:`EventRate` keeps the sample indices of the last ``RATE_EVENTS`` (128)
events in a ring made at init and gives the rate over a trailing window:

1. the intervals between consecutive events inside the window
   ``(now - window_samples, now]`` that fall in the physiological range
   (``RATE_MIN_BPM``..``RATE_MAX_BPM``);
2. their median ``m``; the intervals within ``m * 11/20 .. m * 27/20`` are
   kept (a missed pulse, 2x, a premature beat's weak pulse merged with the
   next, ~1.6x, or a double detection, <= 1/2x, is dropped, not averaged; a
   premature beat whose pulse was detected, typically 0.6-0.7x, counts);
3. rate = ``round(60 * fs * kept / sum(kept intervals))``.

Withheld (None, with the reason in :attr:`EventRate.reason`) with fewer than
``min_intervals`` kept intervals (``too_few``), when the last event is older
than ``max_age_samples`` (``stale``: a lost sensor must not leave its last
number on screen), or when fewer than two thirds of the intervals were kept
(``irregular``: detections that do not agree with each other, or a window
across a change of rhythm such as the start of bigeminy, whose weak pulses
halve the pulse rate).

Integers only; the per-call scratch (sorting up to 127 intervals for the
median) is a list made at init, so nothing is allocated per event.
"""

from firmware.hw.compat import const

RATE_EVENTS = const(128)
RATE_MIN_BPM = const(25)
RATE_MAX_BPM = const(250)

REASON_TOO_FEW = "too_few"
REASON_STALE = "stale"
REASON_IRREGULAR = "irregular"


def sort_inplace(values, n):
    """Sort ``values[0:n]`` in place (insertion sort: n is small, nothing allocated)."""
    for i in range(1, n):
        v = values[i]
        j = i - 1
        while j >= 0 and values[j] > v:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = v


def median_inplace(values, n):
    """Median of ``values[0:n]`` (sorted in place; n >= 1).
    For even ``n``, the lower middle value (an int, no rounding)."""
    sort_inplace(values, n)
    return values[(n - 1) >> 1]


class EventRate:
    """Rate of events over a trailing window (module docstring)."""

    def __init__(self, fs_hz, max_age_samples, min_intervals=3):
        if not isinstance(fs_hz, int) or fs_hz <= 0:
            raise ValueError("EventRate: fs_hz must be a positive int, got %r" % (fs_hz,))
        self.fs_hz = fs_hz
        self.max_age_samples = max_age_samples
        self.min_intervals = min_intervals
        self._min_iv = (60 * fs_hz) // RATE_MAX_BPM
        self._max_iv = (60 * fs_hz) // RATE_MIN_BPM
        self._at = [0] * RATE_EVENTS
        self._scratch = [0] * RATE_EVENTS
        self._pos = 0
        self.count = 0  # events since start
        self.reason = REASON_TOO_FEW

    def add(self, at):
        """Record an event at sample index ``at`` (non-decreasing)."""
        self._at[self._pos] = at
        self._pos = (self._pos + 1) % RATE_EVENTS
        self.count += 1

    def last(self):
        """Sample index of the last event, or -1."""
        if not self.count:
            return -1
        return self._at[(self._pos - 1) % RATE_EVENTS]

    def bpm(self, now, window_samples):
        """The rate (int per minute) over ``(now - window_samples, now]``, or None."""
        n_ev = self.count if self.count < RATE_EVENTS else RATE_EVENTS
        if n_ev < 2:
            self.reason = REASON_TOO_FEW
            return None
        if now - self.last() > self.max_age_samples:
            self.reason = REASON_STALE
            return None
        lo = now - window_samples
        iv = self._scratch
        n = 0
        k = (self._pos - 1) % RATE_EVENTS
        later = self._at[k]
        for _ in range(n_ev - 1):
            k = (k - 1) % RATE_EVENTS
            earlier = self._at[k]
            if earlier <= lo:
                break
            d = later - earlier
            if self._min_iv <= d <= self._max_iv:
                iv[n] = d
                n += 1
            later = earlier
        if n < self.min_intervals:
            self.reason = REASON_TOO_FEW
            return None
        med = median_inplace(iv, n)
        lo_iv = (med * 11) // 20
        hi_iv = (med * 27 + 19) // 20
        total = 0
        kept = 0
        for i in range(n):
            if lo_iv <= iv[i] <= hi_iv:
                total += iv[i]
                kept += 1
        if kept < self.min_intervals or 3 * kept < 2 * n:
            self.reason = REASON_IRREGULAR
            return None
        self.reason = None
        num = 60 * self.fs_hz * kept
        return (2 * num + total) // (2 * total)

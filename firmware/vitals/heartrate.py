"""Heart rate from the detector's R peaks: the mean of the recent RR intervals.

Method: the last ``RR_HISTORY`` (8) RR intervals that fall in the
physiological range (20..300 bpm) are kept; an interval outside it (a
pause, a gap in the signal, a double detection) restarts them, and so does a
call while the signal is not good, after which no interval counts for
``HOLDOFF_MS`` (2 s: the detector re-learns after lead-off or saturation,
and the edge of a rail makes a false beat).  The
rate is the mean of the kept intervals (every beat counts: premature beats
are beats).  The rate is withheld (None) with fewer than ``HR_MIN_INTERVALS`` (4)
intervals (2 irregular AF intervals can be 10 bpm off the rate), when
the last beat is older than ``max_age_samples`` (asystole or a lost lead must
not leave a stale number on screen), or when the caller says the signal is
not good.

Integers only: ``bpm = round(60 * fs * count / sum(rr))``, rounded half up;
no allocation per beat.
"""

from firmware.hw.compat import const

RR_HISTORY = const(8)  # RR intervals averaged for the heart rate
HR_MIN_BPM = const(20)
HR_MAX_BPM = const(300)
HR_MIN_INTERVALS = const(4)  # intervals averaged before a rate is published
HOLDOFF_MS = const(2000)  # good signal needed after bad before intervals count again


class HeartRate:
    """Running heart rate over the last RR intervals (module docstring).

    ``fs_hz``: the sample rate of the beat indices; ``max_age_samples``: how
    long the last beat keeps the rate valid.
    """

    def __init__(self, fs_hz, max_age_samples):
        self.fs_hz = fs_hz
        self.max_age_samples = max_age_samples
        self._rr_min_samples = (fs_hz * 60) // HR_MAX_BPM
        self._rr_max_samples = (fs_hz * 60) // HR_MIN_BPM
        self._rr_samples = [0] * RR_HISTORY
        self._holdoff_samples = (HOLDOFF_MS * fs_hz) // 1000
        self._hold_until = 0
        self._rr_count = 0
        self._rr_pos = 0
        self.last_beat = -1  # sample index of the last R peak, -1 before the first
        self.beats = 0  # beats seen since boot

    def beat(self, at):
        """Record one R peak at sample index ``at`` (since boot)."""
        if self.last_beat >= 0 and at >= self._hold_until:
            rr = at - self.last_beat
            if self._rr_min_samples <= rr <= self._rr_max_samples:
                self._rr_samples[self._rr_pos] = rr
                self._rr_pos = (self._rr_pos + 1) % RR_HISTORY
                if self._rr_count < RR_HISTORY:
                    self._rr_count += 1
            else:
                self._rr_count = 0  # a pause or a gap: start the average afresh
        self.last_beat = at
        self.beats += 1

    def bpm(self, now_sample, signal_good):
        """The mean heart rate (int bpm) at sample ``now_sample``, or None (module doc)."""
        if not signal_good:
            # What is detected around bad signal is not averaged: restart, and
            # take no interval until the signal has been good for a while.
            self._rr_count = 0
            self._hold_until = now_sample + self._holdoff_samples
            return None
        if self._rr_count < HR_MIN_INTERVALS or now_sample - self.last_beat > self.max_age_samples:
            return None
        total = 0
        kept = self._rr_count
        for i in range(kept):
            total += self._rr_samples[i]
        num = 60 * self.fs_hz * kept
        return (2 * num + total) // (2 * total)

"""Sample sources that need no hardware, and the pacing they share.

:class:`ArraySource` plays a fixed sequence of raw samples (a recorded or
precomputed signal): tests, replays, and the MicroPython VM check.  Real
sensor drivers and the simulator's emulated sensors offer the same
``read_samples(buf, max_count) -> int`` surface.  :class:`SamplePacer` tells
a clock-paced source how many samples came due (this file's
:class:`ArraySource`, the polled ADS1115 source in :mod:`firmware.hw.sensors`).
"""

from firmware.hw.compat import const, ticks_diff


def ring_read(ring, head, size, buf, n):
    """Copy ``n`` samples from the ring buffer ``ring`` (``size`` long), oldest
    at ``head``, into ``buf[0:n]``; return the new head.  The drain of the
    ring-buffered sources (sensor drivers, the serial board): no allocation."""
    for i in range(n):
        buf[i] = ring[head]
        head += 1
        if head == size:
            head = 0
    return head


_MAX_RATE_HZ = const(2000)  # keeps every product below in MicroPython's small ints (< 2**30)


class SamplePacer:
    """How many samples of a ``sample_rate_hz`` stream came due since the last
    :meth:`due`, from a clock with a wrapping millisecond ``ticks_ms()``.

    Method: each call measures only the span since the previous call,
    ``ticks_diff(now, last)``, and adds ``span * sample_rate_hz`` to a
    remainder kept in thousandths of a sample (0..999); the whole samples
    are returned, the fraction carries.  Summed over the calls this is
    exactly ``floor(elapsed_ms * sample_rate_hz / 1000)`` since the pacer
    was made, the count an absolute "time since start" gives, but no value
    grows with uptime: the state is the last tick and the remainder.

    Clock: ``ticks_ms`` wraps at 2**30 (MicroPython, and
    :mod:`firmware.hw.compat` on CPython) and ``ticks_diff`` is valid only
    for spans under 2**29 ms (about 6.2 days), so an absolute span from the
    start stops working after 6.2 days of uptime; spans between two calls
    stay valid as long as the caller calls at least once per 6.2 days.  A
    span that reads negative (not called for longer than that, or a clock
    that stepped back) counts as no time: pacing resumes from that call,
    it never stalls.

    Scaling and overflow: the span (< 2**29 ms) is split into whole seconds
    ``s`` and milliseconds ``ms``; ``s * rate <= 536870 * 2000 < 2**30`` and
    ``remainder + ms * rate < 1000 * 2001``, so with ``sample_rate_hz <=
    2000`` every value stays a small int on MicroPython (no allocation).
    Rounds down (a sample is due when its time has fully come).
    """

    def __init__(self, clock, sample_rate_hz):
        fs = int(sample_rate_hz) if isinstance(sample_rate_hz, (int, float)) else 0
        if fs != sample_rate_hz or not 0 < fs <= _MAX_RATE_HZ:
            raise ValueError("sample_rate_hz must be a whole number in 1..%d, got %r"
                             % (_MAX_RATE_HZ, sample_rate_hz))
        self._clock = clock
        self._fs = fs
        self._last = clock.ticks_ms()
        self._rem = 0  # thousandths of a sample owed, 0..999

    def due(self):
        """Samples that came due since the previous call (or since the pacer
        was made); ``< 2**30``."""
        now = self._clock.ticks_ms()
        span = ticks_diff(now, self._last)
        self._last = now
        if span <= 0:
            return 0
        fs = self._fs
        s = span // 1000
        acc = self._rem + (span - s * 1000) * fs
        n = acc // 1000
        self._rem = acc - n * 1000
        return s * fs + n


class ArraySource:
    """Play ``samples`` (ints) once; optionally pace them by a sample clock.

    Without ``clock`` every call returns as many samples as fit; with a
    ``clock`` (``ticks_ms``) and ``sample_rate_hz`` only the samples whose
    time has come are returned, as a live sensor would (a :class:`SamplePacer`;
    samples that came due while nobody read are delivered at the next reads,
    so the sequence is the same however the reads are spaced).
    """

    def __init__(self, samples, sample_rate_hz=None, clock=None):
        if clock is not None and not sample_rate_hz:
            raise ValueError("a paced ArraySource needs sample_rate_hz")
        self._samples = samples
        self._pos = 0
        self._pacer = SamplePacer(clock, sample_rate_hz) if clock is not None else None
        self._owed = 0  # due and not yet delivered; at most what is left

    @property
    def position(self):
        return self._pos

    def exhausted(self):
        return self._pos >= len(self._samples)

    def read_samples(self, buf, max_count):
        pos = self._pos
        n = len(self._samples) - pos
        pacer = self._pacer
        if pacer is not None:
            due = pacer.due()
            owed = self._owed
            if due < n - owed:
                n = owed + due
            self._owed = n  # clamped to what is left: never more than the array holds
        if n > max_count:
            n = max_count
        if n <= 0:
            return 0
        samples = self._samples
        for i in range(n):
            buf[i] = samples[pos + i]
        self._pos = pos + n
        if pacer is not None:
            self._owed -= n
        return n

"""Sample sources that need no hardware.

:class:`ArraySource` plays a fixed sequence of raw samples (a recorded or
precomputed signal): tests, replays, and the MicroPython VM check.  Real
sensor drivers and the simulator's emulated sensors offer the same
``read_samples(buf, max_count) -> int`` surface.
"""


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


class ArraySource:
    """Play ``samples`` (ints) once; optionally pace them by a sample clock.

    Without ``clock`` every call returns as many samples as fit; with a
    ``clock`` (``ticks_ms``) and ``sample_rate_hz`` only the samples whose
    time has come are returned, as a live sensor would.
    """

    def __init__(self, samples, sample_rate_hz=None, clock=None):
        if clock is not None and not sample_rate_hz:
            raise ValueError("a paced ArraySource needs sample_rate_hz")
        self._samples = samples
        self._pos = 0
        self._fs = sample_rate_hz
        self._clock = clock
        self._t0 = clock.ticks_ms() if clock is not None else 0

    @property
    def position(self):
        return self._pos

    def exhausted(self):
        return self._pos >= len(self._samples)

    def read_samples(self, buf, max_count):
        end = len(self._samples)
        if self._clock is not None:
            from firmware.hw.compat import ticks_diff

            due = ticks_diff(self._clock.ticks_ms(), self._t0) * self._fs // 1000
            if due < end:
                end = due
        n = end - self._pos
        if n > max_count:
            n = max_count
        if n <= 0:
            return 0
        samples = self._samples
        pos = self._pos
        for i in range(n):
            buf[i] = samples[pos + i]
        self._pos = pos + n
        return n

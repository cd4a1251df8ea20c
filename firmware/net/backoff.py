"""Reconnect policy: capped exponential backoff with jitter, on bounded tick spans.

After a failed connect the next attempt waits ``delay_ms`` plus up to 25 %
jitter; each further failure doubles the delay up to ``max_ms``; a success
resets it to ``min_ms`` (the policy of paho's ``reconnect_delay_set``).  The
jitter comes from a small LCG seeded by the device id, so a fleet does not
reconnect in lock-step after a broker restart and a simulation stays
reproducible.

Clock: ``ticks_diff`` is only valid for spans under 2**29 ms (about 6.2
days; ``ticks_ms`` wraps at 2**30 on MicroPython and in
:mod:`firmware.hw.compat`).  The policy therefore measures only the span from
the last failure, which is at most ``1.25 * max_ms`` (``max_ms`` is at most
2**28 ms, so that span is always valid), and treats a span that reads
negative (the loop was not called for over 6.2 days) as elapsed: a wrap can
make an attempt early, never days late.
"""

from firmware.hw.compat import const, ticks_diff

_MAX_DELAY_MS = const(1 << 28)  # 1.25 * this < 2**29, the longest valid ticks_diff span


class Backoff:
    """When the next connect attempt is due (module docstring)."""

    def __init__(self, min_ms, max_ms, seed_text):
        if (not isinstance(min_ms, int) or not isinstance(max_ms, int)
                or not 0 < min_ms <= max_ms <= _MAX_DELAY_MS):
            raise ValueError("backoff needs ints 0 < min_ms <= max_ms <= %d, got %r, %r"
                             % (_MAX_DELAY_MS, min_ms, max_ms))
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.delay_ms = min_ms
        self.failures = 0  # failed attempts since boot
        seed = 0
        for ch in seed_text:
            seed = (seed * 31 + ord(ch)) & 0x3FFFFFFF
        self._rand = seed
        self._waiting = False
        self._failed_at = 0  # ticks_ms of the last failure
        self._wait_ms = 0

    def due(self, now):
        """True if an attempt may be made at tick ``now``."""
        if not self._waiting:
            return True
        elapsed = ticks_diff(now, self._failed_at)
        if elapsed < 0 or elapsed >= self._wait_ms:
            self._waiting = False
            return True
        return False

    def failed(self, now):
        """An attempt at tick ``now`` failed: wait before the next one."""
        self.failures += 1
        self._rand = (self._rand * 1103515245 + 12345) & 0x3FFFFFFF
        jitter = self._rand % (self.delay_ms // 4 + 1)  # up to +25 %
        self._wait_ms = self.delay_ms + jitter
        self._failed_at = now
        self._waiting = True
        self.delay_ms = min(2 * self.delay_ms, self.max_ms)

    def succeeded(self):
        self.delay_ms = self.min_ms
        self._waiting = False

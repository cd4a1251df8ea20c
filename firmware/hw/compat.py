"""Platform shim: the few things CPython and MicroPython spell differently.

The device code imports time, ``const`` and friends from here and nowhere
else, so every algorithm module stays identical on both platforms.

- ``const(x)``: MicroPython's compile-time constant; a no-op on CPython (the
  way Adafruit Blinka runs the same drivers on a Pi).
- ``ticks_ms`` / ``ticks_diff`` / ``ticks_add``: a wrapping millisecond
  counter.  Intervals are always computed with ``ticks_diff``, never by
  subtracting wall-clock times, so they stay right across wrap-around and
  wall-clock steps.
- ``epoch_ms()``: wall-clock milliseconds since 1970-01-01 UTC, for message
  timestamps only (MicroPython ports count from 2000 on some boards; the
  offset is corrected here).
- ``mem_free()`` / ``storage_free_kb(path)``: the device's resources for the
  ``ping`` command (None where the platform cannot say: CPython has no
  ``gc.mem_free``; a port without ``statvfs``).
"""

import sys

IS_MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const  # type: ignore[import-not-found]
except ImportError:  # CPython

    def const(x):
        return x


try:
    import utime as _time  # type: ignore[import-not-found]
except ImportError:
    import time as _time

_TICKS_PERIOD = 1 << 30
_TICKS_MAX = _TICKS_PERIOD - 1
_TICKS_HALF = _TICKS_PERIOD // 2

if hasattr(_time, "ticks_ms"):
    ticks_ms = _time.ticks_ms
    ticks_diff = _time.ticks_diff
    ticks_add = _time.ticks_add
else:
    _monotonic_ns = _time.monotonic_ns

    def ticks_ms():
        return (_monotonic_ns() // 1000000) & _TICKS_MAX

    def ticks_add(ticks, delta):
        return (ticks + delta) & _TICKS_MAX

    def ticks_diff(a, b):
        """Signed difference a - b of two tick values (MicroPython semantics)."""
        return ((a - b + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


if hasattr(_time, "sleep_ms"):
    sleep_ms = _time.sleep_ms
else:

    def sleep_ms(ms):
        _time.sleep(ms / 1000)


# MicroPython boards whose epoch is 2000-01-01 report time.gmtime(0)[0] == 2000.
_EPOCH_OFFSET_S = 946684800 if _time.gmtime(0)[0] == 2000 else 0

if hasattr(_time, "time_ns"):

    def epoch_ms():
        return _time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000

else:  # pragma: no cover - very old ports

    def epoch_ms():
        return int(_time.time()) * 1000 + _EPOCH_OFFSET_S * 1000


class SystemClock:
    """The device's clock: wall time for timestamps, ticks for intervals."""

    def epoch_ms(self):
        return epoch_ms()

    def ticks_ms(self):
        return ticks_ms()


def mem_free():
    """Free heap bytes (MicroPython's ``gc.mem_free``), or None on CPython."""
    import gc

    fn = getattr(gc, "mem_free", None)
    return fn() if fn is not None else None


def storage_free_kb(path):
    """Free KiB on the file system holding ``path`` (``os.statvfs``), or None."""
    try:
        import os
    except ImportError:  # pragma: no cover
        import uos as os  # type: ignore[import-not-found,no-redef]
    fn = getattr(os, "statvfs", None)
    if fn is None:
        return None
    try:
        st = fn(path)
    except OSError:
        return None
    return (st[0] * st[4]) // 1024  # f_bsize * f_bavail

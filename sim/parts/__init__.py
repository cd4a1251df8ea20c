"""Sensor parts emulated at register level (CPython-only simulator code).

Every part takes its sample values from a pluggable *signal*, so the same
part can be fed by a sine, by ECGSYN, by a recorded WFDB channel or later by
the virtual patient.  A signal is any of:

- a number: a constant;
- a callable ``f(t_s) -> float``: the value at simulated time ``t_s``
  (seconds since the part was made);
- an iterator: ``next()`` gives the value of the next conversion (one value
  per sample at the part's data rate, which is how a recording is replayed
  sample for sample).  When it runs out the last value is held.

Units are the part's physical input: volts for ADC inputs (ADS1115,
ADS1292), degrees Celsius for the thermometer, photodiode nanoamperes per
milliampere of LED current for the pulse oximeter.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["Signal", "as_signal", "samples_signal", "sine"]


class Signal:
    """Uniform wrapper: ``sig(t_s)`` returns the value for a conversion at ``t_s``."""

    def __init__(self, source: Any) -> None:
        self._fn: Callable[[float], float] | None = None
        self._it: Iterator[float] | None = None
        self._last = 0.0
        if isinstance(source, (int, float)):
            value = float(source)
            self._fn = lambda t: value
        elif callable(source):
            self._fn = source
        else:
            self._it = iter(source)
        self.exhausted = False

    def __call__(self, t_s: float) -> float:
        if self._fn is not None:
            return float(self._fn(t_s))
        try:
            self._last = float(next(self._it))  # type: ignore[arg-type]
        except StopIteration:
            self.exhausted = True
        return self._last


def as_signal(source: Any) -> Signal:
    return source if isinstance(source, Signal) else Signal(source)


def sine(amplitude: float, freq_hz: float, offset: float = 0.0) -> Callable[[float], float]:
    """``offset + amplitude * sin(2 pi f t)``."""
    w = 2.0 * math.pi * freq_hz
    return lambda t: offset + amplitude * math.sin(w * t)


def samples_signal(values: Any, scale: float = 1.0, offset: float = 0.0) -> Iterator[float]:
    """An iterator signal over a recorded array: ``offset + scale * values[i]``."""
    arr = np.asarray(values, dtype=np.float64) * scale + offset
    return iter(arr.tolist())

"""Simulated time: one virtual clock shared by every device of a simulation.

The clock only moves when the simulation loop advances it, so a run is a
pure function of its seed and settings (no wall-clock reads inside the device
code), and it can run faster than real time.  It has the surface of
``firmware.hw.compat.SystemClock``: ``epoch_ms()`` for message timestamps and a
wrapping ``ticks_ms()`` for intervals.  ``start_ticks_ms`` sets where the tick
counter starts (a board counts from 0 at power-up, a Pi's monotonic clock
from anywhere): start it just below 2**30 to run the wrap within seconds.
"""

from __future__ import annotations

import time

_TICKS_MASK = (1 << 30) - 1


class SimClock:
    def __init__(self, start_epoch_ms: int | None = None, start_ticks_ms: int = 0) -> None:
        self.start_epoch_ms = (
            time.time_ns() // 1_000_000 if start_epoch_ms is None else start_epoch_ms
        )
        self.start_ticks_ms = start_ticks_ms & _TICKS_MASK
        self.elapsed_ms = 0

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError("time only moves forward")
        self.elapsed_ms += ms

    def epoch_ms(self) -> int:
        return self.start_epoch_ms + self.elapsed_ms

    def ticks_ms(self) -> int:
        return (self.start_ticks_ms + self.elapsed_ms) & _TICKS_MASK

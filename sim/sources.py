"""Simulated sensors handed to the real device loop.

:class:`SyntheticEcgSource` turns an ECGSYN stream (millivolts) into the raw
ADC counts a front end would deliver, paced by the simulation clock: a call to
``read_samples`` returns only the samples whose time has come, exactly like a
driver draining a sensor FIFO.

``ADC_COUNTS_PER_MV``, ``ADC_MIN_COUNT``, ``ADC_MAX_COUNT`` (the front end's
scale and rails, from ``firmware.params``) and :func:`mv_to_counts` (the
quantiser, from ``sim.adc``) are re-exported here for older callers.
"""

from __future__ import annotations

from array import array

from firmware.params import ECG_ADC_MAX_COUNT as ADC_MAX_COUNT
from firmware.params import ECG_ADC_MIN_COUNT as ADC_MIN_COUNT
from firmware.params import ECG_COUNTS_PER_MV as ADC_COUNTS_PER_MV
from sim.adc import mv_to_counts
from sim.clock import SimClock
from sim.ecgsyn import EcgStream

__all__ = ["ADC_COUNTS_PER_MV", "ADC_MAX_COUNT", "ADC_MIN_COUNT", "SyntheticEcgSource",
           "mv_to_counts"]


class SyntheticEcgSource:
    def __init__(
        self,
        stream: EcgStream,
        sample_rate_hz: int,
        clock: SimClock,
        block_samples: int | None = None,
    ) -> None:
        self.stream = stream
        self.fs = sample_rate_hz
        self.clock = clock
        self._t0_ms = clock.elapsed_ms
        self._block = block_samples or sample_rate_hz
        self._pending = array("h")
        self._pos = 0
        self.produced = 0  # samples handed to the device so far

    def _refill(self) -> None:
        counts = mv_to_counts(self.stream.next_chunk(self._block))
        self._pending = array("h", counts.tobytes())
        self._pos = 0

    def read_samples(self, buf, max_count: int) -> int:
        due = (self.clock.elapsed_ms - self._t0_ms) * self.fs // 1000 - self.produced
        n = min(due, max_count)
        done = 0
        while done < n:
            if self._pos >= len(self._pending):
                self._refill()
            take = min(n - done, len(self._pending) - self._pos)
            buf[done : done + take] = self._pending[self._pos : self._pos + take]
            self._pos += take
            done += take
        self.produced += done
        return done

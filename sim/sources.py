"""Simulated sensors handed to the real device loop.

:class:`SyntheticEcgSource` turns an ECGSYN stream (millivolts) into the raw
ADC counts a front end would deliver, paced by the simulation clock: a call to
``read_samples`` returns only the samples whose time has come, exactly like a
driver draining a sensor FIFO.
"""

from __future__ import annotations

from array import array

import numpy as np

from sim.clock import SimClock
from sim.ecgsyn import EcgStream

#: ADC model of the simulated ECG front end: 5 uV per count, signed 16 bit.
ADC_COUNTS_PER_MV = 200
ADC_MIN_COUNT = -32768
ADC_MAX_COUNT = 32767


def mv_to_counts(signal_mv: np.ndarray) -> np.ndarray:
    """Quantise millivolts to ADC counts: round, then saturate to int16."""
    counts = np.rint(np.asarray(signal_mv, dtype=np.float64) * ADC_COUNTS_PER_MV)
    return np.clip(counts, ADC_MIN_COUNT, ADC_MAX_COUNT).astype(np.int16)


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

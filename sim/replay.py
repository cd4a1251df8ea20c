"""Replay a WFDB record as a sensor: directly, or behind an emulated front end.

:class:`WfdbReplay` reads one channel of any WFDB record (MIT-BIH at 360 Hz,
BIDMC at 125 Hz, ...) and turns it into the device's raw counts at the
device rate with the one record reader, :func:`sim.records.device_signal`
(the conversion ``medge ecg analyze`` uses: counts at
``firmware.params.ECG_COUNTS_PER_MV`` around the record's baseline, polyphase
resampling when the rates differ, rounded and saturated to int16).  It is a
sample source itself (``read_samples(buf, max_count)``), paced by an injected
clock like a live sensor, and it offers the same samples as chunks of counts
to feed an emulated front end (:meth:`WfdbReplay.counts_chunks`) or as single
counts for the serial board (:meth:`WfdbReplay.counts_signal`).

:func:`ads1292_front_end` and :func:`ads1115_front_end` put a replay behind
an emulated ADS1292R (SPI) or an ADS1115 behind an analog ECG amplifier
(I2C), with the real firmware driver and source on top, so the full driver
path replays the record: the wiring is :mod:`sim.frontend`'s (the same as the
simulated fleet's sensor paths), and :class:`sim.frontend.EmulatedFrontEnd`
is the resulting sample source.  :func:`ppg_signal` turns a PPG channel
(BIDMC ``PLETH``) into the MAX30102's photodiode signal and
:func:`max30102_front_end` (:func:`sim.frontend.max30102_ppg`) replays it
through the emulated pulse oximeter and its driver.

The ADS1292R converts at 125, 250, 500 ... SPS and the ADS1115 at 8 ... 860
SPS, so an ECG front-end replay runs at 250 Hz (or 125 / 475 / 500 ...); 360 Hz
is available for direct replay only.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from firmware.params import ECG_COUNTS_PER_MV
from sim.bus import SimTime
from sim.frontend import EmulatedFrontEnd, ads1115_ecg, ads1292_ecg
from sim.frontend import max30102_ppg as max30102_front_end
from sim.records import device_signal, read_channel

__all__ = [
    "EmulatedFrontEnd",
    "WfdbReplay",
    "ads1115_front_end",
    "ads1292_front_end",
    "max30102_front_end",
    "ppg_signal",
]


class WfdbReplay:
    """One channel of a WFDB record as raw device counts at ``sample_rate_hz``.

    ``clock`` (a :class:`sim.clock.SimClock` or anything with ``ticks_ms``)
    paces :meth:`read_samples`; without it every call returns as much as
    fits.  ``loop=True`` starts over at the end (an endless source).
    """

    def __init__(self, record: str, sample_rate_hz: int, channel: int = 0,
                 clock: Any = None, loop: bool = False) -> None:
        if not isinstance(sample_rate_hz, int) or sample_rate_hz <= 0:
            raise ValueError("sample_rate_hz must be a positive int (no default on purpose)")
        sig = device_signal(record, channel, sample_rate_hz)
        self.record = record
        self.channel = channel
        self.record_fs_hz = sig.record_fs_hz
        self.sample_rate_hz = sample_rate_hz
        self.counts = sig.counts  # int16 at sample_rate_hz
        self._device_signal = sig
        self.loop = loop
        self._time = SimTime(clock) if clock is not None else None
        self._t0_us = self._time.now_us() if self._time is not None else 0
        self.position = 0  # samples handed out so far (keeps counting when looping)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def duration_s(self) -> float:
        return len(self.counts) / self.sample_rate_hz

    def to_record_samples(self, indices: list[int]) -> list[int]:
        """Sample numbers at the device rate -> the record's own numbering."""
        return self._device_signal.to_record_samples(indices)

    def exhausted(self) -> bool:
        return not self.loop and self.position >= len(self.counts)

    def read_samples(self, buf: Any, max_count: int) -> int:
        n = max_count
        if self._time is not None:
            due = (self._time.now_us() - self._t0_us) * self.sample_rate_hz // 1_000_000
            n = min(n, due - self.position)
        if not self.loop:
            n = min(n, len(self.counts) - self.position)
        if n <= 0:
            return 0
        total = len(self.counts)
        for i in range(n):
            buf[i] = int(self.counts[(self.position + i) % total])
        self.position += n
        return n

    # -- as a signal for an emulated part or the serial board ----------------
    def millivolts(self) -> np.ndarray:
        return self.counts.astype(np.float64) / ECG_COUNTS_PER_MV

    def counts_chunks(self) -> Iterator[np.ndarray]:
        """The counts from the start, as one chunk (again and again with ``loop``):
        the feed of an emulated front end (:mod:`sim.frontend`)."""
        yield self.counts
        while self.loop:
            yield self.counts

    def counts_signal(self) -> Iterator[int]:
        """Iterator of raw counts (for the serial board)."""
        for chunk in self.counts_chunks():
            yield from chunk.astype(int).tolist()


def ads1292_front_end(replay: WfdbReplay, clock: Any, gain: int = 6,
                      channel: int = 2) -> EmulatedFrontEnd:
    """The replay on an ADS1292R channel (``channel`` 1 or 2), read by the firmware
    driver with its DRDY interrupt into :class:`firmware.hw.sensors.Ads1292EcgSource`."""
    return ads1292_ecg(replay.counts_chunks(), clock, replay.sample_rate_hz, gain=gain,
                       channel=channel)


def ads1115_front_end(replay: WfdbReplay, clock: Any, frontend_gain: int = 100,
                      reference_v: float = 1.65, full_scale_mv: int = 2048,
                      address: int = 0x48) -> EmulatedFrontEnd:
    """The replay through an ECG amplifier of gain ``frontend_gain`` (output
    around ``reference_v`` on AIN0, the reference on AIN1) into an ADS1115 in
    continuous mode, read on its ALERT/RDY conversion-ready pulses."""
    return ads1115_ecg(replay.counts_chunks(), clock, replay.sample_rate_hz,
                       frontend_gain=frontend_gain, reference_v=reference_v,
                       full_scale_mv=full_scale_mv, address=address)


def ppg_signal(record: str, channel: int, dc_na_per_ma: float = 200.0,
               ac_fraction: float = 0.02) -> Any:
    """A PPG channel as a MAX30102 signal ``f(t_s)`` in nA per mA of LED current.

    The record's pulsatile waveform (its 1st..99th percentile span) becomes
    ``ac_fraction`` of a ``dc_na_per_ma`` baseline, with the absorption sign
    of a photodiode (more blood, less light).  Values between samples are
    interpolated linearly, so any MAX30102 sample rate can read it; past the
    end the last value is held.
    """
    ch = read_channel(record, channel)
    values, fs = ch.physical(), ch.fs_hz
    lo, hi = np.percentile(values, [1, 99])
    span = float(hi - lo) or 1.0
    scaled = dc_na_per_ma * (1.0 - ac_fraction * (values - lo) / span)
    times = np.arange(len(scaled)) / fs

    def at(t_s: float) -> float:
        return float(np.interp(t_s, times, scaled))

    return at

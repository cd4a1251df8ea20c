"""Red and infrared PPG of the virtual patient (a MAX30102-class sensor).

Each beat with a mechanical contraction (``Beat.pulse`` > 0) launches a pulse
that reaches the finger ``pulse_arrival_s`` after the R peak.  The blood-volume
pulse is two Gaussians (systolic wave, and the reflected / dicrotic wave at
40 %), widths scaled with sqrt(RR), normalised to a peak of 1, and scaled by
the beat's relative stroke volume (small after a premature beat, absent when
the beat is too early to eject: non-perfused).

Transmitted light at each wavelength:
``I(t) = DC * (1 + resp_dc * r(t)) * (1 - PI * v(t))``, ``v`` the sum of pulses,
``r`` the respiration waveform.  ``PI_ir`` is the perfusion index (AC/DC of the
infrared); each pulse's red AC/DC is ``R * PI_ir``, with ``R`` the ratio of
ratios that ``firmware.vitals.spo2`` maps to the SpO2 in force at that beat
(``ratio_from_spo2``).  Since baseline and respiratory modulation multiply both
wavelengths alike, (AC_red/DC_red) / (AC_ir/DC_ir) = R for every beat.
Respiration also modulates the pulse amplitude (``resp_am`` fraction).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from firmware.vitals.spo2 import ratio_from_spo2

__all__ = ["PpgModel"]

FloatArray = npt.NDArray[np.float64]

_SYSTOLIC = (0.13, 0.045, 1.0)  # peak time (s), sigma (s), relative height at RR = 1 s
_DIASTOLIC = (0.34, 0.09, 0.4)


class PpgModel:
    def __init__(self, fs_hz: int, *, perfusion_index_percent: float = 2.0,
                 pulse_arrival_s: float = 0.22, dc_ir_counts: float = 120_000.0,
                 dc_red_counts: float = 95_000.0, resp_dc_fraction: float = 0.004,
                 resp_am_fraction: float = 0.12) -> None:
        self.fs = int(fs_hz)
        self.pi_ir = perfusion_index_percent / 100.0
        self.arrival = round(pulse_arrival_s * self.fs)
        self.dc_ir = dc_ir_counts
        self.dc_red = dc_red_counts
        self.resp_dc = resp_dc_fraction
        self.resp_am = resp_am_fraction
        self._cache: dict[int, FloatArray] = {}
        self._ir = np.zeros(4 * self.fs)
        self._red = np.zeros(4 * self.fs)
        self._start = 0

    def _pulse(self, rr_s: float) -> FloatArray:
        key = max(30, min(200, round(rr_s * 100)))  # 10 ms bins, 0.3..2 s
        hit = self._cache.get(key)
        if hit is None:
            s = math.sqrt(key / 100.0)
            t = np.arange(0, math.ceil((_DIASTOLIC[0] + 4 * _DIASTOLIC[1]) * s * self.fs) + 1)
            t = t / self.fs
            v = np.zeros(t.size)
            for mu, sd, h in (_SYSTOLIC, _DIASTOLIC):
                v += h * np.exp(-0.5 * ((t - mu * s) / (sd * s)) ** 2)
            # Start at zero: remove the value at t = 0, then normalise the peak to 1.
            v -= v[0] * np.linspace(1.0, 0.0, v.size)
            hit = v / v.max()
            self._cache[key] = hit
        return hit

    def add_beat(self, r_sample: int, pulse: float, rr_s: float, spo2_percent: float,
                 resp_at_beat: float) -> None:
        """Add the pulse of a beat (R at ``r_sample``; ``rr_s`` sets its shape)."""
        if pulse <= 0.0:
            return
        v = self._pulse(rr_s) * (pulse * (1.0 + self.resp_am * 2.0 * resp_at_beat))
        a = r_sample + self.arrival - self._start
        if a < 0:
            raise ValueError(f"pulse at {r_sample} starts before the rendered position")
        end = a + v.size
        if end > self._ir.size:
            size = max(end, 2 * self._ir.size)
            self._ir = np.concatenate((self._ir, np.zeros(size - self._ir.size)))
            self._red = np.concatenate((self._red, np.zeros(size - self._red.size)))
        self._ir[a:end] += v
        self._red[a:end] += ratio_from_spo2(spo2_percent) * v

    def take(self, n: int, resp: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(red, ir) light levels in counts (float) for the next ``n`` samples."""
        if n > self._ir.size:
            self._ir = np.concatenate((self._ir, np.zeros(n)))
            self._red = np.concatenate((self._red, np.zeros(n)))
        base = 1.0 + self.resp_dc * 2.0 * resp
        ir = self.dc_ir * base * (1.0 - self.pi_ir * self._ir[:n])
        red = self.dc_red * base * (1.0 - self.pi_ir * self._red[:n])
        for buf in (self._ir, self._red):
            buf[:-n] = buf[n:]
            buf[-n:] = 0.0
        self._start += n
        return red, ir


#: Light level (counts) and pulsatile fraction a recorded PPG is given on replay.
REPLAY_DC_COUNTS = 100_000
REPLAY_AC_FRACTION = 0.02


def light_from_pleth(values: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """A recorded plethysmogram (monitor orientation: up = more blood, any
    units) as the light counts of one MAX30102 channel: its 1st..99th
    percentile span becomes ``REPLAY_AC_FRACTION`` of ``REPLAY_DC_COUNTS``,
    inverted (more blood, less light), rounded, at least 1 count.  NaNs
    (gaps) become the baseline."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return np.full(v.size, REPLAY_DC_COUNTS, dtype=np.int32)
    lo, hi = np.percentile(finite, [1, 99])
    span = float(hi - lo) or 1.0
    v = np.where(np.isfinite(v), v, lo)
    light = REPLAY_DC_COUNTS * (1.0 - REPLAY_AC_FRACTION * (v - lo) / span)
    return np.maximum(1, np.rint(light)).astype(np.int32)


def add_motion(red: npt.NDArray[np.int64], ir: npt.NDArray[np.int64], fs_hz: int,
               episodes: list[tuple[float, float]], rng: np.random.Generator,
               strength: float = 3.0) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Motion artefact on a red/IR pair (counts): in each ``(start_s, end_s)``
    episode, 0.5-4 Hz band-limited noise of ``strength`` times the IR pulse
    amplitude (robust span of the signal) moves both wavelengths by the same
    fraction of their level (tissue and venous blood, ratio near 1): the
    classic way motion pulls a ratio of ratios towards SpO2 ~85 %.  Returns
    new arrays, clipped to the 18-bit ADC."""
    from scipy.signal import butter, sosfiltfilt

    red = np.asarray(red, dtype=np.float64).copy()
    ir = np.asarray(ir, dtype=np.float64).copy()
    lo, hi = np.percentile(ir, [5, 95])
    frac = strength * float(hi - lo) / float(np.median(ir))
    sos = butter(2, [0.5, 4.0], btype="band", fs=fs_hz, output="sos")
    for a, b in episodes:
        i, j = round(a * fs_hz), min(len(ir), round(b * fs_hz))
        if j - i < 8:
            continue
        n = sosfiltfilt(sos, rng.standard_normal(j - i + 2 * fs_hz))[fs_hz:fs_hz + j - i]
        n *= frac / (np.std(n) or 1.0)
        ir[i:j] *= 1.0 + n
        red[i:j] *= 1.0 + n
    top = (1 << 18) - 1
    return (np.clip(np.rint(red), 0, top).astype(np.int64),
            np.clip(np.rint(ir), 0, top).astype(np.int64))

"""Real ECG noise for the simulator: MIT-BIH Noise Stress Test Database excerpts,
mains hum, mixed at a chosen signal-to-noise ratio.

Noise sources
-------------
``tests/data/nstdb/{bw,ma,em}.npy`` hold 40 s of each nstdb noise type (both
channels, 360 Hz, int16 counts at 200 counts/mV; see the README there for the
source and the ODC-By licence).  :class:`NstdbNoise` plays one channel of one
type endlessly at the device rate (resampled with ``resample_poly``): random
segments of 8-20 s from random offsets, joined by 1 s power-complementary
(cos/sin) cross-fades, so the loop has no seam and the RMS stays that of the
excerpt.  The excerpt's mean is removed.

SNR definition (after the noise stress test's ``nst``)
-----------------------------------------------------
``SNR_dB = 10 log10(S / N)`` with ``S = A_pp**2 / 8``, the power of a sine whose
peak-to-peak amplitude is the QRS peak-to-peak amplitude ``A_pp`` of the
patient's dominant (normal) beat -- the simulator knows it exactly from its
template -- and ``N`` the mean power of the mixed noise (the sum of the chosen
types, each with its share ``weight / sum(weights)`` of ``N``; each excerpt's
power is its mean square over the whole 40 s).  ``nst`` also takes ``S`` from
the QRS peak-to-peak amplitude; it measures ``N`` on 1 s chunks with outliers
trimmed, which gives somewhat lower ``N`` for bursty noise such as ``em``, so
at the same nominal SNR this mix is, if anything, harsher.  Mains hum is not
part of ``N``: it is given by its own amplitude in microvolts.

Mains hum: ``mains_uv`` peak amplitude at 50 or 60 Hz plus the 3rd and 5th
harmonics at 30 % and 10 %, its phase counted from absolute sample numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.signal import resample_poly

__all__ = ["NOISE_KINDS", "NSTDB_DIR", "EcgNoise", "NstdbNoise", "load_nstdb", "mains_hum",
           "snr_noise_power_mv2"]

FloatArray = npt.NDArray[np.float64]

NSTDB_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "nstdb"
NSTDB_FS_HZ = 360
NSTDB_COUNTS_PER_MV = 200.0
NOISE_KINDS = ("bw", "ma", "em")
_SEGMENT_S = (8.0, 20.0)
_CROSSFADE_S = 1.0
_HUM_HARMONICS = ((1, 1.0), (3, 0.3), (5, 0.1))


@cache
def load_nstdb(kind: str, fs_hz: int) -> FloatArray:
    """The ``kind`` excerpt in mV, shape (samples, 2), resampled to ``fs_hz``, each
    channel's mean removed.  Read-only (shared between patients)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    raw = np.load(NSTDB_DIR / f"{kind}.npy").astype(np.float64) / NSTDB_COUNTS_PER_MV
    fs = int(fs_hz)
    if fs != NSTDB_FS_HZ:
        g = math.gcd(fs, NSTDB_FS_HZ)
        raw = resample_poly(raw, fs // g, NSTDB_FS_HZ // g, axis=0)
    raw = raw - raw.mean(axis=0)
    raw.setflags(write=False)
    return raw


def snr_noise_power_mv2(qrs_pp_mv: float, snr_db: float) -> float:
    """Noise power N (mV^2) that gives ``snr_db`` for a QRS of ``qrs_pp_mv`` p-p."""
    return (qrs_pp_mv**2 / 8.0) / 10.0 ** (snr_db / 10.0)


class NstdbNoise:
    """One channel of one nstdb noise type, endless, in mV (see the module doc)."""

    def __init__(self, kind: str, fs_hz: int, rng: np.random.Generator,
                 channel: int = 0) -> None:
        if channel not in (0, 1):
            raise ValueError(f"channel must be 0 or 1, got {channel!r}")
        self._x = np.ascontiguousarray(load_nstdb(kind, fs_hz)[:, channel])
        self.kind = kind
        self.power_mv2 = float(np.mean(self._x**2))
        self._rng = rng
        self._fs = int(fs_hz)
        self._fade = max(1, round(_CROSSFADE_S * fs_hz))
        phase = 0.5 * math.pi * (np.arange(self._fade) + 0.5) / self._fade
        self._fade_out, self._fade_in = np.cos(phase), np.sin(phase)
        self._pending = self._segment()  # its last `fade` samples are still open

    def _segment(self) -> FloatArray:
        n = self._x.size
        lo, hi = (round(s * self._fs) for s in _SEGMENT_S)
        length = int(self._rng.integers(lo, min(hi, n) + 1))
        start = int(self._rng.integers(0, n - length + 1))
        return self._x[start : start + length]

    def next_chunk(self, n: int) -> FloatArray:
        while self._pending.size - self._fade < n:
            new = self._segment()
            f = self._fade
            joined = self._fade_out * self._pending[-f:] + self._fade_in * new[:f]
            self._pending = np.concatenate((self._pending[:-f], joined, new[f:]))
        out = self._pending[:n].copy()
        self._pending = self._pending[n:]
        return out


def mains_hum(start_sample: int, n: int, fs_hz: int, mains_hz: float, amplitude_uv: float,
              phase_rad: float = 0.0) -> FloatArray:
    """Mains interference (mV) for samples ``start_sample .. start_sample + n - 1``."""
    if not amplitude_uv:
        return np.zeros(n)
    k = np.arange(start_sample, start_sample + n, dtype=np.float64)
    out = np.zeros(n)
    for harmonic, rel in _HUM_HARMONICS:
        w = 2.0 * math.pi * mains_hz * harmonic / fs_hz
        # Reduce the phase argument modulo one period of the fundamental for precision.
        out += rel * np.sin(np.remainder(w * k, 2.0 * math.pi) + harmonic * phase_rad)
    return out * (amplitude_uv * 1e-3)


class EcgNoise:
    """Mixed nstdb noise at ``snr_db`` (None: no nstdb noise) plus mains hum, in mV.

    ``weights`` maps noise kinds to their share of the noise power.
    """

    def __init__(self, fs_hz: int, rng: np.random.Generator, *, qrs_pp_mv: float,
                 snr_db: float | None, weights: Mapping[str, float] | None = None,
                 mains_hz: float = 50.0, mains_uv: float = 0.0, channel: int = 0) -> None:
        self._fs = int(fs_hz)
        self._pos = 0
        self.mains_hz = float(mains_hz)
        self.mains_uv = float(mains_uv)
        self._hum_phase = float(rng.uniform(0.0, 2.0 * math.pi))
        self.snr_db = snr_db
        self._sources: list[tuple[NstdbNoise, float]] = []
        if snr_db is not None:
            w = dict(weights or dict.fromkeys(NOISE_KINDS, 1.0))
            total = sum(w.values())
            if total <= 0 or any(v < 0 for v in w.values()):
                raise ValueError(f"noise weights must be >= 0 with a positive sum, got {w}")
            n_power = snr_noise_power_mv2(qrs_pp_mv, float(snr_db))
            seeds = rng.integers(0, 2**63 - 1, size=len(NOISE_KINDS))
            for kind, seed in zip(NOISE_KINDS, seeds):
                share = w.get(kind, 0.0) / total
                if share > 0:
                    src = NstdbNoise(kind, self._fs, np.random.default_rng(int(seed)), channel)
                    self._sources.append((src, math.sqrt(share * n_power / src.power_mv2)))
        self.noise_power_mv2 = sum(g * g * s.power_mv2 for s, g in self._sources)

    def next_chunk(self, n: int) -> FloatArray:
        out = mains_hum(self._pos, n, self._fs, self.mains_hz, self.mains_uv, self._hum_phase)
        for src, gain in self._sources:
            out += gain * src.next_chunk(n)
        self._pos += n
        return out

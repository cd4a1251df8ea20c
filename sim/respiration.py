"""Breathing of the virtual patient: breath onsets and a volume-like waveform.

Breaths follow the scenario's respiratory rate: each breath lasts
``60 / rate(t)`` seconds times a random factor (SD 8 %, breath-to-breath
variability), and its depth varies by 10 % SD.  Within a breath of duration
``D`` the waveform rises as a half cosine over the inspiration (40 % of ``D``)
and falls back over the expiration: values in [-0.5, 0.5] times the depth.
The ECG (baseline wander, QRS amplitude), the PPG (baseline and pulse
amplitude) and the impedance channel all read this one waveform.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

__all__ = ["Respiration"]

FloatArray = npt.NDArray[np.float64]

_INSPIRATION_FRACTION = 0.4
_DURATION_SD = 0.08
_DEPTH_SD = 0.10
_KEEP_S = 30.0


class Respiration:
    def __init__(self, rate_bpm: Callable[[float], float], rng: np.random.Generator) -> None:
        self._rate = rate_bpm
        self._rng = rng
        self._onsets: list[float] = [-float(rng.uniform(0.0, 60.0 / max(2.0, rate_bpm(0.0))))]
        self._depths: list[float] = [1.0]
        self._reported = 0  # onsets already handed out by breaths_until()
        self._extend_to(1.0)

    def _extend_to(self, t: float) -> None:
        while self._onsets[-1] <= t:
            last = self._onsets[-1]
            d = 60.0 / max(2.0, self._rate(max(last, 0.0)))
            d *= min(1.4, max(0.6, 1.0 + _DURATION_SD * float(self._rng.standard_normal())))
            self._onsets.append(last + d)
            self._depths.append(max(0.5, 1.0 + _DEPTH_SD * float(self._rng.standard_normal())))

    def value(self, t_s: npt.ArrayLike) -> FloatArray:
        """The waveform at times ``t_s`` (s); times must not go back more than 30 s
        behind the latest query."""
        t = np.atleast_1d(np.asarray(t_s, dtype=np.float64))
        if t.size == 0:
            return t
        self._extend_to(float(t.max()) + 1.0)
        on = np.asarray(self._onsets)
        k = np.clip(np.searchsorted(on, t, side="right") - 1, 0, on.size - 2)
        dur = on[k + 1] - on[k]
        u = np.clip((t - on[k]) / dur, 0.0, 1.0)
        fi = _INSPIRATION_FRACTION
        shape = np.where(u < fi, 0.5 * (1.0 - np.cos(math.pi * u / fi)),
                         0.5 * (1.0 + np.cos(math.pi * (u - fi) / (1.0 - fi))))
        out = (shape - 0.5) * np.asarray(self._depths)[k]
        self._prune(float(t.min()) - _KEEP_S)
        return out

    def _prune(self, t_keep: float) -> None:
        drop = 0
        while drop + 2 < len(self._onsets) and self._onsets[drop + 1] < t_keep:
            drop += 1
        if drop:
            del self._onsets[:drop], self._depths[:drop]
            self._reported = max(0, self._reported - drop)

    def breaths_until(self, t_s: float) -> list[float]:
        """Onsets (s, >= 0) before ``t_s`` not handed out yet."""
        self._extend_to(t_s)
        out = []
        while self._reported < len(self._onsets) and self._onsets[self._reported] < t_s:
            if self._onsets[self._reported] >= 0.0:
                out.append(self._onsets[self._reported])
            self._reported += 1
        return out

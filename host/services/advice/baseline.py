"""Personal baselines: each patient's own normal for heart rate, respiratory rate,
SpO2 and temperature, so a drift from this patient's normal raises advice before
the population thresholds do.

Method.  Per vital, one value per minute (the median of that minute's reliable
readings) goes into a rolling window of :data:`WINDOW_S` (4 h).  The baseline is
the window's median; its spread the median absolute deviation scaled to a
standard deviation (1.4826 * MAD, the normal-consistent robust estimator:
Rousseeuw & Croux, J Am Stat Assoc 1993;88:1273-83).  The band is median +- max(
:data:`K_MAD` * scaled MAD, :data:`MIN_HALF_WIDTH`), the floor keeping a very steady
patient's band clinically meaningful.  A baseline exists after :data:`WARMUP_MIN`
minutes of data.  While a drift is flagged the window is frozen (a deterioration
must not become the new normal); it resumes when the vital returns into the band.

A clinician's override (``profile["targets"][vital]``, set by ``medge patient
override``, audited) replaces the band: a known stable state (chronic AF at 100-120,
a COPD patient's SpO2 at 88-92 %) then does not alarm again and again.

Known limits: a patient admitted already deteriorating has that as a baseline; the
population scores (NEWS2) still catch it.  Circadian variation is inside the 4 h
window's spread, not modelled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "K_MAD",
    "MIN_HALF_WIDTH",
    "VITALS",
    "WARMUP_MIN",
    "WINDOW_S",
    "Band",
    "Baseline",
    "median",
]

VITALS = ("heart_rate", "resp_rate", "spo2", "temperature")
WINDOW_S = 4 * 3600
WARMUP_MIN = 60
K_MAD = 4.0
#: The narrowest half-band per vital (units: /min, /min, %, degrees C).
MIN_HALF_WIDTH = {"heart_rate": 20.0, "resp_rate": 5.0, "spo2": 3.0, "temperature": 0.8}
MAD_TO_SD = 1.4826
UNITS = {"heart_rate": "/min", "resp_rate": "/min", "spo2": "%", "temperature": "C"}


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


@dataclass(frozen=True)
class Band:
    vital: str
    low: float
    high: float
    centre: float | None  # the baseline median (None for an override)
    spread: float | None  # 1.4826 * MAD
    minutes: int  # minutes of data behind it
    override: bool

    def as_dict(self) -> dict[str, Any]:
        return {"vital": self.vital, "low": round(self.low, 2), "high": round(self.high, 2),
                "median": None if self.centre is None else round(self.centre, 2),
                "robust_sd": None if self.spread is None else round(self.spread, 3),
                "minutes": self.minutes, "source": "override" if self.override else "baseline"}


class Baseline:
    """One patient's rolling baselines; feed :meth:`add` with reliable readings."""

    def __init__(self) -> None:
        self._minutes: dict[str, deque[tuple[int, float]]] = {
            v: deque(maxlen=WINDOW_S // 60) for v in VITALS}
        self._current: dict[str, tuple[int, list[float]]] = {}
        self.frozen: set[str] = set()
        self._cache: dict[str, tuple[Any, Band]] = {}

    def fork(self) -> Baseline:
        """An independent copy (cheaper than copy.deepcopy: the items are immutable)."""
        new = Baseline.__new__(Baseline)
        new._minutes = {v: deque(q, maxlen=q.maxlen) for v, q in self._minutes.items()}
        new._current = {v: (m, list(vals)) for v, (m, vals) in self._current.items()}
        new.frozen = set(self.frozen)
        new._cache = dict(self._cache)
        return new

    def add(self, vital: str, ts_ms: int, value: float) -> None:
        minute = ts_ms // 60_000
        cur = self._current.get(vital)
        if cur is not None and cur[0] != minute:
            self._close(vital, cur)
            cur = None
        if cur is None:
            cur = (minute, [])
            self._current[vital] = cur
        cur[1].append(value)

    def _close(self, vital: str, cur: tuple[int, list[float]]) -> None:
        if vital in self.frozen or not cur[1]:
            return
        window = self._minutes[vital]
        window.append((cur[0], median(cur[1])))
        while window and window[0][0] <= cur[0] - WINDOW_S // 60:
            window.popleft()

    def band(self, vital: str, targets: Mapping[str, Any] | None = None) -> Band | None:
        """The vital's band: the clinician's override if set, else the baseline's
        (None until :data:`WARMUP_MIN` minutes of data)."""
        window = self._minutes[vital]
        if targets and targets.get(vital):
            lo, hi = targets[vital]
            return Band(vital, float(lo), float(hi), None, None, len(window), True)
        if len(window) < WARMUP_MIN:
            return None
        key = (len(window), window[-1][0])
        cached = self._cache.get(vital)
        if cached is not None and cached[0] == key:
            return cached[1]
        values = [v for _, v in window]
        centre = median(values)
        spread = MAD_TO_SD * median([abs(v - centre) for v in values])
        half = max(K_MAD * spread, MIN_HALF_WIDTH[vital])
        band = Band(vital, centre - half, centre + half, centre, spread, len(window), False)
        self._cache[vital] = (key, band)
        return band

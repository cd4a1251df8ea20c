"""The NEWS2 trajectory over recent hours and an early-warning flag when it rises.

Method.  The engine records each evaluation's NEWS2 (complete or lower bound).
Over the last :data:`WINDOW_S` (2 h) the scores are reduced to one value per
:data:`BIN_S` (10 min: the bin's median, which ignores a single odd evaluation),
and an ordinary least-squares line is fitted through the bins.  The flag is
raised when the slope is at least :data:`SLOPE_PER_H` (1 point per hour), there
are at least :data:`MIN_BINS` bins, and the newest bin is at least
:data:`MIN_RISE` points above the lowest one: a sustained climb, not one noisy
reading.  This follows the observation that a rising NEWS precedes deterioration
by hours (Kellett & Kim, Resuscitation 2014;85:1206; Pimentel et al., Resuscitation
2019;134:147-56), with thresholds chosen here, checked against the simulator's
sepsis ground truth (tests/test_advice.py, make eval-alerts).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from host.services.advice.baseline import median

__all__ = ["BIN_S", "MIN_BINS", "MIN_RISE", "SLOPE_PER_H", "WINDOW_S", "Trajectory", "Trend"]

WINDOW_S = 2 * 3600
BIN_S = 600
MIN_BINS = 6
SLOPE_PER_H = 1.0
MIN_RISE = 2
SAMPLE_S = 30


@dataclass(frozen=True)
class Trend:
    points: list[tuple[int, float]]  # (bin start ms, median score)
    slope_per_h: float | None
    rising: bool

    def as_dict(self) -> dict[str, Any]:
        return {"method": "least-squares slope of 10-min median NEWS2 over 2 h",
                "points": [{"ts_ms": t, "score": s} for t, s in self.points],
                "slope_per_h": None if self.slope_per_h is None else round(self.slope_per_h, 2),
                "rising": self.rising, "threshold_per_h": SLOPE_PER_H}


class Trajectory:
    def __init__(self) -> None:
        self._scores: deque[tuple[int, int]] = deque()
        self._trend: Trend | None = None

    def fork(self) -> Trajectory:
        """An independent copy."""
        new = Trajectory()
        new._scores, new._trend = deque(self._scores), self._trend
        return new

    def add(self, ts_ms: int, score: int) -> None:
        """Record a score (at most one per :data:`SAMPLE_S`: the bins' medians need
        no more, and an engine evaluating every second stays cheap)."""
        if self._scores and ts_ms - self._scores[-1][0] < SAMPLE_S * 1000:
            return
        self._scores.append((ts_ms, score))
        self._trend = None
        while self._scores and self._scores[0][0] < ts_ms - WINDOW_S * 1000:
            self._scores.popleft()

    def trend(self) -> Trend:
        if self._trend is None:
            self._trend = self._fit()
        return self._trend

    def _fit(self) -> Trend:
        bins: dict[int, list[int]] = {}
        for t, s in self._scores:
            bins.setdefault(t // (BIN_S * 1000), []).append(s)
        points = [(b * BIN_S * 1000, float(median(v))) for b, v in sorted(bins.items())]
        if len(points) < 2:
            return Trend(points, None, False)
        xs = [t / 3.6e6 for t, _ in points]
        ys = [s for _, s in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
        rising = (len(points) >= MIN_BINS and slope >= SLOPE_PER_H
                  and ys[-1] - min(ys) >= MIN_RISE)
        return Trend(points, slope, rising)

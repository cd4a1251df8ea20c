"""Alerts that come once per episode: hysteresis, de-duplication, escalation,
reminders until acknowledged, resolution on recovery.

Each evaluation hands :meth:`AlertTracker.update` the conditions that hold now
(``kind`` -> severity and details).  Per kind, one episode at a time:

- **open** when the condition has held for ``onset_evals`` consecutive
  evaluations (and ``Policy.onset_s`` for its severity; at once for emergencies and
  for :data:`IMMEDIATE_KINDS`);
- **escalate** when its severity rises above the episode's highest so far (the
  episode stays the same alert, and needs acknowledging again; a fall in
  severity is only recorded);
- **remind** every ``remind_s`` while open and not acknowledged (high and
  emergency more often than the rest);
- **resolve** once the condition has been absent for ``clear_s`` (hysteresis: a
  vital hovering at a threshold does not open and close alert after alert).

Severity order: :data:`SEVERITIES`.  The tracker is plain data plus a clock
passed in (simulated time in tests and ``make eval-alerts``); persisting and
publishing its events is :mod:`host.services.advice.live`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

__all__ = ["SEVERITIES", "AlertEvent", "AlertTracker", "Condition", "Episode", "EventKind",
           "Policy"]

SEVERITIES = ("info", "low", "low-medium", "medium", "high", "emergency")
#: Conditions from the device's rhythm events, already debounced on the device
#: (an AF or VT event is itself the confirmed episode): they open at once.
IMMEDIATE_KINDS = frozenset({"af", "vt", "pause", "brady", "pvc_burden"})


def rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Condition:
    """Something alert-worthy that holds now."""

    kind: str  # e.g. "news2", "af", "vt", "baseline:heart_rate"
    severity: str
    text: str
    rationale: str
    numbers: dict[str, Any]
    reference: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EventKind(str, Enum):
    OPEN = "open"
    ESCALATE = "escalate"
    REMIND = "remind"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class AlertEvent:
    event: EventKind
    kind: str
    severity: str
    ts_ms: int
    episode: int  # the tracker's episode number (one alert)
    condition: Condition | None

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event.value, "kind": self.kind, "severity": self.severity,
                "ts_ms": self.ts_ms, "episode": self.episode,
                "condition": None if self.condition is None else self.condition.as_dict()}


def _onset_s() -> dict[str, float]:
    return {"low-medium": 120.0}


@dataclass(frozen=True)
class Policy:
    """``onset_s``: how long a condition of a severity must hold before it opens
    (low-medium, a single parameter at 3, for 2 min: on continuous data one
    parameter's brief excursion is more often noise than a state; NEWS2 was made
    for intermittent observations).  Everything else opens after ``onset_evals``."""

    onset_evals: int = 2
    onset_s: dict[str, float] = field(default_factory=_onset_s)
    clear_s: float = 15 * 60
    remind_s: float = 30 * 60
    remind_urgent_s: float = 10 * 60


@dataclass
class Episode:
    number: int
    kind: str
    opened_ms: int
    severity: str  # the highest so far
    current: str
    last_seen_ms: int
    last_notified_ms: int
    acked_ms: int | None = None
    acked_by: str | None = None
    condition: Condition | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class AlertTracker:
    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.open: dict[str, Episode] = {}
        self._pending: dict[str, tuple[int, int]] = {}  # kind -> (first seen, evaluations)
        self._next = 1

    def fork(self) -> AlertTracker:
        """An independent copy (the open episodes copied, with their histories)."""
        new = AlertTracker(self.policy)
        new.open = {k: replace(ep, history=list(ep.history)) for k, ep in self.open.items()}
        new._pending, new._next = dict(self._pending), self._next
        return new

    def update(self, now_ms: int, conditions: list[Condition]) -> list[AlertEvent]:
        p = self.policy
        events: list[AlertEvent] = []
        present = {c.kind: c for c in conditions}
        for kind, c in present.items():
            ep = self.open.get(kind)
            if ep is None:
                first, n = self._pending.get(kind, (now_ms, 0))
                n += 1
                self._pending[kind] = (first, n)
                immediate = c.severity == "emergency" or c.kind in IMMEDIATE_KINDS
                if immediate or (n >= p.onset_evals and now_ms - first
                                 >= p.onset_s.get(c.severity, 0.0) * 1000):
                    ep = Episode(self._next, kind, now_ms, c.severity, c.severity, now_ms,
                                 now_ms, condition=c)
                    self._next += 1
                    self.open[kind] = ep
                    self._pending.pop(kind, None)
                    events.append(AlertEvent(EventKind.OPEN, kind, c.severity, now_ms,
                                             ep.number, c))
                continue
            ep.last_seen_ms, ep.current, ep.condition = now_ms, c.severity, c
            if rank(c.severity) > rank(ep.severity):
                ep.severity = c.severity
                ep.last_notified_ms = now_ms
                ep.acked_ms = ep.acked_by = None  # worse than what was acknowledged
                ep.history.append({"ts_ms": now_ms, "event": "escalate",
                                   "severity": c.severity})
                events.append(AlertEvent(EventKind.ESCALATE, kind, c.severity, now_ms,
                                         ep.number, c))
        for kind in list(self._pending):
            if kind not in present:
                del self._pending[kind]
        for kind, ep in list(self.open.items()):
            if kind not in present and now_ms - ep.last_seen_ms >= p.clear_s * 1000:
                del self.open[kind]
                events.append(AlertEvent(EventKind.RESOLVE, kind, ep.severity, now_ms,
                                         ep.number, None))
                continue
            if ep.acked_ms is None and kind in present:
                every = (p.remind_urgent_s if rank(ep.severity) >= rank("high")
                         else p.remind_s)
                if now_ms - ep.last_notified_ms >= every * 1000:
                    ep.last_notified_ms = now_ms
                    events.append(AlertEvent(EventKind.REMIND, kind, ep.current, now_ms,
                                             ep.number, ep.condition))
        return events

    def ack(self, kind: str, now_ms: int, by: str) -> bool:
        ep = self.open.get(kind)
        if ep is None:
            return False
        ep.acked_ms, ep.acked_by = now_ms, by
        return True

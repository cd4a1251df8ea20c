"""What ``medge monitor`` shows, read from the store: one :class:`Bed` per device and
a :class:`Snapshot` of the ward with its banner (no drawing here: host.services.monitor
draws it as plain lines or JSON, host.services.monitor_tui as a scrolling table).

Per device, from its newest ``vitals`` message (docs/protocol.md, v1 vitals schema):
HR (``hr_bpm``), SpO2, pulse, respiratory rate, temperature (``temp_centi_c``) and the
last blood pressure (``nibp_*`` with ``nibp_age_s``; else the device's newest row of
``bp_readings``).  A null vital is *withheld*: its reason comes from the message's
``withheld`` object (the ECG heart rate's from ``signal``/``quality``).  Values are
*current* only while the device is ``online`` (Store.devices: ``stale`` after
``$MEDGE_STALE_AFTER_S``, ``offline`` after its shutdown or will) and its newest vitals
are younger than the same limit; otherwise each value is shown as stale with its age,
never as if current.

Per patient (the device's current assignment): the NEWS2 score, its risk and whether it
is only a lower bound (host.services.advice.live.assess: the device vitals plus manual
observations; read-only, recomputed at most every ``news2_period_s`` because it replays
the patient's recent hours), and the open alerts (``alerts`` table, written by ``medge
advice``'s rounds, with the engine's own open episodes added).

The banner (:func:`banner`) says when data has stopped arriving: the newest
``received_ms`` in the store older than ``quiet_s`` while devices are known, an ingest
worker's health file (host.services.ingest.stats_dir) not refreshed, not connected to
the broker, or its storage failing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from host.services.store import DeviceRow, Store, StoreError, StoreProblem, stale_after_default

__all__ = ["QUIET_S", "VITALS", "Bed", "Reader", "Snapshot", "banner"]

#: the store not advancing for this long while devices are known raises the banner
QUIET_S = 15.0
#: an ingest worker writes its health every second; older than this, it is gone
HEALTH_STALE_S = 10.0

#: (vitals field, column label, divisor, decimals), in the order a nurse reads them
VITALS: tuple[tuple[str, str, int, int], ...] = (
    ("hr_bpm", "HR", 1, 0),
    ("spo2_pct", "SpO2", 1, 0),
    ("pulse_bpm", "pulse", 1, 0),
    ("resp_rate_per_min", "RR", 1, 0),
    ("temp_centi_c", "temp", 100, 1),
)


@dataclasses.dataclass
class Bed:
    """One device row of the monitor."""

    device: DeviceRow
    patient_id: str | None
    vitals_ts_ms: int | None
    #: field -> integer value or None (withheld or absent)
    values: dict[str, int | None]
    #: field -> reason for a null value ("absent" when the message does not carry it)
    withheld: dict[str, str]
    #: (systolic, diastolic, mean, measured_ms) or None
    nibp: tuple[int | None, int | None, int | None, int] | None
    current: bool
    news2: dict[str, Any] | None = None
    #: a patient whose NEWS2 has not been assessed yet (a large ward's first reads)
    pending: bool = False
    alerts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def vitals_doc(self, now: int) -> dict[str, Any]:
        """The monitor's additions to a device's ``--json`` document."""
        doc: dict[str, Any] = {
            "vitals": {f: self.values.get(f) for f, *_ in VITALS},
            "withheld": dict(self.withheld),
            "current": self.current,
            "vitals_ts_ms": self.vitals_ts_ms,
            "vitals_age_s": None if self.vitals_ts_ms is None else
            round(max(0, now - self.vitals_ts_ms) / 1000, 1),
            "nibp": None,
            "news2": self.news2,
            "news2_pending": self.pending,
            "alerts": [{k: a.get(k) for k in ("alert_uid", "kind", "severity", "state",
                                              "ts_ms")} for a in self.alerts],
        }
        if self.nibp is not None:
            s, d, m, at = self.nibp
            doc["nibp"] = {"systolic_mmhg": s, "diastolic_mmhg": d, "map_mmhg": m,
                           "measured_ms": at,
                           "age_s": round(max(0, now - at) / 1000)}
        return doc


@dataclasses.dataclass
class Snapshot:
    now_ms: int
    beds: list[Bed]
    banner: str | None
    newest_received_ms: int | None


def _hr_reason(doc: dict[str, Any]) -> str:
    if doc.get("signal") not in (None, "good"):
        return str(doc["signal"])
    if doc.get("quality") not in (None, "good"):
        return str(doc["quality"])
    return "withheld"


def parse_vitals(doc: dict[str, Any]) -> tuple[dict[str, int | None], dict[str, str]]:
    """(values, withheld reasons) of one vitals message."""
    reasons_in = doc.get("withheld") if isinstance(doc.get("withheld"), dict) else {}
    values: dict[str, int | None] = {}
    withheld: dict[str, str] = {}
    for field, *_ in VITALS:
        v = doc.get(field)
        if isinstance(v, bool) or not isinstance(v, int):
            values[field] = None
            if field not in doc:
                withheld[field] = "absent"
            elif field == "hr_bpm":
                withheld[field] = _hr_reason(doc)
            else:
                withheld[field] = str(reasons_in.get(field, "withheld"))
        else:
            values[field] = v
    return values, withheld


def _nibp_from_vitals(doc: dict[str, Any]) -> tuple[int | None, int | None, int | None,
                                                    int] | None:
    s = doc.get("nibp_systolic_mmhg")
    if not isinstance(s, int) or isinstance(s, bool):
        return None
    age = doc.get("nibp_age_s")
    age_ms = int(age * 1000) if isinstance(age, (int, float)) else 0
    return (s, doc.get("nibp_diastolic_mmhg"), doc.get("nibp_map_mmhg"),
            int(doc.get("ts_ms", 0)) - age_ms)


def banner(newest_received_ms: int | None, devices: int, workers: list[dict[str, Any]],
           now: int, quiet_s: float = QUIET_S) -> str | None:
    """Why data may have stopped arriving, or None."""
    problems = []
    if devices and newest_received_ms is not None and now - newest_received_ms > quiet_s * 1000:
        problems.append(f"no data stored for {(now - newest_received_ms) / 1000:.0f} s "
                        "(ingest or broker down?)")
    for w in workers:
        name = w.get("client_id", "ingest")
        updated = w.get("updated_ms")
        if isinstance(updated, int) and now - updated > HEALTH_STALE_S * 1000:
            problems.append(f"ingest {name} silent for {(now - updated) / 1000:.0f} s")
            continue
        if w.get("connected") is False:
            problems.append(f"ingest {name} not connected to the broker")
        if w.get("storage_failing_since_ms") is not None:
            problems.append(f"ingest {name}: {w.get('storage')}")
    return "; ".join(problems) or None


def read_workers(db_path: str | Path) -> list[dict[str, Any]]:
    """The ingest workers' health files of the store (as ``medge ingest --stats``)."""
    from host.services.ingest import worker_health

    return worker_health(db_path)


class Reader:
    """Reads :class:`Snapshot` s of one store; keeps each patient's NEWS2 for
    ``news2_period_s`` (``None``: no NEWS2 or alerts at all), assessing per read only
    what fits in ``news2_budget_s`` (a patient never assessed is always assessed)."""

    def __init__(self, db_path: str | Path, *, news2_period_s: float | None = 10.0,
                 news2_budget_s: float = 0.5,
                 quiet_s: float = QUIET_S, stale_after_s: float | None = None) -> None:
        self.db_path = db_path
        self.news2_period_s = news2_period_s
        self.news2_budget_s = news2_budget_s
        self.quiet_s = quiet_s
        self.stale_after_s = stale_after_s
        self._news2: dict[str, tuple[float, dict[str, Any] | None, set[str]]] = {}
        self._live: Any = None  # host.services.advice.live.LiveMonitors, made on first use

    def read(self, now: int | None = None) -> Snapshot:
        from host.services.store import now_ms

        now = now_ms() if now is None else now
        try:
            with Store(self.db_path, readonly=True) as store:
                beds, newest = self._read(store, now)
        except FileNotFoundError:
            return Snapshot(now, [], None, None)
        except StoreError as exc:
            if exc.problem is StoreProblem.EMPTY:  # being created right now
                return Snapshot(now, [], None, None)
            raise
        return Snapshot(now, beds, banner(newest, len(beds), read_workers(self.db_path), now,
                                          self.quiet_s), newest)

    def _read(self, store: Store, now: int) -> tuple[list[Bed], int | None]:
        limit_s = self.stale_after_s if self.stale_after_s is not None else \
            stale_after_default()
        rows = store.devices(at_ms=now, stale_after_s=limit_s)
        db = store.db
        assigned = self._assignments(store, now)
        beds = []
        for row in rows:
            got = db.execute("SELECT ts_ms, payload FROM messages WHERE device_id = ? AND "
                             "type = 'vitals' ORDER BY ts_ms DESC LIMIT 1",
                             (row.device_id,)).fetchone()
            values: dict[str, int | None] = {f: None for f, *_ in VITALS}
            withheld: dict[str, str] = {}
            ts = nibp = None
            if got is not None:
                ts = int(got[0])
                try:
                    doc = json.loads(got[1])
                except ValueError:
                    doc = {}
                values, withheld = parse_vitals(doc)
                nibp = _nibp_from_vitals(doc)
            if nibp is None:
                nibp = self._bp_reading(store, row.device_id)
            current = (row.state == "online" and ts is not None
                       and now - ts <= limit_s * 1000)
            beds.append(Bed(row, assigned.get(row.device_id, row.patient_id), ts, values,
                            withheld, nibp, current))
        if self.news2_period_s is not None:
            self._advice(store, beds, now)
        newest = db.execute("SELECT MAX(received_ms) FROM messages").fetchone()[0]
        return beds, None if newest is None else int(newest)

    @staticmethod
    def _assignments(store: Store, now: int) -> dict[str, str]:
        try:
            rows = store.db.execute("SELECT device_id, patient_id FROM assignments WHERE "
                                    "from_ms <= ? AND (until_ms IS NULL OR until_ms > ?)",
                                    (now, now)).fetchall()
        except Exception:  # an older schema without assignments
            return {}
        return {d: p for d, p in rows}

    @staticmethod
    def _bp_reading(store: Store, device_id: str
                    ) -> tuple[int | None, int | None, int | None, int] | None:
        try:
            got = store.db.execute(
                "SELECT systolic_mmhg, diastolic_mmhg, mean_mmhg, ts_ms FROM bp_readings "
                "WHERE device_id = ? AND systolic_mmhg IS NOT NULL ORDER BY ts_ms DESC "
                "LIMIT 1", (device_id,)).fetchone()
        except Exception:  # an older schema without bp_readings
            return None
        return None if got is None else (got[0], got[1], got[2], int(got[3]))

    def _advice(self, store: Store, beds: list[Bed], now: int) -> None:
        from host.services.advice import live
        from host.services.advice.records import list_alerts

        try:
            stored = list_alerts(store, open_only=True, limit=5000)
        except Exception:  # an older schema without alerts
            return
        by_patient: dict[str, list[dict[str, Any]]] = {}
        for a in stored:
            by_patient.setdefault(a["patient_id"], []).append(a)
        period = self.news2_period_s or 0.0
        # the oldest assessments first, within the read's time budget (a patient's first
        # assessment replays the recent hours: 0.4 s for 4 h of 1 Hz vitals; later ones
        # a few ms, host/bench_advice.py); the rest keep their last one (its time is in
        # the document) until a later read
        due = sorted({b.patient_id for b in beds if b.patient_id is not None},
                     key=lambda p: (self._news2[p][0] if p in self._news2 else -1.0, p))
        started = time.monotonic()
        for pid in due:
            cached = self._news2.get(pid)
            if cached is not None and time.monotonic() - cached[0] < period:
                continue
            try:
                if self._live is None:
                    self._live = live.LiveMonitors()
                # each patient's engine kept between reads: a read feeds what arrived
                # since (milliseconds) instead of replaying the recent hours
                a, _events, open_kinds = live.assess(store, pid, now, self._live)
                doc: dict[str, Any] | None = {
                    "score": a.news2["score"], "risk": a.news2["risk"],
                    "lower_bound": a.news2["lower_bound"],
                    "missing": list(a.news2.get("missing", [])), "assessed_ms": now}
            except Exception:  # an unknown patient (no profile): no score
                doc, open_kinds = None, set()
            self._news2[pid] = (time.monotonic(), doc, set(open_kinds))
            if time.monotonic() - started >= self.news2_budget_s:
                break  # at least one per read
        for bed in beds:
            pid = bed.patient_id
            if pid is None:
                continue
            cached = self._news2.get(pid, (0.0, None, set()))
            bed.news2 = cached[1]
            bed.pending = pid not in self._news2
            alerts = list(by_patient.get(pid, []))
            kinds = {a["kind"] for a in alerts}
            for kind in sorted(cached[2] - kinds):  # open in the engine, not yet recorded
                alerts.append({"alert_uid": None, "kind": kind, "severity": None,
                               "state": "open", "ts_ms": None})
            bed.alerts = alerts

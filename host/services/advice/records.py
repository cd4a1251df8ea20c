"""The stored alerts: listing and acknowledging (``medge alerts``).

Table ``alerts`` (schema 4): alert_uid, device_id, patient_id, ts_ms (opened),
kind, severity (the highest so far), source, detail JSON (the condition with its
rationale, numbers and reference, and the episode's history: open, escalate,
remind, resolve), acked_ms/acked_by, cleared_ms (resolved).  An acknowledgement is
recorded in the audit log (``alert.ack``).
"""

from __future__ import annotations

import json
from typing import Any

from host.services import audit
from host.services.store import transaction

__all__ = ["AlertError", "ack", "list_alerts"]

_COLUMNS = ("alert_uid", "device_id", "patient_id", "ts_ms", "kind", "severity", "source",
            "detail", "acked_ms", "acked_by", "cleared_ms")


class AlertError(ValueError):
    """Bad input (an unknown alert); the message names the field."""


def _doc(row: tuple[Any, ...]) -> dict[str, Any]:
    doc = dict(zip(_COLUMNS, row))
    try:
        doc["detail"] = json.loads(doc["detail"])
    except ValueError:
        doc["detail"] = {}
    doc["state"] = "resolved" if doc["cleared_ms"] is not None else (
        "acknowledged" if doc["acked_ms"] is not None else "open")
    return doc


def list_alerts(store: Any, *, patient_id: str | None = None, open_only: bool = False,
                limit: int = 1000) -> list[dict[str, Any]]:
    """Alerts, newest first."""
    where, params = [], []
    if patient_id is not None:
        where.append("patient_id = ?")
        params.append(patient_id)
    if open_only:
        where.append("cleared_ms IS NULL")
    sql = f"SELECT {', '.join(_COLUMNS)} FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY ts_ms DESC, id DESC LIMIT {int(limit)}"
    return [_doc(r) for r in store.db.execute(sql, params).fetchall()]


def ack(store: Any, alert_uid: str, *, by: str, ts_ms: int) -> dict[str, Any]:
    """Acknowledge an alert (reminders stop until it escalates); audited."""
    row = store.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM alerts WHERE alert_uid = ?",
                           (alert_uid,)).fetchone()
    if row is None:
        raise AlertError(f"alert: no alert {alert_uid!r} (medge alerts list)")
    before = _doc(row)
    if before["cleared_ms"] is not None:
        raise AlertError(f"alert: {alert_uid} is already resolved")
    with transaction(store) as db:
        db.execute("UPDATE alerts SET acked_ms = ?, acked_by = ? WHERE alert_uid = ?",
                   (ts_ms, by, alert_uid))
        audit.record(store, by, "alert.ack", before["patient_id"],
                     {"alert_uid": alert_uid, "acked_ms": before["acked_ms"]},
                     {"alert_uid": alert_uid, "acked_ms": ts_ms, "severity":
                      before["severity"]}, ts_ms=ts_ms)
    return dict(before, acked_ms=ts_ms, acked_by=by, state="acknowledged")

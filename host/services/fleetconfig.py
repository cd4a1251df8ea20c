"""Desired and reported device settings, and bringing them together (``medge fleet
config``, ``medge fleet sync``).

A device's *reported* settings are what it says it runs, in its newest birth
message (``report_period_ms``, ``patient_id``: docs/protocol.md).  Its *desired*
settings are what the fleet wants (table ``device_config``, schema 6), set by
:func:`set_desired` with the same checks the device makes (firmware/config.py),
audited (``config.set``: before and after).  :func:`drift` lists, per device, the
desired values it does not report; :func:`sync` sends each online device that
drifts one ``set_config`` command with exactly those values and records the answer.

Why desired state rather than commands alone: commands reach only a device that is
online (clean sessions); a desired setting waits in the store and the next sync
after the device's birth applies it (``medge fleet sync --watch``).  What the
device applied it keeps across restarts (its state file), so a sync is needed
once per change, not once per boot.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from host.services import audit
from host.services.store import now_ms, transaction

#: The settings a desired config may hold: what the device's set_config takes.
KEYS = ("patient_id", "report_period_ms")


class ConfigError(ValueError):
    """A desired setting the device would refuse."""


def check(key: str, value: Any, sample_rate_hz: int | None) -> Any:
    """``value`` if the device would take it for ``key`` (its own checks)."""
    from firmware.config import check_patient_id, check_report_period_ms

    if key not in KEYS:
        raise ConfigError(f"{key!r} cannot be set (settable: {', '.join(KEYS)})")
    try:
        if key == "report_period_ms":
            for fs in ([sample_rate_hz] if sample_rate_hz else [250, 360]):
                check_report_period_ms(value, fs)
        else:
            check_patient_id(value)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return value


def desired(store: Any, device_id: str) -> dict[str, Any]:
    row = store.db.execute("SELECT desired FROM device_config WHERE device_id = ?",
                           (device_id,)).fetchone()
    return {} if row is None else json.loads(row[0])


def reported(store: Any, device_id: str) -> dict[str, Any] | None:
    """The settings of the device's newest birth (None: no birth stored)."""
    rows = store.db.execute(
        "SELECT payload FROM messages WHERE device_id = ? AND type = 'status' "
        "ORDER BY ts_ms DESC, seq DESC LIMIT 50", (device_id,)).fetchall()
    for (payload,) in rows:
        doc = json.loads(payload)
        if doc.get("state") == "online":
            out = {k: doc[k] for k in KEYS if k in doc}
            out["sample_rate_hz"] = doc.get("sample_rate_hz")
            return out
    return None


def set_desired(store: Any, device_id: str, changes: dict[str, Any], unset: list[str],
                actor: str) -> dict[str, Any]:
    """Change ``device_id``'s desired settings (checked first, all or nothing; audited);
    the new desired settings."""
    rep = reported(store, device_id) or {}
    for key, value in changes.items():
        check(key, value, rep.get("sample_rate_hz"))
    for key in unset:
        if key not in KEYS:
            raise ConfigError(f"{key!r} cannot be set (settable: {', '.join(KEYS)})")
    with transaction(store) as db:
        before = desired(store, device_id)
        after = {k: v for k, v in before.items() if k not in unset}
        after.update(changes)
        db.execute("INSERT INTO device_config (device_id, desired, updated_ms, updated_by) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                   "desired = excluded.desired, updated_ms = excluded.updated_ms, "
                   "updated_by = excluded.updated_by",
                   (device_id, json.dumps(after, sort_keys=True), now_ms(), actor))
        audit.record(store, actor, "config.set", device_id, before or None, after)
    return after


@dataclass(frozen=True)
class Drift:
    device_id: str
    state: str | None  # online | offline | None (never seen)
    desired: dict[str, Any]
    reported: dict[str, Any] | None
    pending: dict[str, Any]  # desired values the device does not report

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def drift(store: Any, device_id: str | None = None) -> list[Drift]:
    """Every device with desired settings (or one), and what it still lacks."""
    sql = "SELECT device_id, desired FROM device_config"
    params: tuple[Any, ...] = ()
    if device_id is not None:
        sql += " WHERE device_id = ?"
        params = (device_id,)
    states = {r.device_id: r.state for r in store.devices()}
    out = []
    for dev, text in store.db.execute(sql + " ORDER BY device_id", params).fetchall():
        want = json.loads(text)
        rep = reported(store, dev)
        have = rep or {}
        pending = {k: v for k, v in want.items() if have.get(k) != v}
        out.append(Drift(dev, states.get(dev), want, rep, pending))
    return out


def sync(store: Any, client: Any, actor: str, *, wait_s: float) -> list[dict[str, Any]]:
    """One ``set_config`` per online device that drifts; what each answered."""
    from host.services.commands import DEFAULT_EXPIRES_S, send_and_wait

    results = []
    for d in drift(store):
        if not d.pending or d.state != "online":
            continue
        client.watch(d.device_id)
        msg, ack = send_and_wait(store, client, d.device_id, "set_config", d.pending, actor,
                                 wait_s=wait_s, expires_s=DEFAULT_EXPIRES_S)
        results.append({"device_id": d.device_id, "cmd_id": msg["cmd_id"], "set": d.pending,
                        "result": "unanswered" if ack is None else ack["result"],
                        "reason": None if ack is None else ack.get("reason")})
    return results

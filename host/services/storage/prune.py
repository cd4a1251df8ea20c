"""Retention: ``medge store prune`` deletes rows older than a per-table age.

Defaults (:data:`RULES`; days, by the column named; ``None``: never pruned):

=================  =====  ===============  ===========================================
table              days   by               why
=================  =====  ===============  ===========================================
messages           30     received_ms      raw non-vitals messages (status, acks ...);
                                           the de-duplication window is far shorter
vitals             3650   ts_ms            clinical record (10 years); also the vitals
                                           payloads in ``messages``, which the export reads
rejections         30     received_ms      for inspecting bad traffic; counters keep totals
conflicts          90     received_ms      kept aside for the operator to look at
bp_readings,       3650   ts_ms / ...      clinical record
beat_counts,
rhythm_events,
event_beats,
observations,
alerts, advice
commands,          365    created_ms /     operations history
command_acks              ts_ms
ota_jobs           365    updated_ms       per-device update history
audit_log          never                   append-only, hash-chained: never pruned
=================  =====  ===============  ===========================================

Registries and state (devices, accounts, patients, assignments, ota_campaigns,
counters, meta, schema_version) are not time series and are never pruned.  Ages
count back from now on the host clock; ``--older-than`` sets one table's age
(``vitals=4000``) or every prunable table's (a bare number, never below a table's
default: a bare number cannot cut the clinical record short by accident; name
the table to do that).  Each table is pruned in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DAY_MS = 86_400_000
CLINICAL_DAYS = 3650


@dataclass(frozen=True)
class Rule:
    table: str
    column: str
    days: int | None
    where: str = ""  # an extra condition (the rows of ``messages`` a rule covers)
    also: tuple[tuple[str, str, str], ...] = ()  # (table, column, where) pruned with it


RULES: tuple[Rule, ...] = (
    Rule("messages", "received_ms", 30, "type <> 'vitals'"),
    Rule("vitals", "ts_ms", CLINICAL_DAYS, also=(("messages", "ts_ms", "type = 'vitals'"),)),
    Rule("rejections", "received_ms", 30),
    Rule("conflicts", "received_ms", 90),
    Rule("bp_readings", "ts_ms", CLINICAL_DAYS),
    Rule("beat_counts", "minute_ms", CLINICAL_DAYS),
    Rule("rhythm_events", "onset_ms", CLINICAL_DAYS),
    Rule("event_beats", "ts_ms", CLINICAL_DAYS),
    Rule("observations", "ts_ms", CLINICAL_DAYS),
    Rule("alerts", "ts_ms", CLINICAL_DAYS),
    Rule("advice", "ts_ms", CLINICAL_DAYS),
    Rule("commands", "created_ms", 365),
    Rule("command_acks", "ts_ms", 365),
    Rule("ota_jobs", "updated_ms", 365),
    Rule("audit_log", "ts_ms", None),
)
BY_TABLE = {rule.table: rule for rule in RULES}


def parse_older_than(specs: list[str]) -> dict[str, int]:
    """``["30", "vitals=4000"]`` -> ages per table; ``ValueError`` says what is wrong."""
    ages: dict[str, int] = {}
    bare: int | None = None
    for spec in specs:
        name, sep, value = spec.rpartition("=")
        try:
            days = int(value)
        except ValueError:
            raise ValueError(f"expected DAYS or TABLE=DAYS, got {spec!r}") from None
        if days < 1:
            raise ValueError(f"expected at least 1 day, got {spec!r}")
        if not sep:
            bare = days
            continue
        rule = BY_TABLE.get(name)
        if rule is None:
            raise ValueError(f"no prunable table {name!r} (one of "
                             f"{', '.join(r.table for r in RULES if r.days is not None)})")
        if rule.days is None:
            raise ValueError(f"{name} is never pruned (append-only)")
        ages[name] = days
    for rule in RULES:
        if rule.days is not None and rule.table not in ages:
            ages[rule.table] = rule.days if bare is None else max(bare, rule.days)
    return ages


def prune(store: Any, ages: dict[str, int], now_ms: int, *, dry_run: bool = False
          ) -> dict[str, dict[str, int]]:
    """Delete (or with ``dry_run`` count) each table's rows older than its age;
    returns ``{table: {"older_than_days", "before_ms", "rows"}}``."""
    db = store.db
    report: dict[str, dict[str, int]] = {}
    for rule in RULES:
        if rule.days is None:
            continue
        days = ages[rule.table]
        before = now_ms - days * DAY_MS
        parts = [(rule.table, rule.column, rule.where), *rule.also]
        total = 0
        if not dry_run:
            db.execute(store.dialect.begin)
        try:
            for table, column, where in parts:
                cond = f"{column} < ?" + (f" AND {where}" if where else "")
                if dry_run:
                    (n,) = db.execute(f"SELECT COUNT(*) FROM {table} WHERE {cond}",
                                      (before,)).fetchone()
                else:
                    if table == "messages":  # devices.messages counts the rows (schema 5)
                        db.execute("UPDATE devices SET messages = messages - (SELECT "
                                   f"COUNT(*) FROM messages WHERE device_id = "
                                   f"devices.device_id AND {cond})", (before,))
                    n = db.execute(f"DELETE FROM {table} WHERE {cond}", (before,)).rowcount
                total += n
            if not dry_run:
                db.commit()
        except BaseException:
            if not dry_run and db.in_transaction:
                db.rollback()
            raise
        report[rule.table] = {"older_than_days": days, "before_ms": before, "rows": total}
    return report

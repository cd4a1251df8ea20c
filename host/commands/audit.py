"""``medge audit``: the audit log (host.services.audit): list the changes, verify the
hash chain."""

from __future__ import annotations

import argparse
import json
from typing import Any

from host.commands.common import CliError, add_command, add_db, add_json

NAME = "audit"


def _iso_ms(text: str) -> int:
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="the audit log of changes",
                    description="Who changed what and when (accounts, credentials, "
                    "configuration,\nassignments, overrides, campaigns), append-only with "
                    "a hash chain.",
                    example=["medge audit list --json", "medge audit verify"])
    audit_sub = p.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    q = add_command(audit_sub, "list", help="the changes, oldest first",
                    description="The audit log's rows, oldest first: id, time (UTC), actor, "
                    "action, subject,\nbefore and after.  Filters combine.",
                    example=["medge audit list", "medge audit list --subject bed-1 --json",
                             "medge audit list --action account. --since 2026-01-01"])
    q.add_argument("--subject", help="only changes to this subject (a device, a patient ...)")
    q.add_argument("--action", help="only this action, or a prefix ending in '.' (account.)")
    q.add_argument("--since", type=_iso_ms, metavar="ISO8601", help="from this time (inclusive)")
    q.add_argument("--until", type=_iso_ms, metavar="ISO8601", help="up to this time (exclusive)")
    q.add_argument("--limit", type=_limit, metavar="N", help="only the newest N")
    add_json(q, "a JSON array, one object per row")
    add_db(q)
    q.set_defaults(func=run_list, prog=q.prog)
    q = add_command(audit_sub, "verify", help="check the hash chain",
                    description="Recompute the audit log's hash chain: exit 0 if no row was "
                    "edited or deleted,\nelse exit 1 naming the first bad row.  --anchor "
                    "ID:HASH (printed by an earlier\nverify, kept outside the store) also "
                    "catches a history rewritten from scratch.",
                    example=["medge audit verify", "medge audit verify --anchor 42:9f86d0...",
                             "medge audit verify --json"])
    q.add_argument("--anchor", metavar="ID:HASH", help="a head printed earlier, kept elsewhere")
    add_json(q, "the verdict")
    add_db(q)
    q.set_defaults(func=run_verify, prog=q.prog)


def _store(db: object) -> Any:
    from host.services.store import Store, StoreError

    try:
        return Store(db, readonly=True)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except StoreError as exc:
        raise CliError(str(exc)) from None


def run_list(args: argparse.Namespace) -> int:
    from host.commands.fleet import iso_utc
    from host.services.audit import entries

    with _store(args.db) as store:
        rows = entries(store, subject=args.subject, action=args.action, since_ms=args.since,
                       until_ms=args.until, limit=args.limit)
    if args.json:
        print(json.dumps([dict(r.as_dict(), time=iso_utc(r.ts_ms)) for r in rows], indent=2))
        return 0
    for r in rows:
        print(f"{r.id:>6} {iso_utc(r.ts_ms)} {r.actor:<12} {r.action:<18} {r.subject or '-':<16} "
              f"{json.dumps(r.before, sort_keys=True)} -> {json.dumps(r.after, sort_keys=True)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from host.services.audit import verify

    with _store(args.db) as store:
        try:
            verdict = verify(store, anchor=args.anchor)
        except ValueError as exc:
            raise CliError(f"--anchor: {exc}") from None
    if args.json:
        print(json.dumps(verdict.as_dict(), indent=2))
    elif verdict.ok:
        print(f"audit log OK: {verdict.rows} rows, head {verdict.head or '-'}")
    else:
        print(f"audit log FAILED at row {verdict.bad_id}: {verdict.reason}")
    return 0 if verdict.ok else 1

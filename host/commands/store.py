"""``medge store``: the store's schema and retention (host.services.store,
host.services.storage.migrate, host.services.storage.prune)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from host.commands.common import CliError, add_command, add_db, add_json

NAME = "store"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="store schema, migrations and retention",
                    description="The store: its schema version and tables, migrations, "
                    "retention.",
                    example=["medge store info --json",
                             "medge store prune --older-than rejections=7 --dry-run --json"])
    store_sub = p.add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")
    _sub(store_sub, "info", run_info, "the info",
         help="schema version, migrations applied, rows per table",
         description="The store's backend, schema version (and the latest this medge knows),\n"
         "the migrations applied and the rows in each table.  Changes nothing.",
         example=["medge store info --db postgresql://medge@db.ward/medge --json"])
    _sub(store_sub, "migrate", run_migrate, "the versions before and after",
         help="apply the pending schema migrations",
         description="Apply the pending migrations, each step in one transaction (every "
         "writer\n(ingest, demo) does this when it opens the store; readers ask for it).",
         example=["medge store migrate --db var/medge.db --json"])
    q = _sub(store_sub, "prune", run_prune, "rows per table",
             help="delete rows older than each table's retention",
             description="Delete the rows older than each table's retention (defaults: raw "
             "messages,\nrejections 30 days; conflicts 90; vitals and the rest of the clinical "
             "record 3650;\ncommands and OTA jobs 365; the audit log never).  See "
             "host/services/storage/prune.py.",
             notes="--older-than DAYS raises every table's age to at least DAYS (it never cuts "
             "a\ndefault short); --older-than TABLE=DAYS sets one table's age (repeatable).",
             example=["medge store prune --dry-run --json",
                      "medge store prune --older-than messages=7 --older-than rejections=7"])
    q.add_argument("--older-than", action="append", default=[], metavar="[TABLE=]DAYS",
                   help="retention in days, for one table or (bare) all")
    q.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")


def _sub(store_sub: argparse._SubParsersAction, name: str, func: Any, json_what: str,
         **kwargs: Any) -> argparse.ArgumentParser:
    q = add_command(store_sub, name, **kwargs)
    add_db(q)
    add_json(q, json_what)
    q.set_defaults(func=func, prog=q.prog)
    return q


def _open(db: Any, **kwargs: Any) -> Any:
    from host.services.store import Store, StoreError

    try:
        return Store(db, **kwargs)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except StoreError as exc:
        raise CliError(str(exc), exit_code=1 if exc.problem.value == "unreachable" else 2
                       ) from None


def _print(args: argparse.Namespace, doc: dict[str, Any], text: list[str]) -> None:
    print(json.dumps(doc, indent=2, sort_keys=True) if args.json else "\n".join(text))


def run_info(args: argparse.Namespace) -> int:
    from host.services.storage.migrate import LATEST, history

    store = _open(args.db, readonly=True, migrate=False)
    with store:
        version = store.schema_version()
        applied = history(store.db) if "schema_version" in store.table_counts() else []
        doc = {"store": str(store.path), "backend": store.backend.value,
               "schema_version": version, "latest": LATEST, "migrations": applied,
               "tables": store.table_counts()}
    _print(args, doc, [f"{doc['store']} ({doc['backend']}): schema {version} of {LATEST}",
                       *(f"  {t:<16} {n}" for t, n in doc["tables"].items())])
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    with _open(args.db, migrate=False) as store:
        before = store.schema_version()
        applied = store.migrate()
        after = store.schema_version()
    doc = {"store": str(store.path), "from": before, "to": after, "applied": applied}
    _print(args, doc, [f"{doc['store']}: schema {before} -> {after}"
                       + (f" (steps {applied})" if applied else " (up to date)")])
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from host.services.storage.prune import parse_older_than, prune
    from host.services.store import StorageUnavailable, now_ms

    try:
        ages = parse_older_than(args.older_than)
    except ValueError as exc:
        raise CliError(f"--older-than: {exc}") from None
    with _open(args.db, readonly=args.dry_run) as store:
        try:
            tables = prune(store, ages, now_ms(), dry_run=args.dry_run)
        except Exception as exc:
            if store.dialect.is_storage_failure(exc) or isinstance(exc, StorageUnavailable):
                raise CliError(f"{store.path}: cannot prune now: {exc}", exit_code=1) from None
            raise
    doc = {"store": str(store.path), "dry_run": args.dry_run, "tables": tables,
           "rows": sum(t["rows"] for t in tables.values())}
    verb = "would delete" if args.dry_run else "deleted"
    _print(args, doc, [f"{doc['store']}: {verb} {doc['rows']} rows",
                       *(f"  {t:<16} {r['rows']:>8} older than {r['older_than_days']} days"
                         for t, r in tables.items())])
    return 0

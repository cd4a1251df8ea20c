"""``medge monitor``: a live table of the fleet (host.services.monitor)."""

from __future__ import annotations

import argparse
import json

from host.commands.common import CliError, add_command, add_db, add_json, positive_number

NAME = "monitor"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="live table of the fleet",
        description="A live table of the fleet from the store, refreshed in place (a plain "
        "summary every\n5 s when stdout is not a terminal).  Waits for a store that does not "
        "exist yet.\nCtrl-C stops it.",
        example=["medge monitor --db var/medge.db --refresh 0.5",
                 "medge monitor --json | jq -c '.devices[] | [.id, .hr_bpm]'"])
    p.add_argument("--refresh", type=positive_number, default=1.0, metavar="SECONDS",
                   help="seconds between reads of the store (1)")
    add_json(p, "one document per refresh ({\"ts_ms\", \"devices\": as fleet list --json})")
    add_db(p)
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.commands.fleet import accounts_by_name, device_doc
    from host.services.monitor import check_store, run_monitor
    from host.services.store import Store, StoreError

    def json_lines(rows, now_ms: int) -> list[str]:
        with Store(args.db, readonly=True) as store:  # each device's account, as fleet list
            by_name = accounts_by_name(store)
        docs = [device_doc(r, by_name.get(r.device_id)) for r in rows]
        return [json.dumps({"ts_ms": now_ms, "devices": docs}, separators=(",", ":"))]

    try:
        check_store(args.db)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    try:
        run_monitor(args.db, refresh_s=args.refresh, lines=json_lines if args.json else None,
                    plain_period_s=args.refresh if args.json else 5.0)
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        raise CliError(str(exc), exit_code=1) from None
    return 0

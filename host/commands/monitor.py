"""``medge monitor``: a live table of the fleet (host.services.monitor)."""

from __future__ import annotations

import argparse
import json

from host.commands.common import CliError, add_command, add_db, add_json, positive_number

NAME = "monitor"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="live table of the ward: vitals, NEWS2, alerts",
        description="A live table of the ward from the store: per device HR, SpO2, pulse, "
        "respiratory\nrate, temperature, last blood pressure, NEWS2 and open alerts; withheld "
        "values\nshow their reason (--lead_off), values of a stale or offline device are "
        "marked ~;\na banner when data stops arriving.  Scrolls (q quits); a plain summary "
        "every\n5 s when stdout is not a terminal.  Waits for a store that does not "
        "exist yet.\nCtrl-C stops it.",
        example=["medge monitor --db var/medge.db --refresh 0.5",
                 "medge monitor --json | jq -c '.devices[] | [.id, .hr_bpm]'"])
    p.add_argument("--refresh", type=positive_number, default=1.0, metavar="SECONDS",
                   help="seconds between reads of the store (1)")
    p.add_argument("--quiet-after", type=positive_number, default=15.0, metavar="SECONDS",
                   help="banner when nothing has been stored for this long (15)")
    p.add_argument("--news2-every", type=positive_number, default=10.0, metavar="SECONDS",
                   help="seconds between NEWS2 assessments of each patient (10)")
    p.add_argument("--no-news2", action="store_true",
                   help="no NEWS2 and alerts (a fleet without patients)")
    add_json(p, "one document per refresh ({\"ts_ms\", \"devices\": as fleet list --json, "
             "\"banner\", \"ward\": per device vitals, withheld, current, nibp, news2, "
             "alerts})")
    add_db(p)
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.commands.fleet import accounts_by_name, device_doc
    from host.services.monitor import check_store, run_monitor
    from host.services.store import Store, StoreError

    def json_lines(snap) -> list[str]:
        by_name = {}
        if snap.beds:
            with Store(args.db, readonly=True) as store:  # each device's account
                by_name = accounts_by_name(store)
        docs = [device_doc(b.device, by_name.get(b.device.device_id)) for b in snap.beds]
        ward = [{"device_id": b.device.device_id, "patient_id": b.patient_id}
                | b.vitals_doc(snap.now_ms) for b in snap.beds]
        return [json.dumps({"ts_ms": snap.now_ms, "devices": docs, "banner": snap.banner,
                            "newest_received_ms": snap.newest_received_ms, "ward": ward},
                           separators=(",", ":"))]

    try:
        check_store(args.db)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    try:
        run_monitor(args.db, refresh_s=args.refresh, lines=json_lines if args.json else None,
                    plain_period_s=args.refresh if args.json else 5.0,
                    news2_period_s=None if args.no_news2 else args.news2_every,
                    quiet_s=args.quiet_after)
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        raise CliError(str(exc), exit_code=1) from None
    return 0

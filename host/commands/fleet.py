"""``medge fleet``: the device fleet (host.services.store)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from host.commands.common import CliError, add_command, add_db, add_json

NAME = "fleet"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="device fleet", description="The device fleet.",
                    example=["medge fleet list --json"])
    fleet_sub = p.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    q = add_command(
        fleet_sub, "list", help="every known device",
        description="Every device the store knows: id, state (online/offline), firmware and "
        "model\nversions, last-seen time (UTC), patient, last heart rate, messages stored.",
        example=["medge fleet list", "medge fleet list --json --db var/medge.db"])
    add_json(q, "a JSON array, one object per device")
    add_db(q)
    q.set_defaults(func=run_list, prog=q.prog)


def iso_utc(ms: int) -> str:
    from datetime import datetime, timezone  # not at import: --help need not load it

    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def device_doc(r: Any) -> dict[str, Any]:
    """One ``host.services.store.DeviceRow`` as ``fleet list --json`` prints it."""
    return {
        "id": r.device_id,
        "device_id": r.device_id,
        "state": r.state,
        "fw_version": r.fw_version,
        "model_version": r.model_version,
        "last_seen": iso_utc(r.last_seen_ms),
        "last_seen_ms": r.last_seen_ms,
        "patient_id": r.patient_id,
        "hr_bpm": r.hr_bpm,
        "messages": r.messages,
    }


def run_list(args: argparse.Namespace) -> int:
    from host.services.store import Store, StoreError

    try:
        with Store(args.db, readonly=True) as store:
            rows = store.devices()
    except FileNotFoundError as exc:
        raise CliError(f"{exc} (run `medge demo` or `medge ingest` first)") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps([device_doc(r) for r in rows], indent=2))
        return 0
    print(f"{'device':<16} {'state':<8} {'firmware':<10} {'model':<12} last seen (UTC)")
    for r in rows:
        print(
            f"{r.device_id:<16} {r.state:<8} {r.fw_version or '-':<10} "
            f"{r.model_version or '-':<12} {iso_utc(r.last_seen_ms)}"
        )
    return 0

"""``medge export``: the stored vitals as CSV or a FHIR R4 Bundle (host.services.export)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from host.commands.common import CliError, add_command, add_db

NAME = "export"
FORMATS = ("csv", "fhir")


def iso8601(text: str) -> int:
    """An argparse type: a strict ISO 8601 instant, as ms since 1970 UTC."""
    from host.services.export import parse_iso8601_ms  # stdlib only, but keep the parser lean

    try:
        return parse_iso8601_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


iso8601.__name__ = "ISO 8601 time"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="stored vitals as CSV or FHIR R4",
        description="The stored vitals, one record per vitals message, ordered by device then "
        "seq.\ncsv: device_id,seq,ts_ms,time_utc and every published vitals field (null: "
        "empty).\nfhir: a FHIR R4 Bundle (collection) of vital-sign Observations: LOINC codes, "
        "UCUM\nunits, the device's patient as subject, the device, the window's end as "
        "effectiveDateTime;\na value the device withheld (null) is not exported.",
        notes="--since is inclusive, --until exclusive (consecutive exports neither overlap nor\n"
        "leave a gap); times are ISO 8601 with a zone, or a date (midnight UTC).\n"
        "A --device the store has never seen is an error (exit 2); a known device with no\n"
        "vitals in the range gives an empty export.",
        example=["medge export --format csv --device bed-12 --since 2025-11-24 --out bed-12.csv",
                 "medge export --format fhir --since 2025-11-24T08:00Z "
                 "--until 2025-11-24T20:00Z --out shift.json"])
    add_db(p)
    p.add_argument("--format", required=True, choices=FORMATS, help="csv or fhir (FHIR R4 JSON)")
    p.add_argument("--device", metavar="ID", help="only this device (default: every device)")
    p.add_argument("--since", type=iso8601, metavar="ISO8601",
                   help="only windows ending at or after this time")
    p.add_argument("--until", type=iso8601, metavar="ISO8601",
                   help="only windows ending before this time")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="write to FILE, atomically (default: standard output)")
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.services.export import (
        ExportFormat,
        UnknownDevice,
        VitalsFilter,
        atomic_text_file,
        export,
    )
    from host.services.store import StoreError

    if args.since is not None and args.until is not None and args.since >= args.until:
        raise CliError("--since must be before --until")
    out: Path | None = args.out
    if out is not None and (out.is_dir() or not out.parent.is_dir()):
        raise CliError(f"--out {out}: " + ("is a folder" if out.is_dir()
                                             else f"no folder {out.parent}"))
    flt = VitalsFilter(args.device, args.since, args.until)
    fmt = ExportFormat(args.format)
    try:
        if out is None:
            export(args.db, fmt, flt, sys.stdout)
        else:
            with atomic_text_file(out) as f:
                export(args.db, fmt, flt, f)
    except FileNotFoundError as exc:
        raise CliError(f"{exc} (run `medge demo` or `medge ingest` first)") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except UnknownDevice as exc:
        raise CliError(f"--device {exc}: no such device in the store") from None
    except OSError as exc:
        raise CliError(f"cannot write {out or 'the output'}: {exc.strerror or exc}",
                       exit_code=1) from None
    return 0

"""``medge``: one command line for the whole system.

This module is only the parser: each command group is a module in
``host/commands/`` with ``add_parser(sub)`` (its options, help and an example)
and ``run(args) -> int`` (a thin call into ``host/services``, ``host/broker``,
``sim`` or ``host.services.ecg``).  Every argument is checked while parsing, before
anything starts; every error is one line ``medge COMMAND: ...`` on stderr with
exit code 2 (bad input) or 1 (the run failed), never a traceback (``-vv``
logs one when a command crashes).  Building the parser imports no numpy,
scipy, wfdb or amqtt: ``medge --help`` and ``medge fleet list`` start fast.

Every command that reads or writes the store takes ``--db`` (default:
``$MEDGE_DB`` or ``var/medge.db`` under the current directory).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from host.commands import (
    advice,
    alerts,
    audit,
    broker,
    demo,
    device,
    ecg,
    export,
    fleet,
    ingest,
    monitor,
    news2,
    obs,
    patient,
    score,
    sim,
    store,
    vitals,
)
from host.commands.common import DEFAULT_DB, CliError, default_db, examples

__all__ = ["DEFAULT_DB", "Parser", "build_parser", "default_db", "main"]

#: Command modules, in the order ``medge --help`` lists them.
COMMANDS = (demo, sim, broker, ingest, monitor, fleet, store, export, ecg, vitals, device, news2,
            score, patient, obs, advice, alerts, audit)
#: Commands that log at INFO by default (long-running services).
_INFO_COMMANDS = ("broker", "ingest", "sim")

log = logging.getLogger("medge")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``medge demo: --devices: expected ...``."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")
        self.exit(2, f"{self.prog}: {message} (see: {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("medge")
        except PackageNotFoundError:
            text = "unknown (not installed: pip install -e .)"
        print(f"medge {text}")
        parser.exit(0)


def build_parser() -> Parser:
    parser = Parser(
        prog="medge",
        description="One command line for the whole system: simulated or real devices, "
        "broker, ingest,\nstore, monitor, fleet, ECG records.",
        epilog=examples("medge demo --devices 5 --duration 30", "medge fleet list --json")
        + "\nrun `medge COMMAND --help` for a command's options and examples",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv: debug, with tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if args.command in _INFO_COMMANDS:
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = args.prog
    try:
        return args.func(args)
    except CliError as exc:
        print(f"{prog}: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: still one line for the user, the traceback at -vv
        log.debug("%s crashed", prog, exc_info=True)
        print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run with -vv for the traceback)", file=sys.stderr)
        return 1


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())

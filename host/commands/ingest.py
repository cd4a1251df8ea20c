"""``medge ingest``: MQTT -> validate -> de-duplicate -> store (host.services.ingest)."""

from __future__ import annotations

import argparse
import math

from host.commands.common import CliError, add_broker_addr, add_command, add_db, stop_on_signals

NAME = "ingest"
#: Seconds ``medge ingest`` waits for its first connection to the broker (the default).
CONNECT_TIMEOUT_S = 10.0


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a finite number of seconds >= 0 (0: retry for ever), got {text!r}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="store validated device messages",
        description="Subscribe to every device topic (QoS 1, persistent session), validate "
        "each message,\nde-duplicate by (device, seq) and store it; a message is acknowledged "
        "only once it is\nstored.  Runs until Ctrl-C or SIGTERM.\n\n"
        "No broker: at start-up ingest retries for --connect-timeout seconds (10), then "
        "exits 1\nwith one line saying where it tried and why it failed.  Once connected it "
        "never gives\nup: a lost broker is a WARNING per disconnect and failed reconnect "
        "while it retries\n(0.1 s .. 2 s apart).  --connect-timeout 0 retries from the start "
        "for ever, a\nWARNING per failed attempt.",
        example=["medge ingest --host 127.0.0.1 --port 1883 --db var/medge.db"])
    add_broker_addr(p)
    add_db(p)
    p.add_argument("--connect-timeout", type=_timeout, default=CONNECT_TIMEOUT_S,
                   metavar="SECONDS", help=f"give up if no broker answers in this time at "
                   f"start-up ({CONNECT_TIMEOUT_S:g}; 0: retry for ever)")
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.services.ingest import BrokerUnreachable, run_ingest_forever
    from host.services.store import StoreError

    try:
        return run_ingest_forever(args.db, args.host, args.port, stop_on_signals(),
                                  connect_timeout_s=args.connect_timeout or None)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except BrokerUnreachable as exc:
        raise CliError(f"{exc} (start one with `medge broker`, or give --host/--port)",
                       exit_code=1) from None

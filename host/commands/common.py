"""What every ``medge`` command shares: argument types, common options, errors.

Argument types validate at parse time, before anything starts, and say what
was expected in the user's terms (``--devices: expected a whole number from 1
to 10000, got 'abc'``); :class:`host.cli.Parser` prints that as one line and
exits 2.  A command that finds a problem later raises :class:`CliError`, which
``main`` prints the same way.

Nothing here imports numpy, scipy, wfdb or amqtt: building the parser must
stay cheap (tests/test_startup.py).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from firmware.params import SUPPORTED_RATES_HZ
from sim.choices import MAX_DEVICES, SENSORS  # noqa: F401  (the parser's choices; numpy-free)

DEFAULT_DB = "var/medge.db"



class CliError(Exception):
    """A problem for the user: ``main`` prints ``medge COMMAND: <message>`` as one
    line and exits with ``exit_code`` (2: the input is wrong; 1: the run failed)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_db() -> Path:
    return Path(os.environ.get("MEDGE_DB", DEFAULT_DB))


# -- argument types ---------------------------------------------------------
def whole_number(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (either bound optional)."""
    if low is not None and high is not None:
        expected = f"a whole number from {low} to {high}"
    elif low is not None:
        expected = f"a whole number >= {low}"
    else:
        expected = "a whole number"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def positive_number(text: str) -> float:
    """An argparse type: a finite number > 0 (``inf`` and ``nan`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def one_of(values: Sequence[int]) -> Callable[[str], int]:
    """An argparse type: one of a few integers (a sample rate, say)."""
    listed = ", ".join(str(v) for v in values)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value not in values:
            raise argparse.ArgumentTypeError(f"expected one of {listed}, got {text!r}")
        return value

    parse.__name__ = "choice"
    return parse


DEVICES = whole_number(1, MAX_DEVICES)
SEED = whole_number(0)
PORT = whole_number(1, 65535)
RATE = one_of(SUPPORTED_RATES_HZ)


# -- common options -----------------------------------------------------------
def add_db(p: argparse.ArgumentParser) -> None:
    from host.services.storage.target import db_argument  # no driver imported

    p.add_argument("--db", type=db_argument, default=db_argument(str(default_db())),
                   help="the store: a SQLite file, sqlite:///PATH or postgresql://USER@HOST/DB "
                   "(default: $MEDGE_DB or var/medge.db)")


def add_broker_addr(p: argparse.ArgumentParser, port_default: int | None = 1883) -> None:
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=port_default, help="broker port (default 1883)")


def add_broker_account(p: argparse.ArgumentParser, when: str = "") -> None:
    """``--username``/``--password-file``: the host account a client connects with."""
    p.add_argument("--username", help=f"{when}broker account (a host account)")
    p.add_argument("--password-file", type=Path, metavar="FILE",
                   help=f"{when}file holding the account's password")


def broker_password(args: argparse.Namespace) -> str | None:
    """The first line of ``--password-file`` (None without one); never printed."""
    if args.password_file is None:
        return None
    try:
        return args.password_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"--password-file: {exc.strerror or exc}") from None


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def examples(*lines: str) -> str:
    """An epilog: ``example(s):`` and one command per line."""
    head = "example:" if len(lines) == 1 else "examples:"
    return "\n".join([head, *(f"  {line}" for line in lines)])


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                example: Sequence[str], notes: str = "") -> argparse.ArgumentParser:
    """One command's parser: its one-line help, a description (line breaks kept), then
    ``notes`` and its examples as the epilog."""
    epilog = (notes + "\n\n" if notes else "") + examples(*example)
    return sub.add_parser(name, help=help, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def add_fleet_options(p: argparse.ArgumentParser) -> None:
    """The simulated fleet's size, duration, pace, seed and rate (demo, sim)."""
    p.add_argument("--devices", type=DEVICES, default=3,
                   help=f"number of devices (3; at most {MAX_DEVICES})")
    p.add_argument("--duration", type=positive_number, default=None, metavar="SECONDS",
                   help="stop by itself after this many simulated seconds "
                   "(default: until Ctrl-C)")
    p.add_argument("--speed", type=positive_number, default=1.0,
                   help="time acceleration: simulated seconds per second (1)")
    p.add_argument("--seed", type=SEED, default=0,
                   help="simulation seed (0): each patient is seeded from it")
    p.add_argument("--rate", type=RATE, default=250, metavar="{250,360}",
                   help="ECG rate, Hz (250; 360 with --sensor direct only)")


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (a clean stop for long-running commands)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop

"""``medge device run --config PATH``: the device program (firmware.main) from the host CLI.

The same program as ``python -m firmware.main PATH`` (contract 13,
../shared/DESIGN.md), with the simulator's ``sim`` source kind available
(``sim.device_source``), so one config file runs a simulated patient or a
real front end.  Keys: docs/device.md.  Runs until its source ends, SIGTERM or
Ctrl-C, then shuts down cleanly (offline status, exact sequence number saved).
Exit codes are the device program's: 0 all delivered, 1 a hardware fault or
the outbox not drained, 2 a config it cannot use (one line,
``medge device: <path>: <reason>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.common import CliError, add_command

NAME = "device"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, NAME, help="run the device program", description="The device program.",
                    example=["medge device run --config device.json"])
    device_sub = p.add_subparsers(dest="device_command", required=True,
                                  metavar="DEVICE_COMMAND")
    q = add_command(
        device_sub, "run", help="run the device program until SIGTERM",
        description="Sample the configured source, run the device's signal chain and beat\n"
        "model, publish over MQTT; until the source ends, SIGTERM or Ctrl-C.\n"
        "Config keys and source kinds (file, ads1292, ads1115, max30102, serial, sim):\n"
        "docs/device.md.  JSON, or TOML when the path ends in .toml.",
        example=["medge device run --config device.json",
                 "medge device run --config bed-12.toml"])
    q.add_argument("--config", type=Path, required=True, metavar="PATH",
                   help="the device's config file (JSON; TOML if it ends in .toml)")
    q.set_defaults(func=run, prog=q.prog)


def run(args: argparse.Namespace) -> int:
    if not args.config.is_file():
        raise CliError(f"--config: no such file: {args.config}")
    from firmware import main as device_main
    from sim import device_source

    device_source.register()
    return device_main.main(str(args.config))

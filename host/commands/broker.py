"""``medge broker``: an MQTT broker in the foreground (host.broker.launch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.common import add_command, whole_number

NAME = "broker"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="run an MQTT broker (mosquitto if installed, else embedded)",
        description="Run an MQTT broker until Ctrl-C or SIGTERM: mosquitto with a generated "
        "config when\nthe binary is installed, else the embedded pure-Python broker "
        "(amqtt).  Anonymous\nclients are allowed (development default).",
        example=["medge broker --port 1883", "medge broker --kind embedded --port 0"])
    p.add_argument("--kind", choices=("auto", "mosquitto", "embedded"), default="auto")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=whole_number(0, 65535), default=1883,
                   help="port to listen on (1883; 0: a free port)")
    p.add_argument("--data-dir", type=Path, default=Path("var/broker"),
                   help="persistent sessions, retained messages and logs (var/broker)")
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.broker.launch import run_broker_forever

    return run_broker_forever(args.kind, args.host, args.port, args.data_dir)

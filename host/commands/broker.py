"""``medge broker``: an MQTT broker in the foreground (host.broker.launch)."""

from __future__ import annotations

import argparse
from pathlib import Path

from host.commands.common import CliError, add_command, add_db, whole_number

NAME = "broker"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="run an MQTT broker (mosquitto if installed, else embedded)",
        description="Run an MQTT broker until Ctrl-C or SIGTERM: mosquitto with a generated "
        "config when\nthe binary is installed, else the embedded pure-Python broker "
        "(amqtt).\n\n"
        "Secure by default: the accounts of the registry in --db (`medge fleet add`) are "
        "the only\nclients it lets in, each with its ACL (a device its own topics, a host "
        "account every\ndevice's data and their commands) and its client id bound to its "
        "account; a change\nto the registry is applied within a second (files regenerated, "
        "SIGHUP).  This needs\nmosquitto.  --tls adds a TLS listener (--tls-port, 8883) that "
        "requires a client\ncertificate from the local CA (`medge fleet ca init`, `medge "
        "fleet add --cert`).\n--insecure (development only) lets anonymous clients in and "
        "says so at start-up.",
        example=["medge broker --db var/medge.db --port 1883",
                 "medge broker --db var/medge.db --tls",
                 "medge broker --insecure --kind embedded --port 0"])
    p.add_argument("--kind", choices=("auto", "mosquitto", "embedded"), default="auto")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=whole_number(0, 65535), default=1883,
                   help="port to listen on (1883; 0: a free port)")
    p.add_argument("--data-dir", type=Path, default=Path("var/broker"),
                   help="persistent sessions, retained messages and logs (var/broker)")
    add_db(p)
    p.add_argument("--insecure", action="store_true",
                   help="no authentication (development only, a trusted loopback)")
    p.add_argument("--tls", action="store_true",
                   help="also listen with TLS, client certificates required")
    p.add_argument("--tls-port", type=whole_number(1, 65535), default=8883,
                   help="the TLS listener's port (8883)")
    p.add_argument("--ca-dir", type=Path, metavar="DIR",
                   help="the local CA's folder (default: <db>.d/ca)")
    p.set_defaults(func=run, prog=p.prog)


def run(args: argparse.Namespace) -> int:
    from host.broker.launch import TlsListener, run_broker_forever

    if args.insecure:
        if args.tls:
            raise CliError("--tls needs accounts: drop --insecure")
        return run_broker_forever(args.kind, args.host, args.port, args.data_dir)
    from host.services.store import Store, StoreError

    try:
        Store(args.db).close()  # the registry: created (empty) when missing
    except StoreError as exc:
        raise CliError(str(exc)) from None
    tls = None
    if args.tls:
        from host.services.tlsca import CaError, default_dir, issue_server

        ca_dir = args.ca_dir or default_dir(args.db)
        try:
            files = issue_server(ca_dir, [args.host])
        except CaError as exc:
            raise CliError(str(exc)) from None
        tls = TlsListener(args.tls_port, files.ca_file, files.cert_file, files.key_file)
    return run_broker_forever(args.kind, args.host, args.port, args.data_dir, db=args.db,
                              tls=tls)

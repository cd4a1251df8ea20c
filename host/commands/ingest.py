"""``medge ingest``: MQTT -> validate -> de-duplicate -> store (host.services.ingest)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from host.commands.common import (
    CliError,
    add_broker_addr,
    add_command,
    add_db,
    add_json,
    stop_on_signals,
)

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


def _group(text: str) -> str:
    from host.services.ingest import check_group

    try:
        return check_group(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metrics_address(text: str) -> tuple[str, int]:
    from host.services.metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
        "for ever, a\nWARNING per failed attempt.\n\n"
        "--group NAME joins the MQTT v5 shared subscription $share/NAME/medge/v1/#: run any\n"
        "number of ingest processes with the same group (each its own --username, or\n"
        "--client-id without accounts) and the broker spreads the messages over them.\n"
        "--stats prints the store's counters and each worker's health (storage failing\n"
        "since ...) and exits.\n\n"
        "--metrics-port PORT serves this worker's counters (received, stored, rejected by\n"
        "reason, duplicates, conflicts, lag, storage failing) in the Prometheus text format\n"
        "at http://127.0.0.1:PORT/metrics (HOST:PORT to listen elsewhere).",
        example=["medge ingest --host 127.0.0.1 --port 1883 --db var/medge.db",
                 "medge ingest --db var/medge.db --group ward --client-id ingest-1",
                 "medge ingest --db var/medge.db --stats --json",
                 "medge ingest --db var/medge.db --metrics-port 9108"])
    add_broker_addr(p)
    add_db(p)
    p.add_argument("--connect-timeout", type=_timeout, default=CONNECT_TIMEOUT_S,
                   metavar="SECONDS", help=f"give up if no broker answers in this time at "
                   f"start-up ({CONNECT_TIMEOUT_S:g}; 0: retry for ever)")
    p.add_argument("--group", type=_group, metavar="NAME",
                   help="share the load with other ingest processes of this group (MQTT v5 "
                   "shared subscription)")
    p.add_argument("--client-id", metavar="ID",
                   help="MQTT client id, stable across restarts (its session holds what was "
                   "not acknowledged; default: the --username, else medge-ingest, or "
                   "medge-ingest-GROUP-HOSTNAME)")
    p.add_argument("--username", metavar="U",
                   help="broker account (a host account, `medge fleet add U --role host`; one "
                   "per worker: a broker with accounts refuses any client id but U)")
    p.add_argument("--password-file", type=Path, metavar="F",
                   help="file whose first line is the account's password")
    p.add_argument("--tls-ca", type=Path, metavar="F",
                   help="TLS: the CA of the broker's certificate (medge fleet ca init: ca.pem)")
    p.add_argument("--tls-cert", type=Path, metavar="F",
                   help="TLS: this client's certificate (medge fleet add --cert)")
    p.add_argument("--tls-key", type=Path, metavar="F", help="TLS: its private key")
    p.add_argument("--stats", action="store_true",
                   help="print the counters and the workers' health, then exit")
    p.add_argument("--metrics-port", type=_metrics_address, metavar="[HOST:]PORT",
                   help="serve Prometheus metrics on this port (127.0.0.1 unless HOST is "
                   "given)")
    add_json(p, "--stats")
    p.set_defaults(func=run, prog=p.prog)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is None:
        return None
    try:
        lines = args.password_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--password-file {args.password_file}: cannot read it "
                       f"({getattr(exc, 'strerror', None) or exc})") from None
    return lines[0] if lines else ""


def _print_stats(args: argparse.Namespace) -> int:
    from host.services.ingest import read_stats
    from host.services.store import StoreError

    try:
        doc = read_stats(args.db)
    except FileNotFoundError:
        raise CliError(f"no medge store at {args.db}") from None
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print(f"received {doc['received']}, stored {doc['stored']}, duplicates "
          f"{doc['duplicates']}, conflicts {doc['conflicts']}, rejected "
          f"{doc['rejected'] or 'none'}")
    for w in doc["workers"]:
        print(f"worker {w.get('client_id')} (pid {w.get('pid')}): connected "
              f"{w.get('connected')}, {w.get('storage')}, lag {w.get('lag_ms')} ms, "
              f"queued {w.get('queued')}")
    return 0


def run(args: argparse.Namespace) -> int:
    from host.services.ingest import BrokerUnreachable, run_ingest_forever
    from host.services.store import StoreError

    if args.stats:
        return _print_stats(args)
    if args.password_file is not None and args.username is None:
        raise CliError("--password-file needs --username")
    tls = _tls(args)
    metrics, on_metrics = _start_metrics(args.metrics_port)

    def on_ingest(ingest: Any) -> None:
        ingest.tls = tls  # read by Ingest.start(): paho's tls_set
        if on_metrics is not None:
            on_metrics(ingest)

    try:
        return run_ingest_forever(args.db, args.host, args.port, stop_on_signals(),
                                  connect_timeout_s=args.connect_timeout or None,
                                  group=args.group, client_id=args.client_id,
                                  username=args.username, password=_password(args),
                                  on_ingest=on_ingest)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    except BrokerUnreachable as exc:
        raise CliError(f"{exc} (start one with `medge broker`, or give --host/--port)",
                       exit_code=1) from None
    finally:
        if metrics is not None:
            metrics.stop()


def _tls(args: argparse.Namespace) -> dict[str, str] | None:
    """The TLS files (checked readable now: a one-line error, not a paho traceback)."""
    if args.tls_ca is None:
        if args.tls_cert is not None or args.tls_key is not None:
            raise CliError("--tls-cert/--tls-key need --tls-ca (the broker's CA)")
        return None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    files = {"ca_file": args.tls_ca, "cert_file": args.tls_cert, "key_file": args.tls_key}
    for name, path in files.items():
        if path is not None and not path.is_file():
            raise CliError(f"--tls-{name.split('_')[0]} {path}: no such file")
    return {k: str(v) for k, v in files.items() if v is not None}


def _start_metrics(address: tuple[str, int] | None) -> tuple[Any, Any]:
    """The metrics server (listening before ingest connects, so a taken port is a
    one-line error at once) and the hook that hands it the Ingest's stats."""
    if address is None:
        return None, None
    from host.services.metrics import MetricsServer, MetricsUnavailable

    live: list[Any] = []  # the Ingest, once run_ingest_forever has made it

    def stats() -> dict[str, Any]:
        return live[0].stats() if live else {}

    def labels() -> dict[str, str]:
        return {"client_id": live[0].client_id, "group": live[0].group or ""} if live else {}

    host, port = address
    try:
        server = MetricsServer(stats, port, host, labels).start()
    except MetricsUnavailable as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"--metrics-port {host}:{port}: cannot listen there "
                       f"({exc.strerror or exc})") from None
    return server, live.append

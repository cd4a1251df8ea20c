"""``medge``: one command line for the whole system.

Sub-commands: ``demo``, ``sim``, ``broker``, ``ingest``, ``monitor``,
``fleet list``.  Later issues add ``advice``, ``ecg``, ``news2``, ``device``.
Every sub-command that reads or writes the store takes ``--db`` (default:
``$MEDGE_DB`` or ``var/medge.db`` under the current directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_DB = "var/medge.db"


def default_db() -> Path:
    return Path(os.environ.get("MEDGE_DB", DEFAULT_DB))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


# -- sub-commands -----------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from host.services.demo import run_demo

    try:
        return run_demo(
            devices=args.devices,
            duration_s=args.duration,
            db_path=args.db,
            speed=args.speed,
            seed=args.seed,
            broker_kind=args.broker,
            sample_rate_hz=args.rate,
            # Faults act on scenario patients: "stable" unless one is named.
            scenario=args.scenario or ("stable" if args.faults else None),
            sensor=args.sensor,
            faults=args.faults,
        )
    except ValueError as exc:  # a bad scenario or fault spec, named by the message
        print(f"medge demo: {exc}", file=sys.stderr)
        return 2


def cmd_sim(args: argparse.Namespace) -> int:
    from sim.fleet import Fleet, FleetParams

    log = logging.getLogger(__name__)
    if args.sensor != "direct" and args.rate != 250:
        print(f"medge sim: the {args.sensor} sensor path runs at 250 Hz (--rate 250) "
              "or use --sensor direct", file=sys.stderr)
        return 2
    stop = _stop_on_signals()
    broker = None
    host, port = args.host, 1883 if args.port is None else args.port
    try:
        if args.broker != "none":
            from host.broker.launch import Broker

            broker = Broker(args.broker, port=args.port or 0,
                            data_dir=args.state_dir.parent / "broker")
            broker.start()
            host, port = broker.host, broker.port
            print(f"sim: {broker.kind.value} broker on {host}:{port}", flush=True)
        params = FleetParams(
            n_devices=args.devices, sample_rate_hz=args.rate, speed=args.speed, seed=args.seed,
            scenario=args.scenario, sensor=args.sensor, faults=args.faults or "",
            start_epoch_ms=args.start_epoch_ms,
        )
        fleet = Fleet(params, host, port, state_dir=args.state_dir, broker=broker)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"medge sim: {exc}", file=sys.stderr)
        if broker is not None:
            broker.stop()
        return 2
    try:
        log.info("sim: %d devices (%s, %s sensor) -> %s:%d", args.devices, args.scenario,
                 args.sensor, host, port)
        fleet.run(args.duration, stop)
        ok = fleet.shutdown()
        if fleet.injector is not None:
            for t_ms, what in fleet.injector.events:
                print(f"sim: fault at {t_ms / 1000:.3f} s: {what}")
        if args.truth_dir is not None:
            files = fleet.write_truth(args.truth_dir)
            print(f"sim: ground truth of {args.devices} patients: {len(files)} files in "
                  f"{args.truth_dir}")
        return 0 if ok else 1
    finally:
        if broker is not None:
            broker.stop()

def cmd_broker(args: argparse.Namespace) -> int:
    from host.broker.launch import run_broker_forever

    return run_broker_forever(args.kind, args.host, args.port, args.data_dir)


def cmd_ingest(args: argparse.Namespace) -> int:
    from host.services.ingest import run_ingest_forever

    return run_ingest_forever(args.db, args.host, args.port, _stop_on_signals())


def cmd_monitor(args: argparse.Namespace) -> int:
    from host.services.monitor import run_monitor

    try:
        run_monitor(args.db, refresh_s=args.refresh)
    except KeyboardInterrupt:
        pass
    return 0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds")


def cmd_fleet_list(args: argparse.Namespace) -> int:
    from host.services.store import Store

    try:
        with Store(args.db, readonly=True) as store:
            rows = store.devices()
    except FileNotFoundError as exc:
        print(f"medge: {exc} (run `medge demo` or `medge ingest` first)", file=sys.stderr)
        return 2
    if args.json:
        doc = [
            {
                "id": r.device_id,
                "device_id": r.device_id,
                "state": r.state,
                "fw_version": r.fw_version,
                "model_version": r.model_version,
                "last_seen": _iso(r.last_seen_ms),
                "last_seen_ms": r.last_seen_ms,
                "patient_id": r.patient_id,
                "hr_bpm": r.hr_bpm,
                "messages": r.messages,
            }
            for r in rows
        ]
        print(json.dumps(doc, indent=2))
        return 0
    print(f"{'device':<16} {'state':<8} {'firmware':<10} {'model':<12} last seen (UTC)")
    for r in rows:
        print(
            f"{r.device_id:<16} {r.state:<8} {r.fw_version or '-':<10} "
            f"{r.model_version or '-':<12} {_iso(r.last_seen_ms)}"
        )
    return 0


def cmd_ecg_analyze(args: argparse.Namespace) -> int:
    from host.ecg import run_analyze

    return run_analyze(args.record, args.channel, model=args.model, runtime=args.runtime)


# -- parser -----------------------------------------------------------------
def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        type=Path,
        default=default_db(),
        help="SQLite store (default: $MEDGE_DB or var/medge.db)",
    )


def _add_broker_addr(p: argparse.ArgumentParser, port_default: int = 1883) -> None:
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=port_default, help="broker port (default 1883)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medge", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="broker + ingest + simulated devices + live monitor")
    p.add_argument("--devices", type=_positive_int, default=3, help="number of devices (3)")
    p.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        help="stop by itself after this many simulated seconds",
    )
    p.add_argument("--speed", type=_positive_float, default=1.0, help="time acceleration (1)")
    p.add_argument("--seed", type=int, default=0, help="simulation seed (0)")
    p.add_argument("--rate", type=int, choices=(250, 360), default=250, help="ECG rate, Hz")
    p.add_argument("--broker", choices=("auto", "mosquitto", "embedded"), default="auto")
    p.add_argument("--scenario", default=None,
                   help="patient scenario (sim/scenarios name or .toml path; default: ECGSYN "
                        "patients)")
    p.add_argument("--sensor", choices=("direct", "ads1292", "ads1115"), default="direct",
                   help="with --scenario: how devices read the ECG (direct)")
    p.add_argument("--faults", default="", metavar="SPEC",
                   help="faults to inject, as for medge sim (see medge sim --help); "
                        "on scenario patients (stable unless --scenario)")
    _add_db(p)
    p.set_defaults(func=cmd_demo)

    from sim.faults import FAULT_SYNTAX

    p = sub.add_parser(
        "sim", help="run simulated devices against a broker",
        description="N simulated devices, each the real firmware loop reading its own "
        "virtual patient through an emulated sensor, publishing to an MQTT broker.",
        epilog="fault syntax (--faults SPEC):\n" + FAULT_SYNTAX + "\nSee docs/simulator.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--devices", type=_positive_int, default=3, help="number of devices (3)")
    p.add_argument("--duration", type=_positive_float, default=None,
                   help="stop after this many simulated seconds (default: until Ctrl-C)")
    p.add_argument("--speed", type=_positive_float, default=1.0, help="time acceleration (1)")
    p.add_argument("--seed", type=int, default=0,
                   help="simulation seed (0): each patient is seeded from it")
    p.add_argument("--rate", type=int, choices=(250, 360), default=250,
                   help="ECG rate, Hz (250; 360 with --sensor direct only)")
    p.add_argument("--scenario", default="stable",
                   help="patient scenario: a name in sim/scenarios or a .toml path (stable)")
    p.add_argument("--sensor", choices=("direct", "ads1292", "ads1115"), default="ads1292",
                   help="how the ECG reaches the firmware: ads1292 (emulated ADS1292R on SPI, "
                   "real driver; default), ads1115 (emulated ADS1115 on I2C behind an ECG "
                   "amplifier), direct (counts straight in: cheapest, for big fleets)")
    p.add_argument("--faults", default="", metavar="SPEC", help="faults to inject (below)")
    p.add_argument("--truth-dir", type=Path, default=None,
                   help="write each patient's ground truth here (<device>.truth.json, "
                   ".beats.csv, ...)")
    p.add_argument("--broker", choices=("none", "auto", "mosquitto", "embedded"),
                   default="none", help="start a broker for the run (needed for an outage "
                   "fault) instead of connecting to --host/--port (none)")
    p.add_argument("--start-epoch-ms", type=int, default=None,
                   help="simulated wall clock at the start, ms since 1970 (default: now); "
                   "fix it for byte-identical runs")
    p.add_argument("--state-dir", type=Path, default=Path("var/devices"))
    _add_broker_addr(p)
    p.set_defaults(func=cmd_sim, port=None)  # with --broker: a free port unless given

    p = sub.add_parser("broker", help="run an MQTT broker (mosquitto if installed, else embedded)")
    p.add_argument("--kind", choices=("auto", "mosquitto", "embedded"), default="auto")
    _add_broker_addr(p)
    p.add_argument("--data-dir", type=Path, default=Path("var/broker"))
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("ingest", help="store validated device messages")
    _add_broker_addr(p)
    _add_db(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("monitor", help="live table of the fleet")
    p.add_argument("--refresh", type=_positive_float, default=1.0, help="seconds (1)")
    _add_db(p)
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("fleet", help="device fleet")
    fleet_sub = p.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    q = fleet_sub.add_parser("list", help="every known device")
    q.add_argument("--json", action="store_true", help="JSON array")
    _add_db(q)
    q.set_defaults(func=cmd_fleet_list)

    p = sub.add_parser("ecg", help="ECG records through the device's code")
    ecg_sub = p.add_subparsers(dest="ecg_command", required=True, metavar="ECG_COMMAND")
    q = ecg_sub.add_parser("analyze", help="beats of a WFDB record as CSV: sample,label")
    q.add_argument("record", help="WFDB record path without extension, e.g. data/mitdb/101")
    q.add_argument("--channel", type=int, default=0, help="signal number, from 0 (0)")
    q.add_argument("--model", default=None,
                   help="beat model path without extension (default: the shipped models/beatnet)")
    q.add_argument("--runtime", default="auto", choices=["auto", "litert", "litert-ref", "python"],
                   help="int8 runtime (auto: LiteRT's reference kernels if installed, else the "
                        "pure-Python engine; both bit-exact)")
    q.set_defaults(func=cmd_ecg_analyze)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    if args.command in ("broker", "ingest", "sim"):
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

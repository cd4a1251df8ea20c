"""``medge sim``: simulated devices against a broker (sim.fleet)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from host.commands.common import (
    PORT,
    SENSORS,
    CliError,
    add_command,
    add_db,
    add_fleet_options,
    add_json,
    stop_on_signals,
    whole_number,
)
from sim.faultsyntax import FAULT_SYNTAX

NAME = "sim"
log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, NAME, help="run simulated devices against a broker",
        description="N simulated devices, each the real firmware loop reading its own "
        "virtual patient through\nan emulated sensor, publishing to an MQTT broker.\n\n"
        "Accounts: the devices are provisioned in the registry --db (a device account "
        "each, a\nfresh password held in memory), so a `medge broker --db` on the same "
        "registry lets\nthem in within a second; --broker starts one with that registry.  "
        "--insecure: no\naccounts (a `medge broker --insecure`).\n\n"
        "Patients: each device's virtual patient is registered in --db with a profile "
        "drawn\nfrom the scenario, and the device assigned to it (not with --insecure).  "
        "Scenario\npatients bring SpO2, pulse, respiration, temperature and NIBP too "
        "(--vitals).",
        notes="fault syntax (--faults SPEC):\n" + FAULT_SYNTAX + "\nSee docs/simulator.md.",
        example=["medge sim --broker auto --devices 3 --duration 60 --scenario new_onset_af",
                 "medge sim --port 1883 --devices 50 --sensor direct --faults loss:10%:5%"])
    add_fleet_options(p)
    p.add_argument("--scenario", default="stable",
                   help="patient scenario: a name in sim/scenarios or a .toml path (stable)")
    p.add_argument("--sensor", choices=SENSORS, default="ads1292",
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
    p.add_argument("--start-epoch-ms", type=whole_number(0), default=None,
                   help="simulated wall clock at the start, ms since 1970 (default: now); "
                   "fix it for byte-identical runs")
    p.add_argument("--state-dir", type=Path, default=Path("var/devices"),
                   help="the devices' state files (var/devices); with --broker, the broker's "
                   "data goes next to it (<state-dir>/../broker)")
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=None,
                   help="broker port (1883; with --broker: a free port unless given)")
    add_db(p)
    p.add_argument("--vitals", default="auto", metavar="auto|all|none|N",
                   help="devices with the sensors beside the ECG (MAX30102, TMP117, NIBP) "
                   "(scenario patients only): auto (the first 100), all, none, or the first N")
    p.add_argument("--insecure", action="store_true",
                   help="provision no accounts: connect anonymously (development only)")
    add_json(p, "the summary (fault events, ground truth files)")
    p.set_defaults(func=run, prog=p.prog)


def _check_dir(path: Path, what: str) -> None:
    """Refuse a folder that cannot be made before anything starts."""
    if path.exists() and not path.is_dir():
        raise CliError(f"{what} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot create it: {exc.strerror or exc}") from None


def _provision(args: argparse.Namespace, n_devices: int, prefix: str
               ) -> tuple[dict[str, str], dict[str, str]]:
    """Device accounts for the run in the registry ``--db``: their passwords and
    incarnations."""
    from host.services.accounts import AccountError, Role, incarnations, provision
    from host.services.audit import default_actor
    from host.services.store import Store
    from sim.fleet import device_ids

    ids = device_ids(prefix, n_devices)
    with Store(args.db) as store:
        try:
            return (provision(store, ids, Role.DEVICE, actor=default_actor()),
                    incarnations(store, ids))
        except AccountError as exc:
            raise ValueError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from host.broker.launch import Broker, registry_accounts
    from host.services.store import StoreError
    from sim.fleet import Fleet, FleetParams, check_fleet_spec

    broker = None
    host, port = args.host, 1883 if args.port is None else args.port
    try:  # everything checked and built, nothing started
        params = FleetParams(
            n_devices=args.devices, sample_rate_hz=args.rate, speed=args.speed, seed=args.seed,
            scenario=args.scenario, sensor=args.sensor, faults=args.faults or "",
            start_epoch_ms=args.start_epoch_ms, vitals=args.vitals,
        )
        check_fleet_spec(params)  # a bad scenario or fault spec leaves no folder behind
        _check_dir(args.state_dir, "--state-dir")
        if args.truth_dir is not None:
            _check_dir(args.truth_dir, "--truth-dir")
        passwords, incarnations = (None, None) if args.insecure else _provision(
            args, params.n_devices, params.id_prefix)
        if args.broker != "none":
            broker = Broker(args.broker, port=args.port or 0,
                            data_dir=args.state_dir.parent / "broker",
                            accounts=None if args.insecure else registry_accounts(args.db))
            host, port = broker.host, broker.port
        fleet = Fleet(params, host, port, state_dir=args.state_dir, broker=broker,
                      passwords=passwords, incarnations=incarnations)
        patients = None
        if not args.insecure:
            from host.services.audit import default_actor
            from host.services.demo import register_patients

            patients = register_patients(args.db, fleet, actor=default_actor())
    except (ValueError, RuntimeError, OSError, StoreError) as exc:
        raise CliError(str(exc)) from None
    stop = stop_on_signals()
    try:
        if broker is not None:
            try:
                broker.start()
            except (RuntimeError, OSError) as exc:
                raise CliError(f"the broker did not start: {exc}", exit_code=1) from None
            if not args.json:
                print(f"sim: {broker.kind.value} broker on {host}:{port}", flush=True)
        log.info("sim: %d devices (%s, %s sensor) -> %s:%d", args.devices, args.scenario,
                 args.sensor, host, port)
        fleet.run(args.duration, stop)
        ok = fleet.shutdown()
        events = fleet.injector.events if fleet.injector is not None else []
        files = fleet.write_truth(args.truth_dir) if args.truth_dir is not None else []
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps({
            "ok": ok, "devices": args.devices,
            "faults": [{"t_s": t_ms / 1000, "what": what} for t_ms, what in events],
            "truth_files": [str(f) for f in files], "patients": patients,
        }, indent=2))
    else:
        for t_ms, what in events:
            print(f"sim: fault at {t_ms / 1000:.3f} s: {what}")
        if args.truth_dir is not None:
            print(f"sim: ground truth of {args.devices} patients: {len(files)} files in "
                  f"{args.truth_dir}")
    if not ok:
        log.warning("sim: some device outboxes did not drain at shutdown")
    return 0 if ok else 1

"""``medge demo``: the whole system on one machine.

Starts a broker (mosquitto when installed, else the embedded one), the ingest
service writing to the SQLite store, and N simulated devices running the real
firmware loop; shows the live monitor; and with a duration stops by itself:
devices shut down cleanly (their outboxes drain), ingest waits until every
message each device sent is stored, and a summary checks every device's
sequence numbers for gaps.

Two phases.  :class:`Demo` (the constructor) checks everything and starts
nothing: the numbers, the store (created if needed; :class:`StoreError` names
the path and the problem), the broker kind, the fleet (scenario, sensor,
faults, device numbers; ``ValueError``).  :meth:`Demo.run` then starts the
broker, ingest and the devices, and gives a verdict: exit code 0 only if every
check passed (every message of every device stored, outboxes drained, no
message rejected or failed to store, the broker still up) and no part failed
(an exception in the fleet thread, the monitor or the shutdown is caught,
recorded and fails the verdict); otherwise 1 and ``demo: FAILED: <reasons>``
on one line.

Accounts: the demo provisions its own (:func:`host.services.accounts.provision`,
audited as the OS user): a device account per simulated device and the host account
:data:`INGEST_ACCOUNT` for ingest, each with a fresh password held in memory only,
so ``make demo`` needs no extra step, and the operator account
:data:`OPERATOR_ACCOUNT`, whose fresh password goes into ``<db>.d/operator.pw``
(mode 0600; the start-up prints the ``medge fleet cmd`` line that uses it, never the
password), for commanding the demo's devices from another terminal.  mosquitto then
runs with authentication (anonymous clients refused, per-account ACLs, client ids
bound to accounts).  The embedded broker (no mosquitto installed) checks the same
passwords and ACLs but cannot keep a refused client away from a session
(``host/broker/launch.py``), so its start-up line says it is for a trusted loopback
only.

Patients: each device's virtual patient is registered in the store with a
profile drawn from the fleet's scenario and the device assigned to it from the
run's start (:func:`register_patients`, idempotent: a store kept between runs
keeps its patients), so ``medge patient show``, ``medge advice`` and the FHIR
export's subject work on a demo store.  Scenario patients also bring SpO2,
pulse, respiration, temperature and NIBP (``sim.devices.VitalsFeed``); the
default ECGSYN patients are ECG only.

Folders: the broker's data and the devices' state files (sequence numbers,
boot counts) belong to the store: ``<db>.d/broker`` and ``<db>.d/devices``
next to the ``--db`` file (``var/medge.db`` -> ``var/medge.db.d/``), so two
stores in one folder never share retained messages or device state
(:func:`demo_dirs`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from host.broker.launch import Broker, registry_accounts
from host.services import accounts
from host.services.audit import default_actor
from host.services.ingest import Ingest
from host.services.monitor import run_monitor
from host.services.store import Store
from sim.fleet import Fleet, FleetParams, check_fleet_spec, device_ids

log = logging.getLogger(__name__)

#: How long the end of a run waits for outboxes to drain and for ingest to store.
DRAIN_TIMEOUT_S = 15.0
INGEST_CONNECT_TIMEOUT_S = 10.0
#: The demo's ingest account (also ingest's client id: the broker binds them).
INGEST_ACCOUNT = "medge-ingest"
#: The operator account a demo makes for commanding its devices from another terminal.
OPERATOR_ACCOUNT = "demo-operator"


def _write_secret(path: Path, secret: str) -> None:
    """``secret`` into ``path`` (replaced), readable by this user only (0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secret + "\n")
    os.replace(tmp, path)


def demo_dirs(db_path: str | Path) -> tuple[Path, Path]:
    """The broker's and the devices' folders of the store at ``db_path``."""
    db_path = Path(db_path)
    base = db_path.with_name(db_path.name + ".d")
    return base / "broker", base / "devices"


def wait_stored(store_path: Path, last_seqs: dict[str, int], timeout_s: float) -> dict[str, int]:
    """Wait until the store holds each device's last seq; return the missing counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing: dict[str, int] = {}
        with Store(store_path, readonly=True) as store:
            for device_id, last in last_seqs.items():
                seqs = store.seqs(device_id)
                if not seqs or seqs[-1] < last:
                    missing[device_id] = last - (seqs[-1] if seqs else -1)
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.1)


def register_patients(store_path: str | Path, fleet: Fleet, *, actor: str) -> dict[str, Any]:
    """Register every device's virtual patient (profile from the fleet's scenario and
    the patient's seed) and assign the device to it from the fleet's start; return
    ``{"registered": n, "assigned": n, "busy": [device ids on another patient]}``."""
    from host.services.patients import register_virtual

    scenario = fleet.scenario()
    ts_ms = fleet.clock.start_epoch_ms
    done: dict[str, Any] = {"registered": 0, "assigned": 0, "busy": []}
    with Store(store_path) as store:
        for device_id, patient_id, seed in fleet.patients():
            got = register_virtual(store, device_id, patient_id, scenario, seed, ts_ms=ts_ms,
                                   actor=actor)
            done["registered"] += 1
            if got is None:
                done["busy"].append(device_id)
            else:
                done["assigned"] += 1
    return done


@dataclass
class Verdict:
    """What a run found: every failure as one short phrase."""

    failures: list[str] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)
    ingest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, what: str, exc: BaseException | None = None) -> None:
        if exc is not None:
            log.debug("demo: %s", what, exc_info=exc)
            detail = " ".join(str(exc).split()) or "no detail"
            what = f"{what}: {type(exc).__name__}: {detail}"
        self.failures.append(what)

    def line(self) -> str:
        return "demo: OK, nothing lost" if self.ok else "demo: FAILED: " + "; ".join(self.failures)


def _check_seconds(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


class Demo:
    """A demo ready to run: checked, folders made, nothing started (module docstring)."""

    def __init__(
        self,
        *,
        devices: int,
        duration_s: float | None,
        db_path: Path,
        speed: float = 1.0,
        seed: int = 0,
        broker_kind: str = "auto",
        sample_rate_hz: int = 250,
        scenario: str | None = None,
        sensor: str = "direct",
        faults: str = "",
        vitals: str = "auto",
    ) -> None:
        _check_seconds("duration", duration_s)
        _check_seconds("speed", speed)
        self.db_path = Path(db_path)
        self.duration_s = duration_s
        params = FleetParams(n_devices=devices, sample_rate_hz=sample_rate_hz, speed=speed,
                             seed=seed, scenario=scenario, sensor=sensor, faults=faults,
                             vitals=vitals)
        check_fleet_spec(params)  # a bad scenario or fault spec leaves no store behind
        with Store(self.db_path) as store:  # create it, or StoreError naming the path
            ids = device_ids(params.id_prefix, params.n_devices)
            self._passwords = accounts.provision(store, ids, accounts.Role.DEVICE,
                                                 actor=default_actor())
            self._incarnations = accounts.incarnations(store, ids)
            self._ingest_password = accounts.provision(
                store, [INGEST_ACCOUNT], accounts.Role.HOST,
                actor=default_actor())[INGEST_ACCOUNT]
            operator_password = accounts.provision(
                store, [OPERATOR_ACCOUNT], accounts.Role.OPERATOR,
                actor=default_actor())[OPERATOR_ACCOUNT]
        broker_dir, devices_dir = demo_dirs(self.db_path)
        for folder in (broker_dir, devices_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"cannot create {folder}: {exc.strerror or exc}") from None
        #: The operator's password, in a file only this user can read (never printed).
        self.operator_password_file = broker_dir.parent / "operator.pw"
        _write_secret(self.operator_password_file, operator_password)
        self.broker = Broker(broker_kind, data_dir=broker_dir,  # picks its port, not started
                             accounts=registry_accounts(self.db_path))
        # The fleet is built (scenario, faults, device state files) before the broker
        # starts: a bad spec is refused with nothing running.  Links connect on the
        # first step.
        self.fleet = Fleet(params, self.broker.host, self.broker.port, state_dir=devices_dir,
                           broker=self.broker, passwords=self._passwords,
                           incarnations=self._incarnations)
        self.patients = register_patients(self.db_path, self.fleet, actor=default_actor())

    def run(self, out: TextIO | None = None, *, as_json: bool = False) -> int:
        """Run until the duration has passed (or Ctrl-C); print the summary; 0 if all passed."""
        out = out or sys.stdout
        text = None if as_json else out
        verdict = Verdict()
        broker = self.broker
        try:
            broker.start()
        except (RuntimeError, OSError) as exc:
            verdict.fail("the broker did not start", exc)
            return self._report(verdict, out, as_json)
        if text:
            auth = "accounts enforced" if broker.secure else "NO authentication"
            if broker.kind.value == "embedded":
                auth += "; embedded broker: a trusted loopback only"
            print(f"demo: {broker.kind.value} broker on {broker.host}:{broker.port} "
                  f"({auth}); store {self.db_path}", file=text, flush=True)
            first = self.fleet.devices[0].cfg.device_id if self.fleet.devices else "ID"
            print(f"demo: from another terminal: medge fleet cmd {first} ping --port "
                  f"{broker.port} --username {OPERATOR_ACCOUNT} --password-file "
                  f"{self.operator_password_file} --db {self.db_path}", file=text, flush=True)
        ingest: Ingest | None = None
        stop = threading.Event()
        try:
            ingest = Ingest(self.db_path, broker.host, broker.port, INGEST_ACCOUNT,
                            username=INGEST_ACCOUNT, password=self._ingest_password)
            ingest.start()
            if ingest.wait_connected(INGEST_CONNECT_TIMEOUT_S):
                self._run_fleet(stop, verdict, text)
                self._finish(ingest, verdict)
            else:
                verdict.fail(f"ingest could not connect to the broker in "
                             f"{INGEST_CONNECT_TIMEOUT_S:g} s")
        except Exception as exc:  # anything else: still a verdict, never a traceback
            verdict.fail("the demo failed", exc)
        finally:
            stop.set()
            if ingest is not None:
                verdict.ingest = ingest.stats()
                ingest.stop()
            broker.stop()
        return self._report(verdict, out, as_json)

    def _run_fleet(self, stop: threading.Event, verdict: Verdict, text: TextIO | None) -> None:
        crashed: list[BaseException] = []

        def fleet_main() -> None:
            try:
                self.fleet.run(self.duration_s, stop)
            except BaseException as exc:  # recorded: the verdict fails
                crashed.append(exc)
                stop.set()

        runner = threading.Thread(target=fleet_main, name="fleet", daemon=True)
        runner.start()
        try:
            if text is not None:
                run_monitor(self.db_path, stop=stop, until=runner, out=text)
            else:
                while runner.is_alive() and not stop.is_set():
                    runner.join(0.2)
        except KeyboardInterrupt:
            if text is not None:
                print("demo: interrupted, shutting down", file=text)
        except Exception as exc:
            verdict.fail("the monitor failed", exc)
        stop.set()
        runner.join()
        for exc in crashed:
            verdict.fail("the fleet thread failed", exc)

    def _finish(self, ingest: Ingest, verdict: Verdict) -> None:
        fleet = self.fleet
        try:
            if not fleet.shutdown(timeout_s=DRAIN_TIMEOUT_S):
                verdict.fail("some device outboxes did not drain")
        except Exception as exc:
            verdict.fail("the device shutdown failed", exc)
        if not self.broker.running:
            verdict.fail("the broker is not running at the end of the run")
        last_seqs = fleet.last_seqs()
        missing = wait_stored(self.db_path, last_seqs, timeout_s=DRAIN_TIMEOUT_S)
        lost_total = 0
        with Store(self.db_path, readonly=True) as store:
            for device in fleet.devices:
                device_id = device.cfg.device_id
                first, last = fleet.first_seqs[device_id], last_seqs[device_id]
                stored = sum(first <= s <= last for s in store.seqs(device_id))
                lost = (last - first + 1) - stored
                lost_total += lost
                verdict.devices.append({
                    "device_id": device_id, "first_seq": first, "last_seq": last,
                    "stored": stored, "missing": lost,
                    "vitals": store.vitals_count(device_id),
                    "outbox_dropped": device.outbox.dropped,
                })
        if lost_total or missing:
            short = sum(1 for d in verdict.devices if d["missing"]) or len(missing)
            verdict.fail(f"{lost_total or sum(missing.values())} messages not stored "
                         f"(from {short} of {len(verdict.devices)} devices)")
        stats = ingest.stats()
        rejected = sum(stats["rejected"].values())
        if rejected:
            verdict.fail(f"ingest rejected {rejected} messages ({stats['rejected']})")
        if stats["errors"]:
            verdict.fail(f"ingest failed to store {stats['errors']} messages")

    def _report(self, verdict: Verdict, out: TextIO, as_json: bool) -> int:
        if as_json:
            doc = {
                "ok": verdict.ok, "failures": verdict.failures, "store": str(self.db_path),
                "broker": {"kind": self.broker.kind.value, "host": self.broker.host,
                           "port": self.broker.port},
                "devices": verdict.devices, "ingest": verdict.ingest,
                "patients": self.patients,
            }
            print(json.dumps(doc, indent=2), file=out, flush=True)
            return 0 if verdict.ok else 1
        for d in verdict.devices:
            print(f"demo: {d['device_id']}: seq {d['first_seq']}..{d['last_seq']}, "
                  f"{d['stored']} messages stored, {d['missing']} missing, "
                  f"{d['vitals']} vitals in store, outbox dropped {d['outbox_dropped']}",
                  file=out)
        p = self.patients
        print(f"demo: {p['assigned']} devices assigned to their virtual patients"
              + (f" ({len(p['busy'])} on another patient: {', '.join(p['busy'])})"
                 if p["busy"] else ""), file=out)
        if verdict.ingest:
            stats = verdict.ingest
            print(f"demo: ingest stored {stats['stored']}, duplicates {stats['duplicates']}, "
                  f"rejected {stats['rejected'] or 'none'}", file=out)
        print(verdict.line(), file=out, flush=True)
        return 0 if verdict.ok else 1


def run_demo(*, out: TextIO | None = None, as_json: bool = False, **options: Any) -> int:
    """Check, then run (the two phases above); ``options`` are :class:`Demo`'s."""
    return Demo(**options).run(out, as_json=as_json)

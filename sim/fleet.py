"""A fleet of virtual devices, each running the real firmware loop in-process.

Every virtual device is a :class:`firmware.device.Device` (the code a board
runs) with its own MQTT connection (paho: ``firmware.net.links.paho.PahoLink``
with its own network thread, or above ``POLLED_LINK_ABOVE`` devices
``sim.netlink.PolledPahoLink`` driven from the fleet loop), its own
persistent state file and its own patient.  One loop advances a shared
:class:`sim.clock.SimClock` and steps every device; ``speed`` > 1 runs faster than real time.

Every device is a :class:`sim.devices.SimDevice`, built one way: a patient
of the scenario ``FleetParams.scenario``, seeded per device from the fleet
seed (:func:`patient_seeds`, :func:`sim.patient.patient_factory`), behind the
sensor path ``FleetParams.sensor`` (``direct``, ``ads1292``, ``ads1115``:
``sim.devices.make_sensor``), with faults from ``FleetParams.faults``
(``sim.faults``) applied on simulated time.  The scenario is a bundled name or
a path (``medge sim`` and ``medge demo`` default to ``stable``:
:class:`sim.patient.VirtualPatient`)
or the built-in ``ecgsyn`` (:class:`sim.patient.EcgsynPatient`: an ECGSYN ECG
alone, a per-patient heart rate drawn from the seed).  ``scenario=None`` (the
default of ``FleetParams``) is ``ecgsyn`` with the direct sensor path and no
faults; name a scenario (``"ecgsyn"`` included) for the emulated sensors or faults.
Scenario patients also bring their SpO2, pulse, respiration, temperature and cuff
readings to the device's :class:`firmware.vitals.monitor.VitalSigns` through
emulated parts (``sim.devices.VitalsFeed``), on the first
``VITALS_AUTO_MAX_DEVICES`` devices (100), on every one, or on the first N
(``FleetParams.vitals``).

Each device's ``patient_id`` is ``patient-NNNN``; :meth:`Fleet.patients` lists
them with their seeds and the scenario they play, for the host to register as
virtual patients (``host.services.demo.register_patients``).

Determinism: with ``start_epoch_ms`` fixed, the same parameters and seed give
the same messages, byte for byte (the clock only moves with the loop, and a
step covers a fixed amount of simulated time whatever the wall clock does).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from firmware.device import Device, DeviceConfig
from firmware.net.links.paho import PahoLink
from sim.choices import MAX_DEVICES, SENSORS
from sim.clock import SimClock
from sim.patient import ECGSYN_SCENARIO

log = logging.getLogger(__name__)

LinkFactory = Callable[[str], Any]

#: ``vitals="auto"`` gives the vital-sign sensors to at most this many devices (the
#: first ones): 500 devices with them all fell behind real time (0.50x, bench_fleet,
#: direct path; 1.00x ECG only); ``vitals="all"`` gives them to every device.
VITALS_AUTO_MAX_DEVICES = 100

#: Above this many devices the default link is ``sim.netlink.PolledPahoLink``
#: (no thread per device: paho's threads use select(), limited to 1024 fds).
POLLED_LINK_ABOVE = 200


@dataclass(frozen=True)
class FleetParams:
    n_devices: int
    sample_rate_hz: int
    report_period_ms: int = 1000
    speed: float = 1.0
    seed: int = 0
    tick_wall_s: float = 0.05
    id_prefix: str = "sim"
    scenario: str | None = None  # a sim/scenarios name, a path or "ecgsyn"; None: "ecgsyn"
    sensor: str = "direct"  # with a scenario: direct | ads1292 | ads1115
    faults: str = ""  # sim.faults spec
    start_epoch_ms: int | None = None  # None: the wall clock at start
    max_step_ms: int = 250  # a loop tick longer than this is split into steps
    track: bool = False  # keep a sim.devices.Ledger per device (tests)
    link: str = "auto"  # paho (a thread per device) | polled (sim.netlink) | auto
    # Vital signs beside the ECG (sim.devices.VitalsFeed) on how many devices: "auto"
    # (the first VITALS_AUTO_MAX_DEVICES of a scenario whose patients have them; none for
    # ECGSYN), "none", "all", or a count N (the first N: the others are ECG only).
    vitals: str = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.n_devices <= MAX_DEVICES:
            raise ValueError(f"n_devices must be in 1..{MAX_DEVICES}, got {self.n_devices}")
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if self.tick_wall_s <= 0:
            raise ValueError("tick_wall_s must be > 0")
        if self.max_step_ms < 1:
            raise ValueError("max_step_ms must be >= 1")
        if self.link not in ("auto", "paho", "polled"):
            raise ValueError(f"link must be auto, paho or polled, got {self.link!r}")
        self.vitals_devices()  # ValueError on a bad value
        if self.sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {SENSORS}, got {self.sensor!r}")
        # scenario=None: ECGSYN patients, straight in.
        if self.sensor != "direct" and self.scenario is None:
            raise ValueError(f"the {self.sensor} sensor path needs a named scenario "
                             f"(FleetParams.scenario; {ECGSYN_SCENARIO!r} for ECGSYN patients)")
        if self.faults and self.scenario is None:
            raise ValueError("faults need a named scenario (FleetParams.scenario; "
                             f"{ECGSYN_SCENARIO!r} for ECGSYN patients)")

    def vitals_devices(self) -> int:
        """How many devices (the first ones) get the vital-sign sensors."""
        v = self.vitals
        if v in ("auto", "all"):
            if v == "all" and self.scenario_name == ECGSYN_SCENARIO:
                raise ValueError("vitals need a scenario patient (ECGSYN patients are ECG only)")
            if self.scenario_name == ECGSYN_SCENARIO:
                return 0
            return self.n_devices if v == "all" else min(self.n_devices,
                                                         VITALS_AUTO_MAX_DEVICES)
        if v == "none":
            return 0
        if not (isinstance(v, str) and v.isdigit()):
            raise ValueError(f"vitals must be auto, all, none or a device count, got {v!r}")
        if int(v) and self.scenario_name == ECGSYN_SCENARIO:
            raise ValueError("vitals need a scenario patient (ECGSYN patients are ECG only)")
        return min(int(v), self.n_devices)

    @property
    def scenario_name(self) -> str:
        """The scenario the patients play (``None`` is ``ecgsyn``)."""
        return ECGSYN_SCENARIO if self.scenario is None else self.scenario


def check_fleet_spec(params: FleetParams) -> None:
    """Load the scenario and parse the faults as :class:`sim.fleet.Fleet` will, device
    numbers included (``ValueError``), without touching a file: a bad spec is refused
    before a store, a folder or a broker exists (``medge demo`` and ``medge sim``)."""
    if params.sensor != "direct" and params.sample_rate_hz != 250:
        raise ValueError(f"the {params.sensor} sensor path runs at 250 Hz (--rate 250) "
                         "or use --sensor direct")
    if params.scenario is None:
        return
    from sim.faults import parse_faults
    from sim.scenario import load_scenario

    load_scenario(params.scenario)
    for position, fault in enumerate(parse_faults(params.faults)):
        if fault.kind != "outage":  # as sim.faults.FaultInjector selects them
            fault.devices(params.n_devices, params.seed, position)


def device_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i + 1:04d}" for i in range(n)]


def patient_seeds(seed: int, n: int) -> list[int]:
    """Per-device patient seeds drawn from the fleet seed (non-negative ints)."""
    return [int(s.generate_state(1, np.uint32)[0])
            for s in np.random.SeedSequence([seed, 0x70617469]).spawn(n)]  # "pati"


def _login(passwords: dict[str, str] | None, device_id: str) -> dict[str, Any]:
    """A device's account for its link: its id and its password (none: anonymous)."""
    if passwords is None:
        return {}
    return {"username": device_id, "password": passwords[device_id]}


class Fleet:
    """``link_factory(device_id)`` makes each device's MQTT link (default: a
    ``PahoLink`` to ``broker_host:broker_port``, logging in as ``device_id`` with
    ``passwords[device_id]`` when ``passwords`` is given); ``incarnations``: each
    device's provisioned incarnation (sent in its messages); ``broker`` (a
    ``host.broker.launch.Broker``) is needed only for an ``outage`` fault."""

    def __init__(
        self,
        params: FleetParams,
        broker_host: str,
        broker_port: int,
        state_dir: str | Path,
        *,
        broker: Any = None,
        link_factory: LinkFactory | None = None,
        passwords: dict[str, str] | None = None,
        incarnations: dict[str, str] | None = None,
    ) -> None:
        self.params = params
        self.incarnations = dict(incarnations or {})
        self.clock = SimClock(params.start_epoch_ms)
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        if link_factory is None:
            polled = params.link == "polled" or (
                params.link == "auto" and params.n_devices > POLLED_LINK_ABOVE)
            if polled:
                from sim.netlink import PolledPahoLink

                def link_factory(device_id: str) -> Any:
                    return PolledPahoLink(broker_host, broker_port, client_id=device_id,
                                          **_login(passwords, device_id))
            else:
                def link_factory(device_id: str) -> Any:
                    return PahoLink(broker_host, broker_port, client_id=device_id,
                                    **_login(passwords, device_id))
        self.sims: list[Any] = []  # sim.devices.SimDevice, one per device
        self.heart_rates_bpm: dict[str, float] = {}
        self.injector = None
        self._build(state_dir, link_factory, broker)
        # The first seq each device uses in this run (earlier runs used lower ones).
        self.first_seqs = {d.cfg.device_id: d.seq.peek() for d in self.devices}

    def _config(self, i: int, device_id: str) -> DeviceConfig:
        return DeviceConfig(
            device_id,
            self.params.sample_rate_hz,
            patient_id=f"patient-{i + 1:04d}",
            report_period_ms=self.params.report_period_ms,
            incarnation=self.incarnations.get(device_id),
        )

    def _build(self, state_dir: Path, link_factory: LinkFactory, broker: Any) -> None:
        from sim.devices import DeviceClock, SimDevice, VitalsFeed, make_sensor
        from sim.faults import FaultInjector, FaultyLink, parse_faults
        from sim.patient import patient_factory

        params = self.params
        faults = parse_faults(params.faults)
        make_patient = patient_factory(params.scenario_name)
        wrap = bool(faults) or params.track
        seeds = patient_seeds(params.seed, params.n_devices)
        n_vitals = params.vitals_devices()
        for i, device_id in enumerate(device_ids(params.id_prefix, params.n_devices)):
            patient = make_patient(seeds[i], params.sample_rate_hz)
            feed = (VitalsFeed(patient, self.clock, emulated=params.sensor != "direct")
                    if i < n_vitals else None)
            sensor = make_sensor(params.sensor, feed or patient, self.clock)
            link = link_factory(device_id)
            if wrap:
                link = FaultyLink(link, self.clock, seed=seeds[i], track=params.track)
            sim = SimDevice(self._config(i, device_id), patient, sensor,
                            DeviceClock(self.clock), link, state_dir / f"{device_id}.json",
                            track=params.track, feed=feed)
            self.sims.append(sim)
            self.heart_rates_bpm[device_id] = patient.heart_rate_bpm(0.0)
        if faults:
            self.injector = FaultInjector(faults, self.sims, seed=params.seed, broker=broker)

    @property
    def devices(self) -> list[Device]:
        """The firmware ``Device`` of every simulated device (the current boot)."""
        return [s.device for s in self.sims]

    def step(self, virtual_ms: int) -> None:
        """Advance simulated time by ``virtual_ms``, in steps of at most ``max_step_ms``."""
        max_step = self.params.max_step_ms
        while virtual_ms > 0:
            ms = min(virtual_ms, max_step)
            virtual_ms -= ms
            self.clock.advance(ms)
            if self.injector is not None:
                self.injector.tick(self.clock.elapsed_ms)
            for sim in self.sims:
                if sim.powered:
                    sim.device.step()

    def run(self, duration_s: float | None, stop: threading.Event) -> None:
        """Advance simulated time until ``duration_s`` of it has passed or ``stop`` is set."""
        tick_wall = self.params.tick_wall_s
        tick_virtual_ms = max(1, round(tick_wall * 1000 * self.params.speed))
        end_ms = None if duration_s is None else round(duration_s * 1000)
        wall0 = time.monotonic()
        ticks = 0
        while not stop.is_set():
            if end_ms is not None and self.clock.elapsed_ms >= end_ms:
                break
            step = tick_virtual_ms
            if end_ms is not None:
                step = min(step, end_ms - self.clock.elapsed_ms)
            self.step(step)
            ticks += 1
            if self.injector is not None and self.injector.stalled:
                self.injector.stalled = False  # the broker took wall time: don't rush
                wall0 = time.monotonic() - ticks * tick_wall
            delay = wall0 + ticks * tick_wall - time.monotonic()
            if delay > 0:
                stop.wait(delay)

    def power_on_all(self) -> None:
        """Bring back every device whose power is still off (end of a run)."""
        for sim in self.sims:
            if not sim.powered:
                sim.power_on()

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Stop every device cleanly; return True if every outbox drained.

        Faults still active end first (partitions heal, power returns)."""
        if self.injector is not None:
            self.injector.finish(self.clock.elapsed_ms)
        self.power_on_all()
        devices = self.devices
        for device in devices:
            device.stop()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for device in devices:
                device.service()
            if all(d.drained() for d in devices):
                break
            time.sleep(0.02)
        drained = all(d.drained() for d in devices)
        for device in devices:
            if not device.drained():
                log.warning(
                    "%s: %d messages still in the outbox at shutdown",
                    device.cfg.device_id,
                    len(device.outbox),
                )
            device.link.disconnect()
        return drained

    def patients(self) -> list[tuple[str, str, int]]:
        """(device_id, patient_id, patient seed) of every device."""
        return [(s.device_id, s.cfg.patient_id, s.patient.seed) for s in self.sims]

    def scenario(self) -> Any:
        """The :class:`sim.scenario.Scenario` the patients' profiles are drawn from:
        the fleet's; for ECGSYN patients (no scenario) ``stable``'s, named ``ecgsyn``."""
        import dataclasses

        from sim.scenario import load_scenario

        name = self.params.scenario_name
        if name == ECGSYN_SCENARIO:
            return dataclasses.replace(load_scenario("stable"), name=ECGSYN_SCENARIO)
        return load_scenario(self.params.scenario)

    def last_seqs(self) -> dict[str, int]:
        """The last sequence number each device handed out."""
        return {d.cfg.device_id: d.seq.peek() - 1 for d in self.devices}

    def write_truth(self, truth_dir: str | Path) -> list[Path]:
        """Write every patient's ground truth (``sim.truth``) as ``<dir>/<device_id>.*``."""
        out: list[Path] = []
        for sim in self.sims:
            out.extend(sim.patient.truth.write(Path(truth_dir) / sim.device_id))
        return out

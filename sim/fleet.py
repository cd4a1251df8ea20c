"""A fleet of virtual devices, each running the real firmware loop in-process.

Every virtual device is a :class:`firmware.device.Device` (the code a board
runs) with its own MQTT connection (paho), its own persistent state file and
its own patient: a synthetic ECG from ECGSYN with a per-patient heart rate
drawn from the seed.  One loop advances a shared :class:`sim.clock.SimClock`
and steps every device; ``speed`` > 1 runs faster than real time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware.device import Device, DeviceConfig
from firmware.links.paho import PahoLink
from firmware.state import FileState
from sim.clock import SimClock
from sim.ecgsyn import EcgStream, EcgsynParams
from sim.sources import SyntheticEcgSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetParams:
    n_devices: int
    sample_rate_hz: int
    report_period_ms: int = 1000
    speed: float = 1.0
    seed: int = 0
    tick_wall_s: float = 0.05
    id_prefix: str = "sim"

    def __post_init__(self) -> None:
        if not 1 <= self.n_devices <= 10_000:
            raise ValueError(f"n_devices must be in 1..10000, got {self.n_devices}")
        if self.speed <= 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")
        if self.tick_wall_s <= 0:
            raise ValueError("tick_wall_s must be > 0")


def device_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i + 1:04d}" for i in range(n)]


class Fleet:
    def __init__(
        self, params: FleetParams, broker_host: str, broker_port: int, state_dir: str | Path
    ) -> None:
        self.params = params
        self.clock = SimClock()
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        seeds = np.random.SeedSequence(params.seed).spawn(params.n_devices)
        self.devices: list[Device] = []
        self.heart_rates_bpm: dict[str, float] = {}
        for i, device_id in enumerate(device_ids(params.id_prefix, params.n_devices)):
            rng = np.random.default_rng(seeds[i])
            hr_mean = float(rng.uniform(55.0, 105.0))
            ecg = EcgsynParams(sample_rate_hz=params.sample_rate_hz, heart_rate_mean_bpm=hr_mean)
            source = SyntheticEcgSource(EcgStream(ecg, rng), params.sample_rate_hz, self.clock)
            cfg = DeviceConfig(
                device_id,
                params.sample_rate_hz,
                patient_id=f"patient-{i + 1:04d}",
                report_period_ms=params.report_period_ms,
            )
            link = PahoLink(broker_host, broker_port, client_id=device_id)
            state = FileState(str(state_dir / f"{device_id}.json"))
            self.devices.append(Device(cfg, source, link, self.clock, state))
            self.heart_rates_bpm[device_id] = hr_mean
        # The first seq each device uses in this run (earlier runs used lower ones).
        self.first_seqs = {d.cfg.device_id: d.seq.peek() for d in self.devices}

    def step(self, virtual_ms: int) -> None:
        self.clock.advance(virtual_ms)
        for device in self.devices:
            device.step()

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
            delay = wall0 + ticks * tick_wall - time.monotonic()
            if delay > 0:
                stop.wait(delay)

    def shutdown(self, timeout_s: float = 10.0) -> bool:
        """Stop every device cleanly; return True if every outbox drained."""
        for device in self.devices:
            device.stop()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for device in self.devices:
                device.service()
            if all(d.drained() for d in self.devices):
                break
            time.sleep(0.02)
        drained = all(d.drained() for d in self.devices)
        for device in self.devices:
            if not device.drained():
                log.warning(
                    "%s: %d messages still in the outbox at shutdown",
                    device.cfg.device_id,
                    len(device.outbox),
                )
            device.link.disconnect()
        return drained

    def last_seqs(self) -> dict[str, int]:
        """The last sequence number each device handed out."""
        return {d.cfg.device_id: d.seq.peek() - 1 for d in self.devices}

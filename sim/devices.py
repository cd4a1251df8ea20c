"""One simulated bedside device: a virtual patient, a sensor path, the real firmware loop.

:class:`SimDevice` assembles, for one device of a fleet (``sim.fleet``):

- a patient of the fleet's scenario and a per-device seed
  (:class:`sim.patient.VirtualPatient`, or :class:`sim.patient.EcgsynPatient`
  for the built-in ``ecgsyn``) that streams the ECG in ADC counts
  (``firmware.params.ECG_COUNTS_PER_MV``, int16);
- a *sensor path* that brings those counts to the device (``SENSORS``):

  ``direct``
      :class:`PatientEcgSource`: the patient's counts copied straight into the
      device's buffer, paced by the simulation clock (cheap: one array slice
      per read, for big fleets);
  ``ads1292``, ``ads1115``
      the counts on an emulated part, bus, the real driver and its firmware
      source: :mod:`sim.frontend` (the one wiring, which record replay uses
      too).  The ADS1292R path gives the patient's count back exactly
      (tests/test_sim_fleet.py checks bit-exactness); the ADS1115 path (behind
      an AD8232-like amplifier, 250 SPS) is exact within the ADS1115's +-20 mV
      electrode range (+-4096 counts) and saturates beyond it, as the real
      part would;

- a :class:`DeviceClock`: the device's own clock, the shared simulation clock
  scaled by a drift in ppm (``set_ppm``); the sensor is paced by the true
  clock (its crystal is taken as exact), so drift shows in the timestamps;
- the MQTT link made by the fleet (a ``PahoLink``, possibly inside a
  :class:`sim.faults.FaultyLink`) and a ``FileState`` on disk;
- the :class:`firmware.device.Device` itself, made with no beat model.

Lifecycle faults: :meth:`SimDevice.reboot` (clean: ``stop()``, a bounded
drain, disconnect, then a new ``Device`` on the same state file: seq
continues without a gap, boot_id + 1) and :meth:`SimDevice.power_loss`
(the ``Device`` is dropped without ``stop()``, the TCP connection is cut so
the broker publishes the last will, the RAM outbox is gone; power returns
with :meth:`SimDevice.power_on`: seq skips the rest of its reserved block).

With ``track=True`` the device keeps a :class:`Ledger`: every vitals seq it
produced, and for each message lost with a reboot or power loss whether it
had never reached the socket (certainly lost) or had been handed to the
socket without a PUBACK (the broker may or may not have it).
"""

from __future__ import annotations

import json
import logging
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from firmware.device import Device, DeviceConfig
from firmware.hw.state import FileState
from firmware.params import ECG_ADC_MAX_COUNT
from sim.clock import SimClock
from sim.frontend import ECG_FRONT_ENDS, ecg_front_end
from sim.patient import VirtualPatient

log = logging.getLogger(__name__)

__all__ = ["SENSORS", "DeviceClock", "Ledger", "PatientEcgSource", "SimDevice", "make_sensor",
           "patient_counts"]

from sim.choices import SENSORS  # noqa: E402  (the names; ECG_FRONT_ENDS builds them)

_TICKS_MASK = (1 << 30) - 1


class DeviceClock:
    """A device's own clock: the true simulation clock, running fast or slow by ``ppm``.

    Same surface as :class:`sim.clock.SimClock` (``epoch_ms``, ``ticks_ms``,
    ``elapsed_ms``).  Changing the drift keeps the clock continuous."""

    def __init__(self, base: SimClock, ppm: float = 0.0) -> None:
        self.base = base
        self._anchor_true = base.elapsed_ms
        self._anchor_dev = base.elapsed_ms
        self._ppm = 0
        self.set_ppm(ppm)

    @property
    def ppm(self) -> float:
        return self._ppm

    def set_ppm(self, ppm: float) -> None:
        if not -100_000 <= ppm <= 100_000:
            raise ValueError(f"drift must be within +-100000 ppm, got {ppm}")
        self._anchor_dev = self.elapsed_ms
        self._anchor_true = self.base.elapsed_ms
        self._ppm = ppm

    @property
    def elapsed_ms(self) -> int:
        dt = self.base.elapsed_ms - self._anchor_true
        return self._anchor_dev + dt + int(dt * self._ppm // 1_000_000)

    def epoch_ms(self) -> int:
        return self.base.start_epoch_ms + self.elapsed_ms

    def ticks_ms(self) -> int:
        return self.elapsed_ms & _TICKS_MASK


class PatientEcgSource:
    """The patient's ECG counts straight to the device, paced by ``clock``.

    ``read_samples`` returns only the samples whose time has come, like a
    driver draining a FIFO.  Fault hooks: ``lead_off`` (samples read at the
    positive rail, as an input pulled up by the lead-off current) and
    ``disconnected`` (samples that come due are lost)."""

    def __init__(self, patient: VirtualPatient, clock: SimClock, chunk_s: float = 2.0) -> None:
        self.patient = patient
        self.clock = clock
        self.fs = patient.fs
        self._t0_ms = clock.elapsed_ms
        self._chunk = max(1, round(chunk_s * patient.fs))
        self._pending = array("h")
        self._pos = 0
        self.produced = 0  # samples that came due (read or lost)
        self.lost = 0
        self.lead_off = False
        self.disconnected = False
        self._rail = array("h", [ECG_ADC_MAX_COUNT]) * 64

    def _due(self) -> int:
        return (self.clock.elapsed_ms - self._t0_ms) * self.fs // 1000 - self.produced

    def read_samples(self, buf: Any, max_count: int) -> int:
        n = min(self._due(), max_count)
        if self.disconnected:
            self.skip(n)
            return 0
        done = 0
        while done < n:
            if self._pos >= len(self._pending):
                self._pending = array("h", self.patient.next_chunk(self._chunk).ecg.tobytes())
                self._pos = 0
            take = min(n - done, len(self._pending) - self._pos)
            buf[done : done + take] = self._pending[self._pos : self._pos + take]
            self._pos += take
            done += take
        if self.lead_off and done:
            buf[0:done] = self._rail[0:done]
        self.produced += done
        return done

    def skip(self, n: int) -> None:
        """Let ``n`` samples pass unread (lost)."""
        while n > 0:
            if self._pos >= len(self._pending):
                self._pending = array("h", self.patient.next_chunk(self._chunk).ecg.tobytes())
                self._pos = 0
            take = min(n, len(self._pending) - self._pos)
            self._pos += take
            self.produced += take
            self.lost += take
            n -= take

    def resync(self) -> None:
        """Drop every sample due now (the device was down while they came)."""
        self.skip(max(0, self._due()))

    def set_lead_off(self, on: bool) -> None:
        self.lead_off = on

    def set_disconnected(self, on: bool) -> None:
        self.disconnected = on


def patient_counts(patient: VirtualPatient, chunk_s: float = 2.0) -> Iterator[Any]:
    """The patient's ECG counts, chunk after chunk, for an emulated front end."""
    n = max(1, round(chunk_s * patient.fs))
    while True:
        yield patient.next_chunk(n).ecg


def make_sensor(kind: str, patient: VirtualPatient, clock: SimClock) -> Any:
    """The sensor path ``kind`` (one of ``SENSORS``) fed by ``patient``."""
    if kind == "direct":
        return PatientEcgSource(patient, clock)
    if kind in ECG_FRONT_ENDS:
        return ecg_front_end(kind, patient_counts(patient), clock, patient.fs)
    raise ValueError(f"sensor must be one of {SENSORS}, got {kind!r}")


def _message_seq(payload: bytes) -> int:
    return int(json.loads(payload)["seq"])


@dataclass
class Ledger:
    """What a tracked device produced and what it lost (see the module docstring)."""

    vitals: list[int] = field(default_factory=list)  # every vitals seq produced, in order
    lost_unsent: set[int] = field(default_factory=set)  # never reached the socket: not stored
    lost_unacked: set[int] = field(default_factory=set)  # reached the socket, no PUBACK: maybe
    boots: list[int] = field(default_factory=list)  # boot_id of each boot
    events: list[tuple[int, str]] = field(default_factory=list)  # (true ms, what)


class SimDevice:
    """One simulated device (module docstring).  ``link`` is made once and reused
    across reboots (the board's network interface); ``config`` is the
    firmware's :class:`firmware.device.DeviceConfig`."""

    def __init__(self, config: DeviceConfig, patient: VirtualPatient, sensor: Any,
                 clock: DeviceClock, link: Any, state_path: str | Path,
                 track: bool = False) -> None:
        self.cfg = config
        self.patient = patient
        self.sensor = sensor
        self.clock = clock
        self.link = link
        self.state = FileState(str(state_path))
        self.track = track
        self.ledger = Ledger()
        self.powered = True
        self.device = self._boot()

    @property
    def device_id(self) -> str:
        return self.cfg.device_id

    def _boot(self) -> Device:
        device = Device(self.cfg, self.sensor, self.link, self.clock, self.state)
        if self.track:
            self.ledger.boots.append(device.boot_id)
            topic_vitals = device.topic_vitals
            vitals = self.ledger.vitals

            def record_vitals(topic: str, payload: bytes) -> None:
                if topic == topic_vitals:
                    vitals.append(_message_seq(payload))

            device.outbox.on_push = record_vitals
        return device

    def step(self) -> None:
        if self.powered:
            self.device.step()

    # -- lifecycle faults ------------------------------------------------------
    def _account_outbox(self, why: str) -> tuple[int, int]:
        """Record what is left in the outbox as lost; return (unsent, unacked) counts."""
        unsent = unacked = 0
        sent_seqs = getattr(self.link, "sent_seqs", None)
        for topic, payload, inflight in self.device.outbox.entries():
            if not topic.endswith("/vitals"):
                continue
            seq = _message_seq(payload)
            reached = inflight or (sent_seqs is not None and seq in sent_seqs)
            if reached:
                self.ledger.lost_unacked.add(seq)
                unacked += 1
            else:
                self.ledger.lost_unsent.add(seq)
                unsent += 1
        self.ledger.events.append((self.clock.base.elapsed_ms,
                                   f"{why}: {unsent} unsent, {unacked} unacknowledged lost"))
        return unsent, unacked

    def reboot(self, drain_wall_s: float = 2.0) -> None:
        """Clean reboot: stop, drain (bounded by ``drain_wall_s`` of wall time),
        disconnect, boot a new ``Device`` on the same state (no seq gap)."""
        if not self.powered:
            self.power_on()
            return
        dev = self.device
        dev.stop()
        deadline = time.monotonic() + drain_wall_s
        while not dev.drained() and self.link.connected() and time.monotonic() < deadline:
            dev.service()
            time.sleep(0.005)
        if not dev.drained():
            self._account_outbox("reboot")
        self.link.disconnect()
        self._restart_sensor()
        self.device = self._boot()
        log.info("%s: rebooted (boot %d)", self.device_id, self.device.boot_id)

    def power_loss(self) -> None:
        """Abrupt power loss: no stop(), no DISCONNECT; the RAM outbox is gone."""
        if not self.powered:
            return
        self._account_outbox("power loss")
        self.link.drop()  # no DISCONNECT: the broker publishes the will
        self.powered = False
        log.info("%s: power lost", self.device_id)

    def power_on(self) -> None:
        if self.powered:
            return
        self._restart_sensor()
        self.device = self._boot()
        self.powered = True
        log.info("%s: power back (boot %d)", self.device_id, self.device.boot_id)

    def _restart_sensor(self) -> None:
        resync = getattr(self.sensor, "resync", None)
        if resync is not None:
            resync()


LinkFactory = Callable[[str], Any]

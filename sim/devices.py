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
- the :class:`firmware.device.Device` itself, made with no beat model;
- optionally (``vitals``: a device config's ``vitals`` object, as
  :func:`firmware.vitals.monitor.vital_signs_from_config` reads it, e.g.
  :data:`DEFAULT_VITALS`) the multi-sensor vital signs on the same code a
  board runs: a :class:`VitalsFeed` taps the patient's stream (the very
  chunks the ECG path reads) and feeds an emulated MAX30102 (its red and IR
  light, as :mod:`sim.vitals_device`), TMP117 (the patient's temperature) on
  one emulated I2C bus, and an emulated NIBP module (:mod:`sim.nibp`) on a
  loopback UART that sends each cuff reading the patient's scenario makes
  (``[nibp] interval_s``); the real drivers read them at the config's rates.
  Only scenario patients (:class:`sim.patient.VirtualPatient`) have them:
  an ECGSYN patient is ECG only.  A reboot or power loss makes a new
  ``VitalSigns`` (its RAM state is gone) on the same parts.

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

__all__ = ["DEFAULT_VITALS", "SENSORS", "DeviceClock", "Ledger", "PatientEcgSource", "SimDevice",
           "VitalsFeed", "has_vitals", "make_sensor", "patient_counts"]

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


#: The simulated devices' sensors beside the ECG (a device config's ``vitals``):
#: MAX30102 at 100 SPS, TMP117 once a second, the NIBP module (readings when the
#: patient's scenario takes them).
DEFAULT_VITALS: dict[str, Any] = {
    "ppg": {"sample_rate_sps": 100, "led_current_ma": [10, 10], "adc_range_na": 4096},
    "temperature": {"period_ms": 1000, "averages": 8},
    "nibp": {},
}
_NA_PER_MA_PER_COUNT = 1.0 / 640.0  # sim.vitals_device: 10 mA LEDs, 4096 nA, 18 bits
_I2C_PPG, _I2C_TEMP = 0x57, 0x48


def has_vitals(patient: Any) -> bool:
    """Whether ``patient`` has the signals the vital-sign sensors need (a PPG)."""
    return hasattr(patient, "ppg") and hasattr(patient, "temperature_c")


class VitalsFeed:
    """The patient's stream, tapped for the sensors beside the ECG (module docstring).

    Stands in for the patient on the ECG path (``fs``, ``next_chunk``): every
    chunk the ECG reads leaves its red and IR light for the PPG (looked up by
    signal time; a time past the chunks read holds the last sample) and its
    completed cuff readings on the NIBP module's line.  ``emulated`` (the
    ``ads1292``/``ads1115`` sensor paths): the MAX30102 and the TMP117 are
    register-level parts on an emulated I2C bus read by the real drivers;
    otherwise (the ``direct`` path, for big fleets: a third of the CPU) the
    light counts and the temperature go straight to ``VitalSigns`` as the
    drivers would deliver them (at 10 mA and 4096 nA the MAX30102's 18-bit
    count is the patient's count, ``sim.vitals_device``)."""

    def __init__(self, patient: VirtualPatient, clock: SimClock,
                 spec: dict[str, Any] | None = None, *, emulated: bool = True) -> None:
        from sim.nibp import SimNibpModule

        if not has_vitals(patient):
            raise ValueError("the vital-sign sensors need a scenario patient (a PPG): "
                             "ECGSYN patients are ECG only")
        self.patient = patient
        self.clock = clock
        self.fs = patient.fs
        self.spec = DEFAULT_VITALS if spec is None else spec
        self.emulated = emulated
        self._start = 0  # absolute sample of _red[0]
        self._red, self._ir = array("l"), array("l")
        self.uart = _CuffLine(self)
        self.cuff = SimNibpModule(self.uart)
        self._readings: list[Any] = []  # cuff readings made ahead, sent at their time
        self.bus = None
        if emulated:
            from sim.bus import I2CBus
            from sim.parts.max30102 import MAX30102
            from sim.parts.tmp117 import TMP117

            self.bus = I2CBus()
            self.bus.attach(_I2C_PPG, MAX30102(clock, red=self._light(True),
                                               ir=self._light(False)))
            self.bus.attach(_I2C_TEMP, TMP117(clock, temperature=self.temperature_c))

    def temperature_c(self, t_s: float) -> float:
        return float(self.patient.temperature_c(t_s))

    def count(self, red: bool, t_s: float) -> int:
        """The light count at ``t_s`` s of signal time (module docstring)."""
        buf = self._red if red else self._ir
        if not buf:
            return 0
        return buf[min(max(int(t_s * self.fs) - self._start, 0), len(buf) - 1)]

    def _light(self, red: bool) -> Callable[[float], float]:
        count = self.count
        return lambda t_s: count(red, t_s) * _NA_PER_MA_PER_COUNT

    def next_chunk(self, n_samples: int) -> Any:
        chunk = self.patient.next_chunk(n_samples)
        keep = len(self._red) - n_samples  # the previous chunk stays for late reads
        if keep > 0:
            self._start += keep
            del self._red[:keep], self._ir[:keep]
        self._red.extend(chunk.ppg_red.tolist())
        self._ir.extend(chunk.ppg_ir.tolist())
        self._readings.extend(chunk.nibp)
        return chunk

    def send_due_readings(self) -> None:
        """Put on the line the cuff readings whose time has come."""
        now_s = self.clock.elapsed_ms / 1000
        while self._readings and self._readings[0].time_s <= now_s:
            self.cuff.send(self._readings.pop(0))

    def vital_signs(self) -> Any:
        """A new :class:`firmware.vitals.monitor.VitalSigns` on these sensors (a boot)."""
        from firmware.vitals.monitor import VitalSigns, vital_signs_from_config

        uart = self.uart if "nibp" in self.spec else None
        if self.emulated:
            return vital_signs_from_config(self.spec, self.fs, i2c=self.bus, uart=uart)
        from firmware.hw.drivers.nibp import NibpModule

        ppg = self.spec.get("ppg")
        temp = self.spec.get("temperature")
        return VitalSigns(
            self.fs,
            ppg=None if ppg is None else _DirectPpg(self, ppg.get("sample_rate_sps", 100)),
            thermometer=None if temp is None else _DirectThermometer(self),
            temp_period_ms=1000 if temp is None else temp.get("period_ms", 1000),
            nibp=None if uart is None else NibpModule(uart))


class _CuffLine:
    """The NIBP module's UART: a reading goes on the line when its time comes (the
    patient makes the chunks ahead of the clock)."""

    def __init__(self, feed: VitalsFeed) -> None:
        from sim.nibp import LoopbackUart

        self._line = LoopbackUart()
        self._feed = feed
        self.rx, self.tx = self._line.rx, self._line.tx

    def any(self) -> int:
        self._feed.send_due_readings()
        return self._line.any()

    def readinto(self, buf: Any, nbytes: int | None = None) -> int:
        return self._line.readinto(buf, nbytes)

    def write(self, data: bytes) -> int:
        return self._line.write(data)


class _DirectPpg:
    """The patient's light straight in at ``rate`` (``Max30102DualSource``'s surface)."""

    full_scale_count = (1 << 18) - 1
    overflows = 0
    errors = 0

    def __init__(self, feed: VitalsFeed, rate: int) -> None:
        self.feed = feed
        self.sample_rate_hz = rate
        self._next = feed.clock.elapsed_ms * rate // 1000  # samples before boot: gone

    def read_ppg(self, red: Any, ir: Any, max_count: int) -> int:
        rate, count = self.sample_rate_hz, self.feed.count
        n = min(self.feed.clock.elapsed_ms * rate // 1000 - self._next, max_count)
        top = self.full_scale_count
        for i in range(max(n, 0)):
            t_s = (self._next + i) / rate
            red[i] = min(count(True, t_s), top)
            ir[i] = min(count(False, t_s), top)
        self._next += max(n, 0)
        return max(n, 0)


class _DirectThermometer:
    """The patient's temperature straight in (the TMP117 driver's surface)."""

    def __init__(self, feed: VitalsFeed) -> None:
        self.feed = feed

    def read_temperature_mc(self) -> int:
        return round(self.feed.temperature_c(self.feed.clock.elapsed_ms / 1000) * 1000)


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
    firmware's :class:`firmware.device.DeviceConfig`; ``feed``, optional, the
    :class:`VitalsFeed` of the patient (the sensor must read through it)."""

    def __init__(self, config: DeviceConfig, patient: VirtualPatient, sensor: Any,
                 clock: DeviceClock, link: Any, state_path: str | Path,
                 track: bool = False, feed: VitalsFeed | None = None) -> None:
        self.cfg = config
        self.feed = feed
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
        vitals = None if self.feed is None else self.feed.vital_signs()
        device = Device(self.cfg, self.sensor, self.link, self.clock, self.state, vitals=vitals)
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

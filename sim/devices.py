"""One simulated bedside device: a virtual patient, a sensor path, the real firmware loop.

:class:`SimDevice` assembles, for one device of a fleet (``sim.fleet``):

- a :class:`sim.patient.VirtualPatient` (scenario + per-device seed) that
  streams the ECG in ADC counts (200 counts/mV, int16);
- a *sensor path* that brings those counts to the device (``SENSORS``):

  ``direct``
      :class:`PatientEcgSource`: the patient's counts copied straight into the
      device's buffer, paced by the simulation clock (cheap: one array slice
      per read, for big fleets);
  ``ads1292``
      the counts as electrode volts on channel 2 of an emulated ADS1292R
      (``sim.parts.ads1292``) on an emulated SPI bus, read by the real driver
      (``firmware.hw.drivers.ads1292``) through its DRDY interrupt into
      ``firmware.hw.sensors.Ads1292EcgSource``.  Gain 6, VREF 2.42 V: one count
      (5 uV) is ~104 ADC codes, and the source's ratio scaler brings back the
      patient's count exactly (tests/test_sim_fleet.py checks bit-exactness);
  ``ads1115``
      the counts through an AD8232-like amplifier (gain 100, output around
      1.65 V) into an emulated ADS1115 on an emulated I2C bus, continuous mode
      at 250 SPS, ALERT/RDY interrupt, ``firmware.hw.sensors.Ads1115EcgSource``.
      Exact within the ADS1115's +-20 mV electrode range (+-4096 counts);
      beyond it (a lead-off rail) it saturates, as the real part would;

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
from typing import Any, Callable

from firmware.device import ECG_ADC_MAX_COUNT, Device, DeviceConfig
from firmware.hw.state import FileState
from sim.bus import I2CBus, SPIBus
from sim.clock import SimClock
from sim.patient import VirtualPatient

log = logging.getLogger(__name__)

__all__ = ["SENSORS", "DeviceClock", "Ledger", "PatientEcgSource", "PatientFrontEnd",
           "SimDevice", "make_sensor"]

SENSORS = ("direct", "ads1292", "ads1115")
_COUNTS_TO_V = 1e-3 / 200  # 200 counts per mV at the electrodes
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


class _PatientVolts:
    """Iterator signal for an emulated part: the patient's next ECG count in volts
    (times an amplifier gain, plus an offset), one value per conversion."""

    def __init__(self, patient: VirtualPatient, gain: float = 1.0, offset_v: float = 0.0,
                 chunk_s: float = 2.0) -> None:
        self.patient = patient
        self._scale = _COUNTS_TO_V * gain
        self._offset = offset_v
        self._chunk = max(1, round(chunk_s * patient.fs))
        self._values: list[float] = []
        self._pos = 0
        self.counts: list[int] = []  # every count handed out (when recording)
        self.record = False
        self.rail: float | None = None  # fault hook: a lead-off rail instead of the patient

    def __iter__(self) -> _PatientVolts:
        return self

    def __next__(self) -> float:
        if self._pos >= len(self._values):
            counts = self.patient.next_chunk(self._chunk).ecg
            if self.record:
                self.counts.extend(counts.tolist())
            self._values = (counts.astype("f8") * self._scale + self._offset).tolist()
            self._pos = 0
        v = self._values[self._pos]
        self._pos += 1
        return v if self.rail is None else self.rail


@dataclass
class PatientFrontEnd:
    """An emulated part fed by the patient, the real driver and source on top.

    ``read_samples`` lets the part catch up with the clock (on a board the
    data-ready interrupt fired for every conversion) and drains the firmware
    source's ring.  An ``OSError`` from the driver inside the interrupt
    handler (an I2C NACK) is caught and counted, as MicroPython prints and
    drops an exception raised in a scheduled IRQ handler."""

    kind: str
    bus: Any
    part: Any
    driver: Any
    source: Any
    signal: _PatientVolts
    ready_pin: Any
    sensor_errors: int = 0
    disconnected: bool = False

    def __post_init__(self) -> None:
        on_ready = self.source._on_ready

        def guarded(pin: Any) -> None:
            try:
                on_ready(pin)
            except OSError:
                self.sensor_errors += 1

        self.ready_pin.irq(guarded, trigger=self.ready_pin.IRQ_FALLING)
        self._scratch = array("h", bytes(2 * 64))

    def read_samples(self, buf: Any, max_count: int) -> int:
        self.part.update()
        return self.source.read_samples(buf, max_count)

    def resync(self) -> None:
        self.part.update()
        while self.source.read_samples(self._scratch, 64):
            pass

    def set_lead_off(self, on: bool) -> None:
        if self.kind == "ads1292":
            self.part.set_lead_off(in2p=on, in2n=on)
        else:  # the AD8232's output goes to its positive rail with a lead off
            self.signal.rail = 3.3 if on else None

    def set_disconnected(self, on: bool) -> None:
        self.disconnected = on
        if self.kind == "ads1292":
            (self.bus.disconnect if on else self.bus.reconnect)(self.part)
        else:
            (self.bus.disconnect if on else self.bus.reconnect)(self.address)

    address = 0x48


def make_sensor(kind: str, patient: VirtualPatient, clock: SimClock) -> Any:
    """The sensor path ``kind`` (one of ``SENSORS``) fed by ``patient``."""
    if kind == "direct":
        return PatientEcgSource(patient, clock)
    if kind == "ads1292":
        from firmware.hw.drivers.ads1292 import ADS1292 as Driver
        from firmware.hw.sensors import Ads1292EcgSource
        from sim.parts.ads1292 import ADS1292

        signal = _PatientVolts(patient)
        part = ADS1292(clock, ch1=0.0, ch2=signal)
        spi = SPIBus()
        cs = spi.attach(part)
        driver = Driver(spi, cs, part.drdy, data_rate_sps=patient.fs, gain=(6, 6),
                        sleep=lambda ms: None)
        source = Ads1292EcgSource(driver, channel=2, use_irq=True)
        driver.start()
        return PatientFrontEnd(kind, spi, part, driver, source, signal, part.drdy)
    if kind == "ads1115":
        from firmware.hw.drivers.ads1115 import ADS1115 as Driver
        from firmware.hw.drivers.ads1115 import MUX_AIN0_AIN1
        from firmware.hw.sensors import Ads1115EcgSource
        from sim.parts.ads1115 import ADS1115

        ref_v = 1.65
        signal = _PatientVolts(patient, gain=100.0, offset_v=ref_v)
        bus = I2CBus()
        part = bus.attach(PatientFrontEnd.address, ADS1115(clock, inputs=(signal, ref_v, 0, 0)))
        driver = Driver(bus, PatientFrontEnd.address, data_rate_sps=patient.fs,
                        full_scale_mv=2048, mux=MUX_AIN0_AIN1, continuous=True, ready_pin=True)
        source = Ads1115EcgSource(driver, 100, ready_pin=part.alert, use_irq=True)
        return PatientFrontEnd(kind, bus, part, driver, source, signal, part.alert)
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


def outbox_entries(outbox: Any) -> list[tuple[str, bytes, bool]]:
    """(topic, payload, sent-and-unacknowledged) of every message still in an outbox.

    Reads the firmware outbox's slots (simulator instrumentation only)."""
    out = []
    for i in range(len(outbox)):
        entry = outbox._slots[(outbox._head + i) % outbox.capacity]
        if not entry[4]:  # not acknowledged
            out.append((entry[0], entry[1], entry[3] is not None))
    return out


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
            push = device.outbox.push
            topic_vitals = device.topic_vitals
            vitals = self.ledger.vitals

            def recording_push(topic: str, payload: bytes, retain: bool) -> None:
                if topic == topic_vitals:
                    vitals.append(_message_seq(payload))
                push(topic, payload, retain)

            device.outbox.push = recording_push  # type: ignore[method-assign]
        return device

    def step(self) -> None:
        if self.powered:
            self.device.step()

    # -- lifecycle faults ------------------------------------------------------
    def _account_outbox(self, why: str) -> tuple[int, int]:
        """Record what is left in the outbox as lost; return (unsent, unacked) counts."""
        unsent = unacked = 0
        sent_seqs = getattr(self.link, "sent_seqs", None)
        for topic, payload, inflight in outbox_entries(self.device.outbox):
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
        abort = getattr(self.link, "abort", None)
        if abort is not None:
            abort()
        else:
            abort_link(self.link)
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


def abort_link(link: Any) -> None:
    """Cut a link's connection without an MQTT DISCONNECT (the broker sends the will).

    ``PahoLink``: shut the TCP socket down under paho, then stop its thread.
    ``MemoryLink``, ``sim.netlink.PolledPahoLink``: ``drop()``."""
    drop = getattr(link, "drop", None)
    if drop is not None:
        drop()
        return
    client = getattr(link, "_client", None)
    if client is None:
        return
    import socket

    sock = client.socket()
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    link._connected.clear()
    link._client = None
    try:
        client.loop_stop()
    except Exception:  # paho may complain about the dead socket
        pass
    try:
        sock = client.socket()
        if sock is not None:
            sock.close()
    except OSError:
        pass


LinkFactory = Callable[[str], Any]

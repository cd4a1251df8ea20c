"""Emulated front ends: an emulated part on an emulated bus, the real driver, the firmware source.

The one wiring of every sensor path that runs the firmware's driver code:
the simulated fleet's ``ads1292`` and ``ads1115`` sensor paths
(:func:`sim.devices.make_sensor`, fed by a virtual patient) and record replay
behind a part (:mod:`sim.replay`, fed by a WFDB record).

An ECG front end is fed *device counts in chunks*: an iterator of int16
arrays at the device rate (a patient's ``next_chunk(n).ecg``, a record's
counts).  :class:`CountsVolts` turns them into the part's input, one value
per conversion: the electrode voltage (one count is
``1 / firmware.params.ECG_COUNTS_PER_MV`` mV), times an amplifier's gain,
plus its reference.  When the chunks run out the part holds the last value.

- :func:`ads1292_ecg`: channel ``channel`` (1 or 2) of an ADS1292R
  (``sim.parts.ads1292``) on SPI, PGA gain ``gain``, read by
  ``firmware.hw.drivers.ads1292`` through its DRDY interrupt into
  ``firmware.hw.sensors.Ads1292EcgSource``.  Gain 6, VREF 2.42 V: one count
  (5 uV) is ~104 ADC codes, and the source's ratio scaler gives the count
  back exactly (tests/test_sim_fleet.py checks all of int16).
- :func:`ads1115_ecg`: an AD8232-like amplifier (gain ``frontend_gain``, output
  around ``reference_v`` on AIN0, the reference on AIN1) into an ADS1115
  (``sim.parts.ads1115``) on I2C in continuous mode, read on its ALERT/RDY
  pulses into ``firmware.hw.sensors.Ads1115EcgSource``.  Exact within the
  ADS1115's range (+-2.048 V / 100: +-20.48 mV, +-4096 counts); beyond it the
  part saturates, as the real one would.
- :func:`max30102_ppg`: two signals (nA per mA of LED current) on a MAX30102
  (``sim.parts.max30102``) in SpO2 mode, read by its driver into
  ``firmware.hw.sensors.Max30102PpgSource`` (18-bit counts shifted to 15 bits).

Each returns an :class:`EmulatedFrontEnd`: a sample source (``read_samples``
lets the part catch up with the clock, as the data-ready interrupt would have
fired for every conversion on a board, then drains the firmware source), with
``resync`` and the fault hooks ``set_lead_off`` / ``set_disconnected``.  Its
data-ready pin drops an ``OSError`` raised in the firmware's handler (an I2C
NACK) and counts it (``sensor_errors``), as MicroPython drops an exception
raised in a soft IRQ handler (:class:`sim.bus.SimPin`).
"""

from __future__ import annotations

from array import array
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from firmware.params import ECG_COUNTS_PER_MV
from sim.bus import I2CBus, SPIBus
from sim.choices import ECG_FRONT_END_NAMES

__all__ = ["ECG_FRONT_ENDS", "CountsVolts", "EmulatedFrontEnd", "ads1115_ecg", "ads1292_ecg",
           "ecg_front_end", "max30102_ppg"]

#: Volts at the electrodes per device count.
_V_PER_COUNT = 1e-3 / ECG_COUNTS_PER_MV
#: The AD8232's output sits at its positive supply rail with a lead off.
AMPLIFIER_RAIL_V = 3.3
_SCRATCH = 64


class CountsVolts:
    """Iterator signal for an ADC input: the next device count as
    ``offset_v + gain * volts at the electrodes``.  Fault hook: ``rail`` (a
    voltage, or None) replaces the signal while the stream keeps its pace."""

    def __init__(self, chunks: Iterable[Any], gain: float = 1.0, offset_v: float = 0.0) -> None:
        self._chunks = iter(chunks)
        self._scale = _V_PER_COUNT * gain
        self._offset = offset_v
        self._values: list[float] = []
        self._pos = 0
        self.rail: float | None = None

    def __iter__(self) -> CountsVolts:
        return self

    def __next__(self) -> float:
        while self._pos >= len(self._values):  # StopIteration: the part holds the last value
            counts = np.asarray(next(self._chunks))
            self._values = (counts.astype("f8") * self._scale + self._offset).tolist()
            self._pos = 0
        v = self._values[self._pos]
        self._pos += 1
        return v if self.rail is None else self.rail


class EmulatedFrontEnd:
    """An emulated part on its bus with the firmware driver and source on top
    (module docstring).  ``address``: the part's I2C address (None: on SPI)."""

    def __init__(self, kind: str, bus: Any, part: Any, driver: Any, source: Any, *,
                 ready_pin: Any = None, address: int | None = None,
                 signal: CountsVolts | None = None,
                 lead_off: Callable[[bool], None] | None = None) -> None:
        self.kind = kind
        self.bus = bus
        self.part = part
        self.driver = driver
        self.source = source
        self.ready_pin = ready_pin
        self.address = address
        self.signal = signal
        self.disconnected = False
        self._lead_off = lead_off
        self._scratch = array("h", bytes(2 * _SCRATCH))
        if ready_pin is not None:
            ready_pin.drop_irq_errors = True

    @property
    def sensor_errors(self) -> int:
        """OSErrors raised in the firmware's data-ready handler (I2C NACKs), dropped."""
        return self.ready_pin.irq_errors if self.ready_pin is not None else 0

    def read_samples(self, buf: Any, max_count: int) -> int:
        self.part.update()
        return self.source.read_samples(buf, max_count)

    def resync(self) -> None:
        """Drop every sample due now (the device was down while they came)."""
        self.part.update()
        while self.source.read_samples(self._scratch, _SCRATCH):
            pass

    def set_lead_off(self, on: bool) -> None:
        if self._lead_off is None:
            raise ValueError(f"the {self.kind} front end has no electrodes")
        self._lead_off(on)

    def set_disconnected(self, on: bool) -> None:
        """The part stops answering on its bus (a loose wire) or answers again."""
        self.disconnected = on
        target = self.part if self.address is None else self.address
        (self.bus.disconnect if on else self.bus.reconnect)(target)


def ads1292_ecg(counts: Iterable[Any], clock: Any, sample_rate_sps: int, gain: int = 6,
                channel: int = 2) -> EmulatedFrontEnd:
    """Device counts on ADS1292R channel ``channel`` (module docstring)."""
    from firmware.hw.drivers.ads1292 import ADS1292 as Driver
    from firmware.hw.sensors import Ads1292EcgSource
    from sim.parts.ads1292 import ADS1292

    if channel not in (1, 2):
        raise ValueError(f"channel must be 1 or 2, got {channel!r}")
    signal = CountsVolts(counts)
    inputs: dict[str, Any] = {"ch1": 0.0, "ch2": 0.0}
    inputs[f"ch{channel}"] = signal
    part = ADS1292(clock, **inputs)
    spi = SPIBus()
    cs = spi.attach(part)
    driver = Driver(spi, cs, part.drdy, data_rate_sps=sample_rate_sps, gain=(gain, gain),
                    sleep=lambda ms: None)
    source = Ads1292EcgSource(driver, channel=channel, use_irq=True)
    driver.start()

    def lead_off(on: bool) -> None:
        part.set_lead_off(**{f"in{channel}p": on, f"in{channel}n": on})

    return EmulatedFrontEnd("ads1292", spi, part, driver, source, ready_pin=part.drdy,
                            signal=signal, lead_off=lead_off)


def ads1115_ecg(counts: Iterable[Any], clock: Any, sample_rate_sps: int,
                frontend_gain: int = 100, reference_v: float = 1.65,
                full_scale_mv: int = 2048, address: int = 0x48) -> EmulatedFrontEnd:
    """Device counts through an ECG amplifier into an ADS1115 (module docstring)."""
    from firmware.hw.drivers.ads1115 import ADS1115 as Driver
    from firmware.hw.drivers.ads1115 import MUX_AIN0_AIN1
    from firmware.hw.sensors import Ads1115EcgSource
    from sim.parts.ads1115 import ADS1115

    signal = CountsVolts(counts, gain=float(frontend_gain), offset_v=reference_v)
    bus = I2CBus()
    part = bus.attach(address, ADS1115(clock, inputs=(signal, reference_v, 0.0, 0.0)))
    driver = Driver(bus, address, data_rate_sps=sample_rate_sps, full_scale_mv=full_scale_mv,
                    mux=MUX_AIN0_AIN1, continuous=True, ready_pin=True)
    source = Ads1115EcgSource(driver, frontend_gain, ready_pin=part.alert, use_irq=True)

    def lead_off(on: bool) -> None:
        signal.rail = AMPLIFIER_RAIL_V if on else None

    return EmulatedFrontEnd("ads1115", bus, part, driver, source, ready_pin=part.alert,
                            address=address, signal=signal, lead_off=lead_off)


#: The ECG front ends by sensor-path name.
ECG_FRONT_ENDS: dict[str, Callable[..., EmulatedFrontEnd]] = dict(
    zip(ECG_FRONT_END_NAMES, (ads1292_ecg, ads1115_ecg))
)


def ecg_front_end(kind: str, counts: Iterator[Any], clock: Any,
                  sample_rate_sps: int) -> EmulatedFrontEnd:
    """The ECG front end ``kind`` (a key of :data:`ECG_FRONT_ENDS`), default settings."""
    try:
        make = ECG_FRONT_ENDS[kind]
    except KeyError:
        raise ValueError(f"ECG front end must be one of {tuple(ECG_FRONT_ENDS)}, "
                         f"got {kind!r}") from None
    return make(counts, clock, sample_rate_sps)


def max30102_ppg(red: Any, ir: Any, clock: Any, sample_rate_sps: int = 100,
                 led_current_ma: tuple[float, float] = (10.0, 10.0),
                 adc_range_na: int = 4096, led: str = "ir") -> EmulatedFrontEnd:
    """Signals ``red`` and ``ir`` (``sim.parts`` signals, nA per mA) on a MAX30102
    read into ``Max30102PpgSource`` (module docstring)."""
    from firmware.hw.drivers.max30102 import DEFAULT_ADDRESS
    from firmware.hw.drivers.max30102 import MAX30102 as Driver
    from firmware.hw.sensors import Max30102PpgSource
    from sim.parts.max30102 import MAX30102

    bus = I2CBus()
    part = bus.attach(DEFAULT_ADDRESS, MAX30102(clock, red=red, ir=ir))
    driver = Driver(bus, sample_rate_sps=sample_rate_sps, led_current_ma=led_current_ma,
                    adc_range_na=adc_range_na)
    source = Max30102PpgSource(driver, led=led, shift_bits=3)
    return EmulatedFrontEnd("max30102", bus, part, driver, source, address=DEFAULT_ADDRESS)

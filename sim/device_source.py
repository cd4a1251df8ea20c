"""The simulator's side of ``firmware.main``: the ``sim`` source kind and emulated buses.

Firmware never imports the simulator; it offers two hooks and this module
fills them:

- :func:`register` adds the source kind ``sim`` to ``firmware.main``'s
  registry (importing this module does it)::

      "source": {"kind": "sim", "scenario": "sepsis", "speed": 10,
                 "seed": 3, "sensor": "ads1292", "duration_s": 600}

  ``scenario`` is a bundled scenario name (``sim/scenarios``) or a scenario
  file path; ``speed`` is simulated seconds per second (0 < X <= 1000);
  ``seed`` (default 0) draws the patient (``sim.patient.VirtualPatient``);
  ``sensor`` (default ``direct``) is the sensor path of ``sim.devices.make_sensor``:
  ``direct`` hands the patient's counts straight over, ``ads1292`` and
  ``ads1115`` go through an emulated front end read by the real driver;
  ``duration_s`` (optional) ends the source after that much simulated time,
  and the device then shuts down cleanly (without it: until SIGTERM).
  The patient's samples come ``speed`` times faster than real time; the
  device reports per ``report_period_ms`` of signal, so its reports come as
  fast, stamped with the device's own clock.

- :class:`EmulatedBuses` has the surface of ``firmware.hw.bus``'s platform
  buses over ``sim.bus`` (``I2CBus``, ``SPIBus``, ``SimPin``) and the
  register-level parts of ``sim.parts``, so ``firmware.main.build(cfg,
  buses=...)`` builds any driver kind (``ads1292``, ``ads1115``,
  ``max30102``, ``serial``) with the real driver code talking to emulated
  hardware.  :func:`emulate_source` wires the part a ``source`` object names
  at the bus, address and pins it names.

``python -m sim.device_source CONFIG`` is ``python -m firmware.main CONFIG``
with the ``sim`` kind registered (``medge device run`` belongs to the host CLI).
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any, Callable

from firmware import main as device_main
from firmware.hw.compat import ticks_diff
from sim.bus import I2CBus, SimPin, SPIBus
from sim.devices import SENSORS, make_sensor
from sim.patient import VirtualPatient
from sim.scenario import list_scenarios

__all__ = ["EmulatedBuses", "SimPatientSource", "SpeedClock", "emulate_source",
           "make_sim_source", "register"]

MAX_SPEED = 1000
_RING_SAMPLES = 200  # below the firmware front-end sources' 256-sample ring
_TICKS_MASK = (1 << 30) - 1
_SIM_REQUIRED = ("scenario", "speed")
_SIM_OPTIONAL = ("seed", "sensor", "duration_s")


class SpeedClock:
    """``base`` (anything with ``ticks_ms``) running ``speed`` times as fast, from now.

    Has what the simulator's patient sources and parts read: ``elapsed_ms``
    (and a wrapping ``ticks_ms``)."""

    def __init__(self, base: Any, speed: float) -> None:
        self._base = base
        self._speed = speed
        self._last = base.ticks_ms()
        self._real_ms = 0

    @property
    def elapsed_ms(self) -> int:
        now = self._base.ticks_ms()
        self._real_ms += max(0, ticks_diff(now, self._last))
        self._last = now
        return int(self._real_ms * self._speed)

    def ticks_ms(self) -> int:
        return self.elapsed_ms & _TICKS_MASK


class SimPatientSource:
    """A simulated patient's sensor path with an optional end (``limit`` samples)."""

    def __init__(self, sensor: Any, patient: VirtualPatient, limit: int | None) -> None:
        self.sensor = sensor
        self.patient = patient
        self.limit = limit
        self.samples = 0

    def exhausted(self) -> bool:
        return self.limit is not None and self.samples >= self.limit

    def read_samples(self, buf: Any, max_count: int) -> int:
        if self.limit is not None and self.limit - self.samples < max_count:
            max_count = self.limit - self.samples
        if max_count <= 0:
            return 0
        n = self.sensor.read_samples(buf, max_count)
        self.samples += n
        return n


def _scenario(spec: dict[str, Any]) -> str:
    name = device_main.get_str(spec, "scenario", "source")
    if name in list_scenarios() or (Path(name).suffix == ".toml" and Path(name).is_file()):
        return name
    raise ValueError(f"source.scenario: unknown scenario {name!r} (known: "
                     f"{', '.join(list_scenarios())}, or a .toml file)")


def make_sim_source(spec: dict[str, Any], ctx: Any) -> SimPatientSource:
    """The ``sim`` kind's factory (module docstring)."""
    scenario = _scenario(spec)
    speed = spec["speed"]
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not (
            0 < speed <= MAX_SPEED):
        raise ValueError(f"source.speed must be a number in (0, {MAX_SPEED}] simulated seconds"
                         f" per second, got {speed!r}")
    seed = device_main.get_int(spec, "seed", "source", 0, 0)
    sensor = device_main.get_choice(spec, "sensor", "source", SENSORS, "direct")
    fs = ctx.sample_rate_hz
    limit = None
    if "duration_s" in spec:
        duration = spec["duration_s"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
            raise ValueError(f"source.duration_s must be a positive number, got {duration!r}")
        limit = round(duration * fs)
    per_pass = speed * ctx.loop_period_ms * fs / 1000
    if sensor != "direct" and per_pass > _RING_SAMPLES:
        raise ValueError(
            f"source.speed {speed:g} brings {per_pass:.0f} samples per loop pass through the"
            f" {sensor} front end, more than its ring holds ({_RING_SAMPLES}): lower speed or"
            " loop_period_ms, or use sensor \"direct\"")
    patient = VirtualPatient(scenario, seed, fs)
    return SimPatientSource(make_sensor(sensor, patient, SpeedClock(ctx.clock, speed)), patient,
                            limit)


def register() -> None:
    """Add the ``sim`` kind to ``firmware.main``'s source registry (idempotent)."""
    device_main.register_source("sim", make_sim_source, _SIM_REQUIRED, _SIM_OPTIONAL)


class _CatchUp:
    """The source the device reads, after every emulated part caught up with the clock
    (on a board each conversion's data-ready interrupt has fired by then)."""

    def __init__(self, source: Any, catch_up: list[Callable[[], Any]]) -> None:
        self.source = source
        self._catch_up = catch_up

    def read_samples(self, buf: Any, max_count: int) -> int:
        for update in self._catch_up:
            update()
        return self.source.read_samples(buf, max_count)


def _missing(what: str) -> OSError:
    return OSError(errno.ENODEV, f"emulated: no {what} is wired")


class EmulatedBuses:
    """``firmware.hw.bus`` platform surface over ``sim.bus`` (module docstring).

    ``smbus=True`` hands the I2C drivers smbus2's ``SMBus`` surface (the Pi's
    path through the drivers) instead of ``machine.I2C``'s."""

    def __init__(self, smbus: bool = False) -> None:
        self.smbus = smbus
        self.i2c_buses: dict[int, I2CBus] = {}
        self.spi_buses: dict[tuple[int, int], tuple[SPIBus, SimPin]] = {}
        self.pins: dict[int, SimPin] = {}
        self.uarts: dict[Any, Any] = {}
        self.catch_up: list[Callable[[], Any]] = []
        self.parts: list[Any] = []
        self.closers: list[Callable[[], Any]] = []

    # -- wiring ----------------------------------------------------------------
    def add_i2c(self, bus: int, address: int, part: Any) -> Any:
        self.i2c_buses.setdefault(bus, I2CBus()).attach(address, part)
        return self._part(part)

    def add_spi(self, bus: int, cs: int, part: Any) -> Any:
        spi = SPIBus()
        self.spi_buses[(bus, cs)] = (spi, spi.attach(part))
        return self._part(part)

    def add_pin(self, number: int, pin: SimPin) -> SimPin:
        self.pins[number] = pin
        return pin

    def add_uart(self, port: Any, serial_port: Any, pump: Callable[[], Any] | None = None) -> None:
        self.uarts[port] = serial_port
        if pump is not None:
            self.catch_up.append(pump)

    def _part(self, part: Any) -> Any:
        self.parts.append(part)
        self.catch_up.append(part.update)
        return part

    # -- the firmware.hw.bus surface -------------------------------------------
    def i2c(self, settings: dict[str, Any]) -> Any:
        bus = self.i2c_buses.get(settings["bus"])
        if bus is None:
            raise _missing(f"I2C bus {settings['bus']}")
        return bus.smbus() if self.smbus else bus

    def spi(self, settings: dict[str, Any]) -> tuple[SPIBus, SimPin]:
        wired = self.spi_buses.get((settings["bus"], settings["cs"]))
        if wired is None:
            raise _missing(f"SPI bus {settings['bus']} chip select {settings['cs']}")
        return wired

    def input_pin(self, number: int, pull_up: bool) -> SimPin:
        pin = self.pins.get(number)
        if pin is None:
            raise _missing(f"pin {number}")
        return pin

    def uart(self, settings: dict[str, Any]) -> Any:
        port = self.uarts.get(settings["port"])
        if port is None:
            raise _missing(f"UART {settings['port']!r}")
        return port

    def guard(self, source: Any) -> Any:
        return _CatchUp(source, self.catch_up)

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers = []


_AFE_REF_V = 1.65  # an AD8232's output reference (REFOUT) on a 3.3 V supply


def emulate_source(spec: dict[str, Any], clock: Any, signal: Any = 0.0, smbus: bool = False,
                   sample_rate_hz: int = 250) -> EmulatedBuses:
    """Emulated buses with the part that ``spec`` (a config's ``source``) names, wired
    where it says.  ``signal`` (a ``sim.parts`` signal) is the part's input:
    electrode volts for ``ads1292`` (both channels) and ``ads1115`` (through a
    front end of ``frontend_gain`` around 1.65 V), nA per mA of LED current for
    ``max30102`` (both LEDs), degrees Celsius for ``tmp117``, raw counts for
    ``serial`` (a ``sim.serialboard.SerialEcgBoard`` on a pty at ``sample_rate_hz``,
    read with pyserial; ``close()`` the buses to close it)."""
    from sim.parts import as_signal

    kind = spec.get("kind")
    buses = EmulatedBuses(smbus=smbus)
    if kind == "ads1292":
        from sim.parts.ads1292 import ADS1292

        sig = as_signal(signal)
        part = buses.add_spi(spec["spi"]["bus"], spec["spi"]["cs"],
                             ADS1292(clock, ch1=sig, ch2=sig))
        buses.add_pin(spec["drdy"], part.drdy)
    elif kind == "ads1115":
        from sim.parts.ads1115 import ADS1115, MUX_INPUTS

        sig = as_signal(signal)
        gain = spec["frontend_gain"]
        mux = device_main.ADS1115_MUX_NAMES.index(spec.get("mux", "ain0_ain1"))
        pos, neg = MUX_INPUTS[mux]
        inputs: list[Any] = [0.0, 0.0, 0.0, 0.0]
        inputs[pos] = lambda t: _AFE_REF_V + gain * sig(t)
        if neg is not None:
            inputs[neg] = _AFE_REF_V
        part = buses.add_i2c(spec["i2c"]["bus"], spec.get("address", 0x48),
                             ADS1115(clock, inputs=inputs))
        if "alert" in spec:
            buses.add_pin(spec["alert"], part.alert)
    elif kind == "max30102":
        from sim.parts.max30102 import MAX30102

        sig = as_signal(signal)
        buses.add_i2c(spec["i2c"]["bus"], spec.get("address", 0x57),
                      MAX30102(clock, red=sig, ir=sig))
    elif kind == "tmp117":
        from sim.parts.tmp117 import TMP117

        buses.add_i2c(spec["i2c"]["bus"], spec.get("address", 0x48), TMP117(clock, signal))
    elif kind == "serial":
        import serial

        from sim.serialboard import SerialEcgBoard

        board = SerialEcgBoard(signal, sample_rate_hz, clock=clock)
        port = serial.Serial(board.port_name, spec["uart"].get("baudrate", 115_200), timeout=0)
        buses.add_uart(spec["uart"]["port"], port, board.pump)
        buses.closers.extend((port.close, board.close))
    else:
        raise ValueError(f"no emulated part for source kind {kind!r}")
    return buses


register()


if __name__ == "__main__":
    sys.exit(device_main.cli(sys.argv[1:]))

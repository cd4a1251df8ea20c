"""The platform's buses and pins for the sensor drivers, made at start-up from the config.

The drivers (``firmware/hw/drivers``) take their bus and duck-type it; this
module is the one place that makes a real one.  Both classes have the same
surface, used by :mod:`firmware.main`:

``i2c(settings)``
    An I2C bus from ``{"bus": N, ...}``.
``spi(settings) -> (spi, cs)``
    An SPI bus and its chip select from ``{"bus": N, "cs": M, ...}``.
``input_pin(number, pull_up) -> pin``
    A data-ready / alert input with ``value()`` and ``irq(handler, trigger)``.
``uart(settings)``
    A serial port from ``{"port": ..., "baudrate": B, ...}``.
``guard(source) -> source``
    The source the device loop reads: wrapped where a data-ready handler
    runs on another thread and the two must not interleave.

:class:`MachineBuses` (MicroPython): ``machine.I2C`` / ``machine.SPI`` /
``machine.Pin`` / ``machine.UART``; ``scl``/``sda``, ``sck``/``mosi``/``miso``
and ``tx``/``rx`` name the pins (the port's default pins when left out),
``freq_hz`` the bus clock, ``cs`` the chip-select pin.

:class:`LinuxBuses` (CPython on a Raspberry Pi): ``smbus2.SMBus(bus)`` for
``/dev/i2c-<bus>``; ``spidev`` on ``/dev/spidev<bus>.<cs>`` with the
hardware chip select (CE0/CE1: ``cs`` is the CE number, the chip select
toggles around every transfer, and every driver transaction is one
transfer); a data-ready pin is a libgpiod v2 line (``gpiod``, BCM numbering,
on ``$MEDGE_GPIO_CHIP``, default ``/dev/gpiochip0``) whose ``irq`` runs the
handler on a thread woken by the kernel's edge events; a serial port is
``serial.Serial(port, baudrate, timeout=0)`` (pyserial).  On Linux the pins
of a bus are fixed by its number and the I2C clock is set at boot
(``dtparam=i2c_arm_baudrate``), so ``scl``/``sda``/``freq_hz`` (I2C),
``sck``/``mosi``/``miso`` (SPI) and ``tx``/``rx`` (UART) are refused with
that reason rather than silently ignored.

Every library is imported only when a bus that needs it is made, so a
device without that bus does not need the library installed.  A missing one
raises ImportError naming the package to install.

Known limits: spidev has no ``readinto``: each transfer returns a new list
on CPython (the Pi has the memory; MicroPython's path allocates nothing).
The gpiod thread calls the handler once per wake-up even when several edges
were queued (a front end without a FIFO has kept only the newest result);
``missed_edges`` counts the others.  Handler errors (an I2C NACK) are counted
in ``handler_errors`` and the thread goes on, as MicroPython drops an
exception raised in a scheduled IRQ handler.
"""

from firmware.hw.compat import IS_MICROPYTHON

DEFAULT_I2C_FREQ_HZ = 400000
DEFAULT_SPI_FREQ_HZ = 1000000
DEFAULT_BAUDRATE = 115200
DEFAULT_GPIO_CHIP = "/dev/gpiochip0"


def _needs(package, what, extra):
    return ImportError("%s needs the Python package %s: pip install %s%s"
                       % (what, package, package, extra))


class MachineBuses:
    """MicroPython's ``machine`` buses (module docstring)."""

    def __init__(self):
        import machine

        self._m = machine

    def _pin(self, number):
        return self._m.Pin(number)

    def i2c(self, settings):
        kw = {"freq": settings.get("freq_hz", DEFAULT_I2C_FREQ_HZ)}
        if ("scl" in settings) != ("sda" in settings):
            raise ValueError("source.i2c: scl and sda are given together or not at all")
        if "scl" in settings:
            kw["scl"] = self._pin(settings["scl"])
            kw["sda"] = self._pin(settings["sda"])
        return self._m.I2C(settings["bus"], **kw)

    def spi(self, settings):
        kw = {"baudrate": settings.get("freq_hz", DEFAULT_SPI_FREQ_HZ), "polarity": 0,
              "phase": 0}
        for key in ("sck", "mosi", "miso"):
            if key in settings:
                kw[key] = self._pin(settings[key])
        spi = self._m.SPI(settings["bus"], **kw)
        cs = self._m.Pin(settings["cs"], self._m.Pin.OUT, value=1)
        return spi, cs

    def input_pin(self, number, pull_up):
        pin = self._m.Pin
        return pin(number, pin.IN, pin.PULL_UP if pull_up else None)

    def uart(self, settings):
        port = settings["port"]
        if not isinstance(port, int) or isinstance(port, bool):
            raise ValueError("source.uart.port: on MicroPython the UART id (an int), got %r"
                             % (port,))
        kw = {"baudrate": settings.get("baudrate", DEFAULT_BAUDRATE)}
        for key in ("tx", "rx"):
            if key in settings:
                kw[key] = self._pin(settings[key])
        return self._m.UART(port, **kw)

    def guard(self, source):
        return source


class _HardwareChipSelect:
    """spidev toggles CE itself around every transfer: the driver's ``cs.value()`` is a no-op."""

    def value(self, x=None):
        return 1 if x is None else None


class _SpidevBus:
    """``machine.SPI`` surface (``init``, ``write``, ``readinto``, ``write_readinto``) on spidev."""

    def __init__(self, dev, freq_hz):
        self._dev = dev
        dev.max_speed_hz = freq_hz

    def init(self, baudrate=None, polarity=0, phase=0, **_):
        if baudrate is not None:
            self._dev.max_speed_hz = baudrate
        self._dev.mode = (polarity << 1) | phase

    def write(self, buf):
        self._dev.writebytes2(buf)

    def readinto(self, buf, write=0):
        data = self._dev.xfer2([write] * len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def write_readinto(self, write_buf, read_buf):
        data = self._dev.xfer2(list(write_buf))
        for i in range(len(read_buf)):
            read_buf[i] = data[i]


class _GpioLine:
    """One input line through libgpiod v2 with ``machine.Pin``'s ``value`` and ``irq``."""

    IRQ_FALLING = 1

    def __init__(self, chip, number, pull_up, lock):
        try:
            import gpiod
            from gpiod.line import Bias, Direction, Edge, Value
        except ImportError:
            raise _needs("gpiod", "a data-ready pin on Linux", " (libgpiod v2 bindings)") from None
        settings = gpiod.LineSettings(direction=Direction.INPUT, edge_detection=Edge.FALLING,
                                      bias=Bias.PULL_UP if pull_up else Bias.AS_IS)
        self._request = gpiod.request_lines(chip, consumer="medge", config={number: settings})
        self._number = number
        self._active = Value.ACTIVE
        self._lock = lock
        self._handler = None
        self._thread = None
        self._closed = False
        self.missed_edges = 0
        self.handler_errors = 0
        self.last_error = None

    def value(self, x=None):
        if x is not None:
            raise ValueError("GPIO %d is an input" % self._number)
        return 1 if self._request.get_value(self._number) == self._active else 0

    def irq(self, handler=None, trigger=IRQ_FALLING):
        import threading

        self._handler = handler
        if handler is not None and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="medge-gpio%d"
                                            % self._number, daemon=True)
            self._thread.start()

    def _watch(self):
        req = self._request
        while not self._closed:
            if not req.wait_edge_events(0.2):
                continue
            events = req.read_edge_events()
            if len(events) > 1:
                self.missed_edges += len(events) - 1
            handler = self._handler
            if handler is None:
                continue
            with self._lock:
                try:
                    handler(self)
                except OSError as exc:
                    self.handler_errors += 1
                    self.last_error = exc

    def close(self):
        self._closed = True
        if self._thread is not None:
            self._thread.join(1.0)
        self._request.release()


class _LockedSource:
    """``read_samples`` under the lock the data-ready thread holds while it reads the part."""

    def __init__(self, source, lock):
        self.source = source
        self._lock = lock

    def read_samples(self, buf, max_count):
        with self._lock:
            return self.source.read_samples(buf, max_count)


class LinuxBuses:
    """smbus2 / spidev / libgpiod / pyserial on a Raspberry Pi (module docstring)."""

    def __init__(self, gpio_chip=None):
        if gpio_chip is None:
            import os

            gpio_chip = os.environ.get("MEDGE_GPIO_CHIP", DEFAULT_GPIO_CHIP)
        self.gpio_chip = gpio_chip
        self.lines = []
        #: Held by a data-ready thread while its handler reads the part (made with the first pin).
        self.lock = None

    @staticmethod
    def _refuse(where, settings, keys, why):
        for key in keys:
            if key in settings:
                raise ValueError("%s.%s: %s; leave it out" % (where, key, why))

    def i2c(self, settings):
        self._refuse("source.i2c", settings, ("scl", "sda"),
                     "on Linux the I2C pins are fixed by the bus number (/dev/i2c-N)")
        self._refuse("source.i2c", settings, ("freq_hz",),
                     "Linux sets the I2C clock at boot (dtparam=i2c_arm_baudrate=... in"
                     " config.txt)")
        try:
            import smbus2
        except ImportError:
            raise _needs("smbus2", "I2C on Linux", " (in the 'device' extra)") from None
        return smbus2.SMBus(settings["bus"])

    def spi(self, settings):
        self._refuse("source.spi", settings, ("sck", "mosi", "miso"),
                     "on Linux the SPI pins are fixed by the bus number (/dev/spidevB.C)")
        try:
            import spidev
        except ImportError:
            raise _needs("spidev", "SPI on Linux", "") from None
        dev = spidev.SpiDev()
        dev.open(settings["bus"], settings["cs"])
        return _SpidevBus(dev, settings.get("freq_hz", DEFAULT_SPI_FREQ_HZ)), _HardwareChipSelect()

    def input_pin(self, number, pull_up):
        if self.lock is None:
            import threading

            self.lock = threading.Lock()
        line = _GpioLine(self.gpio_chip, number, pull_up, self.lock)
        self.lines.append(line)
        return line

    def uart(self, settings):
        self._refuse("source.uart", settings, ("tx", "rx"),
                     "on Linux a serial port's pins are fixed by its device file")
        port = settings["port"]
        if not isinstance(port, str):
            raise ValueError("source.uart.port: on Linux a device path such as /dev/ttyUSB0,"
                             " got %r" % (port,))
        try:
            import serial
        except ImportError:
            raise _needs("pyserial", "a serial ECG board on Linux",
                         " (in the 'device' extra)") from None
        return serial.Serial(port, settings.get("baudrate", DEFAULT_BAUDRATE), timeout=0)

    def guard(self, source):
        return source if self.lock is None else _LockedSource(source, self.lock)

    def close(self):
        for line in self.lines:
            line.close()
        self.lines = []


def platform_buses():
    """The buses of the platform this runs on: :class:`MachineBuses` or :class:`LinuxBuses`."""
    return MachineBuses() if IS_MICROPYTHON else LinuxBuses()

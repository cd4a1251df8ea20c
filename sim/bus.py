"""Emulated I2C and SPI buses that answer at register level.

The firmware drivers in ``firmware/hw/drivers`` take their bus in ``__init__``
and duck-type it.  This module gives them three surfaces, all backed by the
same emulated parts (``sim/parts``):

- :class:`I2CBus`: MicroPython's ``machine.I2C`` (``scan``, ``readfrom_mem``,
  ``readfrom_mem_into``, ``writeto_mem``, ``readfrom``, ``readfrom_into``,
  ``writeto``, ``writevto``).  A missing or disconnected address NACKs and
  raises ``OSError(ENODEV)`` (errno 19), as MicroPython's soft I2C and the
  rp2/esp32/stm32 ports do; a stuck bus (SDA held low) raises
  ``OSError(ETIMEDOUT)``.
- :class:`SMBus` (``I2CBus.smbus()``): smbus2's ``SMBus`` (``read_byte_data``,
  ``write_byte_data``, ``read_word_data``, ``write_word_data``,
  ``read_i2c_block_data``, ``write_i2c_block_data``, ``read_byte``,
  ``write_byte``).  Linux i2c-dev reports a NACK as ``OSError(EREMOTEIO)``
  (errno 121, "Remote I/O error" on a Raspberry Pi).  SMBus words are
  little-endian on the wire (low byte first) while the parts here send MSB
  first: the drivers swap.
- :class:`SPIBus` with :class:`SimPin` chip selects: MicroPython's
  ``machine.SPI`` (``read``, ``readinto``, ``write``, ``write_readinto``).
  The part whose chip select is low (active low) sees every byte.  Nothing
  selected, or a disconnected part, reads ``0xFF`` (MISO pulled up).

Parts implement a tiny protocol: I2C ``i2c_write(data) -> acked_bytes``,
``i2c_read(n) -> bytes`` and optional ``i2c_stop()``; SPI ``spi_select()``,
``spi_exchange(byte) -> byte``, ``spi_deselect()`` and an ``spi_mode``
``(polarity, phase)`` attribute.

Fault hooks, for fault-injection tests: :meth:`I2CBus.disconnect` /
:meth:`I2CBus.reconnect` (the address NACKs), :attr:`I2CBus.stuck` (every
transfer times out), :meth:`I2CBus.corrupt_next` / :meth:`SPIBus.corrupt_next`
(XOR a mask into the next bytes read), :meth:`SPIBus.disconnect`.

Time: parts read an injected clock through :class:`SimTime`, so they produce
samples at their configured data rate in simulated time.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Iterable, Protocol, Sequence

__all__ = ["I2CBus", "SMBus", "SPIBus", "SimPin", "SimTime"]

_TICKS_PERIOD = 1 << 30
_TICKS_HALF = _TICKS_PERIOD // 2


class Clock(Protocol):
    def ticks_ms(self) -> int: ...


class SimTime:
    """Monotonic simulated time in microseconds read from an injected clock.

    ``clock`` is a :class:`sim.clock.SimClock` (its ``elapsed_ms`` is used
    directly), anything with a wrapping ``ticks_ms()`` (``firmware.hw.compat``
    ticks, unwrapped here), or anything with ``now_us()``.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._last_ticks: int | None = None
        self._ms = 0

    def now_us(self) -> int:
        clock = self._clock
        if hasattr(clock, "now_us"):
            return int(clock.now_us())
        if hasattr(clock, "elapsed_ms"):
            return int(clock.elapsed_ms) * 1000
        ticks = int(clock.ticks_ms())
        if self._last_ticks is not None:
            diff = ((ticks - self._last_ticks + _TICKS_HALF) % _TICKS_PERIOD) - _TICKS_HALF
            self._ms += max(diff, 0)
        self._last_ticks = ticks
        return self._ms * 1000


class SimPin:
    """A ``machine.Pin``-like line: ``value()``, ``on()``, ``off()``, ``irq()``.

    A chip select is driven by the host (``value(0)``); a data-ready or alert
    line is driven by its part (``drive(level)``), and an ``irq`` handler
    registered by a driver runs on the matching edge, with the pin as its
    argument, as on MicroPython.

    An exception from the handler propagates by default.  With
    ``drop_irq_errors`` set, an ``OSError`` (an I2C NACK inside the handler)
    is counted in ``irq_errors`` and dropped instead, as MicroPython prints
    and drops an exception raised in a soft (scheduled) IRQ handler: the
    line keeps firing and the firmware's handler stays registered.
    """

    IN = 0
    OUT = 1
    PULL_UP = 1
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, name: str = "pin", value: int = 1,
                 on_change: Callable[[int], None] | None = None) -> None:
        self.name = name
        self._value = 1 if value else 0
        self._on_change = on_change
        self._irq_handler: Callable[[SimPin], None] | None = None
        self._irq_trigger = 0
        self.sampler: Callable[[], None] | None = None  # the part catches up before a read
        self.drop_irq_errors = False
        self.irq_errors = 0  # OSErrors dropped from the handler (drop_irq_errors)

    def init(self, mode: int = -1, pull: int = -1, *, value: int | None = None) -> None:
        if value is not None:
            self.value(value)

    def value(self, x: int | None = None) -> int | None:
        if x is None:
            if self.sampler is not None:
                self.sampler()
            return self._value
        self.drive(x)
        return None

    __call__ = value

    def on(self) -> None:
        self.drive(1)

    def off(self) -> None:
        self.drive(0)

    high = on
    low = off

    def irq(self, handler: Callable[[SimPin], None] | None = None,
            trigger: int = IRQ_FALLING) -> None:
        self._irq_handler = handler
        self._irq_trigger = trigger if handler is not None else 0

    def drive(self, level: int) -> None:
        """Set the line's level; fire the change hook and a matching irq."""
        level = 1 if level else 0
        old = self._value
        if level == old:
            return
        self._value = level
        if self._on_change is not None:
            self._on_change(level)
        edge = self.IRQ_RISING if level else self.IRQ_FALLING
        if self._irq_handler is not None and self._irq_trigger & edge:
            if not self.drop_irq_errors:
                self._irq_handler(self)
                return
            try:
                self._irq_handler(self)
            except OSError:
                self.irq_errors += 1

    def __repr__(self) -> str:
        return f"SimPin({self.name!r}, value={self._value})"


class _Corruptor:
    """XOR ``mask`` into the next ``count`` bytes read from the bus."""

    def __init__(self) -> None:
        self.count = 0
        self.mask = 0xFF
        self.corrupted = 0  # bytes corrupted so far

    def arm(self, count: int, mask: int) -> None:
        if count < 0 or not 1 <= mask <= 0xFF:
            raise ValueError("count must be >= 0 and mask in 1..255")
        self.count = count
        self.mask = mask

    def apply(self, data: bytearray) -> bytearray:
        for i in range(len(data)):
            if self.count <= 0:
                break
            data[i] ^= self.mask
            self.count -= 1
            self.corrupted += 1
        return data


class I2CBus:
    """An emulated I2C bus with the surface of MicroPython's ``machine.I2C``."""

    def __init__(self, freq: int = 400_000) -> None:
        self.freq = freq
        self._parts: dict[int, Any] = {}
        self._disconnected: set[int] = set()
        self.stuck = False  # True: SDA held low, every transfer times out
        self._corrupt = _Corruptor()
        self.transfers = 0  # completed transactions (for tests)
        self.nacks = 0

    # -- wiring and faults ---------------------------------------------------
    def attach(self, address: int, part: Any) -> Any:
        if not 0x08 <= address <= 0x77:
            raise ValueError(f"7-bit I2C address must be in 0x08..0x77, got {address:#x}")
        if address in self._parts:
            raise ValueError(f"address {address:#04x} is already taken")
        self._parts[address] = part
        return part

    def detach(self, address: int) -> None:
        self._parts.pop(address, None)

    def disconnect(self, address: int) -> None:
        """The part at ``address`` stops acknowledging (a loose wire)."""
        self._disconnected.add(address)

    def reconnect(self, address: int) -> None:
        self._disconnected.discard(address)

    def corrupt_next(self, count: int, mask: int = 0xFF) -> None:
        """XOR ``mask`` into the next ``count`` bytes any part returns."""
        self._corrupt.arm(count, mask)

    @property
    def corrupted_bytes(self) -> int:
        return self._corrupt.corrupted

    def smbus(self) -> SMBus:
        """The same bus seen through smbus2's ``SMBus`` surface."""
        return SMBus(self)

    # -- core transfers ------------------------------------------------------
    def _part(self, addr: int, nack_errno: int = errno.ENODEV) -> Any:
        if self.stuck:
            raise OSError(errno.ETIMEDOUT, "I2C bus stuck (SDA held low)")
        part = self._parts.get(addr)
        if part is None or addr in self._disconnected:
            self.nacks += 1
            raise OSError(nack_errno, f"I2C address {addr:#04x} did not acknowledge")
        return part

    def _write(self, addr: int, data: bytes, stop: bool = True,
               nack_errno: int = errno.ENODEV) -> int:
        part = self._part(addr, nack_errno)
        acked = part.i2c_write(bytes(data))
        if stop:
            self._stop(part)
        self.transfers += 1
        return acked

    def _read(self, addr: int, nbytes: int, stop: bool = True,
              nack_errno: int = errno.ENODEV) -> bytearray:
        part = self._part(addr, nack_errno)
        data = bytearray(part.i2c_read(nbytes))
        if len(data) < nbytes:
            data.extend(b"\xff" * (nbytes - len(data)))
        if stop:
            self._stop(part)
        self.transfers += 1
        return self._corrupt.apply(data[:nbytes])

    @staticmethod
    def _stop(part: Any) -> None:
        stop = getattr(part, "i2c_stop", None)
        if stop is not None:
            stop()

    @staticmethod
    def _memaddr(memaddr: int, addrsize: int) -> bytes:
        if addrsize not in (8, 16, 24, 32):
            raise ValueError("addrsize must be 8, 16, 24 or 32")
        return memaddr.to_bytes(addrsize // 8, "big")

    # -- machine.I2C surface -------------------------------------------------
    def scan(self) -> list[int]:
        if self.stuck:
            raise OSError(errno.ETIMEDOUT, "I2C bus stuck (SDA held low)")
        return sorted(a for a in self._parts if a not in self._disconnected)

    def readfrom(self, addr: int, nbytes: int, stop: bool = True) -> bytes:
        return bytes(self._read(addr, nbytes, stop))

    def readfrom_into(self, addr: int, buf: Any, stop: bool = True) -> None:
        view = memoryview(buf).cast("B")
        view[:] = self._read(addr, len(view), stop)

    def writeto(self, addr: int, buf: Any, stop: bool = True) -> int:
        return self._write(addr, bytes(buf), stop)

    def writevto(self, addr: int, vector: Iterable[Any], stop: bool = True) -> int:
        return self._write(addr, b"".join(bytes(b) for b in vector), stop)

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        self._write(addr, self._memaddr(memaddr, addrsize), stop=False)
        return bytes(self._read(addr, nbytes))

    def readfrom_mem_into(self, addr: int, memaddr: int, buf: Any, *, addrsize: int = 8) -> None:
        view = memoryview(buf).cast("B")
        self._write(addr, self._memaddr(memaddr, addrsize), stop=False)
        view[:] = self._read(addr, len(view))

    def writeto_mem(self, addr: int, memaddr: int, buf: Any, *, addrsize: int = 8) -> None:
        self._write(addr, self._memaddr(memaddr, addrsize) + bytes(buf))


class SMBus:
    """smbus2's ``SMBus`` surface over an :class:`I2CBus` (Linux i2c-dev errors)."""

    def __init__(self, bus: I2CBus) -> None:
        self._bus = bus
        self.fd = 3  # an open "file": smbus2 exposes it; drivers never use it

    def __enter__(self) -> SMBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.fd = None  # type: ignore[assignment]

    def _w(self, addr: int, data: bytes) -> None:
        self._bus._write(addr, data, nack_errno=errno.EREMOTEIO)

    def _rd(self, addr: int, reg: int, n: int) -> bytearray:
        self._bus._write(addr, bytes([reg]), stop=False, nack_errno=errno.EREMOTEIO)
        return self._bus._read(addr, n, nack_errno=errno.EREMOTEIO)

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        return self._bus._read(i2c_addr, 1, nack_errno=errno.EREMOTEIO)[0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._w(i2c_addr, bytes([value & 0xFF]))

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._rd(i2c_addr, register, 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._w(i2c_addr, bytes([register, value & 0xFF]))

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """SMBus word: the first byte on the wire is the LOW byte."""
        lo, hi = self._rd(i2c_addr, register, 2)
        return lo | (hi << 8)

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._w(i2c_addr, bytes([register, value & 0xFF, (value >> 8) & 0xFF]))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        if not 0 <= length <= 32:
            raise ValueError("Desired block length over 32 bytes")
        return list(self._rd(i2c_addr, register, length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None:
        if len(data) > 32:
            raise ValueError("Data length cannot exceed 32 bytes")
        self._w(i2c_addr, bytes([register, *data]))


class SPIBus:
    """An emulated SPI bus with the surface of MicroPython's ``machine.SPI``."""

    MSB = 0
    LSB = 1

    def __init__(self, baudrate: int = 1_000_000, polarity: int = 0, phase: int = 0) -> None:
        self.baudrate = baudrate
        self.polarity = polarity
        self.phase = phase
        self._parts: list[tuple[SimPin, Any]] = []
        self._disconnected: set[int] = set()
        self._corrupt = _Corruptor()
        self.bytes_transferred = 0

    def init(self, baudrate: int | None = None, *, polarity: int | None = None,
             phase: int | None = None, bits: int = 8, firstbit: int = MSB) -> None:
        if baudrate is not None:
            self.baudrate = baudrate
        if polarity is not None:
            self.polarity = polarity
        if phase is not None:
            self.phase = phase

    def attach(self, part: Any, cs: SimPin | None = None) -> SimPin:
        """Wire ``part`` to the bus behind chip select ``cs`` (made if not given)."""
        index = len(self._parts)
        if cs is None:
            cs = SimPin(f"cs{index}", 1)

        def on_change(level: int, part: Any = part, index: int = index) -> None:
            if index in self._disconnected:
                return
            if level == 0:
                part.spi_select()
            else:
                part.spi_deselect()

        cs._on_change = on_change
        self._parts.append((cs, part))
        return cs

    def disconnect(self, part: Any) -> None:
        """The part stops answering: MISO floats high (reads 0xFF)."""
        for i, (_, p) in enumerate(self._parts):
            if p is part:
                self._disconnected.add(i)

    def reconnect(self, part: Any) -> None:
        for i, (_, p) in enumerate(self._parts):
            if p is part:
                self._disconnected.discard(i)

    def corrupt_next(self, count: int, mask: int = 0xFF) -> None:
        self._corrupt.arm(count, mask)

    def _selected(self) -> list[Any]:
        return [p for i, (cs, p) in enumerate(self._parts)
                if cs._value == 0 and i not in self._disconnected]

    def _exchange(self, out: bytes) -> bytearray:
        parts = self._selected()
        if (len(parts) == 1 and hasattr(parts[0], "spi_exchange_block")
                and getattr(parts[0], "spi_mode", (self.polarity, self.phase))
                == (self.polarity, self.phase)):
            # One part in the right mode: it may answer a whole block at once
            # (same bytes as byte by byte, one Python call instead of one a byte).
            data = parts[0].spi_exchange_block(out)
            self.bytes_transferred += len(out)
            return self._corrupt.apply(data)
        data = bytearray(len(out))
        for i, b in enumerate(out):
            miso = 0xFF
            for part in parts:
                got = part.spi_exchange(b)
                mode = getattr(part, "spi_mode", (self.polarity, self.phase))
                if mode != (self.polarity, self.phase):
                    got = ((got >> 1) | 0x80) & 0xFF  # sampled on the wrong edge: off by a bit
                miso &= got
            data[i] = miso
        self.bytes_transferred += len(out)
        return self._corrupt.apply(data)

    # -- machine.SPI surface -------------------------------------------------
    def read(self, nbytes: int, write: int = 0x00) -> bytes:
        return bytes(self._exchange(bytes([write]) * nbytes))

    def readinto(self, buf: Any, write: int = 0x00) -> None:
        view = memoryview(buf).cast("B")
        view[:] = self._exchange(bytes([write]) * len(view))

    def write(self, buf: Any) -> None:
        self._exchange(bytes(buf))

    def write_readinto(self, write_buf: Any, read_buf: Any) -> None:
        out = bytes(write_buf)
        view = memoryview(read_buf).cast("B")
        if len(out) != len(view):
            raise ValueError("buffers must have the same length")
        view[:] = self._exchange(out)

"""TI TMP117 digital thermometer (I2C): +-0.1 degC, 0.0078125 degC per LSB.

Usage::

    t = TMP117(i2c)                       # machine.I2C or smbus2.SMBus
    t.read_temperature_mc()               # milli-degrees Celsius, an int

``averages`` (1, 8, 32, 64) and ``conversion_cycle_ms`` (a cycle time the
datasheet's Table 7-7 allows for that averaging; 15 stands for 15.5 ms)
choose the conversion cycle; ``one_shot=True`` leaves the part shut down
until :meth:`start_one_shot`.  The Device ID register must read 0x0117
(bits 11:0; bits 15:12 are the silicon revision), else ``OSError``.
"""

import errno

from firmware.hw.compat import const
from firmware.hw.drivers.i2c import I2CRegs

DEFAULT_ADDRESS = const(0x48)
DEVICE_ID = const(0x0117)

_REG_TEMP = const(0x00)
_REG_CONFIG = const(0x01)
_REG_HIGH_LIMIT = const(0x02)
_REG_LOW_LIMIT = const(0x03)
_REG_OFFSET = const(0x08)
_REG_DEVICE_ID = const(0x0F)

_DATA_READY = const(0x2000)
_MODE_CONTINUOUS = const(0x0000)
_MODE_SHUTDOWN = const(0x0400)
_MODE_ONE_SHOT = const(0x0C00)
_SOFT_RESET = const(0x0002)

AVERAGES = (1, 8, 32, 64)
#: [CONV][AVG] cycle time, ms (15 = 15.5 ms).
_CYCLE_MS = (
    (15, 125, 500, 1000),
    (125, 125, 500, 1000),
    (250, 250, 500, 1000),
    (500, 500, 500, 1000),
    (1000, 1000, 1000, 1000),
    (4000, 4000, 4000, 4000),
    (8000, 8000, 8000, 8000),
    (16000, 16000, 16000, 16000),
)


class TMP117:
    def __init__(self, bus, address=DEFAULT_ADDRESS, averages=8, conversion_cycle_ms=1000,
                 one_shot=False, retries=3):
        if averages not in AVERAGES:
            raise ValueError("TMP117: averages must be one of 1, 8, 32, 64, got %r" % (averages,))
        avg = AVERAGES.index(averages)
        conv = -1
        for i in range(8):
            if _CYCLE_MS[i][avg] == conversion_cycle_ms:
                conv = i
                break
        if conv < 0:
            raise ValueError("TMP117: conversion_cycle_ms %r is not possible with %d averages"
                             % (conversion_cycle_ms, averages))
        self._regs = I2CRegs(bus, address, "TMP117", retries)
        dev_id = self._regs.read_u16(_REG_DEVICE_ID)
        if dev_id & 0x0FFF != DEVICE_ID:
            raise OSError(errno.ENODEV, "TMP117 at 0x%02x: device ID 0x%04x, expected 0x%04x"
                          % (address, dev_id, DEVICE_ID))
        self.revision = dev_id >> 12
        self._mode = _MODE_SHUTDOWN if one_shot else _MODE_CONTINUOUS
        self._config = (conv << 7) | (avg << 5)
        self._regs.write_u16(_REG_CONFIG, self._mode | self._config)
        got = self._regs.read_u16(_REG_CONFIG) & 0x0FFC
        if got != (self._mode | self._config):
            raise OSError(errno.EIO, "TMP117 at 0x%02x: configuration 0x%04x did not stick (0x%04x)"
                          % (address, self._mode | self._config, got))
        self.cycle_ms = _CYCLE_MS[conv][avg]

    def start_one_shot(self):
        self._regs.write_u16(_REG_CONFIG, _MODE_ONE_SHOT | self._config)

    def data_ready(self):
        """True once a new result is there (reading the flag clears it)."""
        return bool(self._regs.read_u16(_REG_CONFIG) & _DATA_READY)

    def read_raw(self):
        """Temp_Result as a signed count of 0.0078125 degC (-32768 = no result yet)."""
        return self._regs.read_s16(_REG_TEMP)

    def read_temperature_mc(self):
        """Temperature in milli-degrees Celsius (int, rounded): count * 7.8125."""
        return (self.read_raw() * 125 + 8) >> 4

    def set_offset_mc(self, offset_mc):
        """Calibration offset added by the part to every result."""
        mag = (abs(offset_mc) * 16 + 62) // 125  # m degC -> 7.8125 m degC LSB, rounded
        code = mag if offset_mc >= 0 else -mag
        if not -32768 <= code <= 32767:
            raise ValueError("TMP117: offset out of range")
        self._regs.write_u16(_REG_OFFSET, code)

    def set_limits_mc(self, low_mc, high_mc):
        if low_mc >= high_mc:
            raise ValueError("TMP117: low limit must be below the high limit")
        self._regs.write_u16(_REG_LOW_LIMIT, (low_mc * 16) // 125)
        self._regs.write_u16(_REG_HIGH_LIMIT, (high_mc * 16) // 125)
